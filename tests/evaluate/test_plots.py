import subprocess
import sys

from cxrlens.evaluate.plots import write_figures
from cxrlens.run.layout import RunLayout
from tests.evaluate.synthetic import evaluate, synthetic_run, write_run

PNG = b"\x89PNG\r\n\x1a\n"


def test_write_figures(tmp_path):
    run = synthetic_run(tmp_path / "run", models=("resnet18", "resnet34"), n_folds=2, n_images=40)
    result = evaluate(run, models=["resnet18"], ensembles=False)  # ensembles: see test_write_evaluation
    layout = RunLayout(tmp_path / "out")
    paths = write_figures(result, layout)
    labels = ("Bacterial Pneumonia", "COVID-19", "No Finding", "Pneumonia", "Viral Pneumonia")
    expected = [layout.bars_figure(label) for label in labels]
    expected += [layout.confusion_figure(e) for e in result.entries] + [layout.roc_figure(e) for e in result.entries]
    assert sorted(paths) == sorted(expected)
    for path in paths:
        assert path.read_bytes()[:8] == PNG
    assert not list(layout.evaluation_figures.glob("*.tmp"))


def test_labels_absent_from_the_run_are_skipped(tmp_path):
    labels = {f"i{k}": [k % 2, k % 3 == 0] for k in range(12)}
    rows = [(name, 0, "m", "test", [0.3 + 0.4 * v[0], 0.6 * v[1]]) for name, v in labels.items()]
    run = write_run(tmp_path / "run", ["COVID-19", "ARDS"], labels, rows)
    layout = RunLayout(tmp_path / "out")
    paths = set(write_figures(evaluate(run, min_support=1), layout))
    assert paths == {layout.bars_figure("COVID-19"), layout.confusion_figure("m"), layout.roc_figure("m")}


def test_import_has_no_matplotlib_side_effect():
    code = "import sys, cxrlens.evaluate; assert 'matplotlib.pyplot' not in sys.modules  # no global figure state"
    subprocess.run([sys.executable, "-c", code], check=True)
