"""GPU smoke run: the whole demo study (``make demo``'s commands) on one GPU, each step's time and peak GPU memory.

    python benchmarks/gpu_smoke.py [--config configs/demo.yaml] [--gpu 0] [--out DIR] [--markdown]
                                   [--accelerator cpu]

Runs ``cxrlens`` subcommands as subprocesses, in ``make demo``'s order plus ``predict``, with every stage that
runs models on the GPU (``--set train.accelerator=gpu explain.accelerator=gpu xai.accelerator=gpu
nap.accelerator=gpu predict.accelerator=gpu``, ``train.devices=1``) and ``CUDA_VISIBLE_DEVICES`` set to the one
chosen GPU. The stages that only read files (data summary and split, evaluate, audit, report) run as they
always do; evaluate-external scores on the CPU (it has no accelerator setting).

Peak GPU memory: ``torch.cuda.max_memory_allocated`` cannot see subprocesses, so a thread samples
``nvidia-smi --query-gpu=memory.used`` every 0.1 s; each step's peak is reported above the memory used before
the first step (other processes on the GPU count too; a step shorter than the sampling interval may show 0).

Without a CUDA device (``torch.cuda.is_available()`` is False, as on the 2-core development machine) it prints
one line saying so and exits with code 0: there is nothing to do. A failing step stops the run with its
stderr and exit code 1. ``--accelerator cpu`` runs the same commands on the CPU (a check of the sequence
where there is no GPU; minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GPU_KEYS = ["train.accelerator", "explain.accelerator", "xai.accelerator", "nap.accelerator", "predict.accelerator"]


def cuda_device() -> str | None:
    """The CUDA device's name, or None when torch sees none (in a subprocess: this process stays torch-free)."""
    code = "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    name = out.stdout.strip()
    return name or None


class GpuMemory:
    """Samples ``nvidia-smi``'s used memory of one GPU (MiB) in a thread; ``peak()`` since the last ``reset()``."""

    def __init__(self, gpu: str, interval: float = 0.1, available: bool = True) -> None:
        self.gpu = gpu
        self.interval = interval
        self.available = available and shutil.which("nvidia-smi") is not None
        self._peak = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def read(self) -> float | None:
        if not self.available:
            return None
        cmd = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", self.gpu]
        out = subprocess.run(cmd, capture_output=True, text=True)
        try:
            return float(out.stdout.strip().splitlines()[0])
        except (IndexError, ValueError):
            return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            used = self.read()
            if used is not None:
                with self._lock:
                    self._peak = max(self._peak, used)
            self._stop.wait(self.interval)

    def start(self) -> None:
        if self.available:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def reset(self) -> None:
        with self._lock:
            self._peak = 0.0

    def peak(self) -> float | None:
        if not self.available:
            return None
        time.sleep(self.interval * 2)  # one more sample after the step ended
        with self._lock:
            return self._peak


def steps(config: str, out: Path, accelerator: str = "gpu") -> list[tuple[str, list[str]]]:
    """``make demo``'s commands (+ predict), with every accelerator on the GPU."""
    paths = {"run": out / "run", "splits": out / "splits.csv", "external": out / "external", "cache": out / "cache"}
    gpu = [arg for key in GPU_KEYS for arg in ("--set", f"{key}={accelerator}")] + ["--set", "train.devices='1'"]

    def cli(text: str, on_gpu: bool = False) -> list[str]:  # {name} tokens become paths (split first: spaces safe)
        return [token.format(config=config, out=out, **paths) for token in text.split()] + (gpu if on_gpu else [])

    return [
        ("data summary", cli("data summary --data @sample")),
        (
            "data split",
            cli(
                "data split --data @sample --folds 3 --seed 0 --out {splits} --external-fraction 0.2 "
                "--external-out {external}"
            ),
        ),
        ("cv (train)", cli("cv --config {config} --run {run} --splits {splits} --cache {cache}", on_gpu=True)),
        ("evaluate", cli("evaluate --run {run}")),
        ("evaluate-external", cli("evaluate-external --run {run} --data {external} --name sample-holdout")),
        ("audit", cli("audit --run {run}")),
        ("explain", cli("explain --run {run}", on_gpu=True)),
        (
            "evaluate-explanations",
            cli("evaluate-explanations --run {run} --steps 10 --sanity-images 1 --stability-images 1", on_gpu=True),
        ),
        ("nap", cli("nap --run {run} --model resnet18", on_gpu=True)),
        ("predict", cli("predict --run {run} --data {external} --out {out}/predict.csv", on_gpu=True)),
        ("report", cli("report --run {run}")),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    parser.add_argument("--gpu", default=None, help="GPU index or UUID (default: the first visible one)")
    parser.add_argument("--out", default=None, help="keep the study here (default: a temporary folder)")
    parser.add_argument("--markdown", action="store_true", help="print the results as a markdown table")
    parser.add_argument("--accelerator", choices=["gpu", "cpu"], default="gpu", help="cpu: check the sequence")
    args = parser.parse_args()

    on_gpu = args.accelerator == "gpu"
    name = cuda_device() if on_gpu else "CPU (--accelerator cpu)"
    if name is None:
        print("gpu_smoke: no CUDA device here (torch.cuda.is_available() is False); nothing to do.")
        return

    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    gpu = args.gpu or (visible.split(",")[0].strip() if visible else "0")
    # one GPU, numbered as nvidia-smi numbers them
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"} if on_gpu else None
    memory = GpuMemory(gpu, available=on_gpu)
    baseline = memory.read()
    memory.start()
    results: list[tuple[str, str, float, float | None]] = []
    failed = None
    with tempfile.TemporaryDirectory(prefix="cxrlens-gpu-smoke-") as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        for label, cli in steps(args.config, out, args.accelerator):
            cmd = [sys.executable, "-m", "cxrlens", *cli]
            memory.reset()
            start = time.perf_counter()
            done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            peak = memory.peak()
            used = None if peak is None or baseline is None else max(0.0, peak - baseline)
            shown = shlex.join(["cxrlens", *cli]).replace(str(out), "OUT").replace(f"{ROOT}/", "")
            results.append((label, shown, seconds, used))
            print(f"{label}: {seconds:.1f} s" + ("" if used is None else f", {used:.0f} MiB GPU"), file=sys.stderr)
            if done.returncode != 0:
                failed = (label, done.returncode, done.stderr.strip()[-3000:])
                break
    memory.stop()

    total = sum(r[2] for r in results)
    mib = lambda v: "n/a" if v is None else f"{v:,.0f} MiB"  # noqa: E731
    if args.markdown:
        print(f"### Demo study on one GPU ({name}, GPU {gpu}; OUT is a temporary folder)\n")
        print("| step | command | seconds | peak GPU memory (above the start) |")
        print("|---|---|---:|---:|")
        for label, cmd, seconds, used in results:
            print(f"| {label} | `{cmd}` | {seconds:.1f} | {mib(used)} |")
        print(f"| total | | {total:.1f} | |")
        if baseline is not None:
            print(f"\nGPU memory used before the first step: {baseline:,.0f} MiB.")
    else:
        print(f"{name} (GPU {gpu}), {args.config}")
        for label, _cmd, seconds, used in results:
            print(f"{label:<24} {seconds:8.1f} s  {mib(used):>12}")
        print(f"{'total':<24} {total:8.1f} s")
    if failed:
        label, code, stderr = failed
        print(f"\nstep {label!r} failed (exit {code}):\n{stderr}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
