"""`cxrlens evaluate-explanations`: measure the maps of a run instead of judging them by eye.

The paper compared heatmaps qualitatively. Here every map of ``run/explanations`` (image x model x method x
label) gets numbers (:mod:`cxrlens.xai.measures` says how each is defined):

* faithfulness: deletion and insertion AUC of the label's probability, and their gains over random pixel
  orders (``n_random`` seeded orders per image, shared by every model, method and label);
* localisation (images with a lung mask): share of positive attribution inside the lungs, the lungs' own
  area share (the chance level) and the pointing game;
* sanity: cascading model-parameter randomisation (Spearman of absolute maps with the original after each
  step); a method whose maps keep a mean Spearman above ``SANITY_THRESHOLD`` (0.5) after the whole cascade is
  flagged as insensitive to the model. Up to ``sanity_images`` images per model and method; the ensemble is
  skipped (its members are tested);
* stability: mean pairwise Spearman (absolute values) of the maps that the same architecture's models of
  every trained fold give for the same image, method, parameters and label (up to ``stability_images``
  images per model and method; the other folds' models may have trained on the image);
* shortcut audit: attribution outside the lungs, on the outer 8 % frame of the image content and on the zero
  padding, and the images that rely most on what lies outside the lungs.

Each summary is a mean with a 95 % percentile-bootstrap interval that resamples images. Methods and models
are ranked by the average of their normalised ranks ((k - rank) / (k - 1), 1 = best) over deletion gain,
insertion gain, lung share, pointing game and (lower is better) randomisation Spearman: methods are compared
within each model, models within each method; means equal to three decimals tie. Fold stability is reported
but not ranked: a method blind to the model (an edge detector) would be perfectly stable. The shortcut audit
lists, per model, the ten images with the largest outside-lung share (one map per image: its largest).

Only what is missing is computed: the stored maps are reused; per-map results are cached in
``run/xai/cache.json`` and the other folds' maps stored in ``run/xai/maps`` (keyed by parameters and
checkpoint hashes), so a rerun or a run with more images only does the new work. Outputs (atomic writes) in
``run/xai/``: ``metrics.json``, ``per_map.csv``, ``tables/<metric>.md|.csv``, ``figures/*.png``.
This module computes the scores; :mod:`cxrlens.xai.summary` summarises and ranks them and
:mod:`cxrlens.xai.files` writes the tables and figures.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrlens.attribution.budget import Footprint, measure
from cxrlens.attribution.methods import Context, ProbabilityOutput, get_method, method_names
from cxrlens.errors import ConfigError, RunError
from cxrlens.fileio import atomic_write_text, stable_hash
from cxrlens.run.folder import RunDir
from cxrlens.run.maps import MapStore, load_map
from cxrlens.xai import measures as xm
from cxrlens.xai.files import draw_figures, per_map_csv, write_tables
from cxrlens.xai.summary import (
    BORDER_FRACTION,
    ENSEMBLE,
    METRICS,
    SANITY_THRESHOLD,
    ScoredMap,
    Settings,
    metric_table,
    nan_to_none,
    ranking,
    sanity_rows,
    shortcut_audit,
    verdict,
)

FORMAT = "cxrlens-xai/1"
MAPS_PER_CHUNK = 16  # maps whose deletion / insertion curves are built together
INSERTION_STARTS = ("blur", "black")

# ------------------------------------------------------------------------------------------- helpers


class _ResultCache:
    """Per-map results keyed by a hash of everything they depend on (``run/xai/cache.json``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, dict[str, Any]] = {"faithfulness": {}, "random": {}, "sanity": {}}
        if path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                loaded = {}  # a damaged cache only costs recomputation
            for section in self.data:
                if isinstance(loaded.get(section), dict):
                    self.data[section] = loaded[section]
        self._dirty = 0

    def get(self, section: str, key: str) -> Any:
        return self.data[section].get(key)

    def put(self, section: str, key: str, value: Any) -> None:
        self.data[section][key] = value
        self._dirty += 1
        if self._dirty >= 200:
            self.save()

    def save(self) -> None:
        if self._dirty:
            atomic_write_text(self.path, json.dumps(nan_to_none(self.data), allow_nan=False))
            self._dirty = 0


@dataclass
class _Loaded:
    model: torch.nn.Module
    footprint: Footprint
    sha: Any


