"""`cxrlens models | cv | train | evaluate | predict` as a user runs them."""

import json

import pytest

from tests.cli.test_cli_data import assert_clean_failure, cxrlens

TABLE1 = {
    "resnet18": 11_183_694,
    "resnet34": 21_291_854,
    "inception_v3": 24_382_716,
    "inception_resnet_v2": 54_327_982,
    "densenet161": 26_502_926,
}


def test_models_json_shows_table1_counts():
    result = cxrlens("models", "--json")
    assert result.returncode == 0, result.stderr
    counts = {row["name"]: row["parameters"] for row in json.loads(result.stdout)}
    for name, expected in TABLE1.items():
        assert counts[name] == expected


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    run = root / "run"
    result = cxrlens(
        "cv", "--run", str(run), "--data", "@sample", "--size", "48", "--cache", str(root / "cache"),
        "--model", "tiny", "--epochs", "2", "--folds", "3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return run


def test_cv_then_evaluate_then_predict(trained_run, tmp_path):
    assert (trained_run / "predictions.csv").is_file()
    result = cxrlens("evaluate", "--run", str(trained_run), "--min-support", "2")
    assert result.returncode == 0, result.stderr
    assert "| tiny | 3 |" in result.stdout
    assert (trained_run / "evaluation" / "table2.md").is_file()
    result = cxrlens("evaluate", "--run", str(trained_run), "--json", "--threshold", "tuned")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["threshold"]["mode"] == "tuned"

    from cxrlens.data.sources import sample_root

    image = next((sample_root() / "images" / "kermany").iterdir())
    result = cxrlens("predict", str(image), "--run", str(trained_run), "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["folds"] == [0, 1, 2] and set(out["images"][0]["probabilities"]) == set(out["thresholds"])
    evaluated = json.loads((trained_run / "evaluation" / "metrics.json").read_text())["entries"]["tiny"]["folds"]
    tuned = [sum(f["thresholds"][i] for f in evaluated) / 3 for i in range(len(out["thresholds"]))]
    assert list(out["thresholds"].values()) == pytest.approx(tuned), "predict decides as the last evaluation did"
    probabilities = out["images"][0]["probabilities"]
    assert out["images"][0]["positive"] == [k for k, p in probabilities.items() if p >= out["thresholds"][k]]


def test_cv_again_skips_finished_pairs(trained_run):
    result = cxrlens("cv", "--run", str(trained_run))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("already done") == 3


def test_clear_errors(trained_run, tmp_path):
    assert_clean_failure(cxrlens("evaluate", "--run", str(tmp_path)), "not a cxrlens run folder")
    assert_clean_failure(
        cxrlens("predict", str(tmp_path / "x.png"), "--run", str(trained_run)), "x.png", "no such file"
    )
    assert_clean_failure(
        cxrlens("predict", "README.md", "--run", str(trained_run), "--model", "resnet18"), "not trained"
    )
    result = cxrlens("train", "--run", str(tmp_path / "r"), "--data", "@sample", "--model", "resnet81")
    assert_clean_failure(result, "unknown model 'resnet81'")
