"""Register-by-key: strategies name themselves when they are subclassed.

Example:
    >>> class Greeter(Registered, kind="greeter"): ...
    >>> class Hello(Greeter, key="hello"): ...
    >>> Greeter.lookup("hello") is Hello
    True
"""

from __future__ import annotations

from abc import ABC
from typing import Any, ClassVar

from attributor.errors import UnknownNameError


class Registered(ABC):
    """Mixin giving a class family a registry filled by ``class X(Base, key="name")``."""

    _registry: ClassVar[dict[str, type]]
    _kind: ClassVar[str]
    key: ClassVar[str]

    def __init_subclass__(cls, kind: str | None = None, key: str | None = None, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if kind is not None:  # a new family root
            cls._registry = {}
            cls._kind = kind
        if key is not None:
            if key in cls._registry:
                raise ValueError(f"{cls._kind} {key!r} is registered twice")
            cls.key = key
            cls._registry[key] = cls

    @classmethod
    def lookup(cls, key: str) -> type:
        """Return the registered class for ``key`` or raise :class:`UnknownNameError`."""
        try:
            return cls._registry[key]
        except KeyError:
            raise UnknownNameError(cls._kind, key, list(cls._registry)) from None

    @classmethod
    def names(cls) -> list[str]:
        return sorted(cls._registry)