class _ModelBank:
    """Prepared models of one fold at a time (loading another fold frees the previous one)."""

    def __init__(self, run: RunDir, label_names: Sequence[str], size: int) -> None:
        self.run = run
        self.label_names = list(label_names)
        self.size = size
        self._fold: int | None = None
        self._models: dict[str, torch.nn.Module] = {}
        self._loaded: dict[tuple[str, ...], _Loaded] = {}

    def sha(self, name: str, fold: int) -> str:
        done = self.run.done_file(name, fold)
        if not done.is_file():
            return ""
        return str(json.loads(done.read_text(encoding="utf-8")).get("model_sha256", ""))

    def available(self, name: str, fold: int, members: Sequence[str]) -> bool:
        names = list(members) if name == ENSEMBLE else [name]
        return bool(names) and all(self.run.is_done(n, fold) for n in names)

    def _member(self, name: str, fold: int) -> torch.nn.Module:
        if name not in self._models:
            from cxrlens.attribution.prepare import prepare_model
            from cxrlens.models.checkpoint import load_model

            if not self.run.is_done(name, fold):
                raise RunError(f"{self.run.root}: no trained {name} model for fold {fold}")
            model, _ = load_model(self.run.model_file(name, fold), self.label_names)
            self._models[name] = prepare_model(model)
        return self._models[name]

    def get(self, name: str, fold: int, members: Sequence[str] = ()) -> _Loaded:
        if fold != self._fold:
            self._models.clear()
            self._loaded.clear()
            self._fold = fold
        key = (name, *members) if name == ENSEMBLE else (name,)
        if key not in self._loaded:
            if name == ENSEMBLE:
                from cxrlens.models.ensemble import EnsembleModel

                model: torch.nn.Module = EnsembleModel([self._member(m, fold) for m in members], list(members)).eval()
                sha: Any = [self.sha(m, fold) for m in members]
            else:
                model = self._member(name, fold)
                sha = self.sha(name, fold)
            self._loaded[key] = _Loaded(model, measure(model, self.size), sha)
        return self._loaded[key]


class _Images:
    """Preprocessed images, lung masks and content masks of the maps' images."""

    def __init__(self, run: RunDir) -> None:
        from cxrlens.data.cache import PreprocessCache

        self.cfg = run.read_config()
        self.preprocess = self.cfg.data.preprocess
        self.cache = PreprocessCache(self.preprocess, self.cfg.data.cache_dir)
        self._paths: dict[str, Path] | None = None

    def path(self, filename: str) -> tuple[Path, bool]:
        """(file, is it outside the run's data)."""
        if self._paths is None:
            from cxrlens.data.sources import load_dataset

            self._paths = {rec.filename: rec.path for rec in load_dataset(cfg=self.cfg.data).records}
        if filename in self._paths:
            return self._paths[filename], False
        path = Path(filename)
        if path.is_file():
            return path.resolve(), True
        raise RunError(f"{filename}: explained image not found in the run's data nor as a file")

    def image(self, filename: str) -> np.ndarray:
        from cxrlens.data.preprocess import preprocess_file

        path, external = self.path(filename)
        return preprocess_file(path, self.preprocess) if external else self.cache.load(path)

    def content(self, filename: str) -> np.ndarray:
        from cxrlens.data.imageio import read_image
        from cxrlens.data.preprocess import Geometry

        path, _ = self.path(filename)
        height, width = read_image(path, max_pixels=self.preprocess.max_pixels, min_side=1).shape
        return Geometry.for_shape(height, width, self.preprocess.size, self.preprocess.pad).content_mask()

    def mask(self, path: str | None) -> np.ndarray | None:
        from cxrlens.data.preprocess import load_mask

        if not path or not Path(path).is_file():
            return None
        return load_mask(path, self.preprocess)


def _params_of(entry: dict[str, Any]) -> Any:
    return get_method(entry["method"]).parse(entry.get("parameters") or {})


def _members(entry: dict[str, Any], run: RunDir) -> list[str]:
    if entry["model"] != ENSEMBLE:
        return []
    members = entry.get("members")
    if isinstance(members, list) and members:
        return [str(m) for m in members]
    return sorted({m for m, f in run.trained() if f == int(entry["fold"])})


