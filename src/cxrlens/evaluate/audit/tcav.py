"""Part 3b of the audit, in the representation: does a label's logit rise along the direction of a column value?

captum's TCAV (Kim et al., ICML 2018; ``captum.concept.TCAV``) with each known value of each audited column as a
concept, for one fold's models (the lowest trained fold: one fold is enough to see what a training recipe
learns, and it keeps the audit cheap on a CPU). Choices:

* **Concept images**: up to ``audit.tcav_images`` images with that value, drawn (seeded by ``audit.seed``) from
  every audited image of the run; a value with fewer than :data:`MIN_CONCEPT` images is left out.
* **Controls**: ``audit.tcav_repeats`` random sets of as many images (at most half of the pool, so that two
  controls are never the same images), drawn from the run's images *without* that value. Drawn from every
  image, a control set would hold the concept itself whenever a value holds a large share of the data (Cohen
  holds about half of the paper's images), and the CAV would have to separate images of the same kind;
  against the other values' images it is the direction of the value itself.
* **Layer**: ``audit.tcav_layer``, by default the last block but one (:func:`tcav_default_layer`).
* **Concept direction (CAV)**: a logistic regression (scikit-learn, L2, C = 1, class-balanced, lbfgs:
  deterministic, unlike captum's default SGD classifier with an unseeded split) separating the concept's
  activations from one random set's. It is fitted on standardised activations (raw ones are badly scaled:
  lbfgs then needs many times the iterations) and its normal is mapped back to the raw activation space
  (``w / sigma``; a constant activation gets 0), where captum takes the gradients. (How well a column can be
  read from a model at all is the probe's question, :mod:`.probe`; no CAV accuracy is computed.)
* **Score**: for the label's positive test images of that fold (up to ``audit.tcav_images``), the share whose
  logit rises along the direction (captum's ``sign_count``: the gradient of the logit with respect to the
  layer, dotted with the CAV, is positive), averaged over the random sets.
* **Significance**: a two-sided Student t-test (``scipy.stats.ttest_ind``) of the concept-vs-random scores against
  random-vs-random scores of the same controls (control ``i`` as the concept against control ``i + 1``,
  cyclically: as many as there are controls); ``significant`` = p < 0.05. Identical score lists give no
  p-value. At a layer followed only by global pooling and the linear head (the last block of most backbones)
  the logit's gradient does not depend on the image, so each score would be 0 or 1 and only say whether the
  direction agrees with the head: hence the default one block earlier. With few control sets
  (``audit.tcav_repeats``) the test has little power: a small p is evidence, a large one is not evidence of
  absence.

CAVs and activations are written under ``save_path`` (``RUN/audit/cav``) in a folder per model and fold,
emptied first so nothing of an earlier audit (another checkpoint) is reused.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from captum.concept import TCAV, Classifier, Concept
from scipy.stats import ttest_ind
from sklearn.linear_model import LogisticRegression
from torch.utils.data import DataLoader, Dataset

from cxrlens.errors import ModelError
from cxrlens.models.registry import CxrClassifier, model_device
from cxrlens.text import slug

MIN_CONCEPT = 4
ALPHA = 0.05
CHUNK = 8  # images per attribution pass


class LinearCav(Classifier):  # type: ignore[misc]
    """The CAV classifier: deterministic logistic regression on standardised (flattened) layer activations; its
    weights are the boundary's normal in the raw activation space."""

    def __init__(self) -> None:
        self._weights: torch.Tensor | None = None
        self._classes: list[int] = []

    def train_and_eval(self, dataloader: DataLoader[Any], **kwargs: Any) -> dict[str, Any]:
        xs, ys = [], []
        for inputs, labels in dataloader:
            xs.append(inputs.detach().float().cpu())
            ys.append(labels.detach().cpu())
        x = torch.cat(xs).numpy().astype(np.float64)
        y = torch.cat(ys).numpy()
        sigma = x.std(axis=0)
        usable = sigma > 1e-12
        z = (x - x.mean(axis=0)) / np.where(usable, sigma, 1.0)
        model = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(z, y)
        raw = np.where(usable, model.coef_ / np.where(usable, sigma, 1.0), 0.0)
        coef = torch.tensor(raw, dtype=torch.float32)
        self._weights = torch.cat([-coef, coef]) if coef.shape[0] == 1 else coef
        self._classes = [int(c) for c in model.classes_]
        return {}

    def weights(self) -> torch.Tensor:
        if self._weights is None:
            raise ModelError("the concept classifier is not trained")
        return self._weights

    def classes(self) -> list[int]:
        return self._classes


class _Images(Dataset[torch.Tensor]):
    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


@dataclass(frozen=True)
class TcavSets:
    """The images of one TCAV run: concepts ((column, value) -> files), each concept's random control sets
    (same keys), and label -> the positive test images scored."""

    concepts: dict[tuple[str, str], list[str]]
    randoms: dict[tuple[str, str], list[list[str]]]
    positives: dict[str, list[str]]


def _draw(rng: np.random.Generator, files: Sequence[str], n: int) -> list[str]:
    if len(files) <= n:
        return list(files)
    picked = rng.choice(len(files), size=n, replace=False)
    return [files[i] for i in sorted(picked.tolist())]


