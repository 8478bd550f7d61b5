"""Optimization hints: what the recorded calls would have cost done differently, at current prices.

Four kinds, each naming a span and a model, each with the saving for the recorded volume only (no
extrapolation, no invented numbers; a hint whose saving is not positive is dropped):

- ``downgrade``: a curated cheaper sibling of the same provider and family exists (gpt-4o ->
  gpt-4o-mini, claude-opus -> claude-sonnet, ...): recorded cost minus the same tokens at its price.
- ``cache``: large prompts, little read from cache, on a model whose cache reads are cheaper than its
  input: the saving if half of each prompt were a prefix shared by the span's calls (stated in the hint).
- ``partial``: streams abandoned early still paid for their whole prompt: the input cost of those calls.
- ``retry``: failed attempts retried in the same span: the cost of the failed attempts.

The first two read the stats tree (per span, per model aggregates: complete however many calls were
made); the last two need the individual records (``stats["calls"]``, the tracker's bounded buffer).
Savings are integer femto-dollars like every cost in tokenspy; hints are sorted by saving, then by
kind, span and model, so the same stats always give the same hints. Hint texts are ASCII: the box
report falls back to ASCII on terminals that cannot print anything else.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from ._guard import guarded
from .pricing import _DATE_SUFFIX, FEMTO_PER_USD, ModelRates, PriceBook, Rates
from .report import fmt_cost
from .tracker import PRICES, UNATTRIBUTED
from .usage import Usage

__all__ = ["CHEAPER_MODEL", "Hint", "compute_hints"]

# Expensive model -> a cheaper sibling of the same provider and family. Curated on purpose: a name
# rule ("append -mini") would invent models, and every candidate here is priced by genai-prices
# (tests/core/test_hints.py checks it, so a price-data update that drops one fails loudly).
CHEAPER_MODEL: dict[str, str] = {
    "gpt-4o": "gpt-4o-mini",
    "gpt-4.1": "gpt-4.1-mini",
    "gpt-5": "gpt-5-mini",
    "gpt-5.1": "gpt-5-mini",
    "gpt-5.4": "gpt-5.4-mini",
    "o1": "o3-mini",
    "o3": "o4-mini",
    "claude-3-opus": "claude-3-5-sonnet",
    "claude-3-5-sonnet": "claude-3-5-haiku",
    "claude-3-7-sonnet": "claude-3-5-haiku",
    "claude-opus-4": "claude-sonnet-4-0",
    "claude-opus-4-0": "claude-sonnet-4-0",
    "claude-opus-4-1": "claude-sonnet-4-5",
    "claude-opus-4-5": "claude-sonnet-4-5",
    "claude-opus-4-6": "claude-sonnet-4-6",
    "claude-sonnet-4": "claude-haiku-4-5",
    "claude-sonnet-4-0": "claude-haiku-4-5",
    "claude-sonnet-4-5": "claude-haiku-4-5",
    "claude-sonnet-4-6": "claude-haiku-4-5",
    "gemini-1.5-pro": "gemini-1.5-flash",
    "gemini-2.5-pro": "gemini-2.5-flash",
    "gemini-3-pro-preview": "gemini-3-flash-preview",
}

# Prompt caching hint. Half of the uncached input is assumed to be a prefix shared by the span's
# calls (system prompt, tools, retrieved context): written to the cache by the first call, read by
# the others. 1,024 tokens is the shortest prefix OpenAI and Anthropic will cache, so the assumed
# prefix must reach it (hence >= 2,048 uncached input tokens per call on average).
CACHEABLE_PERCENT = 50
MIN_CACHE_CALLS = 3
MIN_PREFIX_TOKENS = 1_024
MAX_CACHED_SHARE = 0.2

# Retry hint: a failed call followed, in the same span and on the same model (and, when prompts are
# captured, with the same prompt), by a call starting at most this long after the failure ended.
RETRY_WINDOW_S = 30.0
# started_at is wall time and latency_s is monotonic: allow for the two clocks disagreeing a little
# before calling a call that started "before the failure ended" concurrent rather than a retry.
_CLOCK_SLACK_S = 0.05

_KIND_ORDER = {"downgrade": 0, "cache": 1, "retry": 2, "partial": 3}


@dataclass(frozen=True, slots=True)
class Hint:
    kind: str
    span: str
    model: str
    saving_usd: float
    text: str
    saving_femto: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "span": self.span, "model": self.model, "saving_usd": self.saving_usd,
                "saving_femto": self.saving_femto, "text": self.text}


def compute_hints(stats: dict[str, Any], *, limit: int = 5, prices: PriceBook | None = None) -> list[Hint]:
    """At most `limit` hints for `stats` (a `Tracker.stats()` dict), the largest saving first."""
    book = prices if prices is not None else PRICES
    records: list[dict[str, Any]] = list(stats.get("calls") or ())
    groups = list(_groups(stats["tree"], _by_span_model(records)))
    finders: tuple[Callable[[], list[Hint]], ...] = (
        lambda: _downgrade_hints(groups, book),
        lambda: _cache_hints(groups, book),
        lambda: _partial_hints(records, book),
        lambda: _retry_hints(records),
    )
    hints: list[Hint] = []
    for find in finders:
        # A hint is advice: a bug in one kind must not take the report (or the other hints) down.
        with guarded("hints"):
            hints.extend(find())
    hints = [h for h in hints if h.saving_femto > 0]
    hints.sort(key=lambda h: (-h.saving_femto, _KIND_ORDER[h.kind], h.span, h.model))
    return hints[:max(limit, 0)]


def _cost(femto: int) -> str:
    return fmt_cost(femto / FEMTO_PER_USD)


def _calls(n: int) -> str:
    return "1 call" if n == 1 else f"{n:,} calls"


def _hint(kind: str, span: str, model: str, saving: int, text: str) -> Hint:
    return Hint(kind, span, model, saving / FEMTO_PER_USD, text, saving)


# -- per span, per model aggregates (the tree) ------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Group:
    span: str
    model: str
    provider: str | None
    calls: int
    usage: Usage
    cost: int  # femto-dollars, as recorded
    records: tuple[dict[str, Any], ...]  # every call of the group, or () if the buffer dropped some


def _span_name(path: Any) -> str:
    return "/".join(path) if path else UNATTRIBUTED


def _groups(node: dict[str, Any], records: dict[tuple[str, str], list[dict[str, Any]]],
            path: tuple[str, ...] = ()) -> Iterator[_Group]:
    span = _span_name(path)
    for model, agg in node["models"].items():
        # "None": the model was never named; unpriced calls: the recorded cost is incomplete.
        if model == "None" or agg["unpriced_calls"] or agg["cost_usd"] is None or not agg["calls"]:
            continue
        usage = Usage(agg["input_tokens"], agg["output_tokens"], agg["cached_input_tokens"],
                      agg["cache_write_tokens"], agg["reasoning_tokens"])
        mine = records.get((span, model), [])
        if len(mine) == agg["calls"]:
            cost = sum(r["cost_femto"] for r in mine)
        else:
            # The tree keeps per-model costs as float USD: back to femto-dollars (exact below ~$4 a
            # group, a few femto-dollars off above: far below what a hint displays).
            cost, mine = round(agg["cost_usd"] * FEMTO_PER_USD), []
        provider = next((r.get("provider") for r in mine if r.get("provider")), None)
        yield _Group(span, model, provider, agg["calls"], usage, cost, tuple(mine))
    for child in node["children"]:
        yield from _groups(child, records, (*path, child["name"]))


def _family_name(model: str) -> str:
    """`openai/gpt-4o-2024-08-06` -> `gpt-4o`: the key of CHEAPER_MODEL."""
    name = model.lower().rsplit("/", 1)[-1]
    name = _DATE_SUFFIX.sub("", name)
    return name.removesuffix("-latest")


def _usage(r: dict[str, Any]) -> Usage:
    return Usage(r["input_tokens"], r["output_tokens"], r["cached_input_tokens"], r["cache_write_tokens"],
                 r["reasoning_tokens"], r.get("cache_write_1h_tokens", 0))


def _cost_at(rates: ModelRates, group: _Group) -> int:
    """What the group's calls would have cost at `rates`.

    Per call when the records are all there (exact: long-context tiers apply per call). Otherwise from
    the summed tokens, which loses two things: how long each call was (so past the first tier threshold
    every token is priced at the top tier) and which cache writes were 1-hour ones (so writes are priced
    at the dearer write rate). Both can only make `rates` look dearer: a saving is never overstated.
    """
    if group.records:
        return sum(rates.cost(_usage(r)) for r in group.records)
    u = group.usage
    r = rates.base if not rates.tiers or u.input_tokens <= rates.tiers[0][0] else rates.tiers[-1][1]
    return replace(r, cache_write=max(r.cache_write, r.cache_write_1h)).cost(u)


def _priced_name(g: _Group, prices: PriceBook) -> str:
    """The name the group's calls were priced by (`PriceBook.priced_name`)."""
    requested = next((r.get("request_model") for r in g.records if r.get("request_model")), None)
    return prices.priced_name(g.model, requested, g.provider) or g.model


