"""Automatic SDK interception under `profile`/`session`: patched once, lazily, switchable off."""

from __future__ import annotations

import threading

from tokenspy_core._guard import guarded

__all__ = ["auto_instrument", "set_enabled"]

_enabled = True
_done = False
_wanted = False  # asked for while switched off: a framework handler made under auto_instrument=False
_lock = threading.RLock()
_running = False  # inside `instrument_sdks`, under `_lock`


def set_enabled(enabled: bool) -> None:
    global _enabled
    _enabled = enabled
    if enabled and _wanted:
        auto_instrument()  # a handler made while it was off would otherwise never see the SDK layer


def auto_instrument() -> None:
    """Patch the installed SDKs' classes the first time a profile or session opens."""
    global _done, _running, _wanted
    if _done:
        return
    if not _enabled:
        _wanted = True
        return
    with _lock:
        # Held while patching: another thread's first session waits here rather than sending its request
        # through half-made patches (and half-imported price data, see `PriceBook.preload`).
        if _done or _running:
            return  # (`_running`: re-entered from inside `instrument_sdks`, by this thread)
        _running = True
        try:
            with guarded("auto-instrument"):
                from ._observe import instrument_sdks

                instrument_sdks()
        finally:
            _running = False
            _done = True