def _run_method(
    loaded: _Loaded, method_name: str, params: Any, image: np.ndarray, targets: list[int], budget: float
) -> torch.Tensor:
    method = get_method(method_name)
    context = Context(
        model=loaded.model,
        footprint=loaded.footprint,
        budget_bytes=budget,
        image=image,
        layer_name=getattr(loaded.model, "gradcam_layer_name", None),
    )
    x = torch.from_numpy(image)[None, None]
    with warnings.catch_warnings(), torch.enable_grad():
        warnings.filterwarnings("ignore", module=r"captum\..*")
        return method.run(context, params, x, targets).maps.detach().float()


# --------------------------------------------------------------------------------------- selection


def _select(
    entries: list[dict[str, Any]], label_names: Sequence[str], s: Settings, notes: list[str]
) -> list[ScoredMap]:
    known_methods = set(method_names())
    skipped_size, skipped_method, skipped_label = 0, set(), set()
    usable = []
    for entry in entries:
        if int(entry.get("size", -1)) != s.size:
            skipped_size += 1
        elif entry.get("method") not in known_methods:
            skipped_method.add(str(entry.get("method")))
        elif entry.get("label") not in label_names:
            skipped_label.add(str(entry.get("label")))
        else:
            usable.append(entry)
    if skipped_size:
        notes.append(f"{skipped_size} map(s) made at another image size than the run's {s.size} px were skipped")
    if skipped_method:
        notes.append(f"maps of unknown method(s) {sorted(skipped_method)} were skipped")
    if skipped_label:
        notes.append(f"maps of unknown label(s) {sorted(skipped_label)} were skipped")
    masked = {e["image"] for e in usable if e.get("lung_mask")}
    images = sorted({e["image"] for e in usable}, key=lambda name: (name not in masked, name))
    if s.images_max is not None and len(images) > s.images_max:
        notes.append(f"{s.images_max} of {len(images)} explained images evaluated (lung-masked images first)")
        images = images[: s.images_max]
    chosen = set(images)
    order = {name: i for i, name in enumerate(images)}
    maps = [ScoredMap(e, list(label_names).index(e["label"])) for e in usable if e["image"] in chosen]
    maps.sort(key=lambda m: (order[m.image], m.model, m.method, m.label))
    return maps


# ------------------------------------------------------------------- localisation and faithfulness


def _localise(maps: list[ScoredMap], tensor: torch.Tensor, mask: np.ndarray | None, content: np.ndarray) -> None:
    content_t = torch.from_numpy(content)
    border = xm.border_frame(content_t, BORDER_FRACTION)
    borders = xm.region_share(tensor, border)
    padding = xm.region_share(tensor, ~content_t)
    for i, item in enumerate(maps):
        item.values["border_share"] = float(borders[i])
        item.values["padding_share"] = float(padding[i])
    if mask is None:
        return
    mask_t = torch.from_numpy(mask)
    shares = xm.lung_share(tensor, mask_t)
    hits = xm.pointing_game(tensor, mask_t)
    area = float(xm.area_share(mask_t)[0])
    for i, item in enumerate(maps):
        item.values["lung_share"] = float(shares[i])
        item.values["outside_lung_share"] = 1.0 - float(shares[i]) if math.isfinite(float(shares[i])) else math.nan
        item.values["pointing_game"] = float(hits[i])
        item.values["lung_area_share"] = area


def _faith_key(item: ScoredMap, s: Settings) -> str:
    e = item.entry
    parts = [e["image"], e["model"], e["fold"], e["method"], e["label"], e.get("params_hash")]
    return stable_hash(
        ["faith", *parts, e.get("checkpoint_sha256"), e.get("scale"), s.steps, s.seed, s.insertion_start, s.size]
    )


def _random_key(image: str, model: str, fold: int, sha: Any, label_names: Sequence[str], s: Settings) -> str:
    return stable_hash(
        ["random", image, model, fold, sha, list(label_names), s.steps, s.seed, s.n_random, s.insertion_start, s.size]
    )


def _apply_faith(
    item: ScoredMap, deletion: list[float], insertion: list[float], random: dict[str, list[float]]
) -> None:
    rd = random["deletion"]
    ri = random["insertion"]
    item.curves = {"deletion": deletion, "insertion": insertion, "random_deletion": rd, "random_insertion": ri}
    auc = {k: float(xm.curve_auc(torch.tensor(v))) for k, v in item.curves.items()}
    item.values["deletion_auc"] = auc["deletion"]
    item.values["insertion_auc"] = auc["insertion"]
    item.values["random_deletion_auc"] = auc["random_deletion"]
    item.values["random_insertion_auc"] = auc["random_insertion"]
    item.values["deletion_gain"] = auc["random_deletion"] - auc["deletion"]
    item.values["insertion_gain"] = auc["insertion"] - auc["random_insertion"]