_DASHED_VERSION = re.compile(r"-(\d+)-(\d+)$")


def _cheaper_than(priced: str) -> str | None:
    """The cheaper model to name for calls priced as `priced`, as the same gateway would take it: with its
    vendor prefix (OpenRouter's `openai/gpt-4o` -> `openai/gpt-4o-mini`), and a dotted version where the
    name had one (its `anthropic/claude-sonnet-4.5` -> `anthropic/claude-haiku-4.5`)."""
    family = _family_name(priced)
    cheaper = CHEAPER_MODEL.get(family)
    if cheaper is None and "." in family:
        cheaper = CHEAPER_MODEL.get(family.replace(".", "-"))
        if cheaper is not None:
            cheaper = _DASHED_VERSION.sub(r"-\1.\2", cheaper)
    if cheaper is None:
        return None
    vendor = priced.rpartition("/")[0]
    return f"{vendor}/{cheaper}" if vendor else cheaper


def _downgrade_hints(groups: list[_Group], prices: PriceBook) -> list[Hint]:
    hints = []
    for g in groups:
        cheaper = _cheaper_than(_priced_name(g, prices))
        if cheaper is None:
            continue
        rates = prices.rates_for(cheaper, g.provider, warn=False)
        if rates is None:
            continue
        cost = _cost_at(rates, g)
        saving = g.cost - cost
        hints.append(_hint("downgrade", g.span, g.model, saving,
                           f"{g.span}, {g.model}: {cheaper} would save {_cost(saving)} on {_calls(g.calls)} "
                           f"({_cost(g.cost)} -> {_cost(cost)})"))
    return hints


