"""Forward throughput of the paper's five backbones as a share of this machine's measured convolution peak.

    python benchmarks/forward_peak.py [--models resnet18 ...] [--size 512] [--batch N] [--seconds 2]
                                      [--rounds 3] [--bf16] [--markdown]

1. The peak: a large 3x3 convolution (stride 1, padding 1, no autograd) at several shapes typical of the
   backbones' stages, in NCHW and channels-last, fp32 and bf16 (weights and input in bf16, no autocast);
   the best achieved FLOP/s of each dtype is the machine's peak.
2. Each backbone (``create_model(name, num_labels=14)``, eval mode, random weights, grey input
   ``[B, 1, size, size]``): fp32 images/s without autograd, its FLOPs per image counted with
   ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add, convolutions and matrix products only),
   the achieved GFLOP/s and their share of the fp32 peak. Target: >= 80 % in fp32.
   ``--bf16`` adds bf16 autocast images/s and their share of the bf16 peak.

Batch size: the one ``cxrlens predict`` uses for the model (the memory-budget rule of
``cxrlens.run.stream.batch_size_for`` at 4 GiB), unless ``--batch`` is given. Measurements alternate between
the peak and the models over ``--rounds`` rounds and each keeps its best (other work on the machine only
slows runs down). The allocator setting of cxrlens is applied before any tensor exists; the torch thread
count is left at its default.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

from cxrlens.cli.common import tune_allocator

tune_allocator()  # before any tensor is made (what the CLI entry point does)

import torch  # noqa: E402

PAPER_MODELS = ["resnet18", "resnet34", "inception_v3", "inception_resnet_v2", "densenet161"]
# (batch, channels, side) of a 3x3 convolution: the stages of the backbones at 512 px
CONV_SHAPES = [(4, 64, 128), (8, 128, 64), (8, 256, 32), (16, 512, 16), (4, 192, 64)]
TARGET_SHARE = 0.80


def _timed(fn, seconds: float, min_calls: int = 2) -> float:  # type: ignore[no-untyped-def]
    """Seconds per call of ``fn`` (after one untimed call), over at least ``seconds`` and ``min_calls``."""
    fn()
    calls = 0
    start = time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if calls >= min_calls and elapsed >= seconds:
            return elapsed / calls


def conv_peak(dtype: torch.dtype, seconds: float) -> tuple[float, str]:
    """Best FLOP/s of a 3x3 convolution over ``CONV_SHAPES`` x memory formats, and the shape that reached it."""
    best, where = 0.0, ""
    with torch.no_grad():
        for batch, channels, side in CONV_SHAPES:
            flops = 2 * batch * channels * channels * 9 * side * side
            for layout in (torch.contiguous_format, torch.channels_last):
                conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(dtype=dtype)
                conv = conv.to(memory_format=layout)
                x = torch.randn(batch, channels, side, side, dtype=dtype).contiguous(memory_format=layout)
                rate = flops / _timed(lambda conv=conv, x=x: conv(x), seconds / len(CONV_SHAPES) / 2)
                if rate > best:
                    fmt = "channels-last" if layout is torch.channels_last else "NCHW"
                    best, where = rate, f"{batch}x{channels}x{side}x{side}, {channels} filters, {fmt}"
    return best, where


def flops_per_image(model: torch.nn.Module, size: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 1, size, size))
    return int(counter.get_total_flops())


def images_per_second(model: torch.nn.Module, x: torch.Tensor, seconds: float, bf16: bool = False) -> float:
    def step() -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(x)

    return len(x) / _timed(step, seconds)


def cpu_model() -> str:
    try:
        with Path("/proc/cpuinfo").open(encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=PAPER_MODELS)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=None, help="images per forward (default: predict's batch)")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per model and per peak, per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; each measurement keeps its best")
    parser.add_argument("--bf16", action="store_true", help="also time bf16 autocast inference")
    parser.add_argument("--markdown", action="store_true", help="print the results as markdown tables")
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    from cxrlens.models.registry import create_model
    from cxrlens.run.stream import batch_size_for

    torch.manual_seed(0)
    models = {name: create_model(name, num_labels=14).eval() for name in args.models}
    batches = {
        name: args.batch or batch_size_for([model], args.size, 4.0) for name, model in models.items()
    }  # fmt: skip
    flops = {name: flops_per_image(model, args.size) for name, model in models.items()}
    inputs = {name: torch.rand(batches[name], 1, args.size, args.size) for name in models}
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    peak = dict.fromkeys(dtypes, (0.0, ""))
    fp32 = dict.fromkeys(models, 0.0)
    bf16 = dict.fromkeys(models, 0.0)
    for round_ in range(args.rounds):
        for key, dtype in dtypes.items():
            rate, where = conv_peak(dtype, args.seconds)
            if rate > peak[key][0]:
                peak[key] = (rate, where)
        for name, model in models.items():
            fp32[name] = max(fp32[name], images_per_second(model, inputs[name], args.seconds))
            if args.bf16:
                bf16[name] = max(bf16[name], images_per_second(model, inputs[name], args.seconds, bf16=True))
        print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    peak32, peak16 = peak["fp32"][0], peak["bf16"][0]
    rows = []
    for name in models:
        achieved = fp32[name] * flops[name]
        row = {
            "model": name,
            "batch": batches[name],
            "gflop": flops[name] / 1e9,
            "fp32_ips": fp32[name],
            "fp32_gflops": achieved / 1e9,
            "fp32_share": achieved / peak32,
            "bf16_ips": bf16[name],
            "bf16_share": bf16[name] * flops[name] / peak16 if args.bf16 else 0.0,
        }
        rows.append(row)

    threads = torch.get_num_threads()
    title = (
        f"{args.size} px, random weights, no autograd, {threads} torch threads, {os.cpu_count()} CPUs, "
        f"best of {args.rounds} rounds of >= {args.seconds:g} s"
    )
    if not args.markdown:
        print(cpu_model(), "-", title)
        for key in dtypes:
            print(f"conv peak {key}: {peak[key][0] / 1e9:.0f} GFLOP/s ({peak[key][1]})")
        for r in rows:
            extra = f"  bf16 {r['bf16_ips']:.2f} im/s ({r['bf16_share']:.0%})" if args.bf16 else ""
            print(
                f"{r['model']:<22} batch {r['batch']:>2}  {r['gflop']:6.1f} GFLOP/image  {r['fp32_ips']:6.2f} im/s  "
                f"{r['fp32_gflops']:6.0f} GFLOP/s  {r['fp32_share']:5.0%} of fp32 peak{extra}"
            )
        return

    print(f"### Convolution peak ({title})\n")
    print("| dtype | peak GFLOP/s | best shape (input, filters 3x3, layout) |")
    print("|---|---:|---|")
    for key in dtypes:
        print(f"| {key} | {peak[key][0] / 1e9:.0f} | {peak[key][1]} |")
    print(f"\n### Backbone forward throughput vs the convolution peak ({title})\n")
    bf16_head = " bf16 autocast images/s | share of bf16 peak |" if args.bf16 else ""
    bf16_rule = "---:|---:|" if args.bf16 else ""
    print(f"| model | batch | GFLOP/image | fp32 images/s | fp32 GFLOP/s | share of fp32 peak | target |{bf16_head}")
    print(f"|---|---:|---:|---:|---:|---:|---|{bf16_rule}")
    for r in rows:
        gap = (TARGET_SHARE - r["fp32_share"]) * 100
        verdict = "holds" if gap <= 0 else f"misses by {gap:.0f} points"
        extra = f" {r['bf16_ips']:.2f} | {r['bf16_share']:.0%} |" if args.bf16 else ""
        print(
            f"| {r['model']} | {r['batch']} | {r['gflop']:.1f} | {r['fp32_ips']:.2f} | {r['fp32_gflops']:.0f} | "
            f"**{r['fp32_share']:.0%}** | >= 80 %: {verdict} |{extra}"
        )
    print(
        "\nGFLOP counts convolutions and matrix products only (2 per multiply-add; batch norm, activations and "
        "pooling are not counted but do take time). A share below the target is what the model's layers reach "
        "against the best single large convolution: depthwise-thin layers (DenseNet's 1x1 bottlenecks with few "
        "filters, concatenations) and memory-bound layers run below the compute peak."
    )


if __name__ == "__main__":
    main()
