"""Preprocessed images as LitData shards: the data set a multi-node run streams instead of one shared cache folder.

Why LitData (Lightning's own engine; needs the ``streaming`` extra): it writes chunked binary shards with
parallel workers and a node rank (``litdata.optimize``), reads them locally, from a shared folder or from
object storage with a local chunk cache, and gives random access by index, which keeps cxrlens's own
epoch shuffle (:class:`cxrlens.train.data.EpochShuffle`) and Lightning's DDP sampler in charge of the
batches: a run on the shards sees exactly the batches it would see on the cache. WebDataset's tar shards are
read sequentially only (no index: another shuffle, other batches) and MosaicML Streaming, though indexed too,
brings its own shuffle and launcher conventions outside the Lightning stack.

Layout: ``<dir>/part-<k>-of-<n>/`` is one LitData data set per node of the preparation (``chunk-*.bin``,
``index.json``) plus ``cxrlens.json``: the record ids in stream order, the images that failed and the
preprocessing. Node ``k`` of ``n`` writes the records ``sorted(records)[k::n]`` (sorted by record id, i.e. the
file name relative to the data root) with its own worker processes; ``cxrlens.json`` is written last
(atomically), so a part without it is unfinished and is written again, a finished part is kept. One data set
per node rather than LitData's own multi-node merge: that merge waits for the other nodes' indexes only on
object storage, not on a shared folder.

Each stored item is ``{"id", "image" (uint16, as the cache stores it), "labels", "unknown"}`` (JSON lists of
label names); training encodes the labels from the run's own records, like it does with the cache.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cxrlens.config import PreprocessConfig
from cxrlens.data.cache import decode_image, encode_image, usable_cores
from cxrlens.data.preprocess import preprocess_file
from cxrlens.data.records import ImageRecord
from cxrlens.errors import ConfigError, DataError, ImageReadError
from cxrlens.fileio import atomic_write_text, sha256_text, stable_hash, write_json

MANIFEST = "cxrlens.json"
FORMAT = "cxrlens-shards"
VERSION = 1
CHUNK_BYTES = "64MB"
EXTRA = "pip install 'cxrlens[streaming]'"
ENV_KEYS = (("DATA_OPTIMIZER_NODE_RANK", "DATA_OPTIMIZER_NUM_NODES"), ("SLURM_NODEID", "SLURM_NNODES"))


class ImageStore(Protocol):
    """Where the training images come from: the cache (:class:`~cxrlens.data.cache.PreprocessCache`) or shards."""

    def load(self, path: Path) -> np.ndarray: ...


def require_litdata() -> Any:
    """The ``litdata`` module, or a one-line error naming the extra that installs it."""
    try:
        import litdata
    except ModuleNotFoundError:
        raise ConfigError(f"streaming shards need LitData, which is not installed: {EXTRA}") from None
    return litdata


@dataclass(frozen=True)
class NodeShare:
    """Which part of the records this node writes: ``sorted(records)[rank::count]``."""

    rank: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.rank < self.count:
            raise ConfigError(f"node rank {self.rank} of {self.count} node(s): need 0 <= rank < nodes")

    @property
    def name(self) -> str:
        return f"part-{self.rank:03d}-of-{self.count:03d}"


def node_share(rank: int | None = None, count: int | None = None, env: Mapping[str, str] | None = None) -> NodeShare:
    """This node's share: the given values, else LitData's ``DATA_OPTIMIZER_NODE_RANK`` / ``_NUM_NODES``, else
    SLURM's ``SLURM_NODEID`` / ``SLURM_NNODES``, else node 0 of 1."""
    env = os.environ if env is None else env
    for rank_key, count_key in (
        ("DATA_OPTIMIZER_NODE_RANK", "DATA_OPTIMIZER_NUM_NODES"),
        ("SLURM_NODEID", "SLURM_NNODES"),
    ):
        if rank is None and count is None and env.get(count_key):
            try:
                return NodeShare(int(env.get(rank_key) or 0), int(env[count_key]))
            except ValueError:
                raise ConfigError(f"{rank_key}/{count_key} must be whole numbers") from None
    return NodeShare(rank or 0, count or 1)


@dataclass
class ShardReport:
    part: Path
    total: int = 0  # records of this node's share
    written: int = 0
    reused: int = 0  # the part was finished earlier with the same records and preprocessing
    failed: list[ImageReadError] = field(default_factory=list)


def _note_name(record_id: str) -> str:
    return sha256_text(record_id)[:24] + ".json"


