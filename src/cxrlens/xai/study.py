"""`cxrlens evaluate-explanations`: measure the maps of a run instead of judging them by eye.

Chatterjee et al. (J. Imaging 2024) compared heatmaps qualitatively. Here every stored map (image x model x
method x label) gets numbers (:mod:`cxrlens.xai.measures` says how each is defined):

* faithfulness (:mod:`~cxrlens.xai.faithfulness`): deletion and insertion AUC of the label's probability,
  their gains over random pixel orders (``n_random`` seeded orders per image, shared by every model, method
  and label), and the gains relative to the label's probability on the unmodified image;
* localisation (:mod:`~cxrlens.xai.localisation`; images with a lung mask): share of positive attribution
  inside the lungs, the lungs' own area share (the chance level) and the pointing game; maps with no positive
  value are not evaluable and are counted (``no_positive_maps``);
* sanity (:mod:`~cxrlens.xai.sanity`): cascading model-parameter randomisation; a method whose maps keep a
  mean Spearman above 0.5 after the whole cascade is flagged as insensitive to the model;
* stability (:mod:`~cxrlens.xai.stability`): agreement of the maps the other folds' models give;
* shortcut audit: attribution outside the lungs, on the outer 8 % frame of the image content and on the zero
  padding, and the images that rely most on what lies outside the lungs.

:mod:`cxrlens.xai.summary` summarises (means with 95 % bootstrap intervals over images), ranks and words the
verdict; :mod:`cxrlens.xai.files` writes the tables and figures. Only what is missing is computed: the stored
maps are reused, per-map results are cached and the other folds' maps stored (keyed by parameters and
checkpoint hashes). Every output lies in the run layout's ``xai`` folder, written atomically.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from cxrlens.attribution.methods import method_names
from cxrlens.config import XaiConfig
from cxrlens.errors import RunError
from cxrlens.fileio import atomic_write_text, json_ready, write_json
from cxrlens.models.registry import device_for
from cxrlens.run import ImageSource, Run
from cxrlens.run.maps import MapStore
from cxrlens.run.stream import prefetch
from cxrlens.xai.cache import ResultCache
from cxrlens.xai.context import Models, Stage
from cxrlens.xai.faithfulness import faithfulness
from cxrlens.xai.files import draw_figures, per_map_csv, write_tables
from cxrlens.xai.localisation import localise, no_positive_counts, no_positive_note
from cxrlens.xai.randomisation import SANITY_THRESHOLD
from cxrlens.xai.sanity import sanity
from cxrlens.xai.scores import METRICS, ScoredMap
from cxrlens.xai.settings import Settings
from cxrlens.xai.stability import stability
from cxrlens.xai.summary import metric_table, ranking, sanity_rows, shortcut_audit, verdict

FORMAT = "cxrlens-xai/2"  # 2: relative gains (ranked instead of the raw ones), maps with no positive value


@dataclass(frozen=True)
class XaiResult:
    """The result of an explanation evaluation; :meth:`to_dict` is what ``metrics.json`` holds."""

    settings: dict[str, Any]
    n_maps: int
    notes: tuple[str, ...]
    metrics: dict[str, Any]  # metric -> description, higher_is_better, rows (model x method: mean, CI, n)
    sanity: dict[str, Any]  # threshold, rows (model x method: Spearman after each randomisation step)
    ranking: dict[str, Any]  # methods, models (rank, score), verdict
    shortcut: dict[str, Any]  # rows (per model), top_images
    no_positive_maps: dict[str, dict[str, int]]  # model -> method -> maps with no positive value
    files: dict[str, Any] = field(default_factory=dict)  # relative to the run layout's xai folder
    format: str = FORMAT

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN as null), keys in ``metrics.json``'s order."""
        return json_ready(
            {
                "format": self.format,
                "settings": self.settings,
                "n_maps": self.n_maps,
                "notes": list(self.notes),
                "metrics": self.metrics,
                "sanity": self.sanity,
                "ranking": self.ranking,
                "shortcut": self.shortcut,
                "no_positive_maps": self.no_positive_maps,
                "files": self.files,
            }
        )


