"""LangChain and LangGraph: tokens and cost of every model call, per chain, node and tool.

    from tokenspy.langchain import TokenSpyHandler

    handler = TokenSpyHandler()
    chain.invoke(x, config={"callbacks": [handler]})
    tokenspy.set_handler(handler)          # or every LangChain run in the process, no callbacks passed
    tokenspy.report()

Importing `tokenspy` never imports LangChain; this subpackage does (langchain-core 0.3 or 1.x).
"""

from __future__ import annotations

try:
    import langchain_core  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("tokenspy.langchain needs langchain-core: pip install 'tokenspy[langchain]'") from exc

from ._handler import TokenSpyHandler

__all__ = ["TokenSpyHandler"]
