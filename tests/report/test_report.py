"""`cxrlens report` on tiny trained runs: every section, missing parts, assets, links, and escaping of hostile data."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from cxrlens.cli.report import report_cmd
from cxrlens.errors import RunError
from cxrlens.fileio import read_json, write_json
from cxrlens.report.builder import json_island
from cxrlens.report.common import stat_text
from cxrlens.report.xai_section import _no_positive
from cxrlens.run import ImageSource, Run, open_run
from cxrlens.run.layout import image_id
from tests.conftest import save_png, xray_like
from tests.report.runs import EVIL_FILE, EVIL_FINDING, EVIL_PATIENT, report

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


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
    assert index == tiny_run.layout.report_dir / "index.html"
    html = index.read_text(encoding="utf-8")
    parser = parse(index)
    check_links(index, parser)
    assert "not computed yet" not in html
    for name in ("trust", "dataset", "metrics", "gallery", "xai", "nap", "provenance"):
        assert parser.ids[name] == "section"
        assert f'href="#{name}"' in html
    for element in ("g-image", "g-label", "g-model", "g-method", "g-opacity", "g-base", "g-heat", "g-info"):
        assert element in parser.ids
    metrics = section(html, "metrics")
    for name in ("tiny", "tiny-b", "ensemble-mean", "ensemble-vote"):
        assert f'<td class="name">{name}</td>' in metrics
    assert 'class="num best"' in metrics and "The best ensemble" in metrics
    layout = tiny_run.layout
    assert f"assets/evaluation/{layout.bars_figure('COVID-19').name}" in metrics
    assert f"assets/evaluation/{layout.roc_figure('ensemble-mean').name}" in metrics
    table2 = re.search(r'<table id="table2">(.*?)</table>', metrics, re.S)
    assert table2 and " ± n/a" in table2.group(1) and "folds)" not in table2.group(1)  # one fold: no spread
    xai = section(html, "xai")
    assert "deletion_auc" in xai and "lower is better" in xai and "flagged" in xai and "Verdict" in xai
    assert "0.200 [0.100, 0.400]" in xai and "not computed" in xai  # the ensemble row has one method only
    assert "deletion_gain_rel" in xai and "0.150 [0.000, 0.500]" in xai  # a new metric needs no new code
    no_positive = re.search(r'id="xai-no-positive">(.*?)</table>', xai, re.S)
    assert no_positive and "not evaluable): 3 of 12." in no_positive.group(1)
    assert f'<th class="num">{tiny_run.methods[0]}</th>' in no_positive.group(1)
    assert "assets/xai/ranking.png" in xai
    assert "overlay not found" not in xai and "assets/xai/overlays/" not in xai  # the shortcut audit: section 0
    trust = section(html, "trust")
    assert "overlay not found: overlays/missing.png" in trust and "assets/trust/overlays/" in trust
    nap = section(html, "nap")
    assert "Dead feature maps" in nap and "assets/nap/tiny/fold0/overview.png" in nap
    provenance = section(html, "provenance")
    assert "scikit-learn" in provenance and "Seed" in provenance and '<ol class="mono">' in provenance
    assert '<pre id="config-yaml">' in provenance


def test_gallery_data_island_matches_the_assets(tiny_run):
    index = tiny_run.full
    parser = parse(index)
    assert "<" not in parser.island and ">" not in parser.island
    data = json.loads(parser.island)["gallery"]
    entries = read_json(tiny_run.layout.explanations.index_path)["maps"]
    assert len(data["maps"]) == len(entries)
    assert set(data["methods"]) == set(tiny_run.methods)
    assert data["models"][-1] == "ensemble" == data["ensemble"]
    assert {(m["model"], m["method"]) for m in data["maps"]} >= {("tiny", "gradcam"), ("ensemble", "occlusion")}
    assert not any(m["model"] == "ensemble" and m["method"] == "gradcam" for m in data["maps"])
    assert data["families"]["gradcam"] == "layer"
    source = ImageSource(open_run(tiny_run.root))
    for record in data["images"]:
        with Image.open(index.parent / record["src"]) as image:
            assert image.mode == "L" and image.size == (48, 48)
            pixels = np.asarray(image, dtype=np.float32) / 255
        assert record["truth_known"] and record["image_available"]
        assert np.abs(pixels - source.image(record["filename"])).max() <= 1 / 255  # the run's own preprocessing
        assert record["probabilities"]["tiny"] and record["probabilities"]["ensemble"]
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
    first = report(tiny_run.root, out)
    stale = out / "assets" / "gallery" / "old" / "map.png"
    save_png(stale, xray_like(20, 20))
    listing = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and p != stale)
    second = report(tiny_run.root, out)
    assert first == second and not stale.exists() and not stale.parent.exists()
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == listing
    gallery = sum(p.stat().st_size for p in (out / "assets" / "gallery").rglob("*.png"))
    assert gallery < 2_000_000  # ~100 small X-rays and heatmaps at 48 px


def test_large_maps_are_shrunk_for_the_page(tiny_run, tmp_path):
    index = report(tiny_run.root, tmp_path / "small", max_side=32)
    data = json.loads(parse(index).island)["gallery"]
    with Image.open(index.parent / data["maps"][0]["heat"]) as image:
        assert image.size == (32, 32)


def _copy_run(root: Path, target: Path) -> Run:
    shutil.copytree(root, target, ignore=shutil.ignore_patterns("models", "report"))
    return open_run(target)


def test_damaged_and_partial_parts_are_reported_not_fatal(tiny_run, tmp_path):
    run = _copy_run(tiny_run.root, tmp_path / "run")
    layout = run.layout
    layout.evaluation_metrics.write_text("{not json", encoding="utf-8")
    layout.explanations.index_path.unlink()  # an interrupted explain: sidecars are read
    layout.xai_metrics.write_text("[]", encoding="utf-8")
    layout.nap_summaries()[0].write_text("", encoding="utf-8")
    layout.config_yaml.unlink()  # after the run was opened
    sidecar = next(layout.explanations.maps_dir.rglob("*.json"))
    sidecar.with_suffix(".npz").write_bytes(b"not a zip")
    html = report(run).read_text(encoding="utf-8")
    assert "metrics.json: damaged JSON" in section(html, "metrics")
    assert "run `cxrlens evaluate --run" in section(html, "metrics")
    gallery = section(html, "gallery")
    assert "maps read from their sidecars" in gallery and 'id="g-heat"' in gallery
    assert "map file damaged for" in gallery
    assert "metrics.json: expected a JSON object" in section(html, "xai")
    assert "summary.json: damaged JSON" in section(html, "nap")
    assert "config.yaml is missing" in section(html, "provenance")


def test_per_label_values_say_over_how_many_folds_they_average(tiny_run, tmp_path):
    """Per-label stats average the folds where the value is defined: fewer than all folds is shown."""
    assert stat_text({"mean": 1.0, "std": None, "n": 3}, 5) == "1.000 ± n/a (3/5 folds)"
    assert stat_text({"mean": 0.5, "std": 0.1, "n": 5}, 5) == "0.500 ± 0.100"
    assert stat_text({"mean": 0.5, "std": None, "n": 1}, 1) == "0.500 ± n/a"
    assert stat_text({"mean": None, "std": None, "n": 0}, 5) == "n/a"
    assert stat_text({}, 5) == "n/a"

    run = _copy_run(tiny_run.root, tmp_path / "run")
    data = read_json(run.layout.evaluation_metrics)
    summary = data["entries"]["tiny"]["summary"]
    summary["n_folds"] = 5
    for group in ("micro", "macro", "micro_all"):
        for stat in summary[group].values():
            stat.update(n=5, std=0.01)
    summary["hierarchy_consistency"].update(n=5, std=0.0)
    summary["per_label"]["COVID-19"]["f1"] = {"mean": 1.0, "std": None, "n": 3}
    summary["per_label"]["COVID-19"]["roc_auc"] = {"mean": 0.75, "std": 0.05, "n": 4}
    write_json(run.layout.evaluation_metrics, data)
    metrics = section(report(run).read_text(encoding="utf-8"), "metrics")
    per_label = re.search(r'<table id="per-label">(.*?)</table>', metrics, re.S)
    assert per_label
    row = next(r for r in per_label.group(1).split("<tr>") if r.startswith("<td>COVID-19</td>"))
    assert "1.000 ± n/a (3/5 folds)" in row and "0.750 ± 0.050 (4/5 folds)" in row
    table2 = re.search(r'<table id="table2">(.*?)</table>', metrics, re.S)
    assert table2
    tiny_row = next(r for r in table2.group(1).split("<tr>") if r.startswith('<td class="name">tiny</td>'))
    assert "± 0.010" in tiny_row and "folds)" not in tiny_row  # defined in every fold: no count


def _black_images(page: Path, names: list[str]) -> None:
    records = {i["filename"]: i for i in json.loads(parse(page).island)["gallery"]["images"]}
    for name in names:
        assert not records[name]["image_available"]
        with Image.open(page.parent / records[name]["src"]) as image:
            assert image.mode == "L" and image.size == (48, 48) and np.asarray(image).max() == 0


def test_missing_or_unreadable_images_give_a_note_and_a_black_image(tiny_run, tmp_path):
    run = _copy_run(tiny_run.root, tmp_path / "run")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    gone = str(tmp_path / "gone" / "nowhere.png")
    index = run.layout.explanations.index_path
    maps = read_json(index)["maps"][:2]
    extra = [dict(m, image=name, image_id=image_id(name)) for name in (str(broken), gone) for m in maps]
    write_json(index, {"maps": read_json(index)["maps"] + extra})

    page = report(run, tmp_path / "out")
    gallery = section(page.read_text(encoding="utf-8"), "gallery")
    assert f"{broken}: cannot be read" in gallery and f"{gone}: cannot be read" in gallery
    assert "not an image of the run&#39;s data and not an existing file" in gallery
    assert "its heatmaps are shown on black" in gallery
    _black_images(page, [str(broken), gone])


def test_a_gallery_of_many_images_reads_them_ahead_in_workers_in_order(tiny_run, tmp_path):
    """Enough images for the loader's worker processes: each X-ray shown is its own image, unreadable ones
    anywhere in the order are black with a note, and the others keep their places."""
    from cxrlens.figures import grey_png

    run = _copy_run(tiny_run.root, tmp_path / "run")
    names = [
        str(save_png(tmp_path / "many" / f"x{i:02d}.png", xray_like(60 + i, 50 + 2 * i, seed=i))) for i in range(18)
    ]
    broken = {3, 11}
    for i in broken:
        Path(names[i]).write_bytes(b"not a png")
    index = run.layout.explanations.index_path
    first = read_json(index)["maps"][0]
    extra = [dict(first, image=name, image_id=image_id(name)) for name in names]
    write_json(index, {"maps": read_json(index)["maps"] + extra})

    page = report(run, tmp_path / "out", max_side=48)
    records = {i["filename"]: i for i in json.loads(parse(page).island)["gallery"]["images"]}
    source = ImageSource(run)
    for i, name in enumerate(names):
        shown = (page.parent / records[name]["src"]).read_bytes()
        if i in broken:
            assert not records[name]["image_available"]
        else:
            assert records[name]["image_available"]
            assert shown == grey_png(source.file(name), 48), name
    gallery = section(page.read_text(encoding="utf-8"), "gallery")
    assert all(f"{names[i]}: cannot be read" in gallery for i in broken)


def test_a_run_whose_data_moved_shows_its_heatmaps_on_black(xss_run, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(xss_run.data, data)
    run_dir = tmp_path / "run"
    shutil.copytree(xss_run.root, run_dir, ignore=shutil.ignore_patterns("models", "report"))
    config = run_dir / "config.yaml"
    config.write_text(config.read_text(encoding="utf-8").replace(str(xss_run.data), str(data)), encoding="utf-8")
    run = open_run(run_dir)
    assert run.config.data.sources == [str(data)]
    (data / EVIL_FILE).unlink()  # the data changed since: the explained image is gone

    page = report(run, tmp_path / "out")
    gallery = section(page.read_text(encoding="utf-8"), "gallery")
    assert "the run&#39;s data cannot be read" not in gallery  # the other images are still shown
    assert "not an image of the run&#39;s data and not an existing file" in gallery  # the gone one is named
    _black_images(page, [EVIL_FILE])


def test_not_a_run_folder_and_not_into_the_run_folder(tiny_run, tmp_path):
    with pytest.raises(RunError, match="not a cxrlens run folder"):
        report(tmp_path)
    with pytest.raises(RunError, match="needs its own folder"):
        report(tiny_run.root, tiny_run.root)


def test_maps_without_positive_attribution_are_counted_in_any_shape():
    nested = _no_positive({"tiny": {"saliency": 2, "gradcam": 0}, "ensemble": {"saliency": 1}})
    assert nested == {
        "total": 3,
        "methods": ["saliency", "gradcam"],
        "rows": [{"model": "tiny", "counts": [2, 0]}, {"model": "ensemble", "counts": [1, None]}],
    }
    assert _no_positive({"saliency": 4})["rows"] == [{"model": "", "counts": [4]}]  # type: ignore[index]
    assert _no_positive(5) == {"total": 5, "methods": [], "rows": []}
    assert _no_positive(None) is None and _no_positive("many") is None and _no_positive({}) is None


def test_json_island_escapes_markup_characters():
    text = str(json_island({"name": "</script><script>alert(1)</script>", "a&b": ["\u2028", float("nan")]}))
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"name": "</script><script>alert(1)</script>", "a&b": ["\u2028", None]}


def test_cli_prints_the_index_path(tiny_run, tmp_path):
    app = typer.Typer()
    app.command()(report_cmd)
    commands = read_json(tiny_run.layout.run_json)["commands"]
    result = CliRunner().invoke(app, ["--run", str(tiny_run.root), "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert str((tmp_path / "cli" / "index.html").resolve()) in result.stdout
    after = read_json(tiny_run.layout.run_json)["commands"]
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
    assert evil["image_available"]
    assert any(m["label"] == EVIL_FINDING for m in data["maps"])
    assert "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in parser.island
    assert f'<option value="{image_id(EVIL_FILE)}"' in html
