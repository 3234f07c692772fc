"""Does the default training recipe keep the accuracy of the paper's fp32 loop? The same short run twice.

Trains one model on one fold through ``train_fold`` (what ``cxrlens train`` runs) twice, with the same seed,
data, split and images: once as the paper's loop (``precision: 32-true``, contiguous, plain Adam) and once with
the default recipe (``precision: auto``, ``channels_last: auto``, fused Adam: what they resolve to on this
machine is printed). Prints both validation losses and micro-F1 side by side, and the training images/s.

    python benchmarks/recipe_accuracy.py [--data DIR] [--model resnet18] [--size 224] [--epochs 2]
                                         [--train-batches 40] [--markdown]

The validation numbers are computed from each run's stored validation predictions (every validation image,
probabilities at full precision): BCE averaged over images x labels and micro-F1 at 0.5. "best-epoch val loss"
is the value that picked the epoch (over the first ``--train-batches`` validation batches). Images/s counts
the training steps only (forward, loss, backward, optimizer step; not loading, validation or checkpoints).
Default data: $CXRLENS_DATA, else the embedded sample.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

PAPER = {"train.precision": "32-true", "train.channels_last": False, "train.fused_optimizer": False}


def _config(args: argparse.Namespace, cache: str, extra: dict[str, Any]) -> Any:
    from cxrlens.config import load_run_config

    overrides = {
        "data.sources": [args.data],
        "data.labels.preset": args.labels,
        "data.preprocess.size": args.size,
        "data.cache_dir": cache,
        "models.names": [args.model],
        "models.weights": "none",
        "train.epochs": args.epochs,
        "train.batch_size": args.batch,
        "train.patience": 0,
        "train.seed": args.seed,
        "train.limit_batches": args.train_batches,
        "train.accelerator": "cpu",
        "train.devices": "1",
        "cv.split.folds": 5,
        "cv.split.seed": args.seed,
        "cv.folds": [0],
        **extra,
    }
    return load_run_config(None, overrides)


def _step_clock() -> Any:
    from lightning.pytorch.callbacks import Callback

    class StepClock(Callback):
        """Seconds and images of the training steps (batch start to batch end, after the first step)."""

        def __init__(self) -> None:
            self.seconds, self.images, self._start = 0.0, 0, 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # type: ignore[no-untyped-def]
            self._start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # type: ignore[no-untyped-def]
            if trainer.current_epoch > 0 or batch_idx > 0:  # the first step pays one-off setup
                self.seconds += time.perf_counter() - self._start
                self.images += len(batch[0])

    return StepClock()


def _validation_scores(study: Any, model: str) -> dict[str, float]:
    """BCE and micro-F1 at 0.5 over every validation image, from the fold's stored predictions."""
    import numpy as np
    from sklearn.metrics import f1_score

    from cxrlens.data.splits import fold_files

    index = study.dataset.by_filename()
    files = fold_files(study.splits, 0)["val"]
    truth = study.space.encode_many(index[f].labels for f in files).astype(np.float64)
    with study.run.layout.fold_predictions(model, 0).open(newline="") as handle:
        rows = {r["filename"]: r for r in csv.DictReader(handle) if r["subset"] == "val"}
    probs = np.array([[float(rows[f][n]) for n in study.space.names] for f in files], dtype=np.float64)
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    bce = float(-np.mean(truth * np.log(p) + (1 - truth) * np.log(1 - p)))
    f1 = float(f1_score(truth.astype(int), (probs >= 0.5).astype(int), average="micro", zero_division=0))
    return {"val_bce": bce, "val_micro_f1": f1, "val_images": len(files)}


