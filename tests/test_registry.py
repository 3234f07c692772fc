import pytest

from cxrlens.errors import RegistryError
from cxrlens.registry import Registry


def test_register_get_names():
    reg: Registry[int] = Registry("thing")
    reg.add("a", 1)

    @reg.register("b")
    def b() -> int:
        return 2

    assert reg.get("a") == 1
    assert reg.get("b")() == 2
    assert reg.names() == ["a", "b"]
    assert "a" in reg and "z" not in reg
    assert len(reg) == 2


def test_unknown_name_lists_valid_choices():
    reg: Registry[int] = Registry("model")
    reg.add("resnet18", 1)
    with pytest.raises(RegistryError, match=r"unknown model 'resnet81'; valid: resnet18"):
        reg.get("resnet81")


def test_duplicate_name_raises():
    reg: Registry[int] = Registry("method")
    reg.add("saliency", 1)
    with pytest.raises(RegistryError, match="already registered"):
        reg.add("saliency", 2)
