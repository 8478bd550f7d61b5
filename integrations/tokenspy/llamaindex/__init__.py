"""tokenspy for LlamaIndex: `TokenSpyHandler`, for the callback manager or `tokenspy.set_handler`.

    from tokenspy.llamaindex import TokenSpyHandler
    Settings.callback_manager = CallbackManager([TokenSpyHandler()])   # components built after this
    tokenspy.set_handler(TokenSpyHandler())                            # or: everything, process-wide

See docs/llamaindex.md.
"""

from __future__ import annotations

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tokenspy.llamaindex needs LlamaIndex: pip install 'tokenspy[llamaindex]' (llama-index-core)"
    ) from exc

from .handler import TokenSpyHandler
from .instrumentation import TAP
from .legacy import LEGACY

__all__ = ["TokenSpyHandler", "uninstrument"]


def uninstrument() -> None:
    """Undo every global registration: `set_handler`'s, and the dispatcher handlers that creating
    a `TokenSpyHandler` installs. Calls still in flight end aborted. Mostly for tests."""
    TokenSpyHandler._uninstall_global()
    TAP.uninstall()
    for state in LEGACY.drain():
        state.call.abort()
