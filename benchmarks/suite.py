"""One benchmark suite: run every benchmark, write one document (``make bench`` -> ``docs/benchmarks.md``).

    python benchmarks/suite.py [--out docs/benchmarks.md] [--only NAME ...] [--quick] [--data DIR]
                               [--budget-minutes 28] [--list]

Each benchmark script runs as a subprocess with ``--markdown`` and its own arguments (the full ones, or with
``--quick`` a smoke run of seconds each); the suite times it, collects its markdown and writes the document
atomically after every benchmark: the machine (CPU, cores, memory, torch, GPU), the date, then per benchmark a
heading, the exact command, its tables and its targets ("holds" / "misses by X"). Target verdicts are read
from the tables: a row with a target like ``>= 20x`` gets its verdict from the row's result when the script did
not give one. A benchmark that fails or runs out of time is reported in the document (exit code, stderr tail,
whatever it printed) and the suite goes on.

Timing noise: how much CPU other processes used during each benchmark (``/proc/stat`` minus the benchmark's
own CPU time) is written next to it and to every missed target. Run it on a quiet machine.

The full suite is budgeted to finish within 30 minutes on a 2-core CPU: every benchmark has a time limit and
the whole suite ``--budget-minutes`` (a benchmark that would start after the budget is reported as not run).
Default data: $CXRLENS_DATA, else the embedded sample (passed to the benchmarks that read data).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "benchmarks"


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: str
    title: str
    targets: tuple[str, ...]
    full: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()
    limit_s: float = 600.0  # time limit in the full mode
    note: str = ""  # why the full mode's arguments are what they are
    reads_data: bool = False


def _args(text: str) -> tuple[str, ...]:
    return tuple(text.split())


BENCHMARKS = [
    Benchmark(
        "gpu-smoke",
        "gpu_smoke.py",
        "The demo study on one GPU",
        ("completes on a GPU; time and peak GPU memory of each step",),
        limit_s=900,
        note="Runs only where torch sees a CUDA device; elsewhere it says so in one line and does nothing.",
    ),
    Benchmark(
        "cache",
        "cache_throughput.py",
        "Preprocessed-image cache: cached read vs decode + preprocess, parallel preparation",
        ("cached read >= 20x decode + preprocess", "parallel preparation >= 1.7x on 2 cores"),
        quick=_args("--images 16 --repeats 1"),
        limit_s=300,
        reads_data=True,
        note="The targets are for 512 px X-rays: on the embedded sample (51 small downscaled JPEGs) decoding is "
        "cheap and each worker has little to do, so both ratios come out lower; set CXRLENS_DATA (or --data) to "
        "measure on real X-rays.",
    ),
    Benchmark(
        "predict",
        "predict_throughput.py",
        "Predict: cxrlens.predict vs the bare forward, and peak memory vs image count",
        ("predict >= 0.9x the bare batched forward", "peak memory flat from 100 to 5,000 images"),
        quick=_args("--images 8 --repeats 1 --size 128 --memory-size 128 --memory-counts 20 100"),
        limit_s=600,
        reads_data=True,
        note="The memory part runs at 256 px (stated in its table) so that 5,000 images take about two minutes.",
    ),
    Benchmark(
        "forward-peak",
        "forward_peak.py",
        "Forward throughput of the five backbones vs the machine's convolution peak",
        ("fp32 inference >= 80 % of the measured fp32 convolution peak, each backbone",),
        full=_args("--bf16"),
        quick=_args("--models resnet18 --size 128 --rounds 1 --seconds 0.2"),
        limit_s=420,
    ),
    Benchmark(
        "train",
        "train_throughput.py",
        "Training: cxrlens vs a plain PyTorch loop",
        ("cxrlens >= 0.95x the plain loop in every configuration", "default recipe >= 3x the paper's fp32 loop"),
        quick=_args("--only 1 --steps 1 --warmup 1 --batch 2 --size 128"),
        limit_s=720,
        reads_data=True,
    ),
    Benchmark(
        "explain-speedup",
        "explain_cost.py",
        "Occlusion for 14 labels: cxrlens vs captum's per-label loop",
        ("cxrlens >= 10x captum's per-label loop",),
        full=_args("--skip-costs --speedup-window 64 --speedup-stride 64"),
        quick=_args("--skip-costs --size 128 --speedup-window 32 --speedup-stride 32"),
        limit_s=420,
        note="Window 64, stride 64 (65 passes per label; the script's default stride 32 needs 226): both sides "
        "do the same passes per label, so the ratio is set by the 14 labels, and this takes 2 minutes instead of 8.",
    ),
    Benchmark(
        "explain-cost",
        "explain_cost.py",
        "Every attribution method x backbone at 512 px: seconds and peak memory",
        ("every cell within the 8 GiB budget (layer conductance included: issue 10, item 4)",),
        full=_args(
            "--skip-speedup --max-passes 16 --max-steps 8 --methods layer_conductance internal_influence deeplift "
            "gradcam guided_gradcam saliency input_x_gradient guided_backprop occlusion feature_ablation "
            "shapley_value_sampling smoothgrad integrated_gradients"
        ),
        quick=_args("--skip-speedup --models resnet18 --methods saliency gradcam occlusion --size 128 --max-passes 8"),
        limit_s=1080,
        note="Perturbation methods are timed on 16 forward passes and step-based ones (integrated gradients, "
        "SmoothGrad, layer conductance, internal influence) on 8 steps (never fewer than two backward batches), "
        "each extrapolated per pass (`--max-passes 16 --max-steps 8`; the full defaults take about 20 minutes on "
        "2 cores, more than the suite's budget leaves); each cell in its own process (a fork of one that imported "
        "everything once), so peak memory is what one `cxrlens explain` of one image needs. Last in the suite: it "
        "gets the time that is left; if that runs out, the table holds the rows it finished (the memory-bound rows "
        "come first). docs/explain_cost.md has "
        "the table measured with the full defaults.",
    ),
]


# -- the machine -------------------------------------------------------------------------------------------------
def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    with contextlib.suppress(OSError), Path("/proc/cpuinfo").open(encoding="utf-8") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "flags") and key not in info:
                info[key] = value.strip()
    return info


def _meminfo_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError), Path("/proc/meminfo").open(encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    return None


def _torch_info() -> dict:
    code = (
        "import json, torch\n"
        "cuda = torch.cuda.is_available()\n"
        "print(json.dumps({'version': torch.__version__, 'threads': torch.get_num_threads(), 'cuda': cuda,\n"
        "  'gpus': [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],\n"
        "  'cuda_version': torch.version.cuda}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"error": (out.stderr.strip().splitlines() or ["torch not importable"])[-1]}


def _git() -> str:
    def git(*cmd: str) -> str:
        done = subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "not a git checkout"
    return commit + (" with uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def machine(data: str) -> list[tuple[str, str]]:
    cpu = _cpuinfo()
    flags = set(cpu.get("flags", "").split())
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    torch = _torch_info()
    if "error" in torch:
        torch_text, gpu = f"unknown ({torch['error']})", "unknown"
    else:
        torch_text = f"{torch['version']} ({torch['threads']} threads by default)"
        gpu = ", ".join(torch["gpus"]) + f" (CUDA {torch['cuda_version']})" if torch["cuda"] else "none (no CUDA)"
    ram = _meminfo_gib()
    cpu_name = cpu.get("model name") or platform.processor() or platform.machine()
    version = subprocess.run(
        [sys.executable, "-c", "import cxrlens; print(getattr(cxrlens, '__version__', '?'))"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    data_text = f"`{data}`" + (" ($CXRLENS_DATA)" if os.environ.get("CXRLENS_DATA") == data else "")
    return [
        ("CPU", f"{cpu_name} ({platform.machine()}; {', '.join(simd) or 'no AVX2'})"),
        ("cores", f"{usable} usable ({os.cpu_count()} online)"),
        ("memory", f"{ram:.1f} GiB" if ram else "unknown"),
        ("GPU", gpu),
        ("torch", torch_text),
        ("Python", f"{platform.python_version()} ({platform.system()} {platform.release()})"),
        ("cxrlens", f"{version or '?'}, git {_git()}"),
        ("data", data_text),
    ]


# -- CPU used by others ------------------------------------------------------------------------------------------
def _cpu_seconds_busy() -> float | None:
    """Busy CPU seconds of the whole machine since boot (all cores), from /proc/stat; steal counts as busy."""
    try:
        with Path("/proc/stat").open(encoding="utf-8") as handle:
            fields = [int(v) for v in handle.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- one benchmark -----------------------------------------------------------------------------------------------
@dataclass
class Result:
    bench: Benchmark
    command: list[str]
    seconds: float = 0.0
    returncode: int | None = None
    markdown: str = ""
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    skipped: str = ""  # why it did not run
    dropped: list[str] = field(default_factory=list)  # arguments this version of the script does not take
    others_cores: float | None = None  # cores used by other processes meanwhile, on average
    cpu_seconds: float = 0.0  # CPU time of the benchmark's processes


def help_flags(script: Path) -> dict[str, bool] | None:
    """The script's options (from ``--help``) -> whether each takes a value; None if --help failed."""
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        return None
    flags: dict[str, bool] = {}
    for match in re.finditer(r"^\s+(?:-\w, )?(--[\w-]+)(?:[ =]([A-Z][A-Z0-9_]*))?", done.stdout, re.MULTILINE):
        flags[match.group(1)] = match.group(2) is not None
    return flags


