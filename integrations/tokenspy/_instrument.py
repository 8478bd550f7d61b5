"""Automatic SDK interception under `profile`/`session`: patched once, lazily, switchable off."""

from __future__ import annotations

import threading

from tokenspy_core._guard import guarded

__all__ = ["auto_instrument", "set_enabled"]

_enabled = True
_done = False
_lock = threading.Lock()


def set_enabled(enabled: bool) -> None:
    global _enabled
    _enabled = enabled


def auto_instrument() -> None:
    """Patch the installed SDKs' classes the first time a profile or session opens."""
    global _done
    if _done or not _enabled:
        return
    with _lock:
        if _done:
            return
        _done = True
    with guarded("auto-instrument"):
        from ._observe import instrument_sdks

        instrument_sdks()
