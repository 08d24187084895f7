"""Register-by-key: strategies name themselves when they are subclassed.

Example:
    >>> class Greeter(Registered, kind="greeter"): ...
    >>> class Hello(Greeter, key="hello"): ...
    >>> Greeter.lookup("hello") is Hello
    True

A family that users subclass in their own scripts and notebooks (the Task) opts in at its
root with ``auto_key=True``:

* a concrete subclass without ``key=`` registers under its class name (an abstract one,
  with abstract methods left, is not registered);
* defining a class again under the same ``__module__`` and ``__qualname__`` (a notebook
  cell run twice) replaces the old registration, with a warning;
* a different class claiming a taken key still raises, as in every family.

    >>> class Shape(Registered, kind="shape", auto_key=True): ...
    >>> class Square(Shape): ...
    >>> Shape.lookup("Square") is Square
    True
"""

from __future__ import annotations

import inspect
import warnings
from abc import ABC
from typing import Any, ClassVar

from attributor.errors import UnknownNameError


class Registered(ABC):
    """Mixin giving a class family a registry filled by ``class X(Base, key="name")``."""

    _registry: ClassVar[dict[str, type]]
    _kind: ClassVar[str]
    _auto_key: ClassVar[bool]
    key: ClassVar[str]

    def __init_subclass__(cls, kind: str | None = None, key: str | None = None, auto_key: bool | None = None,
                          **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if kind is not None:  # a new family root
            cls._registry = {}
            cls._kind = kind
            cls._auto_key = bool(auto_key)
        elif auto_key is not None:
            raise TypeError(f"auto_key is declared once, at the root of a family (with kind=), not on {cls.__name__}")
        if key is None and cls._auto_key and not inspect.isabstract(cls):
            key = cls.__name__
        if key is not None:
            cls._register(key)

    @classmethod
    def _register(cls, key: str) -> None:
        known = cls._registry.get(key)
        if known is not None:
            redefined = (known.__module__, known.__qualname__) == (cls.__module__, cls.__qualname__)
            if not (cls._auto_key and redefined):
                raise ValueError(f"{cls._kind} {key!r} is registered twice: by {_where(known)} and by {_where(cls)}; "
                                 "give one of them another key")
            warnings.warn(f"{cls._kind} {key!r} is defined again ({_where(cls)}); the new definition replaces the old one",
                          stacklevel=4)  # the class statement (through ABCMeta.__new__)
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


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
