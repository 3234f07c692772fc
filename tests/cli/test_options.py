"""One path from a flag to the config: the option table, generated checks over every command, ``--set``."""

from __future__ import annotations

import inspect

import pytest
import typer

from cxrlens.cli import app
from cxrlens.cli.options import CONFIG_KEYS, overrides
from cxrlens.config import RunConfig, load_run_config
from cxrlens.errors import ConfigError
from tests.cli.test_cli_data import assert_clean_failure, cxrlens

#: parameters that are not config values: what to work on, how to print, or the command's own choices
NOT_CONFIG = {
    "ctx", "run", "config", "as_json", "assignments", "model", "fold", "resume", "images", "no_check",
    "workers", "evaluated", "open_browser", "out", "external_out", "external_data", "predict_data",
    "predict_out", "output_format", "node_rank", "nodes",
}  # fmt: skip
SAMPLE_VALUES = {"param": ["occlusion.window=16"], "group": ["covid=COVID-19"]}


def _commands() -> list[tuple[str, typer.models.CommandInfo]]:
    found = [(c.name or c.callback.__name__, c) for c in app.registered_commands]
    for group in app.registered_groups:
        found += [(f"{group.name} {c.name}", c) for c in group.typer_instance.registered_commands]
    return found


@pytest.mark.parametrize(("name", "command"), _commands(), ids=[n for n, _ in _commands()])
def test_every_option_of_every_command_reaches_the_config_through_the_table(name, command):
    parameters = inspect.signature(command.callback).parameters
    unmapped = sorted(p for p in parameters if p not in NOT_CONFIG and p not in CONFIG_KEYS)
    assert unmapped == [], f"`cxrlens {name}` options missing from cli/options.py CONFIG_KEYS"


@pytest.mark.parametrize("parameter", sorted(CONFIG_KEYS))
def test_every_table_entry_names_a_real_config_key(parameter):
    target = CONFIG_KEYS[parameter]
    keys = [target] if isinstance(target, str) else list(target(SAMPLE_VALUES.get(parameter, "x")))
    for key in keys:
        node: object = RunConfig()
        parts = key.split(".")
        for part in parts[:2] if key.startswith("explain.params.") else parts:  # params: free per method
            assert hasattr(node, part), f"{parameter} -> {key}: {part!r} is not a config key"
            node = getattr(node, part)


class _Context:
    """Just what :func:`overrides` reads of a click context."""

    def __init__(self, given: dict[str, object], defaults: dict[str, object]) -> None:
        self.params = {**defaults, **given}
        self._given = set(given)

    def get_parameter_source(self, name: str) -> object:
        kind = "COMMANDLINE" if name in self._given else "DEFAULT"
        return type("Source", (), {"name": kind})()


def test_only_given_options_count_and_set_comes_last():
    ctx = _Context(
        {"epochs": 2, "param": ["occlusion.window=16"], "assignments": ["train.epochs=5", "train.lr=0.01"]},
        {"skip_bad": False, "size": None},
    )
    changes = overrides(ctx)  # type: ignore[arg-type]
    assert changes == {"train.epochs": 5, "explain.params.occlusion.window": 16, "train.lr": 0.01}
    cfg = load_run_config(None, changes)
    assert cfg.train.epochs == 5 and cfg.explain.params == {"occlusion": {"window": 16}}
    assert cfg.data.skip_bad is False  # a flag left at its default does not override the config


def test_set_reaches_any_key_and_bad_ones_say_which(tmp_path):
    result = cxrlens("data", "split", "--data", "@sample", "--out", str(tmp_path / "s.csv"),
                     "--set", "cv.split.folds=4", "--set", "cv.split.val_fraction=0")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "fold 3" in result.stdout and "fold 4" not in result.stdout
    assert_clean_failure(cxrlens("data", "summary", "--set", "data.nope=1"), "data.nope: unknown option")
    assert_clean_failure(cxrlens("data", "summary", "--set", "novalue"), "expected KEY=VALUE")
    with pytest.raises(ConfigError, match=r"train\.epochs: Input should be greater than or equal to 1"):
        load_run_config(None, {"train.epochs": 0})
