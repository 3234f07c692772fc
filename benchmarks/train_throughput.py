"""Training images/s: cxrlens (its Lightning module and the trainer ``train_fold`` builds) vs a plain PyTorch loop.

Same model, batch, data and settings on both sides, per configuration; then the default recipe (what
``precision: auto`` and ``channels_last: auto`` resolve to here) against the paper's fp32 loop.

    python benchmarks/train_throughput.py [--model resnet18] [--size 512] [--batch 8] [--steps 4] [--rounds 2]
                                          [--only N ...] [--markdown]

Every configuration runs in a fresh process (the allocator setting must precede any tensor). Inside it the two
sides take turns step by step: cxrlens (``CxrLitModule`` in the trainer ``build_trainer`` makes, with the CSV
logger and the progress bar, as ``cxrlens cv`` trains) does a step, then the plain loop does one, and so on; a
side's images/s is the batch over its median step time. Taking turns, both sides see the same load from other
processes; the median leaves out the steps another process happened to stall. A cxrlens step is timed from the
end of the plain step before it to the end of its own batch, so Lightning's work between batches (progress bar,
logging, fetching the next batch) counts. Validation and the once-per-epoch checkpoint are not per-step work
and are not timed. Each configuration runs in ``--rounds`` processes (the order reversed every other round);
the quietest one (the lowest sum of the two medians) counts. The paper's loop and the default recipe run back
to back (their ratio spans two processes).

Default data: $CXRLENS_DATA, else the embedded sample. Targets: cxrlens / plain >= 0.95x in every
configuration; the default recipe >= 3x the paper's fp32 loop (stock allocator, fp32, unfused Adam).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# (label, environment, TrainConfig settings); index 0 is the paper's loop, the last one the default recipe
CONFIGS: list[tuple[str, dict[str, str], dict[str, Any]]] = [
    (
        "paper: fp32, stock allocator, Adam",
        {"CXRLENS_NO_MALLOPT": "1"},
        {"precision": "32-true", "channels_last": False, "fused_optimizer": False},
    ),
    ("fp32 + allocator fix + fused Adam", {}, {"precision": "32-true", "channels_last": False}),
    ("+ channels-last (fp32)", {}, {"precision": "32-true", "channels_last": True}),
    ("+ bf16-mixed (contiguous)", {}, {"precision": "bf16-mixed", "channels_last": False}),
    ("default recipe (auto)", {}, {}),
]
TARGET_RATIO = 0.95
TARGET_SPEEDUP = 3.0


def _loader(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The training loader of ``train_fold`` over the first images (repeated when there are too few)."""
    from cxrlens.config import PreprocessConfig
    from cxrlens.data.cache import PreprocessCache
    from cxrlens.data.labels import choose_labels
    from cxrlens.data.sources import load_dataset
    from cxrlens.run.images import LabelledImages
    from cxrlens.train.data import make_loader

    dataset = load_dataset([args.data])
    need = args.batch * (args.steps + args.warmup)
    records = (dataset.records * (need // len(dataset.records) + 1))[:need]
    space, _ = choose_labels([r.labels for r in dataset.records], "paper14", None, 0)
    cache = PreprocessCache(PreprocessConfig(size=args.size), args.cache)
    cache.prepare(records[: len(dataset.records)])
    return make_loader(LabelledImages(records, space, cache), args.batch, shuffle_seed=0), space


class PlainLoop:
    """The hand-written loop with the same settings: next batch, zero_grad, forward (autocast), fp32 BCE,
    backward, Adam step. :meth:`step` does one and returns its seconds."""

    def __init__(self, args: argparse.Namespace, recipe: Any) -> None:
        import torch

        from cxrlens.models import create_model

        loader, space = _loader(args)
        self.batches = iter(loader)
        self.recipe = recipe
        self.model = create_model(args.model, label_names=space.names).train()
        if recipe.channels_last:
            self.model.to(memory_format=torch.channels_last)
        fused = True if recipe.fused_optimizer else None
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3, weight_decay=1e-4, fused=fused)

    def step(self) -> float:
        import torch
        import torch.nn.functional as F

        start = time.perf_counter()
        x, y = next(self.batches)
        if self.recipe.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        self.opt.zero_grad()
        dtype = self.recipe.autocast_dtype
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits, aux = self.model.forward_train(x)
            loss = F.binary_cross_entropy_with_logits(logits.float(), y)
            if aux is not None and self.model.spec.aux_weight:
                loss = loss + self.model.spec.aux_weight * F.binary_cross_entropy_with_logits(aux.float(), y)
        loss.backward()
        self.opt.step()
        return time.perf_counter() - start


def interleaved(args: argparse.Namespace, cfg: Any, recipe: Any, logs: Path) -> dict[str, list[float]]:
    """Seconds per step of both sides, taking turns step by step (other processes slow both alike).

    cxrlens runs ``CxrLitModule`` in the trainer of ``build_trainer`` (CSV logger, progress bar); after each of
    its steps the plain loop does one. A cxrlens step is timed from the end of the plain step before it to the
    end of its own batch: Lightning's work between batches, the loading and the step itself.
    """
    import warnings

    import lightning as L
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers import CSVLogger

    from cxrlens.lightning_setup import quiet_lightning
    from cxrlens.models import create_model
    from cxrlens.train.module import CxrLitModule
    from cxrlens.train.runner import build_trainer

    plain = PlainLoop(args, recipe)
    loader, space = _loader(args)
    L.seed_everything(0, verbose=False)
    module = CxrLitModule(create_model(args.model, label_names=space.names), cfg, recipe)
    module.sampler = loader.sampler  # type: ignore[assignment]
    times: dict[str, list[float]] = {"plain": [], "cxrlens": []}

    class TakeTurns(Callback):
        mark = 0.0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # type: ignore[no-untyped-def]
            if batch_idx >= args.warmup:
                times["cxrlens"].append(time.perf_counter() - self.mark)
            seconds = plain.step()
            if batch_idx >= args.warmup:
                times["plain"].append(seconds)
            self.mark = time.perf_counter()

    quiet_lightning()
    logger = CSVLogger(save_dir=str(logs), name="", version=f"v{time.monotonic_ns()}")
    trainer = build_trainer(cfg, recipe, [TakeTurns()], [logger], enable_progress_bar=True, max_epochs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, loader)
    return times


def child(args: argparse.Namespace) -> None:
    from cxrlens.cli.common import tune_allocator

    tune_allocator()  # as the CLI does, before any tensor (a no-op when CXRLENS_NO_MALLOPT is set)
    from cxrlens.config import TrainConfig
    from cxrlens.train.recipe import resolve_recipe

    settings = json.loads(args.settings)
    cfg = TrainConfig(accelerator="cpu", devices="1", **settings)
    recipe = resolve_recipe(cfg, args.model)
    cfg = cfg.model_copy(update={"limit_batches": args.warmup + args.steps})
    times = interleaved(args, cfg, recipe, Path(args.cache) / "logs")
    result = {"times": times, "precision": recipe.precision, "channels_last": recipe.channels_last,
              "fused": recipe.fused_optimizer, "reason": recipe.reason}  # fmt: skip
    Path(args.result).write_text(json.dumps(result), encoding="utf-8")


def _busy_seconds() -> float | None:
    """CPU seconds the whole machine has been busy (/proc/stat), or None where it cannot be read."""
    try:
        fields = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    except (OSError, ValueError, IndexError):
        return None
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _order(args: argparse.Namespace) -> list[int]:
    """The paper's loop and the default recipe first, back to back (their ratio spans two processes)."""
    last = len(CONFIGS) - 1
    order = [0, last, *range(1, last)]
    return [i for i in order if not args.only or i in args.only]


def measure(args: argparse.Namespace) -> tuple[dict[int, dict[str, Any]], float | None]:
    """Every selected configuration in its own process (``--rounds`` times, the order reversed every other
    round); and the cores other processes used meanwhile."""
    results: dict[int, dict[str, Any]] = {}
    start, busy_before, own_before = time.perf_counter(), _busy_seconds(), _children_seconds()
    with tempfile.TemporaryDirectory(prefix="cxrlens-train-bench-") as tmp:
        for r in range(args.rounds):
            order = _order(args) if r % 2 == 0 else _order(args)[::-1]
            for i in order:
                label, env, settings = CONFIGS[i]
                result = Path(tmp) / f"result{i}-{r}.json"
                cmd = [sys.executable, __file__, "--child", "--cache", tmp, "--result", str(result),
                       "--data", args.data, "--model", args.model, "--size", str(args.size),
                       "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
                       "--settings", json.dumps(settings)]  # fmt: skip
                done = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
                if done.returncode != 0 or not result.is_file():
                    tail = "\n".join(done.stderr.strip().splitlines()[-15:])
                    raise SystemExit(f"configuration {i} ({label}) failed:\n{tail}")
                one = json.loads(result.read_text(encoding="utf-8"))
                results.setdefault(i, {**one, "rounds": []})["rounds"].append(one.pop("times"))
                print(f"  {label}: done", file=sys.stderr, flush=True)
    busy_after, wall = _busy_seconds(), time.perf_counter() - start
    others = None
    if busy_before is not None and busy_after is not None and wall > 0:
        others = max(0.0, (busy_after - busy_before) - (_children_seconds() - own_before)) / wall
    for one in results.values():
        # the quietest process of the configuration: other processes only ever slow steps down
        medians = [{side: statistics.median(t) for side, t in times.items()} for times in one["rounds"]]
        quietest = min(medians, key=lambda m: m["plain"] + m["cxrlens"])
        one.update({side: args.batch / seconds for side, seconds in quietest.items()})
    return dict(sorted(results.items())), others


def _verdict(ok: bool, gap: str) -> str:
    return "holds" if ok else f"misses by {gap}"


def report(args: argparse.Namespace, results: dict[int, dict[str, Any]], busy: float | None) -> None:
    data = Path(args.data).name or args.data
    title = (
        f"{args.model}, {args.size} px, batch {args.batch}, the two sides taking turns step by step, median of "
        f"{args.steps} steps per side in the quietest of {args.rounds} processes per configuration, data {data}"
    )
    rows = []
    for i, r in results.items():
        label = CONFIGS[i][0]
        if i == len(CONFIGS) - 1:
            label += f": {r['precision']}, channels-last {'on' if r['channels_last'] else 'off'}, fused Adam"
        ratio = r["cxrlens"] / r["plain"]
        target = f">= {TARGET_RATIO}x: {_verdict(ratio >= TARGET_RATIO, f'{TARGET_RATIO - ratio:.3f}x')}"
        rows.append((label, f"{r['plain']:.2f} img/s", f"{r['cxrlens']:.2f} img/s", f"**{ratio:.3f}x**", target))
    speedup = None
    last = len(CONFIGS) - 1
    if 0 in results and last in results:
        speedup = results[last]["cxrlens"] / results[0]["plain"]
    if args.markdown:
        print(f"### Training: cxrlens vs a plain PyTorch loop ({title})\n")
        print("| configuration | plain loop | cxrlens | cxrlens / plain | target |")
        print("|---|---:|---:|---:|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        if speedup is not None:
            gap = f"{TARGET_SPEEDUP - speedup:.2f}x"
            target = f">= {TARGET_SPEEDUP:g}x: {_verdict(speedup >= TARGET_SPEEDUP, gap)}"
            print("\n| measure | result | target |")
            print("|---|---:|---|")
            print(f"| default recipe (cxrlens) vs the paper's fp32 loop (plain) | **{speedup:.2f}x** | {target} |")
        if results.get(last, {}).get("reason"):
            print(f"\nThe default recipe here: {results[last]['reason']}.")
        if busy is not None:
            print(f"\nOther processes used {busy:.2f} of the machine's {os.cpu_count()} cores on average meanwhile.\n")
        return
    print(title)
    print(f"{'configuration':<72} {'plain loop':>13} {'cxrlens':>13} {'ratio':>9}")
    for label, plain, ours, ratio, target in rows:
        print(f"{label:<72} {plain:>13} {ours:>13} {ratio.strip('*'):>9}  {target}")
    if speedup is not None:
        print(f"default recipe (cxrlens) vs the paper's fp32 loop (plain): {speedup:.2f}x (>= {TARGET_SPEEDUP:g}x)")
    if results.get(last, {}).get("reason"):
        print(f"default recipe: {results[last]['reason']}")
    if busy is not None:
        print(f"other processes used {busy:.2f} of {os.cpu_count()} cores on average meanwhile")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("CXRLENS_DATA") or "@sample")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per side and process, after the warm-up")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per side at the start (>= 1)")
    parser.add_argument(
        "--rounds", type=int, default=2, help="processes per configuration, the order reversed each round; steps pooled"
    )
    parser.add_argument(
        "--only", type=int, nargs="+", default=None,
        help=f"run only these configurations: {', '.join(f'{i} {c[0]}' for i, c in enumerate(CONFIGS))}",
    )  # fmt: skip
    parser.add_argument("--markdown", action="store_true", help="print the results as markdown tables")
    parser.add_argument("--raw", default=None, help="also write every step time to this JSON file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--settings", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    results, busy = measure(args)
    report(args, results, busy)
    if args.raw:
        Path(args.raw).write_text(json.dumps({"results": results, "other_cores": busy}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
