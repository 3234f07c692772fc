"""Reading YAML config files: every problem is one ConfigError naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxrlens.config import load_run_config, load_yaml, read_yaml
from cxrlens.errors import ConfigError


def test_missing_file_uses_the_callers_message(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found$"):
        load_yaml(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"nope\.yaml: some tree not found \(x\)$"):
        read_yaml(tmp_path / "nope.yaml", "some tree not found (x)")


def test_not_utf8_names_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("train:\n  epochs: 3 # für\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not UTF-8 text \(invalid start byte at byte 22\)"):
        load_yaml(path)


def test_invalid_yaml_gives_the_parsers_first_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train: [1, 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml: invalid YAML: while parsing a flow sequence$"):
        load_yaml(path)


def test_empty_file_is_no_options_and_a_list_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    assert load_yaml(empty) == {}
    assert read_yaml(empty, "unused") is None
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="expected a mapping of options at the top level"):
        load_yaml(listed)


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  epoch: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="epoch"):
        load_run_config(path)
