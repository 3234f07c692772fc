"""The plain sentences of the audit: what each check found, what it flags, and what was checked.

They are written for the report and the terminal: a label, a column and a number in words, no jargon beyond
"AUROC". Every flag ends with what it means for the model.
"""

from __future__ import annotations

from collections.abc import Sequence

from cxrlens.evaluate.audit.columns import NOUNS, describe
from cxrlens.text import fmt


def percent(share: float) -> str:
    """``0.37`` -> ``37 %``; never rounds a part up to ``100 %`` or down to ``0 %``."""
    value = round(100 * share)
    if value == 100 and share < 1:
        return "99 %"
    if value == 0 and share > 0:
        return "<1 %"
    return f"{value} %"


def share_phrase(column: str, value: str, share_positives: float, share_images: float) -> str:
    """``100 % of positives from cohen, which holds 37 % of the images``."""
    return (
        f"{percent(share_positives)} of positives {describe(column, value)}, "
        f"which holds {percent(share_images)} of the images"
    )


def data_sentence(
    label: str, column: str, value: str | None, share_positives: float, share_images: float, positives: int
) -> str:
    """What the data say about a label and a column (the value holding most of the label's positives)."""
    if not positives or value is None:
        return f"{label}: no positive image"
    return f"{label}: {share_phrase(column, value, share_positives, share_images)}"


def confounded_flag(
    label: str, column: str, auroc: float, cramers_v: float | None, value: str, share_pos: float, share_img: float
) -> str:
    noun = NOUNS[column]
    return (
        f"{label} is confounded with {noun}: the {noun} alone predicts it with AUROC {fmt(auroc, 2)} "
        f"(Cramér's V {fmt(cramers_v, 2)}); {share_phrase(column, value, share_pos, share_img)}."
    )


def behaviour_flag(
    label: str, column: str, pooled: float, within: dict[str, float | None], min_within: int, chance: float
) -> str | None:
    """The flag of a label whose good pooled AUROC cannot be checked within the column's values, or falls to
    chance within every value; None otherwise (the caller checks the pooled AUROC against the threshold)."""
    noun = NOUNS[column]
    measured = {value: auc for value, auc in within.items() if auc is not None}
    end = f"its score cannot be told apart from the {noun}."
    if not measured:
        return (
            f"{label}: pooled AUROC {fmt(pooled, 2)}, but no {noun} has {min_within} positives and {min_within} "
            f"negatives to check it within: {end}"
        )
    if all(auc <= chance for auc in measured.values()):
        listed = ", ".join(f"{value} {fmt(auc, 2)}" for value, auc in measured.items())
        return (
            f"{label}: pooled AUROC {fmt(pooled, 2)}, but within each {noun} it falls to chance "
            f"(≤ {fmt(chance, 2)}: {listed}): {end}"
        )
    return None


def not_evaluable(column: str, value: str, positives: int, negatives: int, min_within: int) -> str:
    return (
        f"not evaluable within {value} ({positives} positive(s), {negatives} negative(s); {min_within} of each needed)"
    )


def probe_flag(model: str, column: str, auroc: float, labels: Sequence[str]) -> str:
    noun = NOUNS[column]
    return (
        f"{model}'s features tell the {noun} apart (probe AUROC {fmt(auroc, 2)}) and the {noun} predicts "
        f"{', '.join(labels)} in the data: the model can score by the {noun}."
    )


def p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {fmt(p, 3)}"


def tcav_flag(model: str, label: str, column: str, value: str, score: float, random: float, p: float) -> str:
    return (
        f"{model}: the {label} logit rises along the direction of images {describe(column, value)} for "
        f"{percent(score)} of its positive test images (random directions: {percent(random)}; {p_text(p)})."
    )


def checked_sentence(
    labels: Sequence[str],
    columns: Sequence[str],
    images: int,
    models: Sequence[str],
    parts: Sequence[str],
    flags: int,
) -> str:
    """What was checked, for when nothing (or something) is flagged."""
    what = ", ".join(columns) if columns else "no column"
    where = "; ".join(parts)
    verdict = "nothing was flagged." if not flags else f"{flags} finding(s) flagged."
    models_text = f" and {len(models)} model(s) ({', '.join(models)})" if models else ""
    return f"Checked {len(labels)} label(s) against {what} on {images} images{models_text}: {where}; {verdict}"
