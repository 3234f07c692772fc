"""Preprocessed images written once, keyed by the preprocessing config and the file's content hash.

Layout: ``<cache_dir>/<config key>/<sha[:2]>/<sha>.npy`` (uint16, values / 65535 = the [0, 1] image)
plus ``index.json`` remembering each file's (size, mtime) -> sha so unchanged files are not re-hashed.
Changing the config uses a new key folder; changing a file changes its hash: only what changed is redone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxrlens.config import PreprocessConfig
from cxrlens.data.preprocess import preprocess_file
from cxrlens.data.records import ImageRecord
from cxrlens.errors import ImageReadError
from cxrlens.fileio import atomic_open, sha256_file, stable_hash, write_json

SCALE = 65535.0


def default_cache_dir() -> Path:
    env = os.environ.get("CXRLENS_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cxrlens"


@dataclass
class PrepareReport:
    total: int = 0
    written: int = 0
    reused: int = 0
    failed: list[ImageReadError] = field(default_factory=list)


def _encode(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * SCALE).astype(np.uint16)


def _decode(stored: np.ndarray) -> np.ndarray:
    return stored.astype(np.float32) / SCALE


def _work(args: tuple[str, str, dict]) -> tuple[str, str | None]:  # type: ignore[type-arg]
    """Worker: preprocess one file into ``target``; returns (path, error message or None)."""
    path, target, cfg_dict = args
    try:
        image = preprocess_file(path, PreprocessConfig.model_validate(cfg_dict))
    except ImageReadError as err:
        return path, err.reason
    with atomic_open(target, "wb", encoding=None) as handle:
        np.save(handle, _encode(image))
    return path, None


class PreprocessCache:
    def __init__(self, cfg: PreprocessConfig, cache_dir: str | Path | None = None) -> None:
        self.cfg = cfg
        self.key = stable_hash(cfg.key())
        self.dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.dir = self.dir / f"{cfg.size}px-{self.key}"
        self._index_path = self.dir / "index.json"
        self._index: dict[str, list] = self._load_index()  # type: ignore[type-arg]
        self._dirty = False

    def _load_index(self) -> dict[str, list]:  # type: ignore[type-arg]
        try:
            data = json.loads(self._index_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}  # a damaged index only costs re-hashing; entries themselves are content-addressed
        return data if isinstance(data, dict) else {}

    def save_index(self) -> None:
        if self._dirty:
            write_json(self._index_path, self._index)
            self._dirty = False

    def content_hash(self, path: Path) -> str:
        stat = path.stat()
        key = str(path.resolve())
        entry = self._index.get(key)
        if entry and entry[0] == stat.st_size and entry[1] == stat.st_mtime_ns:
            return str(entry[2])
        digest = sha256_file(path)
        self._index[key] = [stat.st_size, stat.st_mtime_ns, digest]
        self._dirty = True
        return digest

    def entry_path(self, path: Path) -> Path:
        digest = self.content_hash(path)
        return self.dir / digest[:2] / f"{digest}.npy"

    def load(self, path: Path) -> np.ndarray:
        """The preprocessed image of ``path``: read from the cache, computed and stored if absent."""
        target = self.entry_path(path)
        try:
            return _decode(np.load(target))
        except FileNotFoundError:
            pass
        except (ValueError, OSError, EOFError):
            target.unlink(missing_ok=True)  # damaged entry: recompute below
        image = preprocess_file(path, self.cfg)
        with atomic_open(target, "wb", encoding=None) as handle:
            np.save(handle, _encode(image))
        return image

    def prepare(
        self,
        records: Iterable[ImageRecord],
        workers: int = 1,
        progress: Callable[[int], None] | None = None,
    ) -> PrepareReport:
        """Write every missing entry (in ``workers`` processes); report written, reused and failed."""
        report = PrepareReport()
        todo: list[tuple[str, str, dict]] = []  # type: ignore[type-arg]
        for rec in records:
            report.total += 1
            target = self.entry_path(rec.path)
            if target.exists():
                report.reused += 1
                if progress:
                    progress(1)
            else:
                todo.append((str(rec.path), str(target), self.cfg.model_dump()))
        self.save_index()
        if workers > 1 and len(todo) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                results = pool.map(_work, todo, chunksize=4)
                self._collect(results, report, progress)
        else:
            self._collect(map(_work, todo), report, progress)
        return report

    @staticmethod
    def _collect(
        results: Iterable[tuple[str, str | None]], report: PrepareReport, progress: Callable[[int], None] | None
    ) -> None:
        for path, error in results:
            if error is None:
                report.written += 1
            else:
                report.failed.append(ImageReadError(path, error))
            if progress:
                progress(1)
