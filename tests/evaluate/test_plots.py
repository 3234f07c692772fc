import subprocess
import sys

from cxrlens.evaluate import evaluate_run
from cxrlens.evaluate.plots import slug, write_figures
from tests.evaluate.synthetic import synthetic_run, write_run

PNG = b"\x89PNG\r\n\x1a\n"


def test_slug():
    assert slug("Viral Pneumonia") == "viral-pneumonia"
    assert slug("COVID-19") == "covid-19"
    assert slug("ensemble-mean") == "ensemble-mean"


def test_write_figures(tmp_path):
    run = synthetic_run(tmp_path / "run", models=("resnet18", "resnet34"), n_folds=2, n_images=40)
    result = evaluate_run(run, models=["resnet18"], ensembles=False)  # ensembles: see test_write_evaluation
    paths = write_figures(result, tmp_path / "figures")
    names = sorted(p.name for p in paths)
    bars = [f"bars_{s}.png" for s in ("bacterial-pneumonia", "covid-19", "no-finding", "pneumonia", "viral-pneumonia")]
    per_entry = [f"{kind}_{e}.png" for e in result.entries for kind in ("confusion", "roc")]
    assert names == sorted(bars + per_entry)
    for path in paths:
        assert path.read_bytes()[:8] == PNG
    assert not list((tmp_path / "figures").glob("*.tmp"))


def test_labels_absent_from_the_run_are_skipped(tmp_path):
    labels = {f"i{k}": [k % 2, k % 3 == 0] for k in range(12)}
    rows = [(name, 0, "m", "test", [0.3 + 0.4 * v[0], 0.6 * v[1]]) for name, v in labels.items()]
    run = write_run(tmp_path / "run", ["COVID-19", "ARDS"], labels, rows)
    names = {p.name for p in write_figures(evaluate_run(run, min_support=1), tmp_path / "figures")}
    assert names == {"bars_covid-19.png", "confusion_m.png", "roc_m.png"}


def test_import_has_no_matplotlib_side_effect():
    code = "import sys, cxrlens.evaluate; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
