"""Class-level method patches for the SDK adapters: each applied once, each undone exactly.

A wrapper remembers the function it replaced (`__tokenspy_original__`), so patching twice is a no-op
and undoing restores the SDK's own function. If some other library patched the same method on top of
ours since, undoing leaves its patch (and so ours, underneath) in place rather than silently
discarding it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Patches", "original_of"]

_MARK = "__tokenspy_original__"


def original_of(fn: Any) -> Any:
    """The SDK function a tokenspy wrapper replaced, or None if `fn` is not one."""
    return getattr(fn, _MARK, None)


class Patches:
    """The patches of one SDK adapter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._applied: list[tuple[type, str, Any, Any]] = []  # (owner, name, original, wrapper)

    @property
    def active(self) -> bool:
        return bool(self._applied)

    def wrap(self, owner: type, name: str, make: Callable[[Any], Any]) -> None:
        """Replace `owner.name` (defined on `owner` itself) by `make(original)`."""
        with self._lock:
            current = owner.__dict__.get(name)
            if current is None or original_of(current) is not None:
                return
            wrapper = make(current)
            setattr(wrapper, _MARK, current)
            setattr(owner, name, wrapper)
            self._applied.append((owner, name, current, wrapper))

    def wrap_defined(self, cls: type, names: tuple[str, ...], make: Callable[[Any], Any]) -> None:
        """`wrap` each of `names` wherever `cls` or a class it inherits from defines it (a client class of its
        own, as `AnthropicBedrock`'s `copy` is, or a user's subclass)."""
        for owner in cls.__mro__:
            for name in names:
                if name in owner.__dict__:
                    self.wrap(owner, name, make)

    def undo(self) -> None:
        with self._lock:
            for owner, name, original, wrapper in reversed(self._applied):
                if owner.__dict__.get(name) is wrapper:
                    setattr(owner, name, original)
            self._applied.clear()
