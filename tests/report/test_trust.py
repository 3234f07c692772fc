"""Section 0 of the report, "Can these numbers be trusted?": the verdict first, the confounder audit, the external
sets beside the in-domain numbers, their errors' maps and the shortcut audit by source — from hand-written
results (tests/report/trust_data.py) on the tiny runs of conftest.py."""

from __future__ import annotations

import re

from cxrlens.fileio import write_json
from cxrlens.report.common import ci_text, percent, signed
from cxrlens.report.trust_external import sentence
from tests.report.runs import report
from tests.report.test_report import _copy_run, check_links, parse, section
from tests.report.trust_data import CHECKED, EVIL_FLAG, EVIL_NOTE, FLAG, SET, audit_metrics


def _verdict(trust: str) -> str:
    match = re.search(r'<div class="verdict (\w+)" id="trust-verdict">(.*?)</div>', trust, re.S)
    assert match, "no verdict"
    return match.group(1) + ":" + match.group(2)


def test_the_trust_section_comes_first_and_says_what_is_flagged(tiny_run):
    html = tiny_run.full.read_text(encoding="utf-8")
    parser = parse(tiny_run.full)
    check_links(tiny_run.full, parser)
    assert html.index('<section id="trust">') < html.index('<section id="dataset">') < html.index('id="metrics"')
    nav = re.search(r'<nav class="sections".*?</nav>', html, re.S)
    assert nav and re.search(r'href="#trust">.*?0\. Can these numbers be trusted\?</a>', nav.group(0), re.S)
    assert nav.group(0).index("#trust") < nav.group(0).index("#dataset") and "1. Data" in nav.group(0)
    trust = section(html, "trust")
    verdict = _verdict(trust)
    assert verdict.startswith("flagged:") and "flagged 1 finding(s)" in verdict
    assert f"<li>{FLAG.replace(chr(39), '&#39;')}</li>" in verdict
    assert "may therefore measure the collection an image comes from rather than the disease" in verdict
    assert f"On the external set {SET} (30 images), ensemble-mean&#39;s micro F1 drops from 0.850" in verdict
    assert "to 0.600 (-0.250)" in verdict
    assert "has not been run" not in trust and "cannot be read" not in trust
    assert html.index("trust-verdict") < html.index('<table id="table2">')  # the flags before any metric


def test_the_audit_shows_one_table_per_column_with_its_sentences(tiny_run):
    trust = section(tiny_run.full.read_text(encoding="utf-8"), "trust")
    table = re.search(r'<table class="audit-column">(.*?)</table>', trust, re.S)
    assert table
    body = table.group(1)
    for header in ("one-column AUROC", "Cramér's V", "confounded", "pooled AUROC", "within-value AUROC",
                   "probe AUROC", "TCAV"):  # fmt: skip
        assert header in body, header
    assert '<td class="flagged">yes</td>' in body and "<td>no</td>" in body
    assert "1.00" in body and "0.98" in body and "0.52" in body and 'rowspan="' in body and "0.99" in body
    assert "cohen 0.90*" in body and "kermany 0.20" in body and "kermany 0.20*" not in body
    assert 'title="not evaluable within cohen' in body and "random directions 0.40; p 0.001" in body
    assert "100 % of positives from cohen" in trust  # the label's sentence
    assert "every image with a view recorded has the same one" in trust and "TCAV ran on fold 0 only." in trust
    assert "assets/trust/audit/confounding.png" in trust
    assert (tiny_run.full.parent / "assets/trust/audit/confounding.png").is_file()