class _Item:
    """LitData's worker function: one record -> one item; an unreadable image yields nothing and leaves a note."""

    def __init__(self, cfg: dict[str, Any], notes: str) -> None:
        self.cfg = cfg
        self.notes = notes
        self._parsed: PreprocessConfig | None = None

    def __call__(self, job: tuple[str, str, list[str], list[str]]) -> Iterator[dict[str, Any]]:
        record_id, path, labels, unknown = job
        self._parsed = self._parsed or PreprocessConfig.model_validate(self.cfg)
        try:
            image = preprocess_file(path, self._parsed)
        except ImageReadError as err:
            note = {"id": record_id, "path": path, "reason": err.reason}
            atomic_write_text(Path(self.notes) / _note_name(record_id), json.dumps(note))
            return
        yield {
            "id": record_id,
            "image": encode_image(image),
            "labels": json.dumps(labels),
            "unknown": json.dumps(unknown),
        }


def _manifest_head(cfg: PreprocessConfig, share: NodeShare) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "preprocess": cfg.key(),
        "preprocess_key": stable_hash(cfg.key()),
        "part": share.rank,
        "parts": share.count,
    }


def _read_manifest(part: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((part / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # damaged: the part is written again
    return data if isinstance(data, dict) else None


def _litdata_count(part: Path) -> int:
    try:
        index = json.loads((part / "index.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
    return sum(int(chunk["chunk_size"]) for chunk in index.get("chunks", []))


def write_shards(
    records: Sequence[ImageRecord],
    cfg: PreprocessConfig,
    out: str | Path,
    share: NodeShare | None = None,
    workers: int | None = None,
) -> ShardReport:
    """Preprocess this node's share of ``records`` into ``<out>/part-<k>-of-<n>/`` with parallel workers.

    ``workers``: processes (None or 0: every usable core). A finished part with the same records and
    preprocessing is kept (reported as reused); an unfinished or different one is written again.
    """
    share = share or node_share()
    ordered = sorted(records, key=lambda r: r.filename)
    if len({r.filename for r in ordered}) != len(ordered):
        raise DataError("two records share a file name: shards need unique record ids")
    mine = ordered[share.rank :: share.count]
    root = Path(out).expanduser()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root}: not a folder (the shards' folder)")
    part = root / share.name
    report = ShardReport(part=part, total=len(mine))
    head = _manifest_head(cfg, share)
    wanted = [r.filename for r in mine]
    done = _read_manifest(part)
    same = done is not None and all(done.get(k) == v for k, v in head.items() if k != "preprocess")
    if done and same and sorted(done["ids"] + [f["id"] for f in done["failed"]]) == wanted:
        report.reused = len(done["ids"])
        report.failed = [ImageReadError(f["path"], f["reason"]) for f in done["failed"]]
        return report
    (part / MANIFEST).unlink(missing_ok=True)
    notes = root / f".failed-{share.name}"
    shutil.rmtree(notes, ignore_errors=True)
    notes.mkdir(parents=True)
    if mine:
        _optimize(mine, cfg, part, notes, workers)
    else:
        part.mkdir(parents=True, exist_ok=True)
    failed = {}
    for note_file in notes.glob("*.json"):
        note = json.loads(note_file.read_text(encoding="utf-8"))
        failed[note["id"]] = note
    ids = [rid for rid in wanted if rid not in failed]
    stored = _litdata_count(part) if mine else 0
    if stored != len(ids):
        raise DataError(f"{part}: LitData stored {stored} images, {len(ids)} expected (run data prepare again)")
    failures = [failed[rid] for rid in wanted if rid in failed]
    write_json(part / MANIFEST, {**head, "ids": ids, "failed": failures})
    shutil.rmtree(notes, ignore_errors=True)
    report.written = len(ids)
    report.failed = [ImageReadError(f["path"], f["reason"]) for f in failures]
    return report


def _optimize(mine: list[ImageRecord], cfg: PreprocessConfig, part: Path, notes: Path, workers: int | None) -> None:
    litdata = require_litdata()
    jobs = [(r.filename, str(r.path), sorted(r.labels), sorted(r.unknown)) for r in mine]
    count = max(1, min(workers or usable_cores(), len(jobs)))
    method = multiprocessing.get_start_method(allow_none=True)
    fork = "fork" in multiprocessing.get_all_start_methods()
    try:
        litdata.optimize(
            _Item(cfg.model_dump(), str(notes)),
            jobs,
            output_dir=str(part),
            num_workers=count,
            chunk_bytes=CHUNK_BYTES,
            keep_data_ordered=True,  # worker k writes the k-th run of the records: stream order = record order
            reorder_files=False,
            mode="overwrite",
            verbose=False,
            start_method="fork" if fork else "spawn",  # fork: the workers start without importing torch again
        )
    finally:
        multiprocessing.set_start_method(method, force=True)  # optimize sets it for the whole process


def read_parts(root: str | Path, cfg: PreprocessConfig) -> list[tuple[Path, dict[str, Any]]]:
    """Every part of the shards in ``root`` with its manifest; one-line errors for what is missing or different."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ConfigError(f"data.streaming {root}: no such folder (cxrlens data prepare --format streaming --out DIR)")
    found = {}
    for part in sorted(root.glob("part-*-of-*")):
        manifest = _read_manifest(part)
        if manifest is None or manifest.get("format") != FORMAT:
            raise DataError(f"{part}: unfinished part (no {MANIFEST}); run data prepare again for its node")
        if manifest.get("version") != VERSION:
            raise DataError(f"{part}: shards of format version {manifest.get('version')}, this cxrlens reads {VERSION}")
        found[(int(manifest["part"]), int(manifest["parts"]))] = (part, manifest)
    if not found:
        raise ConfigError(f"data.streaming {root}: no shards (cxrlens data prepare --format streaming --out DIR)")
    counts = {parts for _, parts in found}
    if len(counts) != 1:
        raise DataError(f"{root}: parts of different preparations ({sorted(counts)} nodes); prepare into a new folder")
    count = counts.pop()
    missing = [k for k in range(count) if (k, count) not in found]
    if missing:
        raise DataError(
            f"{root}: part(s) {missing} of {count} missing (run data prepare with --node-rank on each node)"
        )
    key = stable_hash(cfg.key())
    for part, manifest in found.values():
        if manifest.get("preprocess_key") != key:
            theirs, ours = manifest.get("preprocess", {}), cfg.key()
            diff = [f"{name} {ours[name]} vs {theirs.get(name)}" for name in ours if ours[name] != theirs.get(name)]
            raise ConfigError(f"{part}: prepared with other preprocessing ({', '.join(diff)}); prepare them again")
    return [found[(k, count)] for k in range(count)]


class ShardImages:
    """The preprocessed images of ``records`` read from the shards: what the cache's ``load`` gives, bit for bit.

    Random access by index (LitData's ``StreamingDataset[i]``), so the caller's sampler decides the order;
    every item read is checked against the record id it should hold. Records absent from the shards (failed
    when prepared, or added to the data since) are listed in :attr:`missing`.
    """

    def __init__(self, root: str | Path, cfg: PreprocessConfig, records: Sequence[ImageRecord]) -> None:
        require_litdata()
        self.root = Path(root).expanduser()
        parts = read_parts(self.root, cfg)
        self._dirs = [str(part) for part, _ in parts]
        position = {rid: (k, i) for k, (_, m) in enumerate(parts) for i, rid in enumerate(m["ids"])}
        self.failed = {f["id"]: f["reason"] for _, m in parts for f in m["failed"]}
        self._where: dict[Path, tuple[int, int, str]] = {}
        self.missing: list[ImageRecord] = []
        for rec in records:
            spot = position.get(rec.filename)
            if spot is None:
                self.missing.append(rec)
            else:
                self._where[rec.path] = (*spot, rec.filename)
        self._datasets: dict[int, Any] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_datasets": {}}  # each DataLoader worker opens its own readers

    def __len__(self) -> int:
        return len(self._where)

    def _dataset(self, part: int) -> Any:
        if self._pid != os.getpid():  # a forked worker: its own readers, not the parent's (threads, handles)
            self._datasets, self._pid = {}, os.getpid()
        dataset = self._datasets.get(part)
        if dataset is None:
            # items decoded one at a time: LitData's default decodes a window of neighbours per read, which
            # random access (the caller's shuffle) throws away (~20x slower per image, measured)
            dataset = require_litdata().StreamingDataset(self._dirs[part], batch_decode="item")
            self._datasets[part] = dataset
        return dataset

    def load(self, path: Path) -> np.ndarray:
        try:
            part, index, record_id = self._where[path]
        except KeyError:
            raise DataError(f"{path}: not in the shards of {self.root}") from None
        item = self._dataset(part)[index]
        if item["id"] != record_id:
            raise DataError(f"{self._dirs[part]}: item {index} is {item['id']!r}, expected {record_id!r} (damaged)")
        return decode_image(np.asarray(item["image"]))
