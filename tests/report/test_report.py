"""`cxrlens report` on tiny trained runs: every section, missing parts, assets, links, and escaping of hostile data."""

from __future__ import annotations

import csv
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from cxrlens.config import ExplainConfig, load_run_config
from cxrlens.report.builder import build_report, json_island
from cxrlens.run.maps import image_id
from tests.conftest import save_png, write_csv, xray_like
from tests.train.test_runner import tiny_config

EXPLAIN_PARAMS = {"occlusion": {"window": 12, "stride": 12}}
EVIL_FILE = "images/<script>alert(1)</script>.png"
EVIL_FINDING = "<b>\"odd\" & 'quoted'"
EVIL_PATIENT = 'p<b>"7"</b>'
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


# -- fixtures: runs built once per module ----------------------------------------------------------------------


def _add_second_model(run_root: Path) -> None:
    """A second (fake) model's predictions, so the evaluation has ensembles to compare."""
    path = run_root / "predictions.csv"
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        rows = list(reader)
    labels = header[5:]
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


def _write_xai(run_root: Path, model: str, methods: list[str], evil: bool = False) -> None:
    tag = "<script>alert(2)</script>" if evil else ""
    overlay = next((run_root / "explanations" / "overlays").rglob("*.png")).relative_to(run_root).as_posix()
    metrics = {
        "format": "cxrlens-xai/1",
        "settings": {"fractions": [0.1, 0.2], "seed": 0, "note": tag or None},
        "n_maps": 12,
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
            "top_images": [
                {
                    "model": model,
                    "image": EVIL_FILE if evil else "x.png",
                    "label": "COVID-19",
                    "method": methods[0],
                    "outside_lung_share": 0.7,
                    "overlay": overlay,
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
    (run_root / "xai").mkdir(exist_ok=True)
    (run_root / "xai" / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    save_png(run_root / "xai" / "figures" / "ranking.png", xray_like(40, 60, seed=3))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny trained run: a report before anything else, then evaluation, explanations, NAP and xai, and a report."""
    from cxrlens.evaluate import evaluate_run, write_evaluation
    from cxrlens.explain.runner import run_explain
    from cxrlens.nap.profiles import run_nap
    from cxrlens.train.runner import open_study, run_cv

    root = tmp_path_factory.mktemp("report")
    study = open_study(tiny_config(root, **{"train.epochs": 1}), root / "run")
    run_cv(study, enable_progress_bar=False)
    bare = build_report(study.run.root, root / "bare")

    _add_second_model(study.run.root)
    write_evaluation(study.run.root, evaluate_run(study.run.root, min_support=1))
    methods = ["gradcam", "occlusion", "saliency"]
    cfg = ExplainConfig(n_images=2, methods=methods, params=EXPLAIN_PARAMS, followup_images=0)  # followups: slow
    run_explain(study, cfg, enable_progress_bar=False)
    run_nap(study.run.root, "tiny")
    _write_xai(study.run.root, "tiny", methods)
    full = build_report(study.run.root)
    return SimpleNamespace(root=study.run.root, bare=bare, full=full, methods=methods)


@pytest.fixture(scope="module")
def xss_run(tmp_path_factory):
    """A run whose data holds a file name with a script tag, and a finding and patient ids with markup and quotes."""
    from cxrlens.evaluate import evaluate_run, write_evaluation
    from cxrlens.explain.runner import run_explain
    from cxrlens.train.runner import open_study, run_cv

    root = tmp_path_factory.mktemp("xss")
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
        },
    )
    study = open_study(cfg, root / "run")
    assert EVIL_FINDING in study.space.names
    run_cv(study, enable_progress_bar=False)
    write_evaluation(study.run.root, evaluate_run(study.run.root, min_support=1))
    explain = ExplainConfig(images=[EVIL_FILE], methods=["saliency"], labels=[EVIL_FINDING], followup_images=0)
    run_explain(study, explain, enable_progress_bar=False)
    _write_xai(study.run.root, "tiny", ["saliency"], evil=True)
    return SimpleNamespace(root=study.run.root, index=build_report(study.run.root))


# -- helpers ------------------------------------------------------------------------------------------------------


class PageParser(HTMLParser):
    """Collects images, ids and the JSON island, and checks that every element is closed in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.images: list[str] = []
        self.ids: dict[str, str] = {}
        self.scripts: list[dict[str, str | None]] = []
        self._in_island = False
        self.island = ""

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "img":
            self.images.append(attributes.get("src") or "")
        if "id" in attributes:
            if attributes["id"] in self.ids:
                self.errors.append(f"duplicate id {attributes['id']}")
            self.ids[attributes["id"] or ""] = tag
        if tag == "script":
            self.scripts.append(attributes)
            self._in_island = attributes.get("type") == "application/json"
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        self._in_island = False

    def handle_data(self, data):
        if self._in_island:
            self.island += data


def parse(index: Path) -> PageParser:
    parser = PageParser()
    parser.feed(index.read_text(encoding="utf-8"))
    parser.close()
    assert not parser.errors, parser.errors[:5]
    assert not parser.stack, f"unclosed elements: {parser.stack}"
    return parser


def section(html: str, name: str) -> str:
    match = re.search(rf'<section id="{name}">(.*?)</section>', html, re.S)
    assert match, name
    return match.group(1)


def check_links(index: Path, parser: PageParser) -> None:
    assert parser.images
    for src in parser.images:
        if src.startswith("data:image/png;base64,"):
            continue
        assert re.fullmatch(r"assets/[A-Za-z0-9._/-]+\.png", src), src
        assert ".." not in src.split("/")
        assert (index.parent / src).is_file(), src


# -- tests --------------------------------------------------------------------------------------------------------


def test_report_of_a_trained_run_says_what_is_not_computed_yet(tiny_run):
    index = tiny_run.bare
    assert index == tiny_run.root.parent / "bare" / "index.html" and index.is_file()
    html = index.read_text(encoding="utf-8")
    parser = parse(index)
    assert "not computed yet: run `cxrlens evaluate" in section(html, "metrics")
    assert "not computed yet: run `cxrlens explain" in section(html, "gallery")
    assert "not computed yet: run `cxrlens evaluate-explanations" in section(html, "xai")
    assert "not computed yet: run `cxrlens nap" in section(html, "nap")
    data = section(html, "dataset")
    assert "not computed" not in data and "COVID-19" in data and "Folds" in data
    assert "Config hash" in section(html, "provenance")
    assert json.loads(parser.island) == {"format": "cxrlens-report/1", "gallery": None}
    assert parser.images == [], "no figure without evaluation or explanations"


def test_full_report_has_every_section_and_only_working_links(tiny_run):
    index = tiny_run.full
    assert index == tiny_run.root / "report" / "index.html"
    html = index.read_text(encoding="utf-8")
    parser = parse(index)
    check_links(index, parser)
    assert "not computed yet" not in html
    for name in ("dataset", "metrics", "gallery", "xai", "nap", "provenance"):
        assert parser.ids[name] == "section"
        assert f'href="#{name}"' in html
    for element in ("g-image", "g-label", "g-model", "g-method", "g-opacity", "g-base", "g-heat", "g-info"):
        assert element in parser.ids
    metrics = section(html, "metrics")
    for name in ("tiny", "tiny-b", "ensemble-mean", "ensemble-vote"):
        assert f'<td class="name">{name}</td>' in metrics
    assert 'class="num best"' in metrics and "The best ensemble" in metrics
    assert "assets/evaluation/bars_covid-19.png" in metrics and "assets/evaluation/roc_ensemble-mean.png" in metrics
    xai = section(html, "xai")
    assert "deletion_auc" in xai and "lower is better" in xai and "flagged" in xai and "Verdict" in xai
    assert "0.200 [0.100, 0.400]" in xai and "not computed" in xai  # the ensemble row has one method only
    assert "overlay not found: overlays/missing.png" in xai
    nap = section(html, "nap")
    assert "Dead feature maps" in nap and "assets/nap/tiny/fold0/overview.png" in nap
    provenance = section(html, "provenance")
    assert "scikit-learn" in provenance and "Seed" in provenance and '<ol class="mono">' in provenance


def test_gallery_data_island_matches_the_assets(tiny_run):
    index = tiny_run.full
    parser = parse(index)
    assert "<" not in parser.island and ">" not in parser.island
    data = json.loads(parser.island)["gallery"]
    entries = json.loads((tiny_run.root / "explanations" / "index.json").read_text(encoding="utf-8"))["maps"]
    assert len(data["maps"]) == len(entries)
    assert set(data["methods"]) == set(tiny_run.methods)
    assert data["models"][-1] == "ensemble"
    assert {(m["model"], m["method"]) for m in data["maps"]} >= {("tiny", "gradcam"), ("ensemble", "occlusion")}
    assert not any(m["model"] == "ensemble" and m["method"] == "gradcam" for m in data["maps"])
    assert data["families"]["gradcam"] == "layer"
    from PIL import Image

    for record in data["images"]:
        with Image.open(index.parent / record["src"]) as image:
            assert image.mode == "L" and image.size == (48, 48)
        assert record["truth_known"]
    for entry in data["maps"]:
        assert 0.0 <= entry["probability"] <= 1.0
        with Image.open(index.parent / entry["heat"]) as image:
            assert image.mode == "RGBA" and image.size == (48, 48)
            alpha = np.asarray(image)[..., 3]
        assert alpha.max() > 0
    assert any(f["grid"] for f in data["figures"])
    assert data["initial"]["image"] in {i["id"] for i in data["images"]}


def test_rebuild_is_stable_and_prunes_stale_assets(tiny_run, tmp_path):
    out = tmp_path / "again"
    first = build_report(tiny_run.root, out)
    stale = out / "assets" / "gallery" / "old" / "map.png"
    save_png(stale, xray_like(20, 20))
    listing = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and p != stale)
    second = build_report(tiny_run.root, out)
    assert first == second and not stale.exists() and not stale.parent.exists()
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == listing
    gallery = sum(p.stat().st_size for p in (out / "assets" / "gallery").rglob("*.png"))
    assert gallery < 2_000_000  # ~100 small X-rays and heatmaps at 48 px


def test_large_maps_are_shrunk_for_the_page(tiny_run, tmp_path):
    index = build_report(tiny_run.root, tmp_path / "small", max_side=32)
    data = json.loads(parse(index).island)["gallery"]
    from PIL import Image

    with Image.open(index.parent / data["maps"][0]["heat"]) as image:
        assert image.size == (32, 32)


def test_damaged_and_partial_parts_are_reported_not_fatal(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run.root, run, ignore=shutil.ignore_patterns("models", "report"))
    (run / "evaluation" / "metrics.json").write_text("{not json", encoding="utf-8")
    (run / "explanations" / "index.json").unlink()  # an interrupted explain: sidecars are read
    (run / "xai" / "metrics.json").write_text("[]", encoding="utf-8")
    summary = next((run / "nap").rglob("summary.json"))
    summary.write_text("", encoding="utf-8")
    (run / "config.yaml").unlink()
    html = build_report(run).read_text(encoding="utf-8")
    assert "metrics.json is damaged" in section(html, "metrics")
    gallery = section(html, "gallery")
    assert "maps read from their sidecars" in gallery and 'id="g-heat"' in gallery
    assert "not a metrics object" in section(html, "xai")
    assert "summary.json is damaged" in section(html, "nap")
    assert "config.yaml is missing" in section(html, "provenance")


def test_not_a_run_folder(tmp_path):
    from cxrlens.errors import RunError

    with pytest.raises(RunError, match="not a cxrlens run folder"):
        build_report(tmp_path)


def test_json_island_escapes_markup_characters():
    text = str(json_island({"name": "</script><script>alert(1)</script>", "a&b": ["\u2028", float("nan")]}))
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"name": "</script><script>alert(1)</script>", "a&b": ["\u2028", None]}


def test_cli_prints_the_index_path(tiny_run, tmp_path):
    import typer
    from typer.testing import CliRunner

    from cxrlens.cli.report import report_cmd

    app = typer.Typer()
    app.command()(report_cmd)
    commands = json.loads((tiny_run.root / "run.json").read_text(encoding="utf-8"))["commands"]
    result = CliRunner().invoke(app, ["--run", str(tiny_run.root), "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert str((tmp_path / "cli" / "index.html").resolve()) in result.stdout
    after = json.loads((tiny_run.root / "run.json").read_text(encoding="utf-8"))["commands"]
    assert len(after) == len(commands) + 1  # recorded for provenance


def test_hostile_names_are_escaped_everywhere(xss_run):
    index = xss_run.index
    html = index.read_text(encoding="utf-8")
    parser = parse(index)
    check_links(index, parser)
    assert "<script>alert(1)</script>" not in html
    assert "alert(2)</script>" not in html and "<img src=x" not in html and '<script>alert("name")' not in html
    assert "<b>" not in html and "</b>" not in html
    assert len(parser.scripts) == 2  # the JSON island and the page's own script, nothing else
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # shown as text
    assert "&lt;b&gt;&#34;odd&#34; &amp; &#39;quoted&#39;" in html
    assert "<title>cxrlens report: &lt;script&gt;alert(&#34;name&#34;)&lt;/script&gt;</title>" in html
    data = json.loads(parser.island)["gallery"]
    evil = next(i for i in data["images"] if i["filename"] == EVIL_FILE)
    assert evil["id"] == image_id(EVIL_FILE) and evil["patient_id"] == EVIL_PATIENT
    assert any(m["label"] == EVIL_FINDING for m in data["maps"])
    assert "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in parser.island
    assert f'<option value="{image_id(EVIL_FILE)}"' in html