def choose_sets(
    filenames: Sequence[str],
    columns: Mapping[str, np.ndarray],
    known: Mapping[str, Sequence[str]],
    positives: Mapping[str, Sequence[str]],
    images: int,
    repeats: int,
    seed: int,
) -> TcavSets:
    """Seeded draws: up to ``images`` per known value of each column, ``repeats`` control sets of the images
    without that value, and up to ``images`` positives per label."""
    rng = np.random.default_rng(seed)
    concepts: dict[tuple[str, str], list[str]] = {}
    randoms: dict[tuple[str, str], list[list[str]]] = {}
    for column, values in columns.items():
        for value in known[column]:
            files = [name for name, v in zip(filenames, values, strict=True) if v == value]
            others = [name for name, v in zip(filenames, values, strict=True) if v != value]
            # controls of at most half the pool: two of them are never the same images (identical sets would
            # give a zero direction and a spurious null of 0 %)
            size = min(images, len(others) // 2)
            if len(files) >= MIN_CONCEPT and size >= MIN_CONCEPT:
                concepts[(column, value)] = _draw(rng, files, images)
                randoms[(column, value)] = [_draw(rng, others, size) for _ in range(repeats)]
    chosen = {label: _draw(rng, list(files), images) for label, files in positives.items()}
    return TcavSets(concepts, randoms, chosen)


def significance(scores: Sequence[float], random_scores: Sequence[float]) -> tuple[float | None, bool]:
    """(two-sided Student t-test p-value, p < 0.05); None when it is undefined."""
    if len(scores) < 2 or len(random_scores) < 2:
        return None, False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(ttest_ind(scores, random_scores).pvalue)
    if not np.isfinite(p):
        return None, False
    return p, p < ALPHA


def tcav_default_layer(model: CxrClassifier) -> str:
    """The last block but one of the backbone's activation-profile layers (ResNets: ``layer3``; DenseNet161:
    ``denseblock3``): after the last block only pooling and the linear head follow, so there the logit's gradient
    is the same for every image and each TCAV score is 0 or 1."""
    names = model.nap_layer_names()
    return names[-2] if len(names) >= 2 else model.gradcam_layer_name


def layer_name(model: CxrClassifier, layer: str) -> str:
    """The qualified module name of ``layer`` (``layer4`` is also found as ``backbone.layer4``)."""
    for name in (layer, f"backbone.{layer}"):
        try:
            model.get_submodule(name)
        except AttributeError:
            continue
        return name
    raise ModelError(f"{model.model_name}: no layer {layer!r} for TCAV (audit.tcav_layer)")


def _key(concepts: Sequence[Concept]) -> str:
    return "-".join(str(c.id) for c in concepts)  # captum's concepts_to_str


def run_tcav(
    model: CxrClassifier,
    sets: TcavSets,
    image_of: Callable[[Sequence[str]], torch.Tensor],
    layer: str,
    save_path: Path,
    model_id: str,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """TCAV scores of every label's positives along every concept (see the module docstring)."""
    layer = layer_name(model, layer)
    device = model_device(model)
    shutil.rmtree(save_path / model_id, ignore_errors=True)
    shutil.rmtree(save_path / "av" / model_id, ignore_errors=True)

    def loader(files: Sequence[str]) -> DataLoader[torch.Tensor]:
        return DataLoader(_Images(image_of(files).to(device)), batch_size=CHUNK, shuffle=False)

    keys = list(sets.concepts)
    concepts: list[Concept] = []
    controls: list[list[Concept]] = []
    for i, (column, value) in enumerate(keys):
        concepts.append(Concept(i, slug(f"{column}-{value}"), loader(sets.concepts[(column, value)])))
        first = len(keys) + sum(len(c) for c in controls)
        randoms = sets.randoms[(column, value)]
        controls.append([Concept(first + k, f"random-{first + k}", loader(r)) for k, r in enumerate(randoms)])
    experiments = [[concept, r] for concept, rs in zip(concepts, controls, strict=True) for r in rs]
    nulls = [[rs[k], rs[(k + 1) % len(rs)]] for rs in controls if len(rs) > 1 for k in range(len(rs))]
    pairs = [*experiments, *nulls]
    tcav = TCAV(model, layers=[layer], model_id=model_id, classifier=LinearCav(), save_path=str(save_path))
    model.eval()
    labels: dict[str, Any] = {}
    for label, files in sets.positives.items():
        if not files or not experiments:
            labels[label] = None
            continue
        target = model.label_names.index(label)
        total = np.zeros(len(pairs), dtype=np.float64)
        for start in range(0, len(files), CHUNK):
            x = image_of(files[start : start + CHUNK]).to(device)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"captum\.")  # np.core
                scores = tcav.interpret(x, pairs, target=target)
            total += [float(scores[_key(pair)][layer]["sign_count"][0]) * len(x) for pair in pairs]
            if progress is not None:
                progress(len(x))
        mean = dict(zip((_key(pair) for pair in pairs), (total / len(files)).tolist(), strict=True))
        per: dict[str, dict[str, Any]] = {}
        for concept, rs, (column, value) in zip(concepts, controls, keys, strict=True):
            runs = [mean[_key([concept, r])] for r in rs]
            null = [mean[_key([rs[k], rs[(k + 1) % len(rs)]])] for k in range(len(rs))] if len(rs) > 1 else []
            p, significant = significance(runs, null)
            per.setdefault(column, {})[value] = {
                "score": float(np.mean(runs)),
                "scores": runs,
                "random_score": float(np.mean(null)) if null else None,
                "random_scores": null,
                "p_value": p,
                "significant": significant,
            }
        labels[label] = {"images": len(files), "columns": per}
    return {"layer": layer, "labels": labels}
