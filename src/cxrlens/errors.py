"""Exceptions with messages a user can act on.

The CLI turns every :class:`CxrlensError` into one line on stderr and a non-zero exit code.
"""

from __future__ import annotations


class CxrlensError(Exception):
    """Base class of every error cxrlens raises on purpose."""


class ConfigError(CxrlensError):
    """A configuration file or option is invalid."""


class DataError(CxrlensError):
    """A data source, row or image cannot be used."""


class ImageReadError(DataError):
    """An image file cannot be decoded; the message names the file."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self) -> tuple[type[ImageReadError], tuple[str, str]]:  # rebuilt from a worker process
        return type(self), (self.path, self.reason)


class LabelError(DataError):
    """A finding cannot be mapped onto the label hierarchy."""


class RegistryError(CxrlensError, KeyError):
    """An unknown or duplicate name was used with a registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ModelError(CxrlensError):
    """A model cannot be built, loaded or used as asked."""


class MethodError(CxrlensError):
    """An attribution method cannot run on the given model or input."""


class RunError(CxrlensError):
    """A run directory is missing something the command needs."""


class DamagedFileError(RunError):
    """A file exists but cannot be parsed; the message names it."""
