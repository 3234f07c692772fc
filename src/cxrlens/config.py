"""Pydantic configuration models: one source of truth, unknown keys rejected.

A study config (``configs/paper.yaml``) is a :class:`RunConfig` with one section per stage; each stage receives
its section, resolved from the file, the command-line options and ``--set key=value`` (dotted keys, see
:func:`load_run_config`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cxrlens.errors import ConfigError


class StrictModel(BaseModel):
    """Base: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class LabelConfig(StrictModel):
    preset: str = Field("auto", description="'auto' (labels from the data) or a preset such as 'paper14'")
    names: list[str] | None = Field(None, description="explicit ordered label list (overrides preset)")
    min_images: int = Field(10, ge=0, description="labels with fewer images are reported as not learnable")
    aliases: dict[str, str] = Field(default_factory=dict, description="finding spelling -> known node")
    extra_nodes: dict[str, str | None] = Field(
        default_factory=dict, description="new hierarchy nodes: node -> parent node (null for a root)"
    )
    tree: str | None = Field(
        None, description="YAML label tree adding nodes, parents and aliases (format: configs/label-tree.yaml)"
    )
    uncertain: Literal["ignore", "zeros", "ones"] = Field(
        "ignore", description="CheXpert/MIMIC uncertain (-1) labels: unknown (ignore), negative (zeros) or positive"
    )
    unmentioned: Literal["negative", "unknown"] = Field(
        "negative", description="CheXpert/MIMIC blank (not mentioned in the report) labels: negative or unknown"
    )

    @field_validator("tree")
    @classmethod
    def _expand_tree(cls, tree: str | None) -> str | None:
        """``$VAR`` and ``~`` expanded and the path made absolute, so a run's copied config finds the same file."""
        if tree is None:
            return None
        expanded = os.path.expandvars(tree)
        if "$" in expanded:
            raise ValueError(f"{tree!r}: environment variable not set")
        return str(Path(expanded).expanduser().absolute())


class PreprocessConfig(StrictModel):
    size: int = Field(512, ge=16, le=4096, description="output is size x size")
    lower_percentile: float = Field(1.0, ge=0.0, le=100.0)
    upper_percentile: float = Field(95.0, ge=0.0, le=100.0)
    pad: Literal["center", "end"] = Field("center", description="where the content sits in the square")
    resample: Literal["bicubic", "bilinear", "lanczos"] = "bicubic"
    max_pixels: int = Field(89_478_485, ge=1, description="larger images are refused (decompression bombs)")
    min_side: int = Field(32, ge=1, description="smaller images are refused")

    @model_validator(mode="after")
    def _check_percentiles(self) -> PreprocessConfig:
        if self.lower_percentile >= self.upper_percentile:
            raise ValueError(
                f"lower_percentile ({self.lower_percentile}) must be below upper_percentile ({self.upper_percentile})"
            )
        return self

    def key(self) -> dict[str, Any]:
        """The fields that change the preprocessed pixels (limits do not)."""
        return self.model_dump(exclude={"max_pixels", "min_side"})


def preprocess_differences(expected: PreprocessConfig, found: PreprocessConfig) -> list[str]:
    """``["size 512 vs 256", ...]``: the pixel-changing fields where ``found`` differs from ``expected``."""
    a, b = expected.key(), found.key()
    return [f"{name} {a[name]} vs {b[name]}" for name in a if a[name] != b.get(name)]


