"""The tiny runs the report tests build (once per test module, see conftest.py), and their hostile names."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

from cxrlens.config import ReportConfig, RunConfig, load_run_config
from cxrlens.evaluate import evaluate_run, write_evaluation
from cxrlens.explain.runner import run_explain
from cxrlens.fileio import read_json, write_json
from cxrlens.nap.runner import run_nap
from cxrlens.report.builder import build_report
from cxrlens.run import Run, create_run, open_run
from cxrlens.train.runner import run_cv
from tests.conftest import save_png, write_csv, xray_like
from tests.report.trust_data import write_audit, write_external

EXPLAIN_PARAMS = {"occlusion": {"window": 12, "stride": 12}}
EVIL_FILE = "images/<script>alert(1)</script>.png"
EVIL_FINDING = "<b>\"odd\" & 'quoted'"
EVIL_PATIENT = 'p<b>"7"</b>'


def tiny_config(root: Path, **extra: object) -> RunConfig:
    """The tiny model on the embedded sample at 48 px, fold 0 of a 3-fold split, one epoch."""
    overrides = {
        "data.sources": ["@sample"],
        "data.preprocess.size": 48,
        "data.cache_dir": str(root / "cache"),
        "models.names": ["tiny"],
        "train.epochs": 1,
        "train.batch_size": 8,
        "train.patience": 0,
        "cv.split.folds": 3,
        "cv.folds": [0],
        "evaluate.min_support": 1,
        **extra,
    }
    return load_run_config(None, overrides)


def report(run: Run | Path, out: Path | None = None, max_side: int = 256) -> Path:
    opened = run if isinstance(run, Run) else open_run(run)
    return build_report(opened, ReportConfig(out=None if out is None else str(out), max_side=max_side))


def add_second_model(run: Run) -> None:
    """A second (fake) model's predictions, so the evaluation has ensembles to compare."""
    path = run.layout.predictions
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        rows = list(reader)
    labels = list(run.label_names)
    extra = []
    for i, row in enumerate(rows):
        copy = dict(row, model="tiny-b")
        for j, label in enumerate(labels):
            copy[label] = f"{min(1.0, max(0.0, float(row[label]) + 0.1 * ((i + j) % 3 - 1))):.6f}"
        extra.append(copy)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows + extra)


def write_xai(run: Run, model: str, methods: list[str], evil: bool = False) -> None:
    """A hand-written explanation-metrics result in the format of ``cxrlens evaluate-explanations``."""
    tag = "<script>alert(2)</script>" if evil else ""
    entry = read_json(run.layout.explanations.index_path)["maps"][0]
    overlay = run.layout.explanations.overlay_path(entry["image"], entry["model"], entry["method"], entry["label"])
    assert overlay.is_file()
    metrics = {
        "format": "cxrlens-xai/1",
        "settings": {"fractions": [0.1, 0.2], "seed": 0, "note": tag or None},
        "n_maps": 12,
        "no_positive_maps": {model: {m: 3 if i == 0 else 0 for i, m in enumerate(methods)}},
        "notes": [f"synthetic metrics for the report test {tag}"],
        "metrics": {
            "deletion_auc": {
                "description": f"area under the deletion curve {tag}",
                "higher_is_better": False,
                "rows": [
                    {"model": model, "method": m, "mean": 0.2 + 0.1 * i, "ci_low": 0.1, "ci_high": 0.4, "n": 4}
                    for i, m in enumerate(methods)
                ]
                + [
                    {
                        "model": f"ensemble{tag}",
                        "method": methods[0],
                        "mean": None,
                        "ci_low": None,
                        "ci_high": None,
                        "n": 0,
                    }
                ],
            },
            "deletion_gain_rel": {  # a metric the report has never heard of: shown like any other
                "description": "deletion gain relative to the random-order deletion AUC",
                "higher_is_better": True,
                "rows": [
                    {"model": model, "method": m, "mean": 0.05 * (i + 1), "ci_low": 0.0, "ci_high": 0.5, "n": 4}
                    for i, m in enumerate(methods)
                ],
            },
            "pointing_game": {"description": "hit rate", "higher_is_better": True, "rows": []},
        },
        "sanity": {
            "threshold": 0.5,
            "rows": [
                {"model": model, "method": methods[0], "layers": ["head"], "spearman": 0.81, "flagged": True, "n": 4},
                {"model": model, "method": methods[-1], "layers": "all", "spearman": None, "flagged": False, "n": 4},
            ],
        },
        "ranking": {
            "methods": [{"method": m, "score": 1.0 / (i + 1), "rank": i + 1} for i, m in enumerate(methods)],
            "models": [{"model": model, "score": 0.5, "rank": 1}],
            "verdict": f"{methods[-1]} is the most faithful method here <img src=x onerror=alert(3)>{tag}",
        },
        "shortcut": {
            "rows": [
                {
                    "model": model,
                    "outside_lung_share": 0.4,
                    "ci_low": 0.3,
                    "ci_high": 0.5,
                    "border_share": 0.1,
                    "padding_share": None,
                    "n": 4,
                },
            ],
            "by_source": [
                {
                    "model": model,
                    "source": source,
                    "outside_lung_share": share,
                    "ci_low": share - 0.1,
                    "ci_high": share + 0.1,
                    "border_share": 0.05,
                    "padding_share": None,
                    "n": 2,
                    "n_images": 2,
                    "n_maps": 2 * len(methods),
                }
                for source, share in ((f"cohen{tag}", 0.62), ("kermany", 0.21))
            ],
            "top_images": [
                {
                    "model": model,
                    "image": EVIL_FILE if evil else "x.png",
                    "label": "COVID-19",
                    "method": methods[0],
                    "outside_lung_share": 0.7,
                    "overlay": overlay.relative_to(run.root).as_posix(),
                },
                {
                    "model": model,
                    "image": "gone.png",
                    "label": "COVID-19",
                    "method": methods[0],
                    "outside_lung_share": 0.6,
                    "overlay": "overlays/missing.png",
                },
            ],
        },
        "files": {},
    }
    write_json(run.layout.xai_metrics, metrics)
    save_png(run.layout.xai_figures / "ranking.png", xray_like(40, 60, seed=3))


