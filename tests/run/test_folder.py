"""The run package: a read-only open, the fold loader's checks, the image source, and one namer of files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrlens.data.preprocess import preprocess_file
from cxrlens.errors import ModelError, RunError
from cxrlens.models.checkpoint import load_model, save_model
from cxrlens.models.names import ENSEMBLE
from cxrlens.models.registry import create_model
from cxrlens.run import ImageSource, ModelBank, create_run, load_checkpoint, open_run
from cxrlens.run.models import Checkpoint
from cxrlens.train.runner import run_cv
from tests.train.test_runner import tiny_config

SRC = Path(__file__).resolve().parents[2] / "src" / "cxrlens"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("runpkg")
    cfg = tiny_config(root, **{"train.epochs": 1, "cv.folds": [0, 1]})
    run_cv(create_run(cfg, root / "run"), enable_progress_bar=False)
    return root / "run"


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}


def test_open_run_and_reading_write_nothing(trained):
    before = snapshot(trained)
    run = open_run(trained)
    run.splits(), run.predictions(), run.dataset, run.test_fold(), run.trained()
    bank = ModelBank(run)
    bank.get(ENSEMBLE, 0)
    source = ImageSource(run)
    source.image(run.splits()[0].filename)
    assert snapshot(trained) == before


def test_the_run_knows_its_models_and_thresholds(trained):
    run = open_run(trained)
    assert run.trained() == [("tiny", 0), ("tiny", 1)]
    assert run.trained_by_fold() == {0: ["tiny"], 1: ["tiny"]}
    assert run.thresholds("tiny") == dict.fromkeys(run.label_names, 0.5)  # not evaluated: the configured value
    checkpoint = ModelBank(run).checkpoint("tiny", 1)
    assert checkpoint == Checkpoint("models/tiny/fold1/model.pt", run.done("tiny", 1)["model_sha256"])


def test_the_bank_holds_one_fold_and_builds_the_ensemble(trained):
    bank = ModelBank(open_run(trained))
    first = bank.model("tiny", 0)
    assert bank.model("tiny", 0) is first
    ensemble = bank.get(ENSEMBLE, 0)
    assert list(ensemble.member_names) == ["tiny"]
    other = bank.model("tiny", 1)
    assert other is not first and bank.model("tiny", 0) is not first  # another fold freed the first
    assert bank.available(ENSEMBLE, 0) and not bank.available("resnet18", 0)


def _resave(run_dir: Path, **changes: object) -> Path:
    """Overwrite fold 0's checkpoint with one that differs from the run (labels or preprocessing)."""
    run = open_run(run_dir)
    model, _ = load_model(run.layout.model_file("tiny", 0))  # unchecked: an earlier call may have changed it
    labels = changes.pop("labels", model.label_names)
    preprocess = {**run.preprocess.model_dump(), **changes}
    other = create_model("tiny", label_names=labels)
    if labels == model.label_names:
        other.load_state_dict(model.state_dict())
    path = run.layout.model_file("tiny", 0)
    save_model(other, path, preprocess=preprocess, fold=0)
    return path


def test_a_checkpoint_with_other_preprocessing_or_labels_is_refused(trained, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    _resave(copy, size=64)
    with pytest.raises(ModelError, match=r"other preprocessing than the run's \(run vs checkpoint: size 48 vs 64\)"):
        ModelBank(open_run(copy)).model("tiny", 0)
    _resave(copy, upper_percentile=99.0)
    with pytest.raises(ModelError, match=r"upper_percentile 95.0 vs 99.0"):
        load_checkpoint(open_run(copy), "tiny", 0)
    run = open_run(copy)
    labels = list(reversed(run.label_names))
    _resave(copy, labels=labels)
    with pytest.raises(ModelError, match="checkpoint labels do not match the data"):
        ModelBank(open_run(copy)).model("tiny", 0)
    with pytest.raises(RunError, match=r"tiny fold 7 is not trained \(trained: tiny fold 0, tiny fold 1\)"):
        load_checkpoint(run, "tiny", 7)


def test_the_image_source_preprocesses_as_the_run_did(trained, tmp_path):
    run = open_run(trained)
    source = ImageSource(run)
    record = run.dataset.records[0]
    cached = source.image(record.filename)
    assert cached.shape == (48, 48)
    np.testing.assert_allclose(cached, preprocess_file(record.path, run.preprocess), atol=1 / 65535)
    outside = source.image(str(record.path))  # the same file given by path: preprocessed with the run's settings
    np.testing.assert_allclose(outside, cached, atol=1 / 65535)
    assert source.content_mask(record.filename).shape == (48, 48)
    with pytest.raises(RunError, match="not an image of the run's data and not an existing file"):
        source.image("nope.png")
    dataset = source.labelled([record.filename], _space(run))
    x, y = dataset[0]
    assert x.shape == (1, 48, 48) and torch.is_tensor(y)


def _space(run):
    from cxrlens.data.labels import LabelSpace

    return LabelSpace(run.label_names)


RUN_FILE_NAMES = ("run.json", "config.yaml", "splits.csv", "labels.csv", "predictions.csv", "metrics.json",
                  "thresholds.json", "done.json", "model.pt", "index.json", "summary.json", "per_map.csv",
                  "cache.json", "nap.npz", "table2.md", "per_label.csv")  # fmt: skip


NOT_RUN_FILES = {  # files outside any run that share a name with a run file
    ("data/cache.py", "index.json"),  # the preprocessed-image cache's own index
    ("data/streaming.py", "index.json"),  # LitData's index of a shard part
}


def test_one_place_names_the_files_of_a_run():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path == SRC / "run" / "layout.py":
            continue
        where = path.relative_to(SRC).as_posix()
        names = [name for name in RUN_FILE_NAMES if (where, name) not in NOT_RUN_FILES]
        pattern = re.compile("|".join(re.escape(f'"{name}"') for name in names))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert offenders == [], "run-folder file names belong in cxrlens/run/layout.py"