class DataConfig(StrictModel):
    sources: list[str] = Field(
        default_factory=lambda: ["@sample"],
        description="data folders or CSV files; '@sample' is the embedded sample",
    )
    labels: LabelConfig = Field(default_factory=LabelConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    cache_dir: str | None = Field(None, description="preprocessed-image cache (default ~/.cache/cxrlens)")
    streaming: str | None = Field(
        None,
        description="LitData shards written by `cxrlens data prepare --format streaming --out DIR`: training reads "
        "the images from them instead of the cache (for runs on many machines; needs the streaming extra)",
    )
    skip_bad: bool = Field(False, description="skip unreadable rows/images instead of stopping")
    frontal_views: list[str] = Field(
        default_factory=lambda: ["PA", "AP", "AP Supine", "AP Erect", "Frontal"],
        description="views kept (each collection's codes are mapped: PadChest AP_horizontal is 'AP Supine', a "
        "CheXpert frontal image without AP/PA is 'Frontal'); images of other views are dropped and counted",
    )
    keep_labels: dict[str, list[str]] = Field(
        default_factory=dict,
        description="source -> labels: keep only that source's images positive for one of them "
        "(e.g. nih: [No Finding] for adult normals); other sources are kept whole",
    )
    max_patients: dict[str, int] = Field(
        default_factory=dict,
        description="source -> at most this many patients (the same ones every time: chosen by a hash of the id)",
    )

    @field_validator("max_patients")
    @classmethod
    def _positive(cls, limits: dict[str, int]) -> dict[str, int]:
        bad = [source for source, n in limits.items() if n < 1]
        if bad:
            raise ValueError(f"max_patients of {', '.join(bad)} must be at least 1")
        return limits

    @field_validator("sources")
    @classmethod
    def _expand(cls, sources: list[str]) -> list[str]:
        """``$CXRLENS_DATA`` and ``~`` in source paths are expanded."""
        out = []
        for source in sources:
            expanded = str(Path(os.path.expandvars(source)).expanduser())
            if "$" in expanded:
                raise ValueError(f"{source!r}: environment variable not set")
            out.append(expanded)
        return out


class SplitConfig(StrictModel):
    scheme: Literal["kfold", "holdout", "by-source"] = Field(
        "kfold", description="kfold, holdout (repeated random), or by-source (each fold tests one source)"
    )
    folds: int = Field(5, ge=1, description="kfold folds or holdout repeats (by-source: one fold per source)")
    test_fraction: float = Field(0.4, gt=0.0, lt=1.0, description="holdout only")
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of training patients for validation")
    external_fraction: float = Field(
        0.0, ge=0.0, lt=1.0, description="share of patients held out of every fold (an external set)"
    )
    seed: int = 0

    @model_validator(mode="after")
    def _check_folds(self) -> SplitConfig:
        if self.scheme == "kfold" and self.folds < 2:
            raise ValueError("kfold needs at least 2 folds")
        return self


def _format_validation_error(err: ValidationError, where: str) -> str:
    parts = []
    for item in err.errors():
        loc = ".".join(str(x) for x in item["loc"]) or "(top level)"
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown option"
        parts.append(f"{loc}: {msg}")
    return f"{where}: " + "; ".join(parts)


def validate(model: type[StrictModel], data: dict[str, Any], where: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, where)) from None


def read_yaml(path: str | Path, missing: str) -> Any:
    """The parsed YAML of a file; a ConfigError names the file when it is missing, not UTF-8 or not YAML.

    ``missing`` is the message after the path when the file does not exist ("config file not found").
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {missing}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {str(err).splitlines()[0]}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    data = read_yaml(path, "config file not found")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of options at the top level")
    return data


class ModelConfig(StrictModel):
    names: list[str] = Field(default_factory=lambda: ["resnet18"], description="registered model names")
    weights: str = Field("none", description="'none', 'imagenet' or a path to a state dict")
    in_chans: Literal[1, 3] = Field(3, description="3: grey repeated (paper); 1: first conv summed over RGB")
    input_norm: Literal["none", "imagenet"] = Field("none", description="input normalisation inside the model")


class TrainConfig(StrictModel):
    epochs: int = Field(30, ge=1, description="maximum epochs")
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    patience: int = Field(5, ge=0, description="early stop after this many epochs without val-loss gain (0: off)")
    precision: str = Field(
        "auto",
        description="auto (bf16-mixed on CPUs with native bf16 and on bf16 GPUs, 16-mixed on older GPUs, else "
        "32-true; docs/training_recipe.md) or a lightning precision: 32-true (the paper's loop), bf16-mixed, 16-mixed",
    )
    accelerator: str = "auto"
    devices: str = Field("auto", description="'auto', a count like '2', or a list like '0,1'")
    num_nodes: int = Field(1, ge=1)
    strategy: str = Field("auto", description="lightning strategy, e.g. ddp")
    num_workers: int = Field(0, ge=0, description="data-loader worker processes")
    seed: int = 0
    channels_last: Literal["auto"] | bool = Field(
        "auto", description="channels-last memory format (speed, same maths); auto: per backbone where it helps"
    )
    fused_optimizer: bool = Field(True, description="Adam as one fused kernel per tensor (same maths, faster step)")
    limit_batches: int | None = Field(None, ge=1, description="at most this many batches per epoch (quick runs)")
    tensorboard: bool = Field(False, description="also log to TensorBoard (needs the tensorboard package)")

    @field_validator("precision", mode="before")
    @classmethod
    def _check_precision(cls, value: Any) -> str:
        """Lightning's short aliases become its full names (``bf16`` -> ``bf16-mixed``); unknown names fail here."""
        known = ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")
        text = str(value).strip()
        text = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed", "64": "64-true"}.get(text, text)
        if text not in known:
            raise ValueError(f"precision must be one of {', '.join(known)} (got {value!r})")
        return text


