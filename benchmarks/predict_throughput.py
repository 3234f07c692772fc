"""Inference: ``cxrlens.predict`` vs the model's bare batched forward, and predict's peak memory vs image count.

    python benchmarks/predict_throughput.py [--data DIR] [--size 512] [--images 96] [--repeats 2]
                                            [--memory-size 256] [--memory-counts 100 1000 5000]
                                            [--skip-throughput] [--skip-memory] [--markdown]

A small run is trained first in a temporary folder (the embedded sample, ResNet18, one fold, one epoch of
one batch, 14 labels; checkpoint quality does not matter to the timing).

1. Throughput, side by side in one process: ``cxrlens.predict.predict_to_file`` (what ``cxrlens predict
   --out`` runs: images decoded and preprocessed in worker processes, batches sized by the memory budget,
   rows written as they come, the model and its batch size set up inside the call) vs the same model's bare
   forward (``load_checkpoint``, ``torch.no_grad``, sigmoid) in the same batch size on tensors preprocessed
   beforehand. ``--images`` images of ``--data`` (repeated if there are fewer), ``--size`` px; the two
   alternate ``--repeats`` times and each keeps its best. Target: predict >= 0.9x the bare forward.
   "steady" leaves out predict's start-up (loading the model, measuring its footprint, starting the
   decoding workers): the rate from its first finished batch to its last.
2. Peak memory of ``python -m cxrlens predict --data DIR --run RUN --out x.csv`` on 100 / 1,000 / 5,000
   images (copies of the first images of ``--data`` in a cxrlens-CSV folder), each from a fresh parent
   process that reads ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` (the largest resident size of the predict
   process and its decoding workers). At ``--memory-size`` px (a second run) to keep 5,000 images
   affordable. Target: flat (the largest count within 10 % of the smallest).

Default data: $CXRLENS_DATA, else the embedded sample. Every process uses the allocator fix (the CLI's).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLAT_TOLERANCE = 0.10  # peak at the largest count within 10 % of the smallest count's
TARGET_RATIO = 0.9


def build_run(root: Path, size: int, cache: Path):  # type: ignore[no-untyped-def]
    """A trained run (ResNet18, fold 0, one batch) of the embedded sample at ``size`` px."""
    from cxrlens.config import load_run_config
    from cxrlens.lightning_setup import quiet_lightning
    from cxrlens.run import open_run
    from cxrlens.run.create import create_run
    from cxrlens.train.runner import run_cv

    quiet_lightning()
    cfg = load_run_config(
        None,
        {
            "name": "bench",
            "data.sources": ["@sample"],
            "data.labels.preset": "paper14",
            "data.preprocess.size": size,
            "data.cache_dir": str(cache),
            "models.names": ["resnet18"],
            "train.epochs": 1,
            "train.limit_batches": 1,
            "train.patience": 0,
            "train.accelerator": "cpu",
            "train.devices": "1",
            "cv.folds": [0],
        },
    )
    study = create_run(cfg, root)
    run_cv(study, enable_progress_bar=False)
    return open_run(root)


def _records(data: str, count: int):  # type: ignore[no-untyped-def]
    """``count`` records of ``data``, its images repeated if it has fewer."""
    from cxrlens.data.sources import load_dataset

    records = load_dataset([data]).records
    return [records[i % len(records)] for i in range(count)]


# -- 1. throughput ---------------------------------------------------------------------------------------------
def throughput(run, data: str, count: int, repeats: int, workdir: Path) -> dict:  # type: ignore[no-untyped-def]
    import numpy as np
    import torch

    from cxrlens.config import PredictConfig
    from cxrlens.data.preprocess import preprocess_file
    from cxrlens.predict import InputImage, predict_to_file
    from cxrlens.run.models import load_checkpoint
    from cxrlens.run.stream import batch_size_for, default_workers

    cfg = PredictConfig()  # the defaults users get (the run's one model, budget 4 GiB, cores - 1 decoders)
    images = [InputImage(f"{i:05d}_{rec.path.name}", rec.path) for i, rec in enumerate(_records(data, count))]
    for image in images:  # page cache warm for both sides alike
        image.path.read_bytes()
    model = load_checkpoint(run, "resnet18", 0)
    batch = batch_size_for([model], run.preprocess.size, cfg.memory_gib)
    x = torch.from_numpy(np.stack([preprocess_file(i.path, run.preprocess) for i in images]))[:, None]

    def bare() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(x), batch):
                torch.sigmoid(model(x[i : i + batch]).double()).numpy()
        return time.perf_counter() - start

    def ours(out: Path) -> tuple[float, float]:
        marks: list[tuple[float, int]] = []
        done = [0]

        def progress(n: int) -> None:
            done[0] += n
            marks.append((time.perf_counter(), done[0]))

        start = time.perf_counter()
        written = predict_to_file(run, images, cfg, out, progress=progress)
        total = time.perf_counter() - start
        assert written.images == len(images), written
        out.unlink()
        (t0, n0), (t1, n1) = marks[0], marks[-1]
        steady = (n1 - n0) / (t1 - t0) if t1 > t0 else float("nan")
        return total, steady

    with torch.no_grad():
        model(x[:batch])  # first-call set-up of the bare side is not timed (predict's is part of its cost)
    best = {"bare": float("inf"), "ours": float("inf"), "steady": 0.0}
    for r in range(repeats):
        total, steady = ours(workdir / f"predict-{r}.csv")
        best["ours"] = min(best["ours"], total)
        best["steady"] = max(best["steady"], steady)
        best["bare"] = min(best["bare"], bare())
    return {
        "images": len(images),
        "batch": batch,
        "workers": cfg.workers if cfg.workers is not None else default_workers(len(images)),
        "bare_ips": len(images) / best["bare"],
        "ours_ips": len(images) / best["ours"],
        "steady_ips": best["steady"],
    }


# -- 2. peak memory --------------------------------------------------------------------------------------------
def image_folder(root: Path, data: str, count: int, distinct: int = 8) -> Path:
    """A cxrlens-CSV folder of ``count`` copies of the first ``distinct`` images of ``data``."""
    sources = _records(data, distinct)
    folder = root / f"images-{count}"
    (folder / "images").mkdir(parents=True)
    with (folder / "metadata.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "patient_id", "finding", "view"])
        for i in range(count):
            rec = sources[i % len(sources)]
            name = f"images/{i:05d}{rec.path.suffix.lower()}"
            try:
                os.link(rec.path, folder / name)  # same bytes as a copy, without the disk
            except OSError:
                shutil.copyfile(rec.path, folder / name)
            writer.writerow([name, f"p{i:05d}", rec.finding, rec.view or "PA"])
    return folder


def memory_child(run: str, data: str, out: str) -> None:
    """The fresh parent of one measurement: no torch here, only the predict subprocess and its rusage."""
    cmd = [sys.executable, "-m", "cxrlens", "predict", "--data", data, "--run", run, "--out", out]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr.strip()[-2000:]}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"peak_mib": peak_kib / 1024, "seconds": seconds}))


def memory(run_root: Path, data: str, counts: list[int], workdir: Path) -> list[dict]:
    rows = []
    for count in counts:
        folder = image_folder(workdir, data, count)
        out = workdir / f"memory-{count}.csv"
        cmd = [sys.executable, __file__, "--memory-child", str(run_root), str(folder), str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip()[-2000:])
        result = json.loads(done.stdout.strip().splitlines()[-1])
        with out.open(encoding="utf-8") as handle:
            written = sum(1 for _ in handle) - 1
        if written != count:
            raise RuntimeError(f"predict wrote {written} rows for {count} images")
        rows.append({"images": count, **result})
        shutil.rmtree(folder)
        print(f"{count} images: {result['peak_mib']:.0f} MiB, {result['seconds']:.1f} s", file=sys.stderr)
    return rows


# -- output ----------------------------------------------------------------------------------------------------
def _verdict(ok: bool, miss: str) -> str:
    return "holds" if ok else f"misses by {miss}"


def report(args: argparse.Namespace, speed: dict | None, mem: list[dict] | None) -> None:
    data = Path(args.data).name or args.data
    if speed:
        ratio = speed["ours_ips"] / speed["bare_ips"]
        steady = speed["steady_ips"] / speed["bare_ips"]
        title = (
            f"ResNet18, {args.size} px, {speed['images']} images of {data}, batch {speed['batch']} (budget 4 GiB), "
            f"{speed['workers']} decoding worker(s), best of {args.repeats}"
        )
        rows = [
            ("bare forward on preprocessed tensors", f"{speed['bare_ips']:.2f} images/s", ""),
            ("cxrlens predict_to_file, end to end (files to CSV)", f"{speed['ours_ips']:.2f} images/s", ""),
            ("cxrlens predict_to_file, steady (after its first batch)", f"{speed['steady_ips']:.2f} images/s", ""),
            (
                "predict / bare forward, end to end",
                f"**{ratio:.3f}x**",
                f">= 0.9x: {_verdict(ratio >= TARGET_RATIO, f'{TARGET_RATIO - ratio:.3f}x')}",
            ),
            ("predict / bare forward, steady", f"{steady:.3f}x", ""),
        ]
        if args.markdown:
            print(f"### Predict vs the bare forward ({title})\n")
            print("| measure | result | target |")
            print("|---|---:|---|")
            for name, value, target in rows:
                print(f"| {name} | {value} | {target} |")
            measured = speed["steady_ips"] > 0  # not with a single batch: no rate after the first one
            start_up = speed["images"] / speed["ours_ips"] - speed["images"] / speed["steady_ips"] if measured else 0
            print(
                "\nThe bare forward gets its images already decoded and preprocessed, and is timed after its first "
                "call; predict decodes them in its worker process(es), which share the machine's cores with the "
                "forward pass, and its time includes its start-up"
                + (f": about {start_up:.1f} s here" if measured else "")
                + " (loading the model, measuring its footprint for the batch size, the first forward's kernel "
                "set-up, starting the decoding worker), which the steady rate leaves out.\n"
            )
        else:
            print(title)
            for name, value, target in rows:
                print(f"{name:>58}: {value:>18}  {target}")
    if mem:
        first, last = mem[0], mem[-1]
        growth = last["peak_mib"] / first["peak_mib"] - 1
        verdict = _verdict(growth <= FLAT_TOLERANCE, f"{growth - FLAT_TOLERANCE:.0%} (grows {growth:.0%})")
        title = (
            f"`python -m cxrlens predict --data DIR --run RUN --out x.csv`, ResNet18, {args.memory_size} px, "
            f"copies of {data} images"
        )
        if args.markdown:
            print(f"### Predict peak memory vs image count ({title})\n")
            print("| images | peak RSS | seconds | images/s |")
            print("|---:|---:|---:|---:|")
            for r in mem:
                ips = r["images"] / r["seconds"]
                print(f"| {r['images']:,} | {r['peak_mib']:.0f} MiB | {r['seconds']:.1f} | {ips:.1f} |")
            print(
                f"\n{last['images']:,} vs {first['images']:,} images: **{growth:+.1%}** peak memory; "
                f"target flat (within {FLAT_TOLERANCE:.0%}): {verdict}. Seconds include the process start "
                "(Python, torch, the model).\n"
            )
        else:
            print(title)
            for r in mem:
                print(f"{r['images']:>6} images: {r['peak_mib']:7.0f} MiB peak, {r['seconds']:6.1f} s")
            print(f"growth {growth:+.1%}: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("CXRLENS_DATA") or "@sample")
    parser.add_argument("--size", type=int, default=512, help="px of the throughput part")
    parser.add_argument("--images", type=int, default=96, help="images of the throughput part")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--memory-size", type=int, default=256, help="px of the memory part")
    parser.add_argument("--memory-counts", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--markdown", action="store_true", help="print the results as markdown tables")
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return

    from cxrlens.cli.common import tune_allocator

    tune_allocator()  # as the CLI does, before any tensor
    import warnings

    warnings.simplefilter("ignore")
    speed = mem = None
    with tempfile.TemporaryDirectory(prefix="cxrlens-bench-") as tmp:
        work = Path(tmp)
        if not args.skip_throughput:
            run = build_run(work / "run", args.size, work / "cache")
            speed = throughput(run, args.data, args.images, args.repeats, work)
        if not args.skip_memory:
            root = work / "run-memory"
            build_run(root, args.memory_size, work / "cache")
            mem = memory(root, args.data, sorted(args.memory_counts), work)
    report(args, speed, mem)


if __name__ == "__main__":
    main()
