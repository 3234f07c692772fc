import numpy as np
import pytest

from cxrlens.evaluate.ensemble import align, common_filenames, mean_ensemble, vote_ensemble
from cxrlens.run.predictions import Predictions
from tests.evaluate.synthetic import LABELS, evaluate, synthetic_run, write_run


def test_mean_ensemble():
    a = np.array([[0.2, 0.9], [0.6, 0.1]])
    b = np.array([[0.4, 0.5], [0.8, 0.3]])
    assert mean_ensemble([a, b]) == pytest.approx(np.array([[0.3, 0.7], [0.7, 0.2]]))


def test_vote_is_a_strict_majority():
    m1 = np.array([[1, 1, 0, 0]], dtype=bool)
    m2 = np.array([[1, 0, 1, 0]], dtype=bool)
    m3 = np.array([[0, 0, 1, 0]], dtype=bool)
    decision, fraction = vote_ensemble([m1, m2, m3])
    assert decision.tolist() == [[True, False, True, False]]
    assert fraction == pytest.approx(np.array([[2 / 3, 1 / 3, 2 / 3, 0]]))


def test_vote_tie_is_negative():
    decision, fraction = vote_ensemble([np.array([[1, 1]], dtype=bool), np.array([[0, 1]], dtype=bool)])
    assert decision.tolist() == [[False, True]]
    assert fraction.tolist() == [[0.5, 1.0]]


def test_common_filenames_keep_the_first_order():
    def block(names: list[str]) -> Predictions:
        n = len(names)
        return Predictions(tuple(names), np.arange(n, dtype=float)[:, None], np.zeros((n, 1), dtype=np.int8))

    blocks = [block(["c", "a", "b"]), block(["a", "b", "d"]), block(["b", "a"])]
    assert common_filenames(blocks) == ("a", "b")
    aligned = align(blocks)
    assert [b.filenames for b in aligned] == [("a", "b")] * 3
    assert aligned[0].probs[:, 0].tolist() == [1.0, 2.0]
    assert aligned[2].probs[:, 0].tolist() == [1.0, 0.0]


def test_ensembles_in_a_run_known_answer(tmp_path):
    labels = ["A"]
    truth = {f"i{k}": [v] for k, v in enumerate([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])}
    probs = {  # per model, per image
        "m1": [0.9, 0.9, 0.4, 0.9, 0.9, 0.1, 0.6, 0.1, 0.1, 0.1],
        "m2": [0.9, 0.4, 0.9, 0.9, 0.9, 0.1, 0.6, 0.1, 0.1, 0.1],
        "m3": [0.4, 0.9, 0.9, 0.4, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1],
    }
    rows = [(name, 0, model, "test", [probs[model][k]]) for model in probs for k, name in enumerate(truth)]
    run = write_run(tmp_path / "run", labels, truth, rows)
    result = evaluate(run, min_support=1)
    assert list(result.entries) == ["m1", "m2", "m3", "ensemble-mean", "ensemble-vote"]
    vote = result.entries["ensemble-vote"].folds[0].per_label["A"]
    # majority: every positive has >= 2 votes; image 6 has 2 false votes -> one false positive
    assert (vote["tp"], vote["fp"], vote["fn"], vote["tn"]) == (5, 1, 0, 4)
    mean = result.entries["ensemble-mean"].folds[0].per_label["A"]
    # mean probabilities: positives 0.733/0.733/0.733/0.733/0.9, image 6: 0.433 -> negative
    assert (mean["tp"], mean["fp"], mean["fn"], mean["tn"]) == (5, 0, 0, 5)
    assert result.entries["ensemble-mean"].members == ["m1", "m2", "m3"]


def test_ensembles_use_common_test_images_and_can_be_chosen(tmp_path):
    run = synthetic_run(tmp_path / "run", models=("a", "b", "c"), n_folds=1)
    first_test = {}

    def drop_one(row: dict[str, str]) -> None:
        if row["model"] == "a" and row["subset"] == "test" and not first_test:
            first_test["name"] = row["filename"]
        if row["model"] == "a" and row["filename"] == first_test.get("name"):
            row["model"] = "other"

    from tests.evaluate.synthetic import rewrite_predictions

    rewrite_predictions(run, drop_one)
    result = evaluate(run, models=["a", "b", "c"])
    n_b = result.entries["b"].folds[0].n_images
    assert result.entries["ensemble-mean"].folds[0].n_images == n_b - 1
    assert any("common to all members" in note for note in result.notes)
    chosen = evaluate(run, models=["a"], members=["b", "c"])
    assert list(chosen.entries) == ["a", "ensemble-mean", "ensemble-vote"]
    assert chosen.entries["ensemble-vote"].members == ["b", "c"]
    assert len(LABELS) == len(chosen.label_names)