class EvaluateConfig(StrictModel):
    threshold: float | Literal["tuned"] = Field(0.5, description="0.5, another float, or 'tuned' on validation")
    min_support: int = Field(5, ge=1, description="labels with fewer test positives are marked, not averaged")
    ensembles: bool = True
    members: list[str] = Field(default_factory=list, description="ensemble members (default: the evaluated models)")


class ExplainConfig(StrictModel):
    """The ``explain:`` part of a study config (all overridable on the command line).

    Per-method ``params`` are validated by the method registry (``cxrlens methods`` lists them).
    """

    images: list[str] = Field(default_factory=list, description="filenames of the run's data, or image paths")
    n_images: int = Field(4, ge=0, description="test images picked when none are named (labels covered first)")
    followup_images: int = Field(4, ge=0, description="images of the test patient with most follow-ups (0: none)")
    models: list[str] = Field(default_factory=list, description="model names and/or 'ensemble' (default: all)")
    methods: list[str] = Field(default_factory=list, description="method names (default: all)")
    labels: list[str] = Field(default_factory=list, description="labels (default: predicted + true positives)")
    fold: int | None = Field(None, description="use this fold's models for every image")
    memory_gib: float = Field(8.0, gt=0, description="memory budget that sets the batch sizes")
    params: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-method parameters")
    figures: bool = True
    accelerator: str = Field("cpu", description="cpu, gpu or auto: where the maps are computed")
    devices: str = Field("1", description="a count like '2' or a list like '0,1': images are sharded over them")
    num_nodes: int = Field(1, ge=1)
    strategy: str = Field("auto", description="lightning strategy, e.g. ddp on a cluster")


class XaiConfig(StrictModel):
    """``cxrlens evaluate-explanations``: how the stored maps are measured (definitions: ``cxrlens.xai.measures``)."""

    images_max: int | None = Field(None, ge=1, description="evaluate at most this many images (lung-masked first)")
    steps: int = Field(16, ge=2, description="deletion / insertion steps")
    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples for the 95 % intervals")
    seed: int = Field(0, description="random pixel orders, bootstrap and randomisation")
    memory_gib: float | None = Field(None, gt=0, description="memory budget (default: explain.memory_gib)")
    sanity: bool = Field(True, description="cascading model-parameter randomisation test")
    stability: bool = Field(True, description="maps of the other folds' models (fold stability)")
    sanity_images: int = Field(4, ge=1, description="images per model and method for the randomisation test")
    stability_images: int = Field(4, ge=1, description="images per model and method for fold stability")
    sanity_steps: int = Field(5, ge=1, description="randomisation steps (head and whole model always included)")
    n_random: int = Field(3, ge=1, description="random pixel orders per image (the deletion/insertion baseline)")
    insertion_start: Literal["blur", "black"] = "blur"
    figures: bool = True
    accelerator: Literal["cpu", "gpu", "auto"] = Field("cpu", description="where the models run")


class NapConfig(StrictModel):
    """``cxrlens nap``: neuron activation profiles of one trained model."""

    model: str | None = Field(None, description="trained model name (default: the first trained model)")
    fold: int | None = Field(None, description="fold (default: the lowest trained fold of the model)")
    layers: list[str] = Field(default_factory=list, description="module names (default: the backbone's own)")
    groups: dict[str, str] = Field(default_factory=dict, description="name -> label expression (default: paper's)")
    images: Literal["test", "all"] = Field("test", description="the fold's test images, or every image")
    top_k: int = Field(20, ge=1, description="feature maps shown per layer")
    memory_gib: float = Field(4.0, gt=0, description="memory budget that sets the batch size")
    accelerator: Literal["cpu", "gpu", "auto"] = Field("cpu", description="where the model runs")


class PredictConfig(StrictModel):
    """``cxrlens predict``: which models decide, and how images stream through them."""

    model: str = Field("ensemble", description="a trained model name, or 'ensemble' (mean of every model)")
    fold: int | None = Field(None, description="one fold's model (default: the mean over the folds)")
    memory_gib: float = Field(4.0, gt=0, description="memory budget that sets the batch size")
    workers: int | None = Field(None, ge=0, description="image-decoding processes (default: cores - 1)")
    accelerator: Literal["cpu", "gpu", "auto"] = Field("cpu", description="where the models run")