def test_external_sets_are_shown_beside_the_in_domain_numbers(tiny_run):
    trust = section(tiny_run.full.read_text(encoding="utf-8"), "trust")
    assert f"External set {SET}" in trust and "shares the source(s) cohen" in trust
    entries = re.search(r'<table class="trust-entries">(.*?)</table>', trust, re.S)
    assert entries
    headline = next(r for r in entries.group(1).split("<tr>") if r.startswith('<td class="name">ensemble-mean'))
    assert "(headline)" in headline
    external, own = ci_text(0.6, [0.5, 0.7]), ci_text(0.85, [0.75, 0.95])
    assert headline.index(external) < headline.index(own)  # F1 external, then in-domain beside it
    assert "-0.250" in headline and "0.123" in headline and "0.045" in headline
    labels = re.search(r'<table class="trust-labels">(.*?)</table>', trust, re.S)
    assert labels
    rows = labels.group(1).split("<tr>")
    evaluable = next(r for r in rows if r.startswith("<td>COVID-19</td>"))
    assert "0.610 [0.510, 0.660]" in evaluable and "0.990 [0.890, 1.040]" in evaluable and "-0.380" in evaluable
    assert "not evaluable on this set" in labels.group(1)  # the last label of the run, on this set
    by_source = re.search(r'<table class="trust-by-source">(.*?)</table>', trust, re.S)
    assert by_source and "<td>cohen</td>" in by_source.group(1) and "<td>kermany</td>" in by_source.group(1)
    base = f"assets/trust/external/{SET}/"
    assert f"{base}reliability_ensemble-mean.png" in trust and f"{base}labels_ensemble-mean.png" in trust
    assert f"{base}reliability_tiny.png" in trust.split("Figures of the other entries")[1]


def test_the_most_confident_external_errors_show_their_maps(tiny_run):
    trust = section(tiny_run.full.read_text(encoding="utf-8"), "trust")
    errors = trust.split("The most confident errors (ensemble-mean)")[1].split("</div>")[0]
    image = r'<img src="(assets/trust/errors/[^"]+\.png)" alt="explanation map of images/ext-001.png">'
    links = re.findall(image, errors)
    assert len(links) == 1 and (tiny_run.full.parent / links[0]).is_file()
    assert "false positive: probability 0.970 vs threshold 0.420" in errors and "true labels: No Finding" in errors
    assert "overlay not found: errors/overlays/gone.png" in errors
    assert "overlay not found: ../../audit/figures/confounding.png" in errors  # never copied from outside the set
    assert "true labels: none" in errors and "occlusion" in errors


def test_the_shortcut_audit_is_split_by_source_in_the_trust_section_only(tiny_run):
    html = tiny_run.full.read_text(encoding="utf-8")
    trust, xai = section(html, "trust"), section(html, "xai")
    table = re.search(r'<table class="shortcut-by-source">(.*?)</table>', trust, re.S)
    assert table
    assert "<td>cohen</td>" in table.group(1) and "0.620 [0.520, 0.720]" in table.group(1)
    assert "<td>kermany</td>" in table.group(1) and "0.210 [0.110, 0.310]" in table.group(1)
    assert '<table class="shortcut-models">' in trust and "0.400 [0.300, 0.500]" in trust
    assert "Images with the most attribution outside the lungs" in trust
    assert "shortcut-by-source" not in xai and "attribution outside the lungs" in xai  # only a pointer
    assert "Images with the most attribution outside the lungs" not in xai and 'href="#trust"' in xai


def test_nothing_flagged_says_what_was_checked_and_damaged_parts_are_named(tiny_run, tmp_path):
    run = _copy_run(tiny_run.root, tmp_path / "run")
    write_json(run.layout.audit_metrics, audit_metrics(list(run.label_names), []))
    broken = run.layout.external("broken")
    broken.root.mkdir(parents=True)
    broken.metrics.write_text("{not json", encoding="utf-8")
    trust = section(report(run, tmp_path / "out").read_text(encoding="utf-8"), "trust")
    verdict = _verdict(trust)
    assert verdict.startswith("clear:") and "Nothing flagged by the confounder audit." in verdict
    assert CHECKED in verdict and "may therefore measure" not in verdict
    assert f"validated on 2 external set(s): broken, {SET} (30 images of 25 patients)" in verdict
    assert "The shortcut audit measured the share of positive attribution outside the lungs, split by 2" in verdict
    assert "tiny 0.400 [0.300, 0.500]" in verdict
    assert "The external set broken cannot be read:" in verdict and "metrics.json: damaged JSON" in trust
    assert "drops from 0.850" in verdict  # the other set still says how F1 moved


