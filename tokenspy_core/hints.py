"""Optimization hints computed from recorded calls (filled in by the hints work; none yet)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Hint", "compute_hints"]


@dataclass(frozen=True, slots=True)
class Hint:
    kind: str
    span: str
    model: str
    saving_usd: float
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "span": self.span, "model": self.model, "saving_usd": self.saving_usd,
                "text": self.text}


def compute_hints(stats: dict[str, Any], *, limit: int = 5) -> list[Hint]:
    return []
