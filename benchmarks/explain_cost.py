"""Cost of every attribution method on every backbone at 512 px, and the all-labels speed-up.

    python benchmarks/explain_cost.py [--models resnet18 densenet161] [--methods ...] [--size 512]
                                      [--max-passes 64] [--max-steps 1000] [--markdown docs/explain_cost.md]

Part 1: for each backbone x method, seconds per image-label and peak memory (resident size of a process
running one image with cxrlens' defaults and the default 8 GiB budget). Each cell runs in a fork of a parent
that imported everything once (its peak counts the parent's library pages too: what a fresh process holds,
within ~0.05 GiB), or with ``--fresh-process`` in a new Python process (~4 s more per cell). Perturbation methods whose
default needs more than ``--max-passes`` forward passes are timed on that many passes and the time is
extrapolated per pass (marked "~"); their peak memory is measured at the real batch size. Likewise
step-based methods (integrated gradients, SmoothGrad's samples, layer conductance, internal influence) with
more than ``--max-steps`` steps are timed on about that many, in whole backward batches (at least two, so the
peak is a full batch's), and extrapolated per step: each step is one more forward and backward pass of the same
batch. Neither extrapolation scales what a run costs once (the SLIC segmentation, the first call's set-up).
Part 2 (side by side in one run): occlusion for 14 labels, cxrlens (one set of passes for all labels)
vs captum's per-label loop (``Occlusion.attribute`` once per label); both evaluate 4 images per pass.
Weights are random (timing does not depend on them); every run uses the allocator fix (reference §9).

Reference rows (only when named in ``--methods``): ``captum_layer_conductance`` is captum's own
``LayerConductance.attribute`` with ``internal_batch_size = max(2, grad batch)``, what cxrlens ran before
issue 10 (each pass holds two path points and overlaps the next by one), to compare peak memory side by side:

    python benchmarks/explain_cost.py --methods captum_layer_conductance layer_conductance --skip-speedup
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

PAPER_MODELS = ["resnet18", "resnet34", "inception_v3", "inception_resnet_v2", "densenet161"]
REFERENCES = {"captum_layer_conductance": "layer_conductance"}  # reference row -> the method it stands beside


def _sample_image(size: int):  # type: ignore[no-untyped-def]
    """The first image of the embedded sample, preprocessed as the paper does (superpixels need a real X-ray)."""
    import torch

    from cxrlens.config import PreprocessConfig
    from cxrlens.data.preprocess import preprocess_file
    from cxrlens.data.sources import load_dataset

    record = load_dataset(["@sample"]).records[0]
    return torch.from_numpy(preprocess_file(record.path, PreprocessConfig(size=size)))[None, None]


def _superpixel_passes(params, x) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    """Forward passes of feature ablation / Shapley sampling for the SLIC features of ``x``, and the seconds the
    segmentation takes (a cost of every run, not of each pass)."""
    from cxrlens.attribution.segmentation import superpixels

    start = time.perf_counter()
    features = int(superpixels(x[0, 0].numpy(), params.segments, params.compactness).max()) + 1
    return getattr(params, "n_samples", 1) * features + 1, time.perf_counter() - start


STEP_FIELDS = ("nt_samples", "n_steps")  # what sets the passes of a step-based method (SmoothGrad: its samples)


def _fewer_steps(method, params, size: int, max_steps: int, batch: int):  # type: ignore[no-untyped-def]
    """Parameters with about ``max_steps`` steps, rounded up to whole batches of ``batch`` and never fewer than
    two (so peak memory is a full batch's), and the factor that scales their time to the default's; (params, 1.0)
    if the default is no more."""
    full = method.cost(params, size)["backward"]
    fewer = -(-max(max_steps, 2 * batch) // batch) * batch  # whole batches: a partial one costs as much as a full
    for name in STEP_FIELDS:
        if name in type(params).model_fields and getattr(params, name) > fewer:
            reduced = method.parse({**params.model_dump(), name: fewer})
            if method.cost(reduced, size)["backward"] < full:
                return reduced, full / method.cost(reduced, size)["backward"]
    return params, 1.0


def child_cost(model_name: str, method_name: str, size: int, max_passes: int, max_steps: int) -> dict:
    import torch

    from cxrlens.attribution.methods import Context, get_method
    from cxrlens.attribution.prepare import prepare_model
    from cxrlens.models import create_model
    from cxrlens.models.footprint import GIB, measure

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = prepare_model(create_model(model_name, num_labels=14).eval())
    method = get_method(REFERENCES.get(method_name, method_name))
    params = method.parse()
    cost = method.cost(params, size)
    full_passes = cost["forward"] + cost["backward"]
    labels = 14 if not method.per_label_cost else 1
    x = _sample_image(size)
    footprint = measure(model, size)
    context = Context(model, footprint, 8 * GIB, layer_name=model.gradcam_layer_name)
    scale = 1.0
    fixed = (0.0, 0.0)  # seconds of the timed run and of the full run that do not scale with the passes
    if method.family == "perturbation" and cost["forward"] > max_passes:
        if method_name == "occlusion":
            window = max(1, size // 16)
            stride = window  # fewer positions, same batch and per-pass work
            while (size // stride) ** 2 > max_passes:
                stride *= 2
            params = method.parse({"window": max(window, stride), "stride": stride})
            scale = cost["forward"] / method.cost(params, size)["forward"]
        else:  # superpixels: scale the passes by the image's real feature counts, not the segmentation
            full, segment_full = _superpixel_passes(params, x)
            params = method.parse({"segments": max_passes, "n_samples": 1} if "n_samples" in params.model_fields
                                  else {"segments": max_passes})  # fmt: skip
            reduced, segment_reduced = _superpixel_passes(params, x)
            scale, fixed = full / reduced, (segment_reduced, segment_full)
        full_passes = cost["backward"] + (cost["forward"] if method_name == "occlusion" else full)
    elif method.family != "perturbation" and cost["backward"] > max_steps:
        params, scale = _fewer_steps(method, params, size, max_steps, context.grad_batch())
    # first-call set-up (kernels for the batch shape the method uses) is not timed, nor larger than the method
    stepped = any(name in type(params).model_fields for name in STEP_FIELDS)
    batch = context.no_grad_batch() if method.family == "perturbation" else context.grad_batch() if stepped else 1
    warm = x.repeat(batch, 1, 1, 1)
    warm.requires_grad_(method.family != "perturbation")
    model(warm).sum().backward() if warm.requires_grad else model(warm)
    start = time.perf_counter()
    if method_name == "captum_layer_conductance":
        from captum.attr import LayerConductance

        layer = context.layer(model, params, method_name)
        LayerConductance(model, layer).attribute(
            x, baselines=params.baseline, target=0, n_steps=params.n_steps,
            internal_batch_size=max(2, context.grad_batch()),
        )  # fmt: skip
    else:
        method.run(context, params, x, list(range(labels)))
    seconds = (time.perf_counter() - start - fixed[0]) * scale + fixed[1]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB
    return {
        "model": model_name,
        "method": method_name,
        "seconds_per_image_label": seconds / labels,
        "seconds_per_image_all_labels": seconds if labels > 1 else None,
        "peak_gib": peak,
        "passes": full_passes,
        "extrapolated": scale != 1.0,
    }


def child_speedup(model_name: str, size: int, window: int, stride: int, labels: int) -> dict:
    import torch
    from captum.attr import Occlusion

    from cxrlens.attribution.perturbation import occlusion, occlusion_passes
    from cxrlens.models import create_model

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = create_model(model_name, num_labels=14).eval()
    x = torch.rand(1, 1, size, size)
    targets = list(range(labels))
    start = time.perf_counter()
    ours = occlusion(model, x, targets, (window, window), (stride, stride), batch=4)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    reference = []
    with torch.no_grad():
        for target in targets:
            reference.append(
                Occlusion(model).attribute(
                    x, sliding_window_shapes=(1, window, window), strides=(1, stride, stride), target=target,
                    perturbations_per_eval=4,
                )[0, 0]
            )  # fmt: skip
    captum_s = time.perf_counter() - start
    same = bool(torch.allclose(ours, torch.stack(reference), atol=1e-4, rtol=1e-3))
    passes = occlusion_passes((size, size), (window, window), (stride, stride))
    return {"ours_s": ours_s, "captum_s": captum_s, "same": same, "passes": passes, "labels": labels}


def _status_gib(field: str) -> float:
    """A field of /proc/self/status (``RssFile``: the resident pages of mapped files, mostly libraries) in GiB."""
    with Path("/proc/self/status").open(encoding="ascii") as handle:
        for line in handle:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024**2
    raise RuntimeError(f"/proc/self/status has no {field}")


def _preload() -> None:
    """What every cell imports, once in the parent (a forked cell starts with it, saving ~4 s of imports each);
    no torch operation runs here, so the children start with no thread pool to inherit."""
    import captum.attr  # noqa: F401

    from cxrlens.attribution import methods, prepare  # noqa: F401
    from cxrlens.data import preprocess, sources  # noqa: F401
    from cxrlens.models import create_model, footprint  # noqa: F401


def _forked_cost(cell: list[str]) -> dict:
    """:func:`child_cost` of one cell in a forked child of this (preloaded) process.

    Its peak memory is the child's own peak resident size plus the library pages the parent had loaded and the
    child did not touch (a child starts with the parent's heap but not its file pages): the peak a fresh process
    would have, overcounting by the library pages both touched (~0.05 GiB on this machine).
    """
    parent_files = _status_gib("RssFile")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one cell, its JSON on the pipe, then gone (never back into the parent's code)
        status = 1
        try:
            os.close(read_end)
            untouched = parent_files - _status_gib("RssFile")
            result = child_cost(cell[0], cell[1], int(cell[2]), int(cell[3]), int(cell[4]))
            result["peak_gib"] += untouched
            text = json.dumps(result)
            status = 0
        except Exception as err:  # noqa: BLE001  # not swallowed: the cell's table cell says why it failed
            text = json.dumps({"error": f"{type(err).__name__}: {err}"})
        finally:
            with os.fdopen(write_end, "w", encoding="utf-8") as out:
                out.write(text)
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, encoding="utf-8") as inp:
        text = inp.read()
    _, wait_status = os.waitpid(pid, 0)
    if not text:  # killed (out of memory?) before it could write
        return {"error": f"the cell's process ended with status {os.waitstatus_to_exitcode(wait_status)}"}
    return json.loads(text)


def _run_child(args: list[str]) -> dict:
    env = dict(os.environ)
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=PAPER_MODELS)
    parser.add_argument("--methods", nargs="+", default=None)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--max-passes", type=int, default=64)
    parser.add_argument(
        "--max-steps",
        type=int,
        default=1000,
        help="time step-based methods (integrated "
        "gradients, SmoothGrad, layer conductance, ...) on this many steps and extrapolate",
    )
    parser.add_argument("--skip-costs", action="store_true")
    parser.add_argument("--skip-speedup", action="store_true")
    parser.add_argument("--speedup-model", default="resnet18")
    parser.add_argument("--speedup-window", type=int, default=64)
    parser.add_argument("--speedup-stride", type=int, default=32)
    parser.add_argument("--markdown", default=None, help="also write the tables to this file")
    parser.add_argument(
        "--fresh-process",
        action="store_true",
        help="run each cell in a fresh Python process (exact peak memory of a process, ~4 s more per cell) "
        "instead of a fork of a parent that imported everything once",
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        from cxrlens.cli.common import tune_allocator

        tune_allocator()
        kind, *rest = args.child
        if kind == "cost":
            print(json.dumps(child_cost(rest[0], rest[1], int(rest[2]), int(rest[3]), int(rest[4]))))
        else:
            print(json.dumps(child_speedup(rest[0], int(rest[1]), int(rest[2]), int(rest[3]), int(rest[4]))))
        return

    from cxrlens.attribution.methods import method_names

    methods = args.methods or method_names()
    if not args.skip_costs and not args.fresh_process:
        if not hasattr(os, "fork") or not Path("/proc/self/status").exists():
            parser.error("forked cells need Linux (fork, /proc); pass --fresh-process")
        from cxrlens.cli.common import tune_allocator

        tune_allocator()  # inherited by every forked cell
        _preload()
    lines = []
    if not args.skip_costs:
        lines += [
            f"### Seconds per image-label and peak memory, {args.size} px, 2 CPU cores, budget 8 GiB",
            "",
            "| method | " + " | ".join(args.models) + " |",
            "|---|" + "---|" * len(args.models),
        ]
        print("\n".join(lines), flush=True)
        largest: tuple[float, str] | None = None  # peak GiB, where (cxrlens' methods, not the reference rows)
        errors = 0
        for method in methods:
            cells = []
            for model in args.models:
                cell = [model, method, str(args.size), str(args.max_passes), str(args.max_steps)]
                r = _run_child(["--child", "cost", *cell]) if args.fresh_process else _forked_cost(cell)
                if "error" in r:
                    cells.append(f"error: {r['error'][:60]}")
                    errors += 1
                else:
                    if method not in REFERENCES and (largest is None or r["peak_gib"] > largest[0]):
                        largest = (r["peak_gib"], f"{model} {method}")
                    mark = "~" if r["extrapolated"] else ""
                    cells.append(f"{mark}{r['seconds_per_image_label']:.2f} s, {r['peak_gib']:.1f} GiB")
            row = f"| {method} | " + " | ".join(cells) + " |"
            lines.append(row)
            print(row, flush=True)
        steps = (
            f"; step-based methods (integrated gradients, SmoothGrad's samples, layer conductance, internal "
            f"influence) per step from a run of at most {args.max_steps} steps, never fewer than two "
            "backward batches, so peak memory is a full batch's"
            if args.max_steps < 1000
            else ""
        )
        lines += ["", "~ extrapolated per forward pass from a run of at most "
                  f"{args.max_passes} passes{steps}; perturbation methods serve all 14 labels with one set of "
                  "passes, so their per-image-label time is the all-labels time / 14. Superpixel methods are "
                  "timed on the first image of the embedded sample.", ""]  # fmt: skip
        if largest is not None:
            budget = f"{largest[0]:.1f} GiB, {largest[1]}"
            lines += [
                "| measure | result | target |",
                "|---|---:|---|",
                f"| 8 GiB budget / the largest peak of a cell ({budget}) | {8 / largest[0]:.2f}x | >= 1x |",
                f"| cells that failed or were refused | {errors} | |",
                "",
            ]
            print("\n" + "\n".join(lines[-5:]), flush=True)
    if not args.skip_speedup:
        r = _run_child(["--child", "speedup", args.speedup_model, str(args.size), str(args.speedup_window),
                        str(args.speedup_stride), "14"])  # fmt: skip
        speed = [
            f"### All labels at once: occlusion, 14 labels, {args.speedup_model}, {args.size} px, "
            f"window {args.speedup_window}, stride {args.speedup_stride}",
            "",
            "| | seconds | forward passes |",
            "|---|---:|---:|",
        ]
        if "error" in r:
            speed.append(f"| error | {r['error']} | |")
        else:
            speed += [
                f"| captum, one call per label | {r['captum_s']:.1f} | {(r['passes'] + 1) * r['labels']} |",
                f"| cxrlens, all labels from the same passes | {r['ours_s']:.1f} | {r['passes'] + 1} |",
                f"| speed-up | **{r['captum_s'] / r['ours_s']:.1f}x** | maps equal: {r['same']} |",
            ]
        print("\n".join(["", *speed]))
        lines += speed
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