def test_missing_checks_name_their_commands(tiny_run):
    html = tiny_run.bare.read_text(encoding="utf-8")
    trust = section(html, "trust")
    verdict = _verdict(trust)
    root = tiny_run.root
    assert verdict.startswith("clear:")
    assert "The confounder audit is not available, so nothing could be flagged" in verdict
    assert f"The confounder audit has not been run: run `cxrlens audit --run {root}`." in verdict
    assert f"No external validation has been run: run `cxrlens evaluate-external --run {root} --data DIR`." in verdict
    assert f"run `cxrlens evaluate-explanations --run {root}` (after `cxrlens explain`)" in verdict
    assert 'class="dot off"' in html.split('href="#trust">')[1].split("</a>")[0]


def test_hostile_strings_from_the_audit_and_external_results_are_escaped(xss_run):
    index = xss_run.index
    html = index.read_text(encoding="utf-8")
    parser = parse(index)
    check_links(index, parser)
    trust = section(html, "trust")
    assert "<script>alert(4)" not in html and "<b>source</b>" not in html and "<i>cohen</i>" not in html
    assert "<img src=x" not in html and "alert(6)</script>" not in html and "<site>" not in html
    assert "&lt;script&gt;alert(4)&lt;/script&gt; is confounded with &lt;b&gt;source&lt;/b&gt;" in _verdict(trust)
    assert "&lt;img src=x onerror=alert(5)&gt;" in trust and "&lt;i&gt;cohen&lt;/i&gt;" in trust
    assert "images/&lt;script&gt;alert(6)&lt;/script&gt;.png" in trust and "/data/&lt;site&gt;" in trust
    assert "cohen&lt;script&gt;alert(2)&lt;/script&gt;" in trust  # a source of the shortcut audit
    assert EVIL_FLAG not in html and EVIL_NOTE not in html
    assert len(parser.scripts) == 2


def test_small_helpers():
    assert signed(0.05) == "+0.050" and signed(-0.12) == "-0.120" and signed(0) == "0.000" and signed(None) == "n/a"
    assert percent(0.999) == "99 %" and percent(0.001) == "<1 %" and percent(1) == "100 %" and percent("x") == "n/a"
    assert ci_text(0.5, [0.4, 0.6]) == "0.500 [0.400, 0.600]" and ci_text(0.5, None) == "0.500"
    assert ci_text(None, [0.1, 0.2]) == "n/a" and ci_text(0.5, [None, None]) == "0.500"


def test_results_of_other_shapes_still_give_a_report(tiny_run, tmp_path):
    run = _copy_run(tiny_run.root, tmp_path / "run")
    odd_audit = {
        "flags": "not a list",
        "checked": None,
        "files": "none",
        "columns": {
            "source": {
                "values": "x",
                "images": {"a": 3},
                "labels": {"A": "b", "B": {"within_auroc": [1], "within_notes": None, "top_value": 3}},
                "probe_auroc": {"tiny": "high"},
                "tcav": {"tiny": {"A": "z", "B": {"a": 0.5}}},
                "tcav_detail": [],
            },
            "age": [],
        },
    }
    write_json(run.layout.audit_metrics, odd_audit)
    odd_set = {
        "models": {"tiny": {"micro": "x", "labels": [], "in_domain": 3, "by_source": {"s": 1}}, "other": []},
        "headline": "missing",
        "errors": "none",
        "sources": [1],
        "notes": "n",
    }
    write_json(run.layout.external(SET).metrics, odd_set)
    trust = section(report(run, tmp_path / "out").read_text(encoding="utf-8"), "trust")
    verdict = _verdict(trust)
    assert verdict.startswith("clear:") and "The confounder audit ran and flagged nothing." in verdict
    assert f"On the external set {SET}, tiny&#39;s micro F1 is not defined" in verdict
    assert '<table class="audit-column">' in trust and "a 0.50" in trust and '<table class="trust-entries">' in trust


def test_the_verdict_sentence_of_an_external_set():
    item = {"name": "x", "images": 5, "headline": "m", "f1": {"external": 0.9, "in_domain": 0.8, "change": 0.1}}
    assert (
        sentence(item)
        == "On the external set x (5 images), m's micro F1 does not drop: 0.900 against 0.800 in-domain (+0.100)."
    )
    item["f1"] = {"external": 0.7, "in_domain": None, "change": None}
    assert sentence(item).endswith("m's micro F1 is 0.700; there are no in-domain numbers to compare it with.")
    assert sentence({"name": "y", "problem": "damaged"}) == "The external set y cannot be read: damaged."
