"""The box report: total line, spans by cost with bars and shares, models and tokens under spans."""

from __future__ import annotations

import json
import re
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

__all__ = ["BOX_GLYPHS", "cost_text", "fmt_cost", "one_line", "render", "render_box"]

_BAR_WIDTH = 16
_MIN_WIDTH = 52
_MAX_ROWS = 60
# Dollars from which a cost is shown in scientific notation: cents are noise there, and from 1e26 on
# quantizing to them needs more than the 28 digits of the decimal context (InvalidOperation).
_HUGE = Decimal(10**15)

_UNICODE = {"tl": "╔", "tr": "╗", "bl": "╚", "br": "╝", "h": "═", "v": "║", "ml": "╠", "mr": "╣",
            "bar": "█", "branch": "└─", "dot": "·", "more": "…"}
# Every glyph the Unicode box draws: a stream that cannot encode one of them gets the ASCII box.
BOX_GLYPHS = "".join(_UNICODE.values())
# What a name (span, model, tag, error: set by users, providers and gateways) must not carry into a
# terminal: the line breaks str.splitlines() knows, which split a row in two, and every other control
# character (Unicode category Cc: C0, DEL, C1), which starts escape sequences (ESC, the 8-bit CSI 0x9b)
# that clear the screen, retitle the window or write the clipboard, or rings the bell.
_NOT_ON_ONE_LINE = re.compile(r"\r\n|[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ASCII = {"tl": "+", "tr": "+", "bl": "+", "br": "+", "h": "=", "v": "|", "ml": "+", "mr": "+",
          "bar": "#", "branch": "`-", "dot": "-", "more": "..."}


def fmt_cost(cost_usd: float | Decimal | None) -> str:
    """Dollars for people: half-up rounding of the decimal value (0.00105 shows as $0.0011).

    Never raises, whatever the amount: a report must not fail on the numbers it reports."""
    if cost_usd is None:
        return "unpriced"
    value = cost_usd if isinstance(cost_usd, Decimal) else Decimal(repr(cost_usd))  # a float's shortest repr
    if value.is_nan():  # before any comparison: comparing a NaN raises decimal.InvalidOperation
        return "$nan"
    if value < 0:  # not a cost, but a difference of costs (the CLI's comparisons)
        return "-" + fmt_cost(-value)
    if value.is_infinite():
        return "$inf"
    if value == 0:
        return "$0"
    if value >= _HUGE:
        return f"${value:.2E}"
    if value >= 1:
        return f"${value.quantize(Decimal('0.01'), ROUND_HALF_UP):,}"
    if value >= Decimal("0.0001"):
        return f"${value.quantize(Decimal('0.0001'), ROUND_HALF_UP)}"
    if value >= Decimal("0.000001"):
        return f"${value.quantize(Decimal('0.000001'), ROUND_HALF_UP)}"
    return "<$0.000001"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def cost_text(cost_usd: float | Decimal | None, unpriced_calls: int) -> str:
    """The cost of a group of calls: `$0.0035`, `$0.0035 + 1 unpriced` when some were not priced (the
    amount leaves them out), `unpriced` when none was."""
    text = fmt_cost(cost_usd)
    if unpriced_calls and cost_usd is not None:
        text += f" + {unpriced_calls:,} unpriced"
    return text


def _cost_of(node: dict[str, Any]) -> str:
    return cost_text(node["cost_usd"], node["unpriced_calls"])


def _token_line(agg: dict[str, Any], dot: str) -> str:
    parts = [f"in {agg['input_tokens']:,}", f"out {agg['output_tokens']:,}"]
    if agg["cached_input_tokens"]:
        parts.append(f"cached {agg['cached_input_tokens']:,}")
    if agg["cache_write_tokens"]:
        parts.append(f"cache write {agg['cache_write_tokens']:,}")
    if agg["reasoning_tokens"]:
        parts.append(f"reasoning {agg['reasoning_tokens']:,}")
    flags = []
    if agg["partial_calls"]:
        flags.append(f"{agg['partial_calls']:,} partial")
    if agg["estimated_calls"]:
        flags.append(f"{agg['estimated_calls']:,} estimated")
    if agg["failed_calls"]:
        flags.append(f"{agg['failed_calls']:,} failed")
    line = f"{_plural(agg['tokens'], 'token')} ({f' {dot} '.join(parts)})"
    return line + (f"  [{', '.join(flags)}]" if flags else "")


