"""Hand-written results of ``cxrlens audit`` and ``cxrlens evaluate-external`` in the shape their stages write
(``evaluate/audit/runner.py``, ``evaluate/external/runner.py``), for the report's section 0."""

from __future__ import annotations

from typing import Any

from cxrlens.fileio import write_json
from cxrlens.run import Run
from tests.conftest import save_png, xray_like

SET = "site"
SOURCES = ("cohen", "kermany")
FLAG = "COVID-19 is confounded with source: the source alone predicts it with AUROC 1.00 (Cramér's V 1.00)."
EVIL_FLAG = "<script>alert(4)</script> is confounded with <b>source</b>"
EVIL_NOTE = "This set shares the source(s) <img src=x onerror=alert(5)> with the run's training data."
CHECKED = "Checked 2 label(s) against source on 60 images and 1 model(s) (tiny): in the data; nothing was flagged."


def audit_metrics(labels: list[str], flags: list[str], evil: bool = False) -> dict[str, Any]:
    """The audit of one column (``source``) with the first label confounded; TCAV and the probe ran."""
    values = [f"<i>{SOURCES[0]}</i>" if evil else SOURCES[0], SOURCES[1]]
    rows = {}
    chosen = labels.index("COVID-19") if "COVID-19" in labels else 0
    for k, label in enumerate(labels):
        confounded = k == chosen
        rows[label] = {
            "positives": 30 - k,
            "counts": {values[0]: 30 - k, values[1]: 0},
            "prevalence": {values[0]: 1.0, values[1]: 0.0},
            "one_column_auroc": 1.0 if confounded else 0.55,
            "cramers_v": 0.98 if confounded else 0.1,
            "confounded": confounded,
            "top_value": values[0],
            "share_of_positives": 1.0,
            "share_of_images": 0.5,
            "sentence": f"{label}: 100 % of positives from {values[0]}, which holds 50 % of the images",
            "confounded_sentence": (EVIL_FLAG if evil else FLAG) if confounded else None,
            "pooled_auroc": 0.97 if confounded else 0.6,
            "within_auroc": {values[0]: None, values[1]: 0.52 if confounded else 0.61},
            "within_notes": {values[0]: f"not evaluable within {values[0]} (30 positive(s), 0 negative(s))"},
            "scored_images": 60,
            "behaviour_flag": confounded,
            "behaviour_sentence": None,
            "by_model": {"tiny": {"pooled_auroc": 0.97, "within_auroc": {}, "behaviour_flag": confounded}},
        }
    tcav = {"tiny": {label: {values[0]: 0.9, values[1]: 0.2} for label in labels}}
    detail = {
        "tiny": {
            "fold": 0,
            "layer": "backbone.bn3",
            "labels": {
                label: {
                    values[0]: {"score": 0.9, "random_score": 0.4, "p_value": 0.001, "significant": True, "images": 6},
                    values[1]: {"score": 0.2, "random_score": 0.4, "p_value": 0.5, "significant": False, "images": 6},
                }
                for label in labels
            },
        }
    }
    return {
        "format": "cxrlens-audit/1",
        "label_names": labels,
        "images": 60,
        "patients": 30,
        "models": ["tiny"],
        "settings": {"flag_auroc": 0.7},
        "checked": CHECKED if not flags else CHECKED.replace("nothing was flagged", f"{len(flags)} finding(s) flagged"),
        "flags": flags,
        "notes": ["TCAV ran on fold 0 only."],
        "skipped": {"view": "every image with a view recorded has the same one (PA)"},
        "files": ["tables/summary.md", "figures/confounding.png", "metrics.json"],
        "columns": {
            "source": {
                "noun": "source",
                "values": values,
                "images": {values[0]: 30, values[1]: 30},
                "labels": rows,
                "probe_auroc": {"tiny": 0.99},
                "probe": {"tiny": {"folds": {"0": {"auroc": 0.99}}}},
                "tcav": tcav,
                "tcav_detail": detail,
            }
        },
    }


def write_audit(run: Run, flags: list[str] | None = None, evil: bool = False) -> None:
    labels = list(run.label_names)
    chosen = [EVIL_FLAG if evil else FLAG] if flags is None else flags
    write_json(run.layout.audit_metrics, audit_metrics(labels, chosen, evil))
    save_png(run.layout.audit_figures / "confounding.png", xray_like(30, 40, seed=5))


