"""Neuron activation profiles: expressions, a hand-computed profile, hook hygiene, a run end to end, errors."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from cxrlens.errors import DataError, LabelError, ModelError
from cxrlens.nap.expressions import DEFAULT_GROUPS, ExpressionError, make_groups, parse_expression, parse_group_option
from cxrlens.nap.profiles import compute_nap

LABELS = ("COVID-19", "No Finding", "Pneumonia", "Viral Pneumonia")


def _truth(expr: str, **values: bool) -> bool:
    columns = {name: np.array([values.get(name.replace(" ", "_").replace("-", "_"), False)]) for name in LABELS}
    return bool(parse_expression(expr, LABELS).evaluate(columns)[0])


# ---------------------------------------------------------------------------------------------------------
# expressions


def test_precedence_not_then_and_then_or():
    # A | B & C is A | (B & C): with A true and B false it is true
    assert _truth("COVID-19 | No Finding & Pneumonia", COVID_19=True)
    assert not _truth("(COVID-19 | No Finding) & Pneumonia", COVID_19=True)
    # !A & B is (!A) & B
    assert _truth("!COVID-19 & Pneumonia", Pneumonia=True)
    assert not _truth("!(COVID-19 & Pneumonia)", COVID_19=True, Pneumonia=True)
    assert _truth("!!COVID-19", COVID_19=True)
    assert str(parse_expression("a | b & !(c | d)")) == "a | b & !(c | d)"


def test_unknown_labels_put_an_image_in_a_group_only_when_the_expression_is_certain():
    nan = np.nan
    # columns COVID-19, No Finding, Pneumonia, Viral Pneumonia; image 0: COVID-19 unknown, Pneumonia positive;
    # image 1: COVID-19 unknown, Pneumonia negative; image 2: everything known, COVID-19 negative
    matrix = np.array([[nan, 0, 1, 1], [nan, 1, 0, 0], [0, 0, 1, 1]])
    groups = {
        "covid": "COVID-19",
        "not covid": "!COVID-19",
        "pneumonia or covid": "Pneumonia | COVID-19",
        "covid or not covid": "COVID-19 | !COVID-19",
        "normal and not covid": "No Finding & !COVID-19",
    }
    result = make_groups(matrix, LABELS, groups)
    members = {name: np.flatnonzero(result.masks[:, i]).tolist() for i, name in enumerate(result.names)}
    assert members == {
        "not covid": [2],  # unknown is not negative
        "pneumonia or covid": [0, 2],  # certain through Pneumonia
        "covid or not covid": [2],  # not certain for either unknown image
    }
    assert result.sizes["covid"] == 0 and result.sizes["normal and not covid"] == 0


def test_names_with_spaces_and_hyphens_and_quotes():
    expr = parse_expression("  Viral   Pneumonia &!COVID-19|No Finding ", LABELS)
    assert expr.labels() == {"Viral Pneumonia", "COVID-19", "No Finding"}
    assert _truth("Viral Pneumonia & !COVID-19", Viral_Pneumonia=True)
    assert not _truth("Viral Pneumonia & !COVID-19", Viral_Pneumonia=True, COVID_19=True)
    assert parse_expression('"A & B" | C').labels() == {"A & B", "C"}
    assert parse_group_option("viral = Viral Pneumonia & !COVID-19") == ("viral", "Viral Pneumonia & !COVID-19")
    for expr in DEFAULT_GROUPS.values():
        assert parse_expression(expr, LABELS).labels() <= {"Pneumonia", "COVID-19"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Pneumonia &", r"expected a label name, '!' or '\(' at the end"),
        ("(Pneumonia | COVID-19", r"missing '\)' for the '\(' at character 1 at the end"),
        ("Pneumonia) & COVID-19", r"unmatched '\)' at character 10"),
        ("Pneumonia & & COVID-19", r"expected a label name, '!' or '\(' at character 13"),
        ("Pneumonia (COVID-19)", r"expected '&', '\|' or the end at character 11"),
        ('"Pneumonia', "unclosed quote"),
        ("   ", "is empty"),
    ],
)
def test_syntax_errors_name_expression_and_position(text, message):
    with pytest.raises(ExpressionError, match=message) as info:
        parse_expression(text, LABELS)
    assert repr(text) in str(info.value)


def test_unknown_label_lists_the_valid_ones():
    with pytest.raises(LabelError, match=r"unknown label\(s\) 'Pneumonia COVID-19'.*valid labels: COVID-19, No"):
        parse_expression("Pneumonia COVID-19", LABELS)
    with pytest.raises(LabelError, match=r"'pneumonia' -> 'Pneumonia'\?"):
        parse_expression("pneumonia & !COVID-19", LABELS)


# ---------------------------------------------------------------------------------------------------------
# a model with known activations


class _Maps(nn.Module):
    """[B, 1, H, W] -> [B, 3, H, W]: x, 3x and zeros (dead)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[bool, bool]] = []  # (training, grad enabled) per call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((self.training, torch.is_grad_enabled()))
        return torch.cat([x, 3 * x, torch.zeros_like(x)], dim=1)


