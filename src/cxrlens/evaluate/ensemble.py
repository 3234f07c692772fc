"""Ensembles of several models' predictions on the same images.

* ``mean`` (what the paper's published code did): the mean of the members' probabilities, then thresholded
  like a single model.
* ``vote`` (what the paper's text says): each member binarises with its own thresholds, a label is positive when
  a strict majority of members says so (more than half: with an even number of members a tie is negative). Its
  score for ROC-AUC is the vote fraction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cxrlens.run.predictions import Predictions


def mean_ensemble(probs: Sequence[np.ndarray]) -> np.ndarray:
    """Mean probability over members (each (images, labels), same rows)."""
    if not probs:
        raise ValueError("an ensemble needs at least one member")
    return np.mean(np.stack([np.asarray(p, dtype=np.float64) for p in probs]), axis=0)


def vote_ensemble(decisions: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(strict-majority decisions, vote fraction) from the members' boolean decisions.

    A label is positive when more than half of the members predict it; an exact half (even number of
    members) is negative.
    """
    if not decisions:
        raise ValueError("an ensemble needs at least one member")
    stacked = np.stack([np.asarray(d).astype(bool) for d in decisions])
    votes = stacked.sum(axis=0)
    return 2 * votes > stacked.shape[0], votes / stacked.shape[0]


def common_filenames(blocks: Sequence[Predictions]) -> tuple[str, ...]:
    """Filenames present in every block, in the order of the first block."""
    if not blocks:
        return ()
    shared = set(blocks[0].filenames)
    for block in blocks[1:]:
        shared &= set(block.filenames)
    return tuple(name for name in blocks[0].filenames if name in shared)


def align(blocks: Sequence[Predictions]) -> list[Predictions]:
    """Every block restricted to the common filenames, rows in the same order."""
    names = common_filenames(blocks)
    return [block.take(names) for block in blocks]
