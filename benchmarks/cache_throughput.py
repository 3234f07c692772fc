"""Cached reading vs decode + preprocess, images/s side by side in one run.

    python benchmarks/cache_throughput.py [--data DIR] [--size 512] [--images 200]

Default data: $CXRLENS_DATA, else the embedded sample. Target: cached at least 20x faster.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from cxrlens.config import PreprocessConfig
from cxrlens.data.cache import PreprocessCache
from cxrlens.data.preprocess import preprocess_file
from cxrlens.data.sources import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=os.environ.get("CXRLENS_DATA") or "@sample")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()

    records = load_dataset([args.data]).records[: args.images]
    cfg = PreprocessConfig(size=args.size)
    with tempfile.TemporaryDirectory() as tmp:
        cache = PreprocessCache(cfg, tmp)
        cache.prepare(records, workers=os.cpu_count() or 1)
        cache.save_index()

        start = time.perf_counter()
        for rec in records:
            preprocess_file(rec.path, cfg)
        uncached = len(records) / (time.perf_counter() - start)

        reader = PreprocessCache(cfg, tmp)  # a fresh process would start like this: index from disk
        start = time.perf_counter()
        for rec in records:
            reader.load(rec.path)
        cached = len(records) / (time.perf_counter() - start)

    print(f"data: {args.data}  images: {len(records)}  size: {args.size}px  (one process, one core)")
    print(f"{'decode + preprocess':>22}: {uncached:8.1f} images/s")
    print(f"{'cached read':>22}: {cached:8.1f} images/s")
    print(f"{'ratio':>22}: {cached / uncached:8.1f}x (target >= 20x)")


if __name__ == "__main__":
    main()
