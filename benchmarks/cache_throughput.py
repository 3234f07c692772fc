"""Preprocessed-image cache: cached reading vs decode + preprocess, and preparing with every core vs one,
side by side in one run.

    python benchmarks/cache_throughput.py [--data DIR] [--size 512] [--images 256] [--workers N]
                                          [--repeats 3] [--markdown]

1. ``PreprocessCache.prepare`` (what ``cxrlens data prepare`` and ``create_run`` run) of the same images into
   fresh cache folders with 1 worker and with ``--workers`` (default: the usable cores), the workers hashing
   the files (the default) and, for comparison, the parent hashing them all first. The runs alternate and
   each keeps its best of ``--repeats`` (other work on the machine only slows runs down). Target: >= 1.7x
   on 2 cores at 512 px.
2. Reading the prepared images from the cache vs decoding and preprocessing them (one process, one core).
   Target: cached at least 20x faster.

Default data: $CXRLENS_DATA, else the embedded sample. ``--markdown`` prints the results as a markdown table
(for ``benchmarks/suite.py``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from cxrlens.config import PreprocessConfig
from cxrlens.data.cache import PreprocessCache, usable_cores
from cxrlens.data.preprocess import preprocess_file
from cxrlens.data.records import ImageRecord
from cxrlens.data.sources import load_dataset
from cxrlens.errors import ImageReadError


def _prepare_seconds(records: list[ImageRecord], cfg: PreprocessConfig, workers: int, parent_hash: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        report = PreprocessCache(cfg, tmp).prepare(records, workers=workers, hash_in_parent=parent_hash)
        seconds = time.perf_counter() - start
    assert report.written + len(report.failed) == len(records), report
    return seconds


def measure(records: list[ImageRecord], cfg: PreprocessConfig, workers: int, repeats: int) -> dict[str, float]:
    for rec in records:  # page cache warm for every variant alike
        rec.path.read_bytes()
    variants = {"serial": (1, False), "parallel": (workers, False), "parallel_parent_hash": (workers, True)}
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(repeats):
        for name, (count, parent_hash) in variants.items():
            best[name] = min(best[name], _prepare_seconds(records, cfg, count, parent_hash))
    n = len(records)
    result = {f"prepare_{name}": n / seconds for name, seconds in best.items()}

    with tempfile.TemporaryDirectory() as tmp:
        cache = PreprocessCache(cfg, tmp)
        cache.prepare(records, workers=workers)
        readable = []
        start = time.perf_counter()
        for rec in records:
            try:
                preprocess_file(rec.path, cfg)
                readable.append(rec)
            except ImageReadError:
                pass
        uncached = len(readable) / (time.perf_counter() - start)
        reader = PreprocessCache(cfg, tmp)  # a fresh process would start like this: index from disk
        start = time.perf_counter()
        for rec in readable:
            reader.load(rec.path)
        cached = len(readable) / (time.perf_counter() - start)
    result.update(decode_preprocess=uncached, cached_read=cached)
    return result


def _rows(r: dict[str, float], workers: int) -> list[tuple[str, str, str]]:
    return [
        ("decode + preprocess (1 process)", f"{r['decode_preprocess']:.1f} images/s", ""),
        ("cached read (1 process)", f"{r['cached_read']:.1f} images/s", ""),
        ("cached read vs decode + preprocess", f"{r['cached_read'] / r['decode_preprocess']:.1f}x", ">= 20x"),
        ("prepare, 1 worker", f"{r['prepare_serial']:.1f} images/s", ""),
        (f"prepare, {workers} workers (workers hash)", f"{r['prepare_parallel']:.1f} images/s", ""),
        (f"prepare, {workers} workers (parent hashes first)", f"{r['prepare_parallel_parent_hash']:.1f} images/s", ""),
        (f"prepare speed-up, {workers} workers vs 1", f"{r['prepare_parallel'] / r['prepare_serial']:.2f}x", ">= 1.7x"),
        (
            "workers hashing vs parent hashing first",
            f"{r['prepare_parallel'] / r['prepare_parallel_parent_hash']:.3f}x",
            "",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("CXRLENS_DATA") or "@sample")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--workers", type=int, default=usable_cores())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", action="store_true", help="print the results as a markdown table")
    args = parser.parse_args()

    records = load_dataset([args.data]).records[: args.images]
    r = measure(records, PreprocessConfig(size=args.size), args.workers, args.repeats)
    title = (
        f"data: {Path(args.data).name or args.data}, {len(records)} images, {args.size} px, "
        f"{usable_cores()} usable cores, best of {args.repeats}"
    )
    rows = _rows(r, args.workers)
    if args.markdown:
        print(f"### Preprocessed-image cache ({title})\n")
        print("| measure | result | target |")
        print("|---|---:|---|")
        for name, value, target in rows:
            print(f"| {name} | {value} | {target} |")
        return
    print(title)
    for name, value, target in rows:
        print(f"{name:>48}: {value:>16}  {target}")


if __name__ == "__main__":
    main()