def train_once(args: argparse.Namespace, work: Path, cache: str, name: str, extra: dict[str, Any]) -> dict[str, Any]:
    import warnings

    from cxrlens.run import create_run
    from cxrlens.train.runner import train_fold

    study = create_run(_config(args, cache, extra), work / name)
    clock = _step_clock()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train_fold(study, args.model, 0, resume=False, callbacks=[clock], enable_progress_bar=False)
    assert result is not None
    return {
        "precision": result.precision,
        "channels_last": result.channels_last,
        "fused": study.cfg.train.fused_optimizer,
        "best_val_loss": result.val_loss,
        "best_epoch": result.best_epoch,
        "train_images": result.train_images,
        "seconds": result.seconds,
        "img_s": clock.images / clock.seconds if clock.seconds else float("nan"),
        **_validation_scores(study, args.model),
    }


def _recipe_text(r: dict[str, Any]) -> str:
    adam = "fused Adam" if r["fused"] else "Adam"
    return f"{r['precision']}, channels-last {'on' if r['channels_last'] else 'off'}, {adam}"


def _machine() -> str:
    import datetime as dt

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {date}"


def report(args: argparse.Namespace, paper: dict[str, Any], default: dict[str, Any], minutes: float) -> None:
    data = Path(args.data).name or args.data
    title = (
        f"{args.model} from scratch, {args.size} px, batch {args.batch}, {args.epochs} epoch(s) of "
        f"{args.train_batches} batches, fold 0 of 5, seed {args.seed}, data {data}, {paper['val_images']} "
        "validation images"
    )
    rows = [
        ("recipe", _recipe_text(paper), _recipe_text(default), ""),
        ("best-epoch val loss (picks the epoch)", f"{paper['best_val_loss']:.4f}", f"{default['best_val_loss']:.4f}",
         f"{default['best_val_loss'] - paper['best_val_loss']:+.4f}"),
        ("val BCE, every validation image", f"{paper['val_bce']:.4f}", f"{default['val_bce']:.4f}",
         f"{default['val_bce'] - paper['val_bce']:+.4f}"),
        ("val micro-F1 at 0.5", f"{paper['val_micro_f1']:.4f}", f"{default['val_micro_f1']:.4f}",
         f"{default['val_micro_f1'] - paper['val_micro_f1']:+.4f}"),
        ("best epoch", str(paper["best_epoch"]), str(default["best_epoch"]), ""),
        ("training steps, images/s", f"{paper['img_s']:.2f}", f"{default['img_s']:.2f}",
         f"{default['img_s'] / paper['img_s']:.2f}x"),
        ("fold wall time (s, incl. validation)", f"{paper['seconds']:.1f}", f"{default['seconds']:.1f}", ""),
    ]  # fmt: skip
    if args.markdown:
        print(f"### Accuracy of the default recipe vs the paper's fp32 loop ({title})\n")
        print("| measure | paper's fp32 loop | default recipe | difference |")
        print("|---|---:|---:|---:|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        print(f"\nBoth runs one after the other in one process ({_machine()}), {minutes:.1f} min in all.\n")
        return
    print(title)
    print(f"{'measure':<40} {'paper fp32':>34} {'default recipe':>34} {'difference':>11}")
    for name, a, b, d in rows:
        print(f"{name:<40} {a:>34} {b:>34} {d:>11}")
    print(f"{_machine()}; {minutes:.1f} min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("CXRLENS_DATA") or "@sample")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--labels", default="auto", help="label preset (data.labels.preset)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-batches", type=int, default=40, help="batches per epoch (train and validation)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=None, help="preprocessed-image cache (default: a temporary folder)")
    parser.add_argument("--markdown", action="store_true", help="print the results as markdown tables")
    args = parser.parse_args()

    from cxrlens.cli.common import tune_allocator

    tune_allocator()  # as the CLI does, before any tensor
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cxrlens-recipe-") as tmp:
        work, cache = Path(tmp), args.cache or str(Path(tmp) / "cache")
        paper = train_once(args, work, cache, "paper", PAPER)
        default = train_once(args, work, cache, "default", {})
    report(args, paper, default, (time.perf_counter() - start) / 60)


if __name__ == "__main__":
    main()