class ReportConfig(StrictModel):
    """``cxrlens report``."""

    out: str | None = Field(None, description="report folder (default: RUN/report)")
    max_side: int = Field(256, ge=16, description="largest side of the gallery's X-rays and heatmaps (px)")


class ExternalConfig(StrictModel):
    """``cxrlens evaluate-external``: the run's models on data from elsewhere."""

    name: str | None = Field(None, description="name of the external set (default: its folder names)")
    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples of patients for the 95 % intervals")
    seed: int = 0
    min_support: int = Field(1, ge=1, description="a label needs this many positives (and a negative) there")
    calibration_bins: int = Field(10, ge=2, description="equal-width bins of the reliability diagram and ECE")
    errors: int = Field(4, ge=0, description="most confident external errors explained (0: none)")
    error_method: str = Field("occlusion", description="attribution method for the errors' maps")
    memory_gib: float = Field(4.0, gt=0, description="memory budget of the errors' explanations")


class AuditConfig(StrictModel):
    """``cxrlens audit``: are labels told apart by where an image comes from rather than what it shows?"""

    by: list[str] = Field(
        default_factory=lambda: ["source", "view", "sex", "age"], description="metadata columns to audit"
    )

    @field_validator("by", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        """``source,view`` (from ``--set audit.by=source,view``) is the list [source, view]."""
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value

    age_bins: list[int] = Field(default_factory=lambda: [18, 40, 60, 80], description="age bin edges (years)")
    flag_auroc: float = Field(
        0.7, gt=0.5, le=1.0, description="a column that alone predicts a label this well flags it as confounded"
    )
    min_within: int = Field(5, ge=1, description="positives and negatives a value needs for a within-value AUROC")
    chance_auroc: float = Field(0.6, ge=0.5, le=1.0, description="within-value AUROC at or below this: chance")
    probe_folds: int = Field(5, ge=2, description="patient-grouped folds of the representation probe")
    tcav: bool = Field(True, description="concept test (captum TCAV) of each column value")
    tcav_images: int = Field(24, ge=4, description="images per concept and per random set")
    tcav_repeats: int = Field(5, ge=2, description="random control sets (the significance test needs several)")
    tcav_layer: str | None = Field(None, description="layer of the concept directions (default: last block but one)")
    seed: int = 0


class CVConfig(StrictModel):
    splits: str | None = Field(None, description="splits CSV; default: made from `split` into the run folder")
    split: SplitConfig = Field(default_factory=SplitConfig)
    folds: list[int] | None = Field(None, description="folds to run (default: all in the splits)")


class RunConfig(StrictModel):
    """A whole study: data -> cross-validated training -> evaluation -> explanations -> report."""

    name: str = "study"
    data: DataConfig = Field(default_factory=DataConfig)
    models: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    cv: CVConfig = Field(default_factory=CVConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    explain: ExplainConfig = Field(default_factory=ExplainConfig)
    xai: XaiConfig = Field(default_factory=XaiConfig)
    nap: NapConfig = Field(default_factory=NapConfig)
    predict: PredictConfig = Field(default_factory=PredictConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    external: ExternalConfig = Field(default_factory=ExternalConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)


def apply_overrides(raw: dict[str, Any], overrides: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``raw`` with dotted keys set (``{"train.epochs": 2}``); a None value leaves the key as it is."""
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = raw
        *parents, leaf = dotted.split(".")
        if not leaf or not all(parents):
            raise ConfigError(f"{where}: {dotted!r} is not a dotted option name like train.epochs")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{where}: {part} must be a mapping of options, not {child!r}")
            node = child
        node[leaf] = value
    return raw


def parse_assignments(values: Iterable[str]) -> dict[str, Any]:
    """``--set key=value`` options -> dotted overrides; values are read as YAML (``2``, ``true``, ``[a, b]``)."""
    out: dict[str, Any] = {}
    for text in values:
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. train.epochs=2")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {text!r}: the value is not valid YAML ({str(err).splitlines()[0]})") from None
    return out


def load_run_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Read a study config (or the defaults) and apply dotted overrides like {"train.epochs": 2}."""
    where = str(path) if path is not None else "options"
    raw: dict[str, Any] = load_yaml(path) if path is not None else {}
    return validate(RunConfig, apply_overrides(raw, overrides or {}, where), where)
