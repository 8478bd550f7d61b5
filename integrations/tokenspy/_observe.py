"""`tokenspy.observe(client)` and automatic SDK interception under `profile`/`session`.

Both rest on one class-level patch per SDK (`tokenspy.openai`, `tokenspy.anthropic`), installed once
and only for an SDK the program actually imports: `import tokenspy` imports neither, and neither is
imported on tokenspy's account (each takes seconds to import). Per call, `tracking(client)` decides:
track if the client is observed, or (unless `tokenspy.init(auto_instrument=False)`) if a tokenspy span
is current or a framework adapter's call is active in this context.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any, TypeVar

from tokenspy_core import active_call, current_span
from tokenspy_core._guard import guarded
from tokenspy_core.tracker import PRICES

from . import _instrument

__all__ = ["instrument_sdks", "observe", "tracking", "uninstrument_sdks", "unobserve"]

C = TypeVar("C")

SDKS = ("openai", "anthropic")
_OBSERVED = "_tokenspy_observed"  # set on an observed client instance: its call tags (a plain dict)
_NO_TAGS: Mapping[str, Any] = {}  # shared, never mutated
_lock = threading.RLock()
_installed: set[str] = set()
_copy_kept: set[type] = set()  # client classes whose copies `observe` made sure are observed


def tracking(client: Any) -> Mapping[str, Any] | None:
    """The tags to track a call of `client` with, or None not to track it. On every SDK call: cheap."""
    tags: Mapping[str, Any] | None = client.__dict__.get(_OBSERVED)
    if tags is not None:
        return tags
    if _instrument._enabled and (current_span() is not None or active_call() is not None):
        return _NO_TAGS
    return None


def _adapter(sdk: str) -> ModuleType:
    return importlib.import_module(f"tokenspy.{sdk}")


def _install(sdk: str) -> None:
    """Patch `sdk` (already imported) once."""
    with _lock:
        if sdk in _installed:
            return
        _adapter(sdk).install()
        _installed.add(sdk)
    with guarded("price data"):
        PRICES.preload()  # before the patched SDK's first request, not in a request's thread


def instrument_sdks() -> None:
    """Patch the SDKs imported so far, and each other one right after the program imports it."""
    with _lock:
        waiting = []
        for sdk in SDKS:
            if sdk in _installed:
                continue
            if sdk in sys.modules:
                if sys.modules[sdk] is None:  # `sys.modules[name] = None`: marked absent on purpose
                    continue
                with guarded(f"instrument {sdk}"):
                    _install(sdk)
            elif importlib.util.find_spec(sdk) is not None:  # installed: looks up a path, imports nothing
                waiting.append(sdk)
        _on_import.watch(waiting)


def uninstrument_sdks() -> None:
    """Undo every patch (observed clients are then no longer tracked either)."""
    with _lock:
        _on_import.watch(())
        for sdk in list(_installed):
            _adapter(sdk).uninstall()
        _installed.clear()
        _copy_kept.clear()


def _sdk_of(client: Any, caller: str) -> str:
    for cls in type(client).__mro__:
        root = cls.__module__.partition(".")[0]
        if root in SDKS and cls.__name__ in ("SyncAPIClient", "AsyncAPIClient"):
            return root
    raise TypeError(f"tokenspy.{caller}() takes an openai or anthropic client (OpenAI, AsyncOpenAI, "
                    f"AzureOpenAI, AsyncAzureOpenAI, Anthropic, AsyncAnthropic), got {type(client).__name__}")


def observe(client: C, **options: Any) -> C:
    """Track every call made through `client` (also outside any profile); returns the same client.

    Options: `tags={...}` added to every call record of this client. Idempotent (a second call only
    replaces the tags); `unobserve(client)` undoes it. Copies made with `client.with_options(...)` or
    `client.copy(...)` are observed too.
    """
    sdk = _sdk_of(client, "observe")
    unknown = set(options) - {"tags"}
    if unknown:
        raise TypeError(f"tokenspy.observe() got unexpected option(s) {sorted(unknown)}; it accepts tags=")
    tags = options.get("tags")
    if tags is not None and not isinstance(tags, Mapping):
        raise TypeError(f"tags must be a mapping, got {type(tags).__name__}")
    _install(sdk)
    cls = type(client)
    if cls not in _copy_kept:
        _adapter(sdk).keep_copies_observed(cls)  # AnthropicBedrock, AnthropicVertex: a `copy` of their own
        _copy_kept.add(cls)
    client.__dict__[_OBSERVED] = dict(tags) if tags else _NO_TAGS
    return client


def unobserve(client: C) -> C:
    """Stop tracking `client` on its own account (calls in a profile or session are still tracked)."""
    _sdk_of(client, "unobserve")
    client.__dict__.pop(_OBSERVED, None)
    return client


def copy_observed(make_copy: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a client class's `copy`/`with_options`: a copy of an observed client is observed."""

    @functools.wraps(make_copy)
    def copy(self: Any, *args: Any, **kwargs: Any) -> Any:
        new = make_copy(self, *args, **kwargs)
        tags = self.__dict__.get(_OBSERVED)
        if tags is not None:
            new.__dict__[_OBSERVED] = tags
        return new

    return copy


class _OnImport(importlib.abc.MetaPathFinder):
    """Installs an SDK's patch right after the program first imports it (tokenspy never imports it).

    It finds the module with the other finders and chains a step after its loader's `exec_module`;
    the module object, its spec and its loader are the usual ones.
    """

    def __init__(self) -> None:
        self._waiting: frozenset[str] = frozenset()
        self._busy = threading.local()

    def watch(self, sdks: Iterable[str]) -> None:
        self._waiting = frozenset(sdks)
        if self._waiting and self not in sys.meta_path:
            sys.meta_path.insert(0, self)
        elif not self._waiting and self in sys.meta_path:
            sys.meta_path.remove(self)

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self._waiting or getattr(self._busy, "on", False):
            return None
        self._busy.on = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._busy.on = False
        loader = spec.loader if spec is not None else None
        if spec is None or loader is None or not hasattr(loader, "exec_module"):
            return spec
        self._waiting -= {fullname}  # sys.meta_path is being iterated: leave it alone until exec time
        exec_module = loader.exec_module

        def exec_then_install(module: ModuleType) -> None:
            try:
                exec_module(module)
            finally:
                del loader.exec_module  # back to the loader's own method
                self.watch(self._waiting)
            with guarded(f"instrument {fullname}"):
                _install(fullname)

        loader.exec_module = exec_then_install  # type: ignore[method-assign]
        return spec


_on_import = _OnImport()