def _supported(argv: list[str], flags: dict[str, bool] | None) -> tuple[list[str], list[str]]:
    """``argv`` without the options (and their values) that the script does not take, and those dropped."""
    if flags is None:
        return argv, []
    kept: list[str] = []
    dropped: list[str] = []
    group: list[str] = []
    for token in [*argv, "--"]:
        if token.startswith("--"):
            if group:
                (kept if group[0] in flags else dropped).extend(group)
            group = [token]
        else:
            group.append(token)
    return kept, dropped


def _relative(path: str) -> str:
    """``path`` relative to the project when inside it (symlinks kept: the venv's python stays the venv's)."""
    relative = os.path.relpath(path, ROOT)
    return path if relative.startswith("..") else relative


def run_benchmark(bench: Benchmark, quick: bool, data: str, limit_s: float) -> Result:
    script = BENCH_DIR / bench.script
    flags = help_flags(script)
    argv, dropped = _supported(list(bench.quick if quick else bench.full), flags)
    if bench.reads_data and (flags is None or "--data" in flags):
        argv = ["--data", data, *argv]
    markdown_file = None
    if flags is None or flags.get("--markdown") is False:
        argv.append("--markdown")
    elif flags.get("--markdown"):  # an older script that writes its tables to a file
        markdown_file = Path(tempfile.mkstemp(prefix="cxrlens-bench-", suffix=".md")[1])
        argv += ["--markdown", str(markdown_file)]
    command = [sys.executable, str(script), *argv]
    shown = [_relative(sys.executable), str(script.relative_to(ROOT)), *argv]
    if markdown_file is not None:
        shown[-1] = "TABLES.md"
    result = Result(bench, shown, dropped=dropped)

    out: list[str] = []
    err: list[str] = []

    def pump(stream, sink: list[str], echo: bool) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            sink.append(line)
            if echo:
                print(f"    [{bench.name}] {line.rstrip()}", file=sys.stderr, flush=True)

    busy0, cpu0, start = _cpu_seconds_busy(), _children_cpu(), time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    readers = [
        threading.Thread(target=pump, args=(proc.stdout, out, False), daemon=True),
        threading.Thread(target=pump, args=(proc.stderr, err, True), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        proc.wait(timeout=max(1.0, limit_s))
    except subprocess.TimeoutExpired:
        result.timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the benchmark and its own children (started in its session)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for reader in readers:
        reader.join(timeout=10)
    result.seconds = time.perf_counter() - start
    busy1, cpu1 = _cpu_seconds_busy(), _children_cpu()
    result.cpu_seconds = cpu1 - cpu0
    if busy0 is not None and busy1 is not None and result.seconds > 0:
        result.others_cores = max(0.0, (busy1 - busy0) - (cpu1 - cpu0)) / result.seconds
    result.returncode = proc.returncode
    result.stdout, result.stderr = "".join(out), "".join(err)
    if markdown_file is not None:
        with contextlib.suppress(OSError):
            result.markdown = markdown_file.read_text(encoding="utf-8")
        markdown_file.unlink(missing_ok=True)
    if not result.markdown and (flags is None or "--markdown" in flags):
        result.markdown = result.stdout  # also what a stopped benchmark printed so far
    return result


# -- targets -----------------------------------------------------------------------------------------------------
_TARGET = re.compile(r"(?:>=|≥)\s*([0-9][0-9,]*(?:\.[0-9]+)?)\s*(x|%)")
_VALUE = re.compile(r"([0-9][0-9,]*(?:\.[0-9]+)?)\s*(x|%)")


def _unit(cell: str) -> str | None:
    match = _VALUE.search(cell.replace("*", ""))
    return match.group(2) if match else None


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def annotate(markdown: str, busy_note: str) -> tuple[str, list[tuple[str, str, str]]]:
    """The tables with a verdict in every target cell that lacks one, and (measure, result, target + verdict)
    of every row with a target."""
    lines = markdown.splitlines()
    found: list[tuple[str, str, str]] = []
    for i, line in enumerate(lines):
        if not line.lstrip().startswith("|") or set(line) <= set("|-: "):
            continue
        cells = _cells(line)
        target_at = next((j for j, c in enumerate(cells) if _TARGET.search(c)), None)
        if target_at is None:
            continue
        cell = cells[target_at]
        goal = _TARGET.search(cell)
        assert goal is not None
        threshold, unit = float(goal.group(1).replace(",", "")), goal.group(2)
        order = [*range(target_at - 1, -1, -1), *range(target_at + 1, len(cells))]  # nearest left cell first
        value_at = next((j for j in order if _unit(cells[j]) == unit), None)
        result = cells[value_at] if value_at is not None else ""
        if "holds" not in cell and "misses" not in cell and value_at is not None:
            value = float(_VALUE.search(result.replace("*", "")).group(1).replace(",", ""))  # type: ignore[union-attr]
            if value >= threshold:
                verdict = "holds"
            else:
                gap = f"{threshold - value:.3g}{'x' if unit == 'x' else ' points'}"
                verdict = f"misses by {gap}" + (f" ({busy_note})" if busy_note else "")
            cells[target_at] = f"{cell}: {verdict}"
            lines[i] = "| " + " | ".join(cells) + " |"
        elif "misses" in cell and busy_note and busy_note not in cell:
            cells[target_at] = f"{cell} ({busy_note})"
            lines[i] = "| " + " | ".join(cells) + " |"
        found.append((cells[0], result, cells[target_at]))
    return "\n".join(lines), found


# -- the document ------------------------------------------------------------------------------------------------
def _fence(text: str, lines: int = 40) -> str:
    tail = "\n".join(text.rstrip().splitlines()[-lines:])
    return f"```text\n{tail}\n```" if tail else "(nothing)"


def _busy_note(result: Result, cores: int) -> str:
    if result.others_cores is None or result.others_cores < 0.1:
        return ""
    return f"machine busy: other processes used {result.others_cores:.1f} of {cores} cores meanwhile"


def section(result: Result, cores: int) -> tuple[str, list[tuple[str, str, str, str]]]:
    bench = result.bench
    parts = [f"## {bench.title}", "", f"`{shlex.join(result.command)}`", ""]
    if result.skipped:
        parts += [f"Not run: {result.skipped}.", ""]
        return "\n".join(parts), []
    status = "finished" if result.returncode == 0 and not result.timed_out else "**failed**"
    if result.timed_out:
        status = f"**stopped at its time limit** ({result.seconds:.0f} s)"
    others = "" if result.others_cores is None else f"; other processes used {result.others_cores:.2f} cores meanwhile"
    cpu = f" ({result.cpu_seconds:.0f} s of CPU time)"
    parts += [f"Benchmark `{bench.name}`: {status} in {result.seconds:.0f} s{cpu}{others}.", ""]
    if result.dropped:
        parts += [f"This version of the script does not take `{' '.join(result.dropped)}`; ran without.", ""]
    if bench.note:
        parts += [bench.note, ""]
    busy = _busy_note(result, cores)
    summary: list[tuple[str, str, str, str]] = []
    ok = result.returncode == 0 and not result.timed_out
    if result.markdown.strip() and (ok or result.timed_out):
        tables, found = annotate(result.markdown.strip(), busy)
        parts += [tables, ""]
        summary = [(bench.name, *row) for row in found]
    elif ok:
        parts += [_fence(result.stdout, 200), ""]
    if not ok:
        if result.stdout.strip() and not result.timed_out:
            parts += ["What it printed:", "", _fence(result.stdout), ""]
        parts += [f"Exit code {result.returncode}; the end of its stderr:", "", _fence(result.stderr, 30), ""]
    if not summary:
        verdict = "see the table" if ok else "not measured (the benchmark did not finish)"
        summary = [(bench.name, target, "", verdict) for target in bench.targets]
    parts += ["Targets: " + "; ".join(bench.targets) + ".", ""]
    return "\n".join(parts), summary


def document(
    facts: list[tuple[str, str]], results: list[Result], started: dt.datetime, args: argparse.Namespace, done: bool
) -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    elapsed = (dt.datetime.now(dt.timezone.utc) - started).total_seconds()
    mode = "quick smoke run (`--quick`: tiny sizes, numbers not meaningful)" if args.quick else "full"
    head = [
        "# Benchmarks",
        "",
        f"Written by `{shlex.join(['python', 'benchmarks/suite.py', *sys.argv[1:]])}` (`make bench`) on "
        f"{started.astimezone().strftime('%Y-%m-%d %H:%M %Z')}; {mode} mode; "
        + (f"took {elapsed / 60:.1f} min." if done else f"**in progress** ({len(results)} benchmark(s) so far)."),
        "",
        "Every number is a side-by-side measurement on this machine by the script named above its table; "
        "timings are only comparable within one table. Where other processes used the CPU during a benchmark, "
        "its section says how much.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in facts],
        "",
    ]
    sections, summary = [], []
    for result in results:
        text, rows = section(result, cores)
        sections.append(text)
        summary += rows
    if summary:
        head += ["## Targets", "", "| benchmark | measure | result | target |", "|---|---|---:|---|"]
        head += [f"| {b} | {m} | {r} | {t} |" for b, m, r, t in summary]
        head += [""]
    return "\n".join(head + sections).rstrip() + "\n"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).chmod(0o644)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [b.name for b in BENCHMARKS]
    parser.add_argument("--out", default="docs/benchmarks.md", help="the document (written atomically)")
    parser.add_argument(
        "--only", nargs="+", action="extend", choices=names, metavar="NAME", help=f"run only these: {names}"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny sizes, seconds per benchmark")
    parser.add_argument("--data", default=os.environ.get("CXRLENS_DATA") or "@sample")
    parser.add_argument("--budget-minutes", type=float, default=28.0, help="the whole suite's time limit")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and their commands")
    args = parser.parse_args()

    chosen = [b for b in BENCHMARKS if not args.only or b.name in args.only]
    if args.list:
        for b in chosen:
            argv = b.quick if args.quick else b.full
            print(f"{b.name:<16} {shlex.join(['benchmarks/' + b.script, *argv, '--markdown'])}")
        return
    out = Path(args.out) if Path(args.out).is_absolute() else Path.cwd() / args.out
    started = dt.datetime.now(dt.timezone.utc)
    deadline = time.monotonic() + args.budget_minutes * 60
    facts = machine(args.data)
    results: list[Result] = []
    for bench in chosen:
        left = deadline - time.monotonic()
        limit = min(bench.limit_s, left)
        if limit < 30:
            result = Result(bench, [_relative(sys.executable), f"benchmarks/{bench.script}", *bench.full])
            result.skipped = f"the suite's budget of {args.budget_minutes:g} minutes was used up"
        else:
            print(f"[suite] {bench.name}: running (limit {limit / 60:.1f} min)", file=sys.stderr, flush=True)
            result = run_benchmark(bench, args.quick, args.data, limit)
            state = "timed out" if result.timed_out else f"exit {result.returncode}"
            print(f"[suite] {bench.name}: {state} after {result.seconds:.0f} s", file=sys.stderr, flush=True)
        results.append(result)
        write_atomic(out, document(facts, results, started, args, done=False))
    write_atomic(out, document(facts, results, started, args, done=True))
    total = (dt.datetime.now(dt.timezone.utc) - started).total_seconds()
    print(f"[suite] wrote {out} in {total / 60:.1f} min", file=sys.stderr)


if __name__ == "__main__":
    main()