def _faithfulness(
    image_name: str,
    image: np.ndarray,
    group: list[ScoredMap],
    tensors: torch.Tensor,
    bank: _ModelBank,
    cache: _ResultCache,
    run: RunDir,
    label_names: Sequence[str],
    s: Settings,
) -> None:
    """Deletion / insertion of every map of one image and one model (fold); random orders cached per model."""
    first = group[0]
    members = _members(first.entry, run)
    todo = [i for i, item in enumerate(group) if cache.get("faithfulness", _faith_key(item, s)) is None]
    sha = first.entry.get("checkpoint_sha256")
    rkey = _random_key(image_name, first.model, first.fold, sha, label_names, s)
    random = cache.get("random", rkey)
    if todo or random is None:
        loaded = bank.get(first.model, first.fold, members)
        forward = ProbabilityOutput(loaded.model).eval()
        x = torch.from_numpy(image)[None]
        batch = loaded.footprint.no_grad_batch(s.budget)
        start = xm.gaussian_blur(x, s.blur_sigma) if s.insertion_start == "blur" else torch.zeros_like(x)
        n_pixels = x.shape[-1] * x.shape[-2]
        if random is None:
            orders = xm.random_orders(s.n_random, n_pixels, xm.seeded_generator(s.seed, "random", image_name))
            deletion = xm.deletion_curves(forward, x, orders, s.steps, batch).mean(dim=0)  # [S+1, L]
            insertion = xm.insertion_curves(forward, x, orders, s.steps, batch, start=start).mean(dim=0)
            random = {"deletion": deletion.T.tolist(), "insertion": insertion.T.tolist()}
            cache.put("random", rkey, random)
        for first_row in range(0, len(todo), MAPS_PER_CHUNK):  # bounds the [maps, pixels] order tensors
            chunk = todo[first_row : first_row + MAPS_PER_CHUNK]
            orders = torch.cat(
                [
                    xm.attribution_order(
                        tensors[i : i + 1],
                        xm.seeded_generator(s.seed, "order", image_name, group[i].method, group[i].label),
                    )
                    for i in chunk
                ]
            )
            deletion = xm.deletion_curves(forward, x, orders, s.steps, batch)
            insertion = xm.insertion_curves(forward, x, orders, s.steps, batch, start=start)
            for row, i in enumerate(chunk):
                label = group[i].label_index
                cache.put(
                    "faithfulness",
                    _faith_key(group[i], s),
                    {
                        "deletion": deletion[row, :, label].tolist(),
                        "insertion": insertion[row, :, label].tolist(),
                    },
                )
    for item in group:
        found = cache.get("faithfulness", _faith_key(item, s))
        label = item.label_index
        _apply_faith(
            item,
            found["deletion"],
            found["insertion"],
            {"deletion": random["deletion"][label], "insertion": random["insertion"][label]},
        )


def _per_image_pass(
    maps: list[ScoredMap],
    store: MapStore,
    images: _Images,
    bank: _ModelBank,
    cache: _ResultCache,
    run: RunDir,
    label_names: Sequence[str],
    s: Settings,
    notes: list[str],
    progress: Callable[[int], None] | None,
) -> None:
    by_fold_image: dict[tuple[int, str], list[ScoredMap]] = defaultdict(list)
    for item in maps:
        by_fold_image[(item.fold, item.image)].append(item)
    missing_masks: set[str] = set()
    unavailable: set[str] = set()
    for (fold, image_name), items in sorted(by_fold_image.items()):
        image = images.image(image_name)
        content = images.content(image_name)
        mask_path = items[0].entry.get("lung_mask")
        mask = images.mask(mask_path)
        if mask_path and mask is None:
            missing_masks.add(str(mask_path))
        by_model: dict[str, list[ScoredMap]] = defaultdict(list)
        for item in items:
            by_model[item.model].append(item)
        for model_name, group in by_model.items():
            tensors = torch.stack([torch.from_numpy(load_map(store.root / item.entry["map"])) for item in group])
            _localise(group, tensors, mask, content)
            if not bank.available(model_name, fold, _members(group[0].entry, run)):
                unavailable.add(f"{model_name} fold {fold}")
            else:
                _faithfulness(image_name, image, group, tensors, bank, cache, run, label_names, s)
            if progress:
                progress(len(group))
    if missing_masks:
        notes.append(
            f"{len(missing_masks)} lung mask file(s) named by the maps no longer exist: those images count as unmasked"
        )
    if unavailable:
        notes.append(f"faithfulness not computed for models no longer in the run: {', '.join(sorted(unavailable))}")
    cache.save()


