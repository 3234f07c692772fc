"""Preprocessed images written once, keyed by the preprocessing config and the file's content hash.

Layout: ``<cache_dir>/<config key>/<sha[:2]>/<sha>.npy`` (uint16, values / 65535 = the [0, 1] image)
plus ``index.json`` remembering each file's (size, mtime) -> sha so unchanged files are not re-hashed.
Changing the config uses a new key folder; changing a file changes its hash: only what changed is redone.

Preparing in parallel (:meth:`PreprocessCache.prepare`): by default every usable core of the process
(:func:`usable_cores`) preprocesses, in a process pool, unless fewer than ``MIN_PARALLEL`` images are
missing (then one process does them: a pool costs ~0.1 s to start and stop, and below a few dozen images the
parallel gain is about that). Files whose hash the index does not know are hashed by the worker that
preprocesses them (it reads the file anyway; the parent learns the hash from the result, so ``index.json``
stays complete) rather than serially in the parent first: at 512 px hashing costs ~1 % of preprocessing, and
``benchmarks/cache_throughput.py`` measures both ways.

Under DDP (torchrun or Lightning: ``LOCAL_RANK`` plus ``LOCAL_WORLD_SIZE`` or ``WORLD_SIZE`` in the
environment) every local rank preprocesses only its share of the records (``records[rank::world]``, with
its share of the cores), then waits until the other shares' entries exist in the shared cache folder.
Writes are atomic and content-addressed, so the ranks need no other coordination: an image that failed
leaves a ``<sha>.failed`` note, which makes the waiting ranks retry it themselves (so every rank reports the
same failures), and a rank that sees no progress for ``PATIENCE_S`` seconds (another rank died, or never
took part) does the rest itself. Lightning's own launcher starts the other ranks only once rank 0 is
training, i.e. after rank 0 prepared everything alone with every core: they find every entry present.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxrlens.config import PreprocessConfig
from cxrlens.data.preprocess import preprocess_file
from cxrlens.data.records import ImageRecord
from cxrlens.errors import ImageReadError
from cxrlens.fileio import atomic_open, atomic_write_text, sha256_file, stable_hash, write_json

SCALE = 65535.0
MIN_PARALLEL = 32  # fewer missing images than this are preprocessed in this process (no pool)
PATIENCE_S = 60.0  # a waiting rank does the rest itself after this long without another rank's progress
POLL_S = 0.05


def default_cache_dir() -> Path:
    env = os.environ.get("CXRLENS_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cxrlens"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Share:
    """Which part of the records this process prepares: ``records[rank::world]``."""

    rank: int = 0
    world: int = 1


def ddp_share(env: Mapping[str, str] | None = None) -> Share:
    """This process's share among the local DDP ranks (from torchrun's / Lightning's variables), else all.

    Shares are split among the ranks of one machine (they surely see the same cache folder); every machine
    of a multi-node run prepares every image (harmless on a shared folder: writes are atomic).
    """
    env = os.environ if env is None else env
    try:
        rank = int(env.get("LOCAL_RANK") or 0)
        world = int(env.get("LOCAL_WORLD_SIZE") or env.get("WORLD_SIZE") or 1)
    except ValueError:
        return Share()
    return Share(rank, world) if 0 <= rank < world else Share()


def default_workers(missing: int, share: Share | None = None, cores: int | None = None) -> int:
    """Processes for ``missing`` images: this rank's part of the usable cores; 1 below ``MIN_PARALLEL``."""
    if missing < MIN_PARALLEL:
        return 1
    world = share.world if share else 1
    return max(1, (cores or usable_cores()) // world)


@dataclass
class PrepareReport:
    total: int = 0
    written: int = 0  # preprocessed and stored by this process (or its workers)
    reused: int = 0  # already in the cache, or written meanwhile by another rank
    failed: list[ImageReadError] = field(default_factory=list)
    by_others: int = 0  # of ``reused``: entries another rank wrote while this one waited


def encode_image(image: np.ndarray) -> np.ndarray:
    """A preprocessed [0, 1] image as stored (uint16); :func:`decode_image` gives it back."""
    return np.round(np.clip(image, 0.0, 1.0) * SCALE).astype(np.uint16)


def decode_image(stored: np.ndarray) -> np.ndarray:
    return stored.astype(np.float32) / SCALE


def _entry(root: Path, digest: str) -> Path:
    return root / digest[:2] / f"{digest}.npy"


def _failure_note(target: Path) -> Path:
    return target.with_suffix(".failed")


@dataclass(frozen=True)
class _Job:
    path: str
    key: str  # the index key (resolved path)
    digest: str | None  # None: the worker hashes the file
    root: str
    cfg: dict[str, Any]


@dataclass(frozen=True)
class _Result:
    path: str
    key: str
    status: str  # "written", "reused" or "failed"
    digest: str | None = None
    stamp: tuple[int, int] | None = None  # (size, mtime_ns) the worker hashed; None if the parent knew the hash
    error: str | None = None


def _work(job: _Job) -> _Result:
    """Worker: hash the file if needed, then preprocess it into its entry unless the entry exists."""
    digest, stamp = job.digest, None
    if digest is None:
        try:
            stat = Path(job.path).stat()
            digest = sha256_file(job.path)
        except OSError as err:
            reason = "file not found" if isinstance(err, FileNotFoundError) else f"cannot read ({err})"
            return _Result(job.path, job.key, "failed", error=reason)
        stamp = (stat.st_size, stat.st_mtime_ns)
    target = _entry(Path(job.root), digest)
    if target.exists():
        return _Result(job.path, job.key, "reused", digest, stamp)
    try:
        image = preprocess_file(job.path, PreprocessConfig.model_validate(job.cfg))
    except ImageReadError as err:
        atomic_write_text(_failure_note(target), err.reason + "\n")  # tells waiting ranks to retry it themselves
        return _Result(job.path, job.key, "failed", digest, stamp, err.reason)
    with atomic_open(target, "wb", encoding=None) as handle:
        np.save(handle, encode_image(image))
    _failure_note(target).unlink(missing_ok=True)
    return _Result(job.path, job.key, "written", digest, stamp)


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

    def known_hash(self, path: Path) -> tuple[str, str | None]:
        """(index key, the file's hash if the index knows it for the file's current size and mtime)."""
        stat = path.stat()
        key = str(path.resolve())
        entry = self._index.get(key)
        if entry and entry[0] == stat.st_size and entry[1] == stat.st_mtime_ns:
            return key, str(entry[2])
        return key, None

    def _remember(self, key: str, stamp: tuple[int, int], digest: str) -> None:
        self._index[key] = [stamp[0], stamp[1], digest]
        self._dirty = True

    def content_hash(self, path: Path) -> str:
        key, digest = self.known_hash(path)
        if digest is not None:
            return digest
        stat = path.stat()
        digest = sha256_file(path)
        self._remember(key, (stat.st_size, stat.st_mtime_ns), digest)
        return digest

    def entry_path(self, path: Path) -> Path:
        return _entry(self.dir, self.content_hash(path))

    def load(self, path: Path) -> np.ndarray:
        """The preprocessed image of ``path``: read from the cache, computed and stored if absent."""
        target = self.entry_path(path)
        try:
            return decode_image(np.load(target))
        except FileNotFoundError:
            pass
        except (ValueError, OSError, EOFError):
            target.unlink(missing_ok=True)  # damaged entry: recompute below
        stored = encode_image(preprocess_file(path, self.cfg))
        with atomic_open(target, "wb", encoding=None) as handle:
            np.save(handle, stored)
        return decode_image(stored)  # as every later load returns it

    def prepare(
        self,
        records: Iterable[ImageRecord],
        workers: int | None = None,
        progress: Callable[[int], None] | None = None,
        share: Share | None = None,
        *,
        hash_in_parent: bool = False,
        patience: float = PATIENCE_S,
    ) -> PrepareReport:
        """Write every missing entry; report written, reused and failed.

        ``workers``: processes (None or 0: :func:`default_workers`); ``share``: this rank's part of the
        records (None: :func:`ddp_share` from the environment); the other parts are waited for (see the module
        doc). ``hash_in_parent`` hashes unknown files here before dispatching (kept to measure the two ways).
        """
        records = list(records)
        share = share or ddp_share()
        report = PrepareReport(total=len(records))
        mine = records[share.rank :: share.world]
        jobs = []
        for rec in mine:
            key, digest = self._hashed(rec.path) if hash_in_parent else self._known(rec.path)
            if digest is not None and _entry(self.dir, digest).exists():
                report.reused += 1
                if progress:
                    progress(1)
            else:
                jobs.append(_Job(str(rec.path), key, digest, str(self.dir), self.cfg.model_dump()))
        self._run(jobs, workers, share, report, progress)
        if share.world > 1:
            others = [rec for i, rec in enumerate(records) if i % share.world != share.rank]
            self._wait_for(others, workers, share, report, progress, patience)
        self.save_index()
        return report

    def _known(self, path: Path) -> tuple[str, str | None]:
        try:
            return self.known_hash(path)
        except OSError:
            return str(path.resolve()), None  # the worker reports it

    def _hashed(self, path: Path) -> tuple[str, str | None]:
        try:
            return str(path.resolve()), self.content_hash(path)
        except OSError:
            return str(path.resolve()), None  # the worker reports it

    def _run(
        self,
        jobs: list[_Job],
        workers: int | None,
        share: Share,
        report: PrepareReport,
        progress: Callable[[int], None] | None,
    ) -> None:
        count = workers or default_workers(len(jobs), share)
        if count > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=min(count, len(jobs))) as pool:
                chunk = max(1, min(4, len(jobs) // (4 * count)))
                self._collect(pool.map(_work, jobs, chunksize=chunk), report, progress)
        else:
            self._collect(map(_work, jobs), report, progress)

    def _collect(
        self, results: Iterable[_Result], report: PrepareReport, progress: Callable[[int], None] | None
    ) -> None:
        for result in results:
            if result.stamp is not None and result.digest is not None:
                self._remember(result.key, result.stamp, result.digest)  # what the worker hashed
            if result.status == "written":
                report.written += 1
            elif result.status == "reused":
                report.reused += 1
            else:
                report.failed.append(ImageReadError(result.path, result.error or "failed"))
            if progress:
                progress(1)

    def _wait_for(
        self,
        records: list[ImageRecord],
        workers: int | None,
        share: Share,
        report: PrepareReport,
        progress: Callable[[int], None] | None,
        patience: float,
    ) -> None:
        """Until the other ranks' entries exist: retry what they noted as failed, take over if they stall."""
        pending: dict[str, tuple[ImageRecord, Path]] = {}
        unreadable = []
        for rec in records:  # hashing the others' files here costs this rank's idle time only
            try:
                pending[str(rec.path)] = (rec, self.entry_path(rec.path))
            except OSError:
                unreadable.append(rec)
        self._run(self._jobs(unreadable), 1, share, report, progress)  # reports them as failed
        last_change = time.monotonic()
        while pending:
            present = [name for name, (_, target) in pending.items() if target.exists()]
            for name in present:
                del pending[name]
                report.reused += 1
                report.by_others += 1
                if progress:
                    progress(1)
            noted = [rec for rec, target in pending.values() if _failure_note(target).exists()]
            if present:
                last_change = time.monotonic()
            stalled = time.monotonic() - last_change > patience
            retry = list(pending.values()) if stalled else [(rec, pending[str(rec.path)][1]) for rec in noted]
            if retry:
                for rec, _ in retry:
                    del pending[str(rec.path)]
                self._run(self._jobs([rec for rec, _ in retry]), workers if stalled else 1, share, report, progress)
                last_change = time.monotonic()
            elif pending:
                time.sleep(POLL_S)

    def _jobs(self, records: Iterable[ImageRecord]) -> list[_Job]:
        return [_Job(str(r.path), *self._hashed(r.path), str(self.dir), self.cfg.model_dump()) for r in records]
