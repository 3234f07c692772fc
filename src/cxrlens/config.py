"""Pydantic configuration models: one source of truth, unknown keys rejected.

A study config (``configs/paper.yaml``) is a :class:`RunConfig`; each command reads the part it needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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


class DataConfig(StrictModel):
    sources: list[str] = Field(
        default_factory=lambda: ["@sample"],
        description="data folders or CSV files; '@sample' is the embedded sample",
    )
    labels: LabelConfig = Field(default_factory=LabelConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    cache_dir: str | None = Field(None, description="preprocessed-image cache (default ~/.cache/cxrlens)")
    skip_bad: bool = Field(False, description="skip unreadable rows/images instead of stopping")
    frontal_views: list[str] = Field(default_factory=lambda: ["PA", "AP", "AP Supine", "AP Erect"])


class SplitConfig(StrictModel):
    scheme: Literal["kfold", "holdout"] = "kfold"
    folds: int = Field(5, ge=1)
    test_fraction: float = Field(0.4, gt=0.0, lt=1.0, description="holdout only")
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of training patients for validation")
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


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {str(err).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of options at the top level")
    return data
