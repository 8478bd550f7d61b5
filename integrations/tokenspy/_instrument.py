"""Automatic SDK interception under `profile`/`session`: patched once, lazily, switchable off."""

from __future__ import annotations

import threading

from tokenspy_core._guard import guarded

__all__ = ["auto_instrument", "set_enabled"]

_enabled = True
_done = False
_wanted = False  # asked for while switched off: a framework handler made under auto_instrument=False
_lock = threading.Lock()


def set_enabled(enabled: bool) -> None:
    global _enabled
    _enabled = enabled
    if enabled and _wanted:
        auto_instrument()  # a handler made while it was off would otherwise never see the SDK layer


def auto_instrument() -> None:
    """Patch the installed SDKs' classes the first time a profile or session opens."""
    global _done, _wanted
    if _done:
        return
    if not _enabled:
        _wanted = True
        return
    with _lock:
        if _done:
            return
        _done = True
    with guarded("auto-instrument"):
        from ._observe import instrument_sdks

        instrument_sdks()