def _numbers(labels: list[str], external: bool) -> dict[str, Any]:
    """One entry's numbers on a set: the last label is not evaluable externally."""
    sens, spec, auc = (0.5, 0.9, 0.61) if external else (0.95, 0.97, 0.99)
    rows = {}
    for k, label in enumerate(labels):
        evaluable = not (external and k == len(labels) - 1)
        rows[label] = {
            "support": 10 if evaluable else 0,
            "negatives": 20,
            "evaluable": evaluable,
            **{
                metric: (value if evaluable else None)
                for metric, value in (("sensitivity", sens), ("specificity", spec), ("ppv", 0.7), ("auroc", auc))
            },
            **{
                f"{metric}_ci": ([value - 0.1, value + 0.05] if evaluable else [None, None])
                for metric, value in (("sensitivity", sens), ("specificity", spec), ("ppv", 0.7), ("auroc", auc))
            },
            "ece": 0.1 if evaluable else None,
        }
    f1 = 0.6 if external else 0.85
    micro = {"precision": 0.55, "recall": 0.65, "f1": f1, "specificity": 0.8}
    micro["ci"] = {name: [value - 0.1, value + 0.1] for name, value in micro.items()}
    return {
        "images": 30 if external else 60,
        "patients": 25 if external else 30,
        "micro": micro,
        "macro": {"precision": 0.5, "recall": 0.6, "f1": 0.55, "specificity": 0.8},
        "labels": rows,
        "not_evaluable": [labels[-1]] if external else [],
        "ece": 0.123 if external else 0.045,
        "reliability": [{"low": 0.0, "high": 1.0, "n": 30, "confidence": 0.5, "frequency": 0.4}],
    }


def external_metrics(run: Run, evil: bool = False) -> dict[str, Any]:
    labels = list(run.label_names)
    models = {}
    for entry in ("tiny", "ensemble-mean"):
        numbers = _numbers(labels, external=True)
        own = _numbers(labels, external=False)
        numbers["in_domain"] = own
        numbers["change"] = {
            "micro_f1": numbers["micro"]["f1"] - own["micro"]["f1"],
            "labels": {label: {"sensitivity": -0.45, "specificity": -0.07, "auroc": -0.38} for label in labels},
        }
        numbers["by_source"] = {source: _numbers(labels, external=True) for source in SOURCES}
        models[entry] = numbers
    image = "images/<script>alert(6)</script>.png" if evil else "images/ext-001.png"
    errors = [
        {
            "image": image,
            "patient_id": "ext-p1",
            "source": SOURCES[0],
            "label": labels[0],
            "kind": "false positive",
            "probability": 0.97,
            "threshold": 0.42,
            "true_labels": ["No Finding"],
            "method": "occlusion",
            "map": "errors/maps/x.npz",
            "overlay": run.layout.external(SET)
            .errors.overlay_path(image, "ensemble-mean", "occlusion", labels[0])
            .relative_to(run.layout.external(SET).root)
            .as_posix(),
        },
        {
            "image": "images/ext-002.png",
            "patient_id": "ext-p2",
            "source": SOURCES[1],
            "label": labels[0],
            "kind": "false negative",
            "probability": 0.03,
            "threshold": 0.42,
            "true_labels": [labels[0]],
            "method": "occlusion",
            "map": "errors/maps/y.npz",
            "overlay": "errors/overlays/gone.png",
        },
        {  # a hostile path: never copied from outside the set's folder
            "image": "images/ext-003.png",
            "label": labels[0],
            "kind": "false negative",
            "probability": 0.05,
            "threshold": 0.42,
            "true_labels": [],
            "overlay": "../../audit/figures/confounding.png",
        },
    ]
    return {
        "format": "cxrlens-external/1",
        "name": SET,
        "data": ["/data/<site>" if evil else "/data/site"],
        "images": 30,
        "patients": 25,
        "sources": {SOURCES[0]: 12, SOURCES[1]: 18},
        "label_names": labels,
        "not_evaluable": [labels[-1]],
        "notes": [EVIL_NOTE if evil else "This set shares the source(s) cohen with the run's training data."],
        "headline": "ensemble-mean",
        "thresholds": {},
        "models": models,
        "errors": errors,
        "files": {"tables": {}, "figures": {}},
    }


def write_external(run: Run, evil: bool = False) -> None:
    files = run.layout.external(SET)
    metrics = external_metrics(run, evil)
    write_json(files.metrics, metrics)
    save_png(files.root / metrics["errors"][0]["overlay"], xray_like(32, 32, seed=7))
    save_png(files.reliability_figure("ensemble-mean"), xray_like(30, 30, seed=8))
    save_png(files.labels_figure("ensemble-mean"), xray_like(30, 50, seed=9))
    save_png(files.reliability_figure("tiny"), xray_like(30, 30, seed=10))
