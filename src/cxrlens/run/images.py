"""Images exactly as the run preprocessed them: :class:`ImageSource` and the torch dataset over it.

An image of the run's data comes from the preprocessed-image cache (computed and stored there if missing);
any other file (a path given by the user) goes through the same preprocessing, with the run's settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from cxrlens.data.cache import PreprocessCache
from cxrlens.data.imageio import read_image
from cxrlens.data.labels import LabelSpace
from cxrlens.data.preprocess import Geometry, load_mask, preprocess_file
from cxrlens.data.records import ImageRecord
from cxrlens.data.streaming import ImageStore
from cxrlens.errors import RunError
from cxrlens.run.folder import Run


class LabelledImages(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """(image [1, N, N] float32 in [0, 1], targets [L]) of records, read from the cache.

    The targets carry the known mask: 1.0 / 0.0 where the label's value is known, NaN where it is unknown (a
    label the image's source does not annotate, :attr:`ImageRecord.unknown`). :func:`known_targets` splits
    them into (targets with 0 at unknown entries, known mask); a consumer that forgets the mask gets NaN, never
    a silent negative. ``targets`` (0/1) and ``known`` (bool) are the same as matrices (images x labels).
    """

    def __init__(self, records: Sequence[ImageRecord], space: LabelSpace, cache: ImageStore) -> None:
        self.records = list(records)
        self.cache = cache
        self.targets = space.encode_many(r.labels for r in self.records)
        self.known = space.known_mask(r.unknown for r in self.records) | self.targets.astype(bool)
        self._items = np.where(self.known, self.targets, np.float32(np.nan)).astype(np.float32)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.cache.load(self.records[index].path)
        return torch.from_numpy(np.ascontiguousarray(image))[None], torch.from_numpy(self._items[index])


def known_targets(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets with 0 where unknown, bool known mask) of targets from :class:`LabelledImages` (NaN: unknown)."""
    known = ~torch.isnan(targets)
    return torch.where(known, targets, torch.zeros_like(targets)), known


class ImageSource:
    """The run's images by file name (the run's data) or path (any other image file)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.preprocess = run.preprocess
        self.cache = PreprocessCache(run.preprocess, run.config.data.cache_dir)

    @cached_property
    def records(self) -> dict[str, ImageRecord]:
        """The run's data by file name (read on first use)."""
        return self.run.dataset.by_filename()

    def locate(self, name: str) -> tuple[Path, ImageRecord | None]:
        """(file, its record) for a file name of the run's data; (file, None) for another existing file."""
        record = self.records.get(name)
        if record is not None:
            return record.path, record
        path = Path(name)
        if path.is_file():
            return path.resolve(), None
        raise RunError(f"{name}: not an image of the run's data and not an existing file")

    def image(self, name: str) -> np.ndarray:
        """The preprocessed image [N, N] float32 in [0, 1]."""
        path, record = self.locate(name)
        return self.cache.load(path) if record is not None else preprocess_file(path, self.preprocess)

    def file(self, path: str | Path) -> np.ndarray:
        """Any image file, preprocessed with the run's settings (never looked up in the run's data)."""
        return preprocess_file(path, self.preprocess)

    def content_mask(self, name: str) -> np.ndarray:
        """Where the image content lies in the padded square (False on the zero padding)."""
        path, _ = self.locate(name)
        height, width = read_image(path, max_pixels=self.preprocess.max_pixels, min_side=1).shape
        return Geometry.for_shape(height, width, self.preprocess.size, self.preprocess.pad).content_mask()

    def lung_mask(self, path: str | Path | None) -> np.ndarray | None:
        """A lung mask file, preprocessed like its image; None if there is none (or it no longer exists)."""
        if not path or not Path(path).is_file():
            return None
        return load_mask(path, self.preprocess)

    def labelled(self, filenames: Sequence[str], space: LabelSpace) -> LabelledImages:
        """A torch dataset of images of the run's data with their labels."""
        missing = [f for f in filenames if f not in self.records]
        if missing:
            raise RunError(f"{len(missing)} file(s) are not in the run's data, e.g. {missing[0]!r}")
        return LabelledImages([self.records[f] for f in filenames], space, self.cache)

    def close(self) -> None:
        """Save what the cache learnt (file hashes), so the next run does not hash the files again."""
        self.cache.save_index()
