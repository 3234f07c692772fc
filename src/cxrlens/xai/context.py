"""What every metric family of the explanation evaluation works with: :class:`Stage`, one per evaluation.

It holds the opened run, the settings, the two map folders (the run's explanations and the other folds'
maps), the run's image source, the fold's models (from the run's :class:`~cxrlens.run.ModelBank`, prepared
for captum, with their memory footprint), the result cache, the notes and the progress callback.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from cxrlens.attribution.methods import Context, Params, get_method
from cxrlens.attribution.prepare import prepare_model
from cxrlens.models.footprint import Footprint, measure
from cxrlens.models.names import ENSEMBLE
from cxrlens.run import ImageSource, ModelBank, Run
from cxrlens.run.maps import MapStore
from cxrlens.xai.cache import ResultCache
from cxrlens.xai.scores import ScoredMap
from cxrlens.xai.settings import Settings

Sha = str | list[str]  # a model's checkpoint hash; an ensemble's: its members'


@dataclass(frozen=True)
class Loaded:
    """A prepared model (or ensemble) of a fold, its memory footprint and checkpoint hash(es)."""

    model: nn.Module
    footprint: Footprint
    sha: Sha


class Models:
    """The run's models, one fold at a time (:class:`~cxrlens.run.ModelBank` with ``prepare_model``).

    The footprint (:func:`~cxrlens.models.footprint.measure`) of each loaded model is measured once per
    (model, fold, members).
    """

    def __init__(self, run: Run, size: int, device: torch.device | str = "cpu") -> None:
        self.run = run
        self.size = size
        self.bank = ModelBank(run, device=device, transform=prepare_model)
        self._footprints: dict[tuple[str, int, tuple[str, ...]], Footprint] = {}
        self._shas: dict[tuple[str, int], str] = {}

    def available(self, name: str, fold: int, members: Sequence[str] = ()) -> bool:
        """Is the model (every member of an ensemble) trained in ``fold``?"""
        return self.bank.available(name, fold, members)

    def sha(self, name: str, fold: int, members: Sequence[str] = ()) -> Sha:
        """The checkpoint hash of a model ('' if not trained); of an ensemble: its members' hashes."""
        if name == ENSEMBLE:
            return [self._sha(m, fold) for m in members]
        return self._sha(name, fold)

    def _sha(self, name: str, fold: int) -> str:
        if (name, fold) not in self._shas:
            self._shas[(name, fold)] = self.run.checkpoint_sha(name, fold)
        return self._shas[(name, fold)]

    def get(self, name: str, fold: int, members: Sequence[str] = ()) -> Loaded:
        """A model of ``fold`` (an ensemble: of ``members``), prepared, with its footprint and hash(es)."""
        model = self.bank.get(name, fold, members)
        key = (name, fold, tuple(members) if name == ENSEMBLE else ())
        if key not in self._footprints:
            self._footprints[key] = measure(model, self.size)
        return Loaded(model, self._footprints[key], self.sha(name, fold, members))


@dataclass(frozen=True)
class Stage:
    """One evaluation of a run's maps: everything the metric families share."""

    run: Run
    settings: Settings
    maps: MapStore  # the run's explanations
    other_maps: MapStore  # the same images explained by the other folds' models (fold stability)
    images: ImageSource
    models: Models
    cache: ResultCache
    notes: list[str] = field(default_factory=list)
    progress: Callable[[int], None] | None = None

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.run.label_names

    def note(self, text: str) -> None:
        self.notes.append(text)

    def advance(self, n: int) -> None:
        if self.progress is not None:
            self.progress(n)

    def members(self, item: ScoredMap) -> list[str]:
        """The ensemble members of a map (as its record says, else its fold's models); [] for a single model."""
        if item.model != ENSEMBLE:
            return []
        members = item.entry.get("members")
        if isinstance(members, list) and members:
            return [str(m) for m in members]
        return self.models.bank.members(item.fold)

    @staticmethod
    def params(item: ScoredMap) -> Params:
        """The method parameters a map was made with."""
        return get_method(item.method).parse(item.entry.get("parameters") or {})

    def original(self, item: ScoredMap) -> torch.Tensor:
        """The stored map ``[H, W]``."""
        return torch.from_numpy(self.maps.load(item.entry))

    def attribute(self, loaded: Loaded, item: ScoredMap, image: np.ndarray, targets: list[int]) -> torch.Tensor:
        """Maps ``[T, H, W]`` made like ``item`` (method and parameters) by ``loaded`` for the label indices
        ``targets`` of one preprocessed image."""
        context = Context(
            model=loaded.model,
            footprint=loaded.footprint,
            budget_bytes=self.settings.budget,
            image=image,
            layer_name=getattr(loaded.model, "gradcam_layer_name", None),
        )
        x = torch.from_numpy(image)[None, None]
        with warnings.catch_warnings(), torch.enable_grad():
            warnings.filterwarnings("ignore", module=r"captum\..*")  # captum's notes on hooks and grads
            return get_method(item.method).run(context, self.params(item), x, targets).maps.detach().float()
