"""Training images/s: cxrlens (Lightning module + loaders) vs a plain hand-written PyTorch loop.

Same model, batch, data and settings, side by side in one run; then the gain of each CPU speed-up.

    python benchmarks/train_throughput.py [--model resnet18] [--size 512] [--batch 8] [--steps 8]

Every configuration runs in a fresh process (the allocator setting must precede any tensor).
Default data: $CXRLENS_DATA, else the embedded sample. Target: cxrlens / plain >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CONFIGS = [  # (label, environment, options)
    ("stock (glibc malloc, fp32)", {"CXRLENS_NO_MALLOPT": "1"}, {}),
    ("+ allocator fix", {}, {}),
    ("+ allocator + channels-last", {}, {"channels_last": True}),
    ("+ allocator + bf16 autocast", {}, {"bf16": True}),
]


def _loader(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from cxrlens.config import PreprocessConfig
    from cxrlens.data.cache import PreprocessCache
    from cxrlens.data.labels import choose_labels
    from cxrlens.data.sources import load_dataset
    from cxrlens.train.data import CachedImages, make_loader

    dataset = load_dataset([args.data])
    records = dataset.records[: args.batch * (args.steps + args.warmup)]
    space, _ = choose_labels([r.labels for r in dataset.records], "paper14", None, 0)
    cache = PreprocessCache(PreprocessConfig(size=args.size), args.cache)
    cache.prepare(records)
    return make_loader(CachedImages(records, space, cache), args.batch, shuffle_seed=0), space


def _plain(args: argparse.Namespace) -> float:
    """The hand-written loop: zero_grad, forward, BCE, backward, Adam step."""
    import torch
    import torch.nn.functional as F

    from cxrlens.models import create_model

    loader, space = _loader(args)
    torch.manual_seed(0)
    model = create_model(args.model, label_names=space.names).train()
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    aux_weight = model.spec.aux_weight
    start, seen = 0.0, 0
    for step, (x, y) in enumerate(loader):
        if step == args.warmup:
            start = time.perf_counter()
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            logits, aux = model.forward_train(x)
            loss = F.binary_cross_entropy_with_logits(logits.float(), y)
            if aux is not None:
                loss = loss + aux_weight * F.binary_cross_entropy_with_logits(aux.float(), y)
        loss.backward()
        opt.step()
        if step >= args.warmup:
            seen += len(x)
    return seen / (time.perf_counter() - start)


def _cxrlens(args: argparse.Namespace) -> float:
    """The same steps through cxrlens' Lightning module and trainer (no validation, no checkpoint)."""
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    from cxrlens.config import TrainConfig
    from cxrlens.models import create_model
    from cxrlens.train.module import CxrLitModule

    loader, space = _loader(args)
    L.seed_everything(0, verbose=False)
    model = create_model(args.model, label_names=space.names)
    module = CxrLitModule(model, TrainConfig(channels_last=args.channels_last))

    class Clock(Callback):
        start = 0.0
        seen = 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # type: ignore[no-untyped-def]
            if batch_idx == args.warmup:
                Clock.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # type: ignore[no-untyped-def]
            if batch_idx >= args.warmup:
                Clock.seen += len(batch[0])
                Clock.end = time.perf_counter()

    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        precision="bf16-mixed" if args.bf16 else "32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Clock()],
    )
    trainer.fit(module, loader)
    return Clock.seen / (Clock.end - Clock.start)  # type: ignore[attr-defined]


def child(args: argparse.Namespace) -> None:
    from cxrlens.cli.common import tune_allocator

    tune_allocator()  # a no-op when CXRLENS_NO_MALLOPT is set
    result = {"plain": _plain(args), "cxrlens": _cxrlens(args)}
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("CXRLENS_DATA") or "@sample")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8, help="timed steps after warm-up")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--only", type=int, default=None, help="run only this configuration index")
    parser.add_argument("--channels-last", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    print(f"{args.model}, {args.size} px, batch {args.batch}, {args.steps} timed steps, data {args.data}")
    print(f"{'configuration':<32} {'plain loop':>12} {'cxrlens':>12} {'ratio':>7}")
    baseline = None
    with tempfile.TemporaryDirectory() as cache:
        for i, (label, env, opts) in enumerate(CONFIGS):
            if args.only is not None and i != args.only:
                continue
            cmd = [sys.executable, __file__, "--child", "--cache", cache, "--data", args.data, "--model", args.model,
                   "--size", str(args.size), "--batch", str(args.batch), "--steps", str(args.steps),
                   "--warmup", str(args.warmup)]  # fmt: skip
            cmd += ["--channels-last"] if opts.get("channels_last") else []
            cmd += ["--bf16"] if opts.get("bf16") else []
            out = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            baseline = baseline or result["plain"]
            print(
                f"{label:<32} {result['plain']:>8.2f} im/s {result['cxrlens']:>8.2f} im/s "
                f"{result['cxrlens'] / result['plain']:>7.3f}   (x{result['cxrlens'] / baseline:.2f} vs stock plain)"
            )


if __name__ == "__main__":
    main()
