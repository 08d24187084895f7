"""One exception hierarchy for everything attributor refuses to do.

Every message says what was wrong and, where there is one, what to do about it. The CLI
prints ``str(error)`` on one line and exits non-zero; nothing else is shown to the user.
"""

from __future__ import annotations

__all__ = [
    "AttributorError",
    "ConfigError",
    "DataError",
    "StoreError",
    "StoreMismatchError",
    "StoreCorruptedError",
    "NotFittedError",
    "UnknownNameError",
    "RegistryError",
    "RegistryPermissionError",
    "ModelLoadError",
    "ResourceError",
]


class AttributorError(Exception):
    """Base class: an error the user can act on."""


class ConfigError(AttributorError):
    """A configuration file or flag is malformed, unknown or out of range."""


class DataError(AttributorError):
    """Input data has the wrong shape, contains NaN/inf, or cannot be read."""


class StoreError(AttributorError):
    """A feature store or run directory cannot be used as asked."""


class StoreMismatchError(StoreError):
    """An existing store was written with different settings than the ones given."""


class StoreCorruptedError(StoreError):
    """A file of a store is missing or its checksum does not match the manifest."""


class NotFittedError(AttributorError):
    """A method was asked to score before ``fit`` was called."""


class UnknownNameError(AttributorError):
    """A registry lookup (method, projector, dataset, model, task) found no such name."""

    def __init__(self, kind: str, name: str, known: list[str] | tuple[str, ...]):
        self.kind, self.name, self.known = kind, name, sorted(known)
        super().__init__(f"unknown {kind} {name!r}; choose one of: {', '.join(self.known)}")


class RegistryError(AttributorError):
    """A fingerprint registry cannot be opened, migrated or written as asked."""


class RegistryPermissionError(RegistryError):
    """The registry's database refused a write (the connecting role may only read)."""


class ModelLoadError(AttributorError):
    """A model or tokenizer could not be loaded from the given path or name."""


class ResourceError(AttributorError):
    """A computation would not fit in the memory available (see :mod:`attributor.memory`)."""