# --------------------------------------------------------------------------------------- sanity


def _subset(maps: list[ScoredMap], per_cell: int, skip_ensemble: bool) -> list[ScoredMap]:
    """Maps of the first ``per_cell`` images (evaluation order) of each (model, method) cell."""
    chosen: list[ScoredMap] = []
    seen: dict[tuple[str, str], list[str]] = defaultdict(list)
    for item in maps:
        if skip_ensemble and item.model == ENSEMBLE:
            continue
        images = seen[(item.model, item.method)]
        if item.image not in images:
            if len(images) >= per_cell:
                continue
            images.append(item.image)
        chosen.append(item)
    return chosen


def _sanity_key(item: ScoredMap, blocks: Sequence[str], s: Settings) -> str:
    e = item.entry
    return stable_hash(
        [
            "sanity",
            e["image"],
            e["model"],
            e["fold"],
            e["method"],
            e["label"],
            e.get("params_hash"),
            e.get("checkpoint_sha256"),
            e.get("scale"),
            list(blocks),
            s.seed,
            s.sanity_steps,
        ]
    )


def _sanity(
    maps: list[ScoredMap],
    store: MapStore,
    images: _Images,
    bank: _ModelBank,
    cache: _ResultCache,
    s: Settings,
    notes: list[str],
    progress: Callable[[int], None] | None,
) -> None:
    if any(m.model == ENSEMBLE for m in maps):
        notes.append("randomisation test: the ensemble is skipped (each member model is tested)")
    items = _subset(maps, s.sanity_images, skip_ensemble=True)
    by_model_fold: dict[tuple[str, int], list[ScoredMap]] = defaultdict(list)
    for item in items:
        if bank.available(item.model, item.fold, []):
            by_model_fold[(item.model, item.fold)].append(item)
    blocks_of: dict[str, list[str]] = {}
    example = torch.zeros(1, 1, s.size, s.size)
    for (model_name, fold), group in sorted(by_model_fold.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        loaded = bank.get(model_name, fold)
        if model_name not in blocks_of:
            blocks_of[model_name] = xm.backbone_blocks(loaded.model, example)
        blocks = blocks_of[model_name]
        if not blocks:
            notes.append(f"randomisation test: {model_name} has no parameterised blocks; skipped")
            continue
        layers = [list(reversed(blocks))[c - 1] for c in xm.cascade_cuts(len(blocks), s.sanity_steps)]
        todo = []
        for item in group:
            found = cache.get("sanity", _sanity_key(item, blocks, s))
            if found is None:
                todo.append(item)
            else:
                item.sanity_layers, item.sanity = layers, [math.nan if v is None else float(v) for v in found]
        if todo:
            _sanity_compute(todo, loaded, blocks, layers, store, images, s, progress)
            for item in todo:
                cache.put("sanity", _sanity_key(item, blocks, s), item.sanity)
        elif progress:
            progress(len(group) * len(layers))
    for item in items:
        if item.sanity:
            item.values["randomisation_spearman"] = item.sanity[-1]
    cache.save()


def _sanity_compute(
    todo: list[ScoredMap],
    loaded: _Loaded,
    blocks: list[str],
    layers: list[str],
    store: MapStore,
    images: _Images,
    s: Settings,
    progress: Callable[[int], None] | None,
) -> None:
    calls: dict[tuple[str, str], list[ScoredMap]] = defaultdict(list)
    for item in todo:
        calls[(item.image, item.method)].append(item)
    pixels = {name: images.image(name) for name in {item.image for item in todo}}
    originals = {id(item): torch.from_numpy(load_map(store.root / item.entry["map"])) for item in todo}
    for item in todo:
        item.sanity_layers, item.sanity = layers, []
    for _layer, randomised in xm.cascade(loaded.model, blocks, s.seed, s.sanity_steps):
        variant = _Loaded(randomised, loaded.footprint, loaded.sha)
        for (image_name, method_name), group in calls.items():
            targets = [item.label_index for item in group]
            maps = _run_method(variant, method_name, _params_of(group[0].entry), pixels[image_name], targets, s.budget)
            rho = xm.spearman(
                torch.stack([originals[id(item)] for item in group]).flatten(1), maps.flatten(1), absolute=True
            )
            for item, value in zip(group, rho.tolist(), strict=True):
                item.sanity.append(float(value))
            if progress:
                progress(len(group))


# -------------------------------------------------------------------------------------- stability


def _stability(
    maps: list[ScoredMap],
    store: MapStore,
    xai_store: MapStore,
    images: _Images,
    bank: _ModelBank,
    run: RunDir,
    s: Settings,
    notes: list[str],
    progress: Callable[[int], None] | None,
) -> None:
    folds = sorted({f for _, f in run.trained()})
    if len(folds) < 2:
        notes.append("fold stability skipped: only one fold is trained")
        return
    items = _subset(maps, s.stability_images, skip_ensemble=False)
    plan: dict[int, dict[tuple[str, str, str], list[ScoredMap]]] = defaultdict(lambda: defaultdict(list))
    others: dict[int, list[int]] = {}
    for item in items:
        members = _members(item.entry, run)
        usable = [f for f in folds if f != item.fold and bank.available(item.model, f, members)]
        others[id(item)] = usable
        for fold in usable:
            plan[fold][(item.image, item.model, item.method)].append(item)

    def key_of(item: ScoredMap, fold: int) -> tuple[str, str]:
        members = _members(item.entry, run)
        sha = [bank.sha(m, fold) for m in members] if item.model == ENSEMBLE else bank.sha(item.model, fold)
        return f"{item.model}-fold{fold}", stable_hash(["stability", item.entry.get("params_hash"), sha, fold])

    for fold in sorted(plan):
        for (image_name, model_name, method_name), group in sorted(plan[fold].items()):
            todo = [item for item in group if not xai_store.has(item.image, *_stored_key(item, key_of(item, fold)))]
            if todo:
                members = _members(todo[0].entry, run)
                loaded = bank.get(model_name, fold, members)
                image = images.image(image_name)
                params = _params_of(todo[0].entry)
                computed = _run_method(loaded, method_name, params, image, [i.label_index for i in todo], s.budget)
                for item, values in zip(todo, computed, strict=True):
                    name, params_hash = key_of(item, fold)
                    meta = {
                        "image": item.image,
                        "model": item.model,
                        "fold": fold,
                        "method": item.method,
                        "label": item.label,
                        "parameters": params.model_dump(),
                        "params_hash": params_hash,
                        "checkpoint_sha256": loaded.sha,
                        "members": members,
                        "size": int(image.shape[0]),
                        "original": item.entry["map"],
                        "original_fold": item.fold,
                    }
                    xai_store.write(item.image, name, item.method, item.label, values.numpy(), meta)
            if progress:
                progress(len(group))
    for item in items:
        usable = others[id(item)]
        if not usable:
            continue
        loaded_maps = [torch.from_numpy(load_map(store.root / item.entry["map"]))]
        for fold in usable:
            name, _ = key_of(item, fold)
            loaded_maps.append(
                torch.from_numpy(load_map(xai_store.map_path(item.image, name, item.method, item.label)))
            )
        item.values["fold_stability"] = xm.pairwise_spearman(loaded_maps)
    if not any(others.values()):
        notes.append("fold stability: no map's model is trained in another fold")


def _stored_key(item: ScoredMap, key: tuple[str, str]) -> tuple[str, str, str, str]:
    """(model key, method, label, params hash) of an other-fold map in ``run/xai/maps``."""
    return key[0], item.method, item.label, key[1]


# -------------------------------------------------------------------------------------- entry point


def evaluate_explanations(
    run_dir: str | Path,
    images_max: int | None = None,
    steps: int = 16,
    bootstrap: int = 1000,
    seed: int = 0,
    memory_gib: float = 8.0,
    sanity: bool = True,
    stability: bool = True,
    progress: Callable[[int], None] | None = None,
    *,
    sanity_images: int = 4,
    stability_images: int = 4,
    sanity_steps: int = 5,
    n_random: int = 3,
    insertion_start: str = "blur",
    figures: bool = True,
) -> dict[str, Any]:
    """Measure every explanation map of a run; writes ``run/xai/`` and returns what ``metrics.json`` holds.

    ``images_max``: evaluate at most this many explained images (lung-masked first). ``steps``: deletion /
    insertion steps. ``bootstrap``: resamples for the 95 % intervals. ``sanity_images`` / ``stability_images``:
    images per model and method for the randomisation test / fold stability; ``sanity_steps``: randomisation
    steps (the head alone and the whole model always included). ``insertion_start``: ``blur`` or ``black``.
    ``figures``: draw ``xai/figures/*.png`` (curves, bars with CIs, the randomisation cascade).
    ``progress(n)`` is called as maps are done.
    """
    if steps < 2:
        raise ConfigError(f"steps must be at least 2, not {steps}")
    if images_max is not None and images_max < 1:
        raise ConfigError(f"images_max must be at least 1, not {images_max}")
    if bootstrap < 0 or memory_gib <= 0 or n_random < 1 or sanity_images < 1 or stability_images < 1:
        raise ConfigError("bootstrap >= 0, memory_gib > 0, n_random, sanity_images and stability_images >= 1 needed")
    if sanity_steps < 1:
        raise ConfigError(f"sanity_steps must be at least 1, not {sanity_steps}")
    if insertion_start not in INSERTION_STARTS:
        raise ConfigError(f"insertion_start must be one of {', '.join(INSERTION_STARTS)}, not {insertion_start!r}")
    run = RunDir(Path(run_dir))
    run.read_info()
    label_names = run.label_names()
    images = _Images(run)
    settings = Settings(
        images_max,
        steps,
        bootstrap,
        seed,
        memory_gib,
        sanity,
        stability,
        sanity_images,
        stability_images,
        sanity_steps,
        n_random,
        insertion_start,
        images.preprocess.size,
    )
    store = MapStore(run.root / "explanations")
    notes: list[str] = []
    maps = _select(store.read_index(), label_names, settings, notes)
    if not maps:
        raise RunError(f"{run.root}: no explanation maps to evaluate; run `cxrlens explain` first")
    out = run.root / "xai"
    cache = _ResultCache(out / "cache.json")
    bank = _ModelBank(run, label_names, settings.size)
    _per_image_pass(maps, store, images, bank, cache, run, label_names, settings, notes, progress)
    if not any(m.entry.get("lung_mask") for m in maps):
        notes.append("localisation and outside-lung share not computed: none of the evaluated images has a lung mask")
    if sanity:
        _sanity(maps, store, images, bank, cache, settings, notes, progress)
    else:
        notes.append("randomisation test not run (--no-sanity)")
    if stability:
        _stability(maps, store, MapStore(out), images, bank, run, settings, notes, progress)
    else:
        notes.append("fold stability not run (--no-stability)")
    images.cache.save_index()

    rows_of = {name: metric_table(maps, name, settings) for name in METRICS}
    metrics = {
        name: {"description": description, "higher_is_better": higher, "rows": rows_of[name]}
        for name, (description, higher) in METRICS.items()
    }
    sanity_table = sanity_rows(maps)
    method_rank, model_rank, detail = ranking(rows_of)
    n_images = len({m.image for m in maps})
    params_per_cell: dict[tuple[str, str], set[str]] = defaultdict(set)
    for m in maps:
        params_per_cell[(m.model, m.method)].add(str(m.entry.get("params_hash")))
    mixed = sorted(f"{k[1]} on {k[0]}" for k, v in params_per_cell.items() if len(v) > 1)
    if mixed:
        notes.append(f"maps made with different parameters are pooled for {', '.join(mixed)}")
    result: dict[str, Any] = {
        "format": FORMAT,
        "settings": {**settings.describe(), "n_images": n_images},
        "n_maps": len(maps),
        "notes": notes,
        "metrics": metrics,
        "sanity": {"threshold": SANITY_THRESHOLD, "rows": sanity_table},
        "ranking": {
            "methods": method_rank,
            "models": model_rank,
            "verdict": verdict(
                method_rank,
                model_rank,
                detail,
                sanity_table,
                len(maps),
                n_images,
                nan_to_none(rows_of),
            ),
        },
        "shortcut": shortcut_audit(maps, run.root, settings),
        "files": {},
    }
    result = nan_to_none(result)
    atomic_write_text(out / "per_map.csv", per_map_csv(maps))
    files: dict[str, Any] = {"metrics": "metrics.json", "per_map": "per_map.csv", "cache": "cache.json"}
    files["tables"] = write_tables(out, result)
    files["figures"] = draw_figures(out, maps, result) if figures else {}
    if (out / "maps").is_dir():
        files["maps"] = "maps"
    result["files"] = files
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2, allow_nan=False) + "\n")
    return result