class _Vec(nn.Module):
    """[B, 3, H, W] -> [B, 2]: minus the spatial mean of channel 0, and a constant 5 (dead)."""

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        v = maps[:, 0].mean(dim=(1, 2))
        return torch.stack([-v, torch.full_like(v, 5.0)], dim=1)


class KnownModel(nn.Module):
    label_names = LABELS

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(OrderedDict(maps=_Maps(), vec=_Vec()))
        self.head = nn.Linear(2, len(LABELS))

    def nap_layer_names(self) -> list[str]:
        return ["backbone.maps", "backbone.vec"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


VALUES = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # per-image mean pixel value
SETS = [
    {"COVID-19", "Pneumonia", "Viral Pneumonia"},
    {"COVID-19", "Pneumonia"},
    {"Pneumonia", "Viral Pneumonia"},
    {"Pneumonia", "ARDS"},  # a label outside the label space is ignored
    {"No Finding"},
    set(),
]


def _images() -> torch.Tensor:
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 - 0.5  # mean 0 over the image
    return torch.stack([(v + checker)[None] for v in VALUES]).float()


def _loader(batch: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x = _images()
    return [(x[i : i + batch], torch.zeros(0)) for i in range(0, len(x), batch)]


def test_known_answer_profiles_dead_maps_and_ranking():
    result = compute_nap(KnownModel(), _loader(4), SETS, LABELS, groups=None)
    assert result.group_names == list(DEFAULT_GROUPS)
    assert result.group_sizes == {"COVID-19": 2, "pneumonia": 4, "pneumonia without COVID-19": 2, "neither": 2}
    assert result.n_images == 6 and result.empty_groups == []
    # group means of channel 0: 1.5, 2.5, 3.5, 5.5; mean over groups 3.25
    expected = np.array([-1.75, -0.75, 0.25, 2.25])

    maps = result.layers["backbone.maps"]
    assert maps.channels == 3 and maps.dead == 1
    np.testing.assert_array_equal(maps.live, [0, 1])
    np.testing.assert_allclose(maps.group_means[:, 0], [1.5, 2.5, 3.5, 5.5])
    np.testing.assert_allclose(maps.profile, np.stack([expected, 3 * expected], axis=1))
    np.testing.assert_allclose(maps.score, [4.0, 12.0])
    np.testing.assert_array_equal(maps.order, [1, 0])  # 3x spreads more than x
    np.testing.assert_allclose(maps.std, [np.std(VALUES), 3 * np.std(VALUES)])

    vec = result.layers["backbone.vec"]  # a 2-D output
    assert vec.channels == 2 and vec.dead == 1
    np.testing.assert_array_equal(vec.live, [0])
    np.testing.assert_allclose(vec.profile[:, 0], -expected)


def test_same_result_for_label_matrix_and_any_batch_size():
    by_sets = compute_nap(KnownModel(), _loader(4), SETS, LABELS)
    matrix = np.array([[name in s for name in LABELS] for s in SETS], dtype=np.float32)
    images = _images()
    by_matrix = compute_nap(KnownModel(), [images[i : i + 1] for i in range(6)], matrix, LABELS)
    for name, layer in by_sets.layers.items():
        np.testing.assert_allclose(layer.profile, by_matrix.layers[name].profile)


def test_empty_groups_are_reported_and_left_out():
    groups = {"covid": "COVID-19", "healthy": "No Finding", "impossible": "Viral Pneumonia & !Pneumonia"}
    result = compute_nap(KnownModel(), _loader(), SETS, LABELS, groups=groups)
    assert result.group_names == ["covid", "healthy"]
    assert result.empty_groups == ["impossible"] and result.group_sizes["impossible"] == 0
    assert result.layers["backbone.maps"].profile.shape == (2, 2)
    assert np.isfinite(result.layers["backbone.maps"].profile).all()
    with pytest.raises(DataError, match="at least two groups with images, got 1 of 2"):
        make_groups(SETS, LABELS, {"covid": "COVID-19", "none": "COVID-19 & No Finding"})


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


def test_hooks_removed_and_modes_restored_no_grad_in_eval():
    model = KnownModel().train()
    model.head.eval()  # mixed modes are restored per module
    compute_nap(model, _loader(), SETS, LABELS)
    assert _no_hooks(model)
    assert model.training and model.backbone.maps.training and not model.head.training
    assert model.backbone.maps.calls == [(False, False), (False, False)]
    assert torch.is_grad_enabled()


def test_hooks_removed_and_modes_restored_after_an_error_mid_pass():
    model = KnownModel().train()

    def failing_loader():
        yield _images()[:3]
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        compute_nap(model, failing_loader(), SETS, LABELS)
    assert _no_hooks(model) and all(m.training for m in model.modules())

    with pytest.raises(DataError, match="more images than the 6 label rows"):
        compute_nap(model, _loader() + _loader(), SETS, LABELS)
    assert _no_hooks(model) and model.training
    with pytest.raises(DataError, match="gave 4 images for 6 label rows"):
        compute_nap(model, _loader()[:1], SETS, LABELS)
    assert _no_hooks(model) and model.training


def test_layer_errors():
    model = KnownModel()
    with pytest.raises(ModelError, match=r"unknown layer 'backbone.map'; did you mean backbone.maps"):
        compute_nap(model, _loader(), SETS, LABELS, layers=["backbone.map"])
    with pytest.raises(ModelError, match="unknown layer 'nothing'; modules: backbone"):
        compute_nap(model, _loader(), SETS, LABELS, layers=["nothing"])
    assert _no_hooks(model)


def test_layer_that_does_not_run_or_returns_no_tensor():
    model = KnownModel()
    model.unused = nn.Identity()
    with pytest.raises(ModelError, match=r"layer\(s\) \['unused'\] did not run"):
        compute_nap(model, _loader(), SETS, LABELS, layers=["backbone.maps", "unused"])
    assert _no_hooks(model)


#


class _Twice(KnownModel):
    """Runs ``backbone.maps`` twice, and zeroes both layer outputs in place after their hooks have run."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.backbone.maps(x)
        vec = self.backbone.vec(maps)
        maps.mul_(0)
        vec.mul_(0)
        if getattr(self, "twice", False):
            self.backbone.maps(x)
        return self.head(vec)


def test_outputs_are_reduced_before_later_in_place_changes():
    result = compute_nap(_Twice(), _loader(), SETS, LABELS)
    plain = compute_nap(KnownModel(), _loader(), SETS, LABELS)
    for name, layer in plain.layers.items():
        np.testing.assert_allclose(result.layers[name].profile, layer.profile)


def test_layer_that_runs_twice_per_forward_is_refused():
    model = _Twice()
    model.twice = True
    with pytest.raises(ModelError, match=r"'backbone.maps' runs more than once per forward pass"):
        compute_nap(model, _loader(), SETS, LABELS)
    assert _no_hooks(model)