def _cache_hints(groups: list[_Group], prices: PriceBook) -> list[Hint]:
    hints = []
    for g in groups:
        u, n = g.usage, g.calls
        uncached = u.input_tokens - u.cached_input_tokens - u.cache_write_tokens
        if (n < MIN_CACHE_CALLS or not u.input_tokens
                or u.cached_input_tokens / u.input_tokens >= MAX_CACHED_SHARE
                or uncached * CACHEABLE_PERCENT < MIN_PREFIX_TOKENS * 100 * n):
            continue
        rates = prices.rates_for(_priced_name(g, prices), g.provider, warn=False)
        if rates is None:
            continue
        # Base rates: a long-context tier scales every rate up, and with it the saving.
        r: Rates = rates.base
        if r.cache_read >= r.input:
            continue  # no prompt caching discount on this model
        # prefix P = uncached * 50% / n per call; n-1 calls read it, the first one writes it.
        per_prefix_token = (n - 1) * (r.input - r.cache_read) - (r.cache_write - r.input)
        saving = uncached * CACHEABLE_PERCENT * per_prefix_token // (100 * n)
        hints.append(_hint("cache", g.span, g.model, saving,
                           f"{g.span}, {g.model}: prompt caching would save ~{_cost(saving)} on {_calls(n)} "
                           f"if half of each prompt is a shared prefix"))
    return hints


# -- individual records ---------------------------------------------------------------------------
def _record_rates(r: dict[str, Any], prices: PriceBook) -> ModelRates | None:
    # An unpriced record was looked up (and warned about) when it was made: do not ask again.
    if r.get("cost_femto") is None or not r.get("model"):
        return None
    provider = r.get("provider")
    return prices.rates_for(prices.priced_name(r["model"], r.get("request_model"), provider), provider, warn=False)


def _by_span_model(records: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        if r.get("model"):
            out.setdefault((_span_name(r.get("span_path")), r["model"]), []).append(r)
    return out


def _partial_hints(records: list[dict[str, Any]], prices: PriceBook) -> list[Hint]:
    # Aborted only: a call that failed mid-answer is partial too, but it is the retry hint's business.
    abandoned = [r for r in records if r.get("partial") and r.get("status") == "aborted"]
    hints = []
    for (span, model), group in sorted(_by_span_model(abandoned).items()):
        priced = [(r, rates) for r in group if (rates := _record_rates(r, prices)) is not None]
        # The prompt alone: paid in full however early the answer was cut off.
        saving = sum(rates.cost(replace(_usage(r), output_tokens=0, reasoning_tokens=0))
                     for r, rates in priced)
        n = len(priced)
        hints.append(_hint("partial", span, model, saving,
                           f"{span}, {model}: {n:,} stream{'s' if n != 1 else ''} abandoned early "
                           f"still paid {_cost(saving)} of prompt"))
    return hints


def _retried(group: list[dict[str, Any]], keys: list[str | None], i: int) -> bool:
    """Whether `group[i]` (failed) is followed by the same request soon after it ended: same span path and
    model, same tags (two concurrent requests tagged apart, as `session(name, tags={"request_id": ...})`
    does, are not one retried), and the same prompt when both were captured."""
    end = group[i]["started_at"] + group[i]["latency_s"]
    for j in range(i + 1, len(group)):
        gap = group[j]["started_at"] - end
        if gap > RETRY_WINDOW_S:
            return False
        if (gap >= -_CLOCK_SLACK_S and (keys[i] is None or keys[j] is None or keys[i] == keys[j])
                and (group[i].get("tags") or {}) == (group[j].get("tags") or {})):
            return True
    return False


def _retry_hints(records: list[dict[str, Any]]) -> list[Hint]:
    hints = []
    for (span, model), group in sorted(_by_span_model(records).items()):
        group.sort(key=lambda r: (r["started_at"], r["id"]))
        # A record's prompt hash is there whenever it holds a prompt (captured when it was made),
        # whatever capture_content says now. None: unknown, any prompt matches.
        keys: list[str | None] = [r.get("prompt_hash") for r in group]
        wasted = [r for i, r in enumerate(group)
                  if r.get("status") == "failed" and r.get("cost_femto") and _retried(group, keys, i)]
        if not wasted:
            continue
        saving = sum(r["cost_femto"] for r in wasted)
        n = len(wasted)
        hints.append(_hint("retry", span, model, saving,
                           f"{span}, {model}: {n:,} failed attempt{'s' if n != 1 else ''} retried, "
                           f"{_cost(saving)} paid for the failure{'s' if n != 1 else ''}"))
    return hints