def build_tiny_run(root: Path) -> SimpleNamespace:
    """A tiny trained run: a report before anything else, then evaluation, explanations, NAP, xai, the confounder
    audit and an external set (the last three hand-written), and a report."""
    methods = ["gradcam", "occlusion", "saliency"]
    cfg = tiny_config(
        root,
        **{
            "explain.n_images": 2,
            "explain.methods": methods,
            "explain.params": EXPLAIN_PARAMS,
            "explain.followup_images": 0,  # follow-ups: slow
        },
    )
    run_cv(create_run(cfg, root / "run"), enable_progress_bar=False)
    bare = report(root / "run", root / "bare")

    add_second_model(open_run(root / "run"))
    run = open_run(root / "run")
    write_evaluation(run, evaluate_run(run, cfg.evaluate))
    run_explain(open_run(root / "run"), cfg.explain, enable_progress_bar=False)
    run_nap(open_run(root / "run"), cfg.nap)
    write_xai(run, "tiny", methods)
    write_audit(run)
    write_external(run)
    full = report(root / "run")
    return SimpleNamespace(root=run.root, layout=run.layout, bare=bare, full=full, methods=methods)


def build_xss_run(root: Path) -> SimpleNamespace:
    """A run whose data holds a file name with a script tag, and a finding and patient ids with markup and quotes."""
    data = root / "data"
    rows = []
    for i in range(16):
        name = EVIL_FILE if i == 0 else f"images/img{i:03d}.png"
        save_png(data / name, xray_like(64, 56, seed=i))
        finding = EVIL_FINDING if i % 2 == 0 else "No Finding"
        patient = EVIL_PATIENT if i == 0 else f"p{i}"
        rows.append([name, patient, finding, "PA", "synthetic"])
    write_csv(data / "metadata.csv", ["filename", "patient_id", "finding", "view", "source"], rows)
    assert (data / EVIL_FILE).is_file()
    cfg = load_run_config(
        None,
        {
            "name": '<script>alert("name")</script>',
            "data.sources": [str(data)],
            "data.preprocess.size": 48,
            "data.cache_dir": str(root / "cache"),
            "data.labels.extra_nodes": {EVIL_FINDING: None},
            "data.labels.min_images": 3,
            "models.names": ["tiny"],
            "train.epochs": 1,
            "train.batch_size": 8,
            "train.patience": 0,
            "cv.split.folds": 2,
            "cv.folds": [0],
            "evaluate.min_support": 1,
            "explain.images": [EVIL_FILE],
            "explain.methods": ["saliency"],
            "explain.labels": [EVIL_FINDING],
            "explain.followup_images": 0,
        },
    )
    study = create_run(cfg, root / "run")
    assert EVIL_FINDING in study.space.names
    run_cv(study, enable_progress_bar=False)
    run = open_run(root / "run")
    write_evaluation(run, evaluate_run(run, cfg.evaluate))
    run_explain(open_run(root / "run"), cfg.explain, enable_progress_bar=False)
    write_xai(run, "tiny", ["saliency"], evil=True)
    write_audit(run, evil=True)
    write_external(run, evil=True)
    return SimpleNamespace(root=run.root, data=data, index=report(run.root))
