"""Hugging Face attention masks under ``torch.func`` transforms.

transformers (>= 5) skips building an attention mask when no position is padded, and
decides that by reading the mask's values (``padding_mask.all()`` in
``transformers.masking_utils``). Under ``vmap`` that is data-dependent Python control flow
and fails for any model given a 2-D ``attention_mask``. transformers already avoids the
check while *tracing* (``is_tracing``): :func:`functorch_safe_hf_masks` makes its
``is_tracing`` also answer True inside a functorch transform
(``torch._C._functorch.maybe_current_level() is not None``), so the mask is always built
there. Outside transforms, and in other threads, the original answers unchanged; a built
mask where one could have been skipped gives the same attention.

The patch touches only modules already imported (``sys.modules``): attributor never
imports transformers itself. It is reference-counted (nested and concurrent uses share one
patch) and removed when the last user leaves.
"""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch

__all__ = ["functorch_safe_hf_masks", "in_functorch_transform"]

_MODULES = ("transformers.masking_utils", "transformers.modeling_utils")
_lock = threading.Lock()
_users = 0
_patched: list[tuple[Any, Callable[..., bool], Callable[..., bool]]] = []  # (module, original, replacement)


def in_functorch_transform() -> bool:
    """Whether the caller runs inside a ``torch.func`` transform (vmap, grad, ...)."""
    return torch._C._functorch.maybe_current_level() is not None


@contextmanager
def functorch_safe_hf_masks() -> Iterator[None]:
    """While inside, transformers' ``is_tracing`` is True within functorch transforms."""
    global _users
    with _lock:
        if _users == 0:
            _install()
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                _uninstall()


def _install() -> None:
    for name in _MODULES:
        module = sys.modules.get(name)
        original = getattr(module, "is_tracing", None)
        if module is None or not callable(original):
            continue

        def is_tracing(*args: Any, _original: Callable[..., bool] = original, **kwargs: Any) -> bool:
            return in_functorch_transform() or _original(*args, **kwargs)

        module.is_tracing = is_tracing
        _patched.append((module, original, is_tracing))


def _uninstall() -> None:
    while _patched:
        module, original, replacement = _patched.pop()
        if getattr(module, "is_tracing", None) is replacement:  # someone else's later patch stays
            module.is_tracing = original
