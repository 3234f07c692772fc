"""The settings of one explanation evaluation: the ``xai:`` config section and the run's image size.

The config is validated by :class:`~cxrlens.config.XaiConfig` (ranges, ``insertion_start``); here it is only
completed (the memory budget defaults to ``DEFAULT_MEMORY_GIB`` when the config leaves it open) and described
for ``metrics.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cxrlens.config import XaiConfig
from cxrlens.models.footprint import GIB
from cxrlens.xai.measures import BORDER_FRACTION, MIN_PROBABILITY, default_blur_sigma
from cxrlens.xai.randomisation import SANITY_THRESHOLD
from cxrlens.xai.scores import RANKED

DEFAULT_MEMORY_GIB = 8.0
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Settings:
    images_max: int | None
    steps: int
    bootstrap: int
    seed: int
    memory_gib: float
    sanity: bool
    stability: bool
    sanity_images: int
    stability_images: int
    sanity_steps: int
    n_random: int
    insertion_start: str
    figures: bool
    size: int  # the run's image size: maps of another size are not evaluated

    @classmethod
    def of(cls, cfg: XaiConfig, size: int) -> Settings:
        """The settings of ``cfg`` for a run of ``size`` px images."""
        return cls(
            images_max=cfg.images_max,
            steps=cfg.steps,
            bootstrap=cfg.bootstrap,
            seed=cfg.seed,
            memory_gib=cfg.memory_gib if cfg.memory_gib is not None else DEFAULT_MEMORY_GIB,
            sanity=cfg.sanity,
            stability=cfg.stability,
            sanity_images=cfg.sanity_images,
            stability_images=cfg.stability_images,
            sanity_steps=cfg.sanity_steps,
            n_random=cfg.n_random,
            insertion_start=cfg.insertion_start,
            figures=cfg.figures,
            size=size,
        )

    @property
    def budget(self) -> float:
        """The memory budget in bytes."""
        return self.memory_gib * GIB

    @property
    def blur_sigma(self) -> float:
        return default_blur_sigma(self.size)

    def describe(self) -> dict[str, Any]:
        """The settings and the conventions behind the numbers, as ``metrics.json`` states them."""
        return {
            "images_max": self.images_max,
            "steps": self.steps,
            "bootstrap": self.bootstrap,
            "confidence": CONFIDENCE,
            "bootstrap_unit": "image",
            "seed": self.seed,
            "memory_gib": self.memory_gib,
            "sanity": self.sanity,
            "stability": self.stability,
            "sanity_images": self.sanity_images,
            "stability_images": self.stability_images,
            "sanity_steps": self.sanity_steps,
            "sanity_threshold": SANITY_THRESHOLD,
            "n_random_orders": self.n_random,
            "deletion_baseline": 0.0,
            "insertion_start": self.insertion_start,
            "blur_sigma_px": self.blur_sigma if self.insertion_start == "blur" else None,
            "pixel_order": "signed attribution, largest first; ties in seeded random order",
            "relative_gain": (
                f"gain divided by p(x), the label's probability on the unmodified image (first point of the "
                f"deletion curve); undefined (null) for p(x) < {MIN_PROBABILITY:g}"
            ),
            "relevance": (
                "positive part of the map; a map with no positive value is not evaluable (null) for the lung share, "
                "pointing game, border and padding shares, and counted in no_positive_maps"
            ),
            "spearman_on": "absolute values",
            "border_fraction": BORDER_FRACTION,
            "ranking_metrics": {name: ("higher" if up else "lower") for name, up in RANKED.items()},
            "size": self.size,
        }
