"""Unknown is not negative in training: the loss, its gradient and the validation F1 use known entries only."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cxrlens.config import TrainConfig
from cxrlens.models import create_model
from cxrlens.run.images import known_targets
from cxrlens.train.loss import masked_bce
from cxrlens.train.module import CxrLitModule

LABELS = ("COVID-19", "No Finding", "Pneumonia")


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits and 0/1 targets of six images; images 3-5 come from a source that never annotates COVID-19."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(6, 3, generator=generator, dtype=torch.float64)
    targets = (torch.rand(6, 3, generator=generator) > 0.5).double()
    known = torch.ones(6, 3, dtype=torch.bool)
    known[3:, 0] = False
    return logits, targets, known


def test_all_known_is_the_plain_bce_bit_for_bit():
    logits, targets, _ = _batch()
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    plain = F.binary_cross_entropy_with_logits(a, targets)
    masked = masked_bce(b, targets, torch.ones_like(targets, dtype=torch.bool))
    plain.backward()
    masked.backward()
    assert torch.equal(plain, masked) and torch.equal(a.grad, b.grad)
    assert torch.equal(masked_bce(logits, targets), F.binary_cross_entropy_with_logits(logits, targets))


def test_unknown_entries_change_neither_the_loss_nor_the_gradient():
    logits, targets, known = _batch()
    other_logits, other_targets = logits.clone(), targets.clone()
    other_logits[3:, 0] = torch.tensor([9.0, -7.0, 3.0], dtype=torch.float64)
    other_targets[3:, 0] = 1.0 - other_targets[3:, 0]
    other_targets[4, 0] = float("nan")  # as LabelledImages yields an unknown value
    grads = []
    losses = []
    for lg, tg in ((logits, targets), (other_logits, other_targets)):
        leaf = lg.clone().requires_grad_(True)
        loss = masked_bce(leaf, tg, known)
        loss.backward()
        losses.append(loss.detach())
        grads.append(leaf.grad)
    assert torch.isfinite(losses[0]) and torch.equal(losses[0], losses[1])
    assert torch.equal(grads[0], grads[1])
    assert torch.all(grads[0][3:, 0] == 0)


def test_a_label_one_source_never_annotates_uses_only_the_images_that_annotate_it():
    logits, targets, known = _batch()
    loss = masked_bce(logits, targets, known)
    # the mean over the known entries: COVID-19 of images 0-2 and the other labels of every image
    entries = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")[known]
    assert torch.allclose(loss, entries.mean(), rtol=0, atol=1e-12)
    assert entries.numel() == 15
    # a batch without any known entry: no loss, no gradient (not NaN)
    leaf = logits.clone().requires_grad_(True)
    empty = masked_bce(leaf, targets, torch.zeros_like(known))
    empty.backward()
    assert empty.item() == 0.0 and torch.all(leaf.grad == 0)


def test_known_targets_splits_nan_into_zero_and_mask():
    targets = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    values, known = known_targets(targets)
    assert values.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert known.tolist() == [[True, False], [True, True]]


def _module() -> CxrLitModule:
    torch.manual_seed(0)
    model = create_model("tiny", label_names=LABELS)
    try:  # the speed recipe (cxrlens.train.recipe) is an argument of the module where it exists
        from cxrlens.train.recipe import Recipe
    except ImportError:
        return CxrLitModule(model, TrainConfig())  # type: ignore[call-arg]
    return CxrLitModule(model, TrainConfig(), Recipe("32-true", channels_last=False, fused_optimizer=False))


def _nan_targets(targets: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    return torch.where(known, targets, torch.full_like(targets, float("nan")))


@pytest.mark.filterwarnings("ignore:.*self.log:UserWarning", "ignore::UserWarning")
def test_training_and_validation_steps_leave_unknown_entries_out():
    module = _module()
    x = torch.rand(6, 1, 48, 48, generator=torch.Generator().manual_seed(1))
    _, targets, known = _batch()
    targets = targets.float()
    module.train()  # (self.log outside a Trainer only warns)
    loss = module.training_step((x, _nan_targets(targets, known)), 0)
    flipped = targets.clone()
    flipped[3:, 0] = 1.0 - flipped[3:, 0]  # another value where it is unknown: the same loss
    assert torch.isfinite(loss) and torch.equal(loss, module.training_step((x, _nan_targets(flipped, known)), 0))
    module.eval()
    with torch.no_grad():
        logits = module.model(x).float()
        module.validation_step((x, _nan_targets(targets, known)), 0)
    # validation micro F1 over the known entries only
    pred = torch.sigmoid(logits)[known] >= 0.5
    truth = targets[known].bool()
    tp = (pred & truth).sum().item()
    expected = 2 * tp / (2 * tp + (pred & ~truth).sum().item() + (~pred & truth).sum().item())
    assert module.val_f1.compute().item() == pytest.approx(expected)