# --------------------------------------------------------------------------------------- selection


def select_maps(entries: list[dict[str, Any]], stage: Stage) -> list[ScoredMap]:
    """The index records to evaluate, in evaluation order (lung-masked images first, at most ``images_max``)."""
    s, label_names = stage.settings, list(stage.label_names)
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
        stage.note(f"{skipped_size} map(s) made at another image size than the run's {s.size} px were skipped")
    if skipped_method:
        stage.note(f"maps of unknown method(s) {sorted(skipped_method)} were skipped")
    if skipped_label:
        stage.note(f"maps of unknown label(s) {sorted(skipped_label)} were skipped")
    masked = {e["image"] for e in usable if e.get("lung_mask")}
    images = sorted({e["image"] for e in usable}, key=lambda name: (name not in masked, name))
    if s.images_max is not None and len(images) > s.images_max:
        stage.note(f"{s.images_max} of {len(images)} explained images evaluated (lung-masked images first)")
        images = images[: s.images_max]
    order = {name: i for i, name in enumerate(images)}
    maps = [ScoredMap(e, label_names.index(e["label"])) for e in usable if e["image"] in order]
    maps.sort(key=lambda m: (order[m.image], m.model, m.method, m.label))
    return maps


# --------------------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class ImageFiles:
    """What the metrics of one image read from files: the preprocessed image, where its content lies in the
    padded square and its lung mask (None: none, or the file is gone). Called in the loader's worker processes."""

    images: ImageSource

    def __call__(self, item: tuple[int, str, str | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        _fold, name, mask_path = item
        return self.images.image(name), self.images.content_mask(name), self.images.lung_mask(mask_path)


def measure_per_image(stage: Stage, maps: list[ScoredMap]) -> None:
    """Localisation and faithfulness, one image (and fold) at a time, each image's models together; the images
    and masks are read ahead in worker processes (:func:`~cxrlens.run.stream.prefetch`)."""
    by_fold_image: dict[tuple[int, str], list[ScoredMap]] = defaultdict(list)
    for item in maps:
        by_fold_image[(item.fold, item.image)].append(item)
    missing_masks: set[str] = set()
    unavailable: set[str] = set()
    todo = [(fold, name, by_fold_image[(fold, name)][0].entry.get("lung_mask")) for fold, name in sorted(by_fold_image)]
    _ = stage.images.records  # the run's data is read once, here, not in every worker
    for (fold, image_name, mask_path), (image, content, mask) in prefetch(todo, ImageFiles(stage.images)):
        items = by_fold_image[(fold, image_name)]
        if mask_path and mask is None:
            missing_masks.add(str(mask_path))
        by_model: dict[str, list[ScoredMap]] = defaultdict(list)
        for item in items:
            by_model[item.model].append(item)
        for model_name, group in by_model.items():
            tensors = torch.stack([stage.original(item) for item in group])
            localise(group, tensors, mask, content)
            if stage.models.available(model_name, fold, stage.members(group[0])):
                faithfulness(stage, image, group, tensors)
            else:
                unavailable.add(f"{model_name} fold {fold}")
            stage.advance(len(group))
    if missing_masks:
        stage.note(
            f"{len(missing_masks)} lung mask file(s) named by the maps no longer exist: those images count as unmasked"
        )
    if unavailable:
        stage.note(f"faithfulness not computed for models no longer in the run: {', '.join(sorted(unavailable))}")
    stage.cache.save()


# -------------------------------------------------------------------------------------- summarising


def summarise(stage: Stage, maps: list[ScoredMap]) -> XaiResult:
    """Tables, ranking, verdict, shortcut audit and the counts of maps with no positive value."""
    s = stage.settings
    rows_of = {name: metric_table(maps, name, s) for name in METRICS}
    metrics = {
        name: {"description": description, "higher_is_better": higher, "rows": rows_of[name]}
        for name, (description, higher) in METRICS.items()
    }
    sanity_table = sanity_rows(maps)
    ranked = ranking(rows_of)
    n_images = len({m.image for m in maps})
    no_positive = no_positive_counts(maps)
    note = no_positive_note(no_positive, len(maps))
    if note:
        stage.note(note)
    params_per_cell: dict[tuple[str, str], set[str]] = defaultdict(set)
    for m in maps:
        params_per_cell[(m.model, m.method)].add(str(m.entry.get("params_hash")))
    mixed = sorted(f"{k[1]} on {k[0]}" for k, v in params_per_cell.items() if len(v) > 1)
    if mixed:
        stage.note(f"maps made with different parameters are pooled for {', '.join(mixed)}")
    source_of = {name: record.source for name, record in stage.images.records.items()}
    words = verdict(ranked, sanity_rows=sanity_table, metrics=rows_of, n_maps=len(maps), n_images=n_images)
    return XaiResult(
        settings={**s.describe(), "n_images": n_images},
        n_maps=len(maps),
        notes=tuple(stage.notes),
        metrics=metrics,
        sanity={"threshold": SANITY_THRESHOLD, "rows": sanity_table},
        ranking={"methods": ranked.methods, "models": ranked.models, "verdict": words},
        shortcut=shortcut_audit(maps, stage.run.layout, s, source_of),
        no_positive_maps=no_positive,
    )


def write_files(stage: Stage, maps: list[ScoredMap], result: XaiResult) -> XaiResult:
    """Write the per-map CSV, the tables, the figures and ``metrics.json``; the result with its files."""
    layout = stage.run.layout

    def relative(path: Any) -> str:
        return str(path.relative_to(layout.xai_dir).as_posix())

    atomic_write_text(layout.xai_per_map, per_map_csv(maps))
    ready = result.to_dict()
    files: dict[str, Any] = {
        "metrics": relative(layout.xai_metrics),
        "per_map": relative(layout.xai_per_map),
        "cache": relative(layout.xai_cache),
        "tables": write_tables(layout, ready),
        "figures": draw_figures(layout, maps, ready) if stage.settings.figures else {},
    }
    if stage.other_maps.maps_dir.is_dir():
        files["maps"] = relative(stage.other_maps.maps_dir)
    result = replace(result, files=files)
    write_json(layout.xai_metrics, result.to_dict())
    return result


# -------------------------------------------------------------------------------------- entry point


def evaluate_explanations(run: Run, cfg: XaiConfig, progress: Callable[[int], None] | None = None) -> XaiResult:
    """Measure every explanation map of ``run`` as ``cfg`` says; writes the run's ``xai`` folder.

    ``cfg.memory_gib`` None: ``DEFAULT_MEMORY_GIB`` (8 GiB). ``progress(n)`` is called as maps are done.
    Raises :class:`RunError` when the run has no explanations (or none to evaluate).
    """
    settings = Settings.of(cfg, run.preprocess.size)
    layout = run.layout
    images = ImageSource(run)
    stage = Stage(
        run=run,
        settings=settings,
        maps=MapStore(layout.explanations.root),
        other_maps=MapStore(layout.xai_maps.root),
        images=images,
        models=Models(run, settings.size, device_for(cfg.accelerator)),
        cache=ResultCache(layout.xai_cache),
        progress=progress,
    )
    maps = select_maps(stage.maps.read_index(), stage)
    if not maps:
        raise RunError(f"{run.root}: no explanation maps to evaluate; run `cxrlens explain` first")
    try:
        measure_per_image(stage, maps)
        if not any(m.entry.get("lung_mask") for m in maps):
            stage.note("localisation and outside-lung share not computed: none of the evaluated images has a lung mask")
        if settings.sanity:
            sanity(stage, maps)
        else:
            stage.note("randomisation test not run (--no-sanity)")
        if settings.stability:
            stability(stage, maps)
        else:
            stage.note("fold stability not run (--no-stability)")
    finally:
        images.close()
        stage.cache.save()
    return write_files(stage, maps, summarise(stage, maps))