def render_box(stats: dict[str, Any], *, ascii: bool = False, hints: list[str] | None = None) -> str:
    g = _ASCII if ascii else _UNICODE
    dot = g["dot"]
    header = ["tokenspy cost report"]
    total_femto = stats["tree"]["cost_femto"]
    if not stats["total_calls"]:
        body: list[tuple[str, str, str]] = [("no LLM calls recorded", "", "")]
    else:
        all_unpriced = stats["unpriced_calls"] == stats["total_calls"]
        total = (f"total: {fmt_cost(None if all_unpriced else stats['total_cost_usd'])}"
                 f"  {dot}  {_plural(stats['total_tokens'], 'token')}  {dot}  {_plural(stats['total_calls'], 'call')}")
        if stats["unpriced_calls"]:
            total += f"  {dot}  {stats['unpriced_calls']:,} unpriced"
        header.append(total)
        body = []
        _rows(stats["tree"], 0, total_femto, g, body, root=True)
        if len(body) > _MAX_ROWS:
            hidden = len(body) - _MAX_ROWS
            body = [*body[:_MAX_ROWS], (f"{g['more']} {hidden:,} more rows (see tokenspy.stats()['tree'])", "", "")]
    body = [(one_line(r[0]), r[1], r[2]) for r in body]
    priced_rows = [r for r in body if r[1] or r[2]] or [("", "", "")]
    name_w = max(len(r[0]) for r in priced_rows)
    cost_w = max(len(r[1]) for r in priced_rows)
    lines = [f"{r[0].ljust(name_w)}  {r[1].rjust(cost_w)}  {r[2]}".rstrip() if r[1] or r[2] else r[0]
             for r in body]
    footer = [one_line(f"{dot} {h}") for h in hints or []]
    width = max(_MIN_WIDTH, *(len(s) for s in header + lines + footer)) + 4
    out = [g["tl"] + g["h"] * (width) + g["tr"]]
    out += [f"{g['v']}  {s.ljust(width - 2)}{g['v']}" for s in header]
    out.append(g["ml"] + g["h"] * width + g["mr"])
    out += [f"{g['v']}  {s.ljust(width - 2)}{g['v']}" for s in lines]
    if footer:
        out.append(g["ml"] + g["h"] * width + g["mr"])
        out.append(f"{g['v']}  {'hints'.ljust(width - 2)}{g['v']}")
        out += [f"{g['v']}  {s.ljust(width - 2)}{g['v']}" for s in footer]
    out.append(g["bl"] + g["h"] * width + g["br"])
    return "\n".join(out)


def one_line(text: str) -> str:
    """`text` safe for one row of a terminal table: each line break and control character a space."""
    return _NOT_ON_ONE_LINE.sub(" ", text)


def _bar(femto: int, total: int, g: dict[str, str], *, priced: bool = True) -> str:
    if not priced or not total:
        # No price, no share: an unpriced row is not 0% of the cost, nor is any row a share of $0 (as in
        # the CLI tables and the HTML page).
        return ""
    share = femto / total
    filled = round(share * _BAR_WIDTH)
    return f"{g['bar'] * filled}{' ' * (_BAR_WIDTH - filled)}  {share * 100:3.0f}%"


def _rows(node: dict[str, Any], depth: int, total: int, g: dict[str, str],
          out: list[tuple[str, str, str]], *, root: bool = False) -> None:
    indent = "  " * depth
    if root:
        # The calls made outside every span: one more row, in its place by cost among the top spans.
        rows: list[dict[str, Any]] = list(node["children"])
        if node["self_calls"]:
            rows.append({**node, "name": "(unattributed)", "children": [], "cost_femto": node["self_cost_femto"],
                         "cost_usd": node["self_cost_usd"], "tokens": node["self_tokens"],
                         "unpriced_calls": sum(m["unpriced_calls"] for m in node["models"].values())})
            rows.sort(key=lambda c: (-(c["cost_femto"]), -c["tokens"], c["name"]))
        for child in rows:
            _rows(child, 0, total, g, out)
        return
    out.append((f"{indent}{node['name']}", _cost_of(node),
                _bar(node["cost_femto"], total, g, priced=node["cost_usd"] is not None)))
    if node["self_calls"]:
        _models(node, indent + "  ", g, out)
    for child in node["children"]:
        _rows(child, depth + 1, total, g, out)


def _models(node: dict[str, Any], indent: str, g: dict[str, str], out: list[tuple[str, str, str]]) -> None:
    for model, agg in node["models"].items():
        name = model if model != "None" else "(unknown model)"  # a model that named none, as the HTML report says
        out.append((f"{indent}{g['branch']} {name}", fmt_cost(agg["cost_usd"]), ""))
        out.append((f"{indent}   {g['branch']} {_token_line(agg, g['dot'])}", "", ""))


def render(stats: dict[str, Any], *, format: str = "text", ascii: bool = False, hints: bool = True) -> str:
    if format == "json":
        data = dict(stats)
        if hints:
            from .hints import compute_hints

            data["hints"] = [h.to_dict() for h in compute_hints(stats)]
        return json.dumps(data, indent=2, default=str)
    if format == "text":
        hint_lines: list[str] = []
        if hints:
            from .hints import compute_hints

            hint_lines = [h.text for h in compute_hints(stats)]
        return render_box(stats, ascii=ascii, hints=hint_lines)
    raise ValueError(f"format must be 'text' or 'json' here, got {format!r}")
