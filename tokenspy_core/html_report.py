"""The HTML report: one self-contained page with the cost tree as an icicle chart.

The page works offline and from a file:// URL: CSS, JavaScript and the SVG chart are inline, nothing
is fetched. Numbers are formatted here in Python (the same `fmt_cost` as the box report) and handed to
the page as JSON; the script only lays the tree out and shows details on hover. Every string that
came from user code (span names, model names, hint texts) reaches the page either through
`html.escape` or as JSON data that the script writes with `textContent`, never as markup.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterator
from typing import Any

from .pricing import FEMTO_PER_USD
from .report import fmt_cost

__all__ = ["render_html"]

_TOKEN_KINDS = (("input", "input_tokens"), ("output", "output_tokens"), ("cached", "cached_input_tokens"),
                ("cache write", "cache_write_tokens"), ("reasoning", "reasoning_tokens"))
_FLAGS = (("unpriced", "unpriced_calls"), ("partial", "partial_calls"), ("estimated", "estimated_calls"),
          ("failed", "failed_calls"))
_SUM_KEYS = ("tokens", "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens",
             "reasoning_tokens", "calls", *(key for _, key in _FLAGS))


def render_html(stats: dict[str, Any], *, hints: bool = True, title: str = "tokenspy cost report") -> str:
    """The report page for `stats` (the shape of `Tracker.stats()`), as one HTML string."""
    tree = _chart_tree(stats["tree"], stats.get("by_model", {}))
    hint_texts = _hint_texts(stats) if hints else []
    data = {"tree": tree, "totalCalls": stats["total_calls"]}
    esc_title = _esc(title)
    return "".join([
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>\n",
        "<meta name='generator' content='tokenspy'>\n",
        f"<title>{esc_title}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n",
        f"<header>\n<h1>{esc_title}</h1>\n{_totals(stats)}\n</header>\n<main>\n",
        _CHART_SECTION if stats["total_calls"] else "",
        _hints_section(hint_texts) if hints else "",
        _models_section(stats),
        _spans_section(tree),
        "</main>\n<div id='tip' class='tip' role='tooltip' hidden></div>\n",
        f"<script type='application/json' id='tokenspy-data'>{_json_for_script(data)}</script>\n",
        f"<script>{_JS}</script>\n</body>\n</html>\n",
    ])


# -- data -----------------------------------------------------------------------------------------

def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _json_for_script(data: Any) -> str:
    # Inside <script>, "</script>" or "<!--" in a span name would end or confuse the element: escape
    # the characters JSON allows to be escaped so no user string can form markup.
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text


def _femto(agg: dict[str, Any]) -> int:
    femto = agg.get("cost_femto")
    if isinstance(femto, int):
        return femto
    return round((agg.get("cost_usd") or 0) * FEMTO_PER_USD)


def _cost_text(agg: dict[str, Any]) -> str:
    """Like the box report: an all-unpriced aggregate is "unpriced", never $0."""
    calls, unpriced = agg.get("calls", 0), agg.get("unpriced_calls", 0)
    if agg.get("cost_usd") is None or (calls and unpriced == calls):
        return "unpriced"
    text = fmt_cost(_femto(agg) / FEMTO_PER_USD)
    return f"{text} + {unpriced:,} unpriced" if unpriced else text


def _share_text(femto: int, total: int, *, unpriced: bool = False) -> str:
    if not total or unpriced:
        return ""
    share = femto / total * 100
    return f"{share:.1f}%" if share >= 0.1 or not femto else "<0.1%"


def _flags_text(agg: dict[str, Any]) -> str:
    return " · ".join(f"{agg[key]:,} {label}" for label, key in _FLAGS if agg.get(key))


def _sum_models(models: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The root's own calls (made outside any span) as one aggregate."""
    total: dict[str, Any] = dict.fromkeys(_SUM_KEYS, 0)
    femto = 0
    for agg in models.values():
        for key in _SUM_KEYS:
            total[key] += agg.get(key, 0)
        femto += _femto(agg)
    total["cost_femto"] = femto
    all_unpriced = total["calls"] and total["unpriced_calls"] == total["calls"]
    total["cost_usd"] = None if all_unpriced else femto / FEMTO_PER_USD
    return total


def _chart_node(agg: dict[str, Any], name: str, kind: str, path: list[str], total_femto: int,
                models: dict[str, dict[str, Any]], self_agg: dict[str, Any] | None,
                own_unpriced: int = 0) -> dict[str, Any]:
    femto = _femto(agg)
    return {
        "name": name, "kind": kind, "path": path,
        # Layout sizes: float USD is plenty for pixels (exact sums stay in femto in Python).
        "cost": femto / FEMTO_PER_USD, "tokens": agg.get("tokens", 0), "calls": agg.get("calls", 0),
        "costText": _cost_text(agg),
        "share": _share_text(femto, total_femto, unpriced=agg.get("cost_usd") is None),
        "selfText": _cost_text(self_agg) if self_agg and self_agg.get("calls") else "",
        "selfCalls": self_agg.get("calls", 0) if self_agg else 0,
        "tok": [[label, agg.get(key, 0)] for label, key in _TOKEN_KINDS
                if agg.get(key) or key in ("input_tokens", "output_tokens")],
        "flags": _flags_text(agg), "unpriced": agg.get("unpriced_calls", 0),
        # Outlined in the chart: the blocks whose own calls lack a price (ancestors say so in text).
        "ownUnpriced": own_unpriced,
        "models": [[model if model != "None" else "(unknown model)", _cost_text(m), m.get("tokens", 0),
                    m.get("calls", 0)] for model, m in models.items()],
        "children": [],
    }


def _chart_tree(tree: dict[str, Any], by_model: dict[str, dict[str, Any]]) -> dict[str, Any]:
    total_femto = _femto(tree)
    root_self = _sum_models(tree.get("models", {}))
    root = _chart_node(tree, "all calls", "root", [], total_femto, by_model, None)

    def build(node: dict[str, Any], path: list[str]) -> dict[str, Any]:
        own_path = [*path, str(node["name"])]
        own = {key: node.get(f"self_{key}", 0) for key in ("calls", "tokens")}
        own.update(unpriced_calls=sum(m.get("unpriced_calls", 0) for m in node.get("models", {}).values()),
                   cost_usd=node.get("self_cost_usd"),
                   cost_femto=sum(_femto(m) for m in node.get("models", {}).values()))
        out = _chart_node(node, str(node["name"]), str(node.get("kind", "span")), own_path, total_femto,
                          node.get("models", {}), own if node.get("children") else None,
                          own_unpriced=own["unpriced_calls"])
        out["children"] = [build(child, own_path) for child in node.get("children", [])]
        return out

    children = [build(child, []) for child in tree.get("children", [])]
    if root_self["calls"]:
        # Calls made outside any span get their own block, so the chart accounts for all of the cost.
        unattributed = _chart_node(root_self, "(unattributed)", "unattributed", ["(unattributed)"],
                                   total_femto, tree.get("models", {}), None,
                                   own_unpriced=root_self["unpriced_calls"])
        children.append(unattributed)
        children.sort(key=lambda c: (-c["cost"], -c["tokens"], c["name"]))
    root["children"] = children
    return root


def _hint_texts(stats: dict[str, Any]) -> list[str]:
    """Hints the stats already carry (a saved JSON report), else computed now."""
    items: Any = stats.get("hints")
    if items is None:
        from .hints import compute_hints

        items = compute_hints(stats)
    texts = []
    for item in items:
        text = item.get("text") if isinstance(item, dict) else getattr(item, "text", item)
        if text:
            texts.append(str(text))
    return texts


# -- server-rendered sections (readable without JavaScript) ---------------------------------------
# Attribute values are single-quoted; html.escape(quote=True) escapes both quote characters.

def _total_cost_text(stats: dict[str, Any]) -> str:
    calls, unpriced = stats["total_calls"], stats.get("unpriced_calls", 0)
    if calls and unpriced == calls:
        return "unpriced"
    text = fmt_cost(stats["total_cost_usd"])
    return f"{text} + {unpriced:,} unpriced" if unpriced else text


def _totals(stats: dict[str, Any]) -> str:
    if not stats["total_calls"]:
        return "<p class='empty'>No LLM calls recorded.</p>"
    tokens = " · ".join(f"{label} {stats.get(key, 0):,}" for label, key in _TOKEN_KINDS
                        if stats.get(key) or key in ("input_tokens", "output_tokens"))
    flags = _flags_text(stats) or "all priced, all reported by the provider"
    unpriced = stats.get("unpriced_calls", 0)
    cost_note = (f"{unpriced:,} unpriced call(s) not included: price them with tokenspy.set_price()"
                 if unpriced else "exact sum of every call's cost")
    cards = [("total cost", _total_cost_text(stats), cost_note),
             ("tokens", f"{stats['total_tokens']:,}", tokens),
             ("calls", f"{stats['total_calls']:,}", flags)]
    body = "".join(f"<div class='card' data-card='{_esc(label)}'><div class='label'>{_esc(label)}</div>"
                   f"<div class='value'>{_esc(value)}</div><div class='sub'>{_esc(sub)}</div></div>"
                   for label, value, sub in cards)
    return f"<div class='totals'>{body}</div>"


_CHART_SECTION = """<section class='chart-section'>
<div class='chart-head'><h2>Cost tree</h2><nav id='crumbs' class='crumbs' aria-label='zoom'></nav>
<div class='metric' role='group' aria-label='size blocks by'>size by
<button type='button' data-metric='cost'>cost</button>\
<button type='button' data-metric='tokens'>tokens</button></div></div>
<div id='chart' class='chart'></div>
<div id='legend' class='legend'></div>
<p id='chart-note' class='note'></p>
<noscript><p class='note'>The chart needs JavaScript; the tables below hold the same numbers.</p></noscript>
<p class='help'>Width is cost: each block spans its share of its parent, children sit under their parent
and the gap under a block is its own calls. Hover for details, click to zoom (Esc to reset).</p>
</section>
"""


def _hints_section(texts: list[str]) -> str:
    items = "".join(f"<li>{_esc(text)}</li>" for text in texts)
    return f"<section class='hints'>\n<h2>Hints</h2>\n<ul>{items or _NO_HINTS}</ul>\n</section>\n"


_NO_HINTS = "<li class='none'>No hints for this run.</li>"


def _td(value: Any, cls: str = "") -> str:
    return f"<td class='{cls}'>{_esc(value)}</td>" if cls else f"<td>{_esc(value)}</td>"


def _num(value: Any) -> str:
    number = int(value or 0)
    return _td(f"{number:,}", "num" if number else "num zero")


def _table(columns: list[str], rows: list[str]) -> str:
    """A table whose columns named with a leading "#" are right-aligned numbers."""
    head = "".join(f"<th scope='col' class='num'>{_esc(c[1:])}</th>" if c.startswith("#")
                   else f"<th scope='col'>{_esc(c)}</th>" for c in columns)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>{''.join(rows)}</tbody>\n</table>\n"


def _models_section(stats: dict[str, Any]) -> str:
    by_model: dict[str, dict[str, Any]] = stats.get("by_model", {})
    if not by_model:
        return ""
    total_femto = _femto(stats["tree"])
    rows = []
    for model, agg in by_model.items():
        name = model if model != "None" else "(unknown model)"
        share = _share_text(_femto(agg), total_femto, unpriced=agg.get("cost_usd") is None)
        cells = [_num(agg.get("calls")), *(_num(agg.get(key)) for _, key in _TOKEN_KINDS),
                 _num(agg.get("tokens")), _td(_cost_text(agg), "num cost"), _td(share, "num"),
                 _td(_flags_text(agg))]
        rows.append(f"<tr data-model='{_esc(name)}'><th scope='row'>{_esc(name)}</th>{''.join(cells)}</tr>")
    columns = ["model", "#calls", *(f"#{label}" for label, _ in _TOKEN_KINDS), "#total tokens", "#cost",
               "#share", "flags"]
    return f"<section class='models'>\n<h2>By model</h2>\n{_table(columns, rows)}</section>\n"


def _walk(node: dict[str, Any], depth: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
    yield depth, node
    for child in node["children"]:
        yield from _walk(child, depth + 1)


def _spans_section(tree: dict[str, Any]) -> str:
    rows = []
    for depth, node in _walk(tree, -1):
        if depth < 0:
            continue
        cells = [_td(node["kind"]), _num(node["calls"]), _num(node["tokens"]),
                 _td(node["costText"], "num cost"), _td(node["share"], "num"), _td(node["flags"])]
        indent = f"padding-left:{0.6 + depth * 1.2:.1f}em"
        rows.append(f"<tr><th scope='row' style='{indent}'>{_esc(node['name'])}</th>{''.join(cells)}</tr>")
    if not rows:
        return ""
    table = _table(["span", "kind", "#calls", "#tokens", "#cost", "#share", "flags"], rows)
    return f"<details class='spans'>\n<summary>All spans as a table</summary>\n{table}</details>\n"


# -- inline assets ----------------------------------------------------------------------------------

_CSS = """
:root{--bg:#fff;--fg:#1d2330;--muted:#5d6677;--line:#e3e6ec;--card:#f6f7f9;--accent:#3563e9;
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Liberation Sans",sans-serif;color:var(--fg);
background:var(--bg)}
@media (prefers-color-scheme:dark){:root{--bg:#14171c;--fg:#e6e8ec;--muted:#9aa3b2;--line:#2b313b;
--card:#1c2027;--accent:#7d9cff}}
body{margin:0 auto;padding:20px 28px 40px;max-width:1400px}
h1{font-size:20px;margin:0 0 12px}h2{font-size:15px;margin:0}
section{margin:22px 0}
.totals{display:flex;gap:12px;flex-wrap:wrap}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 14px;min-width:200px;
flex:1}
.card .label{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .value{font-size:24px;font-weight:600;font-variant-numeric:tabular-nums}
.card .sub{color:var(--muted);font-size:12.5px}
.chart-head{display:flex;align-items:center;gap:16px;margin-bottom:8px}
.crumbs{flex:1;color:var(--muted);font-size:13px;overflow:hidden;white-space:nowrap;text-overflow:ellipsis}
.crumbs button{border:0;background:none;color:var(--accent);cursor:pointer;padding:0;font:inherit}
.metric{color:var(--muted);font-size:13px}
.metric button{font:inherit;border:1px solid var(--line);background:var(--card);color:var(--fg);
padding:2px 10px;cursor:pointer}
.metric button:first-of-type{border-radius:6px 0 0 6px}.metric button:last-of-type{border-radius:0 6px 6px 0}
.metric button[aria-pressed=true]{background:var(--accent);border-color:var(--accent);color:#fff}
.chart{width:100%;overflow:hidden}
.chart svg{display:block}
.chart g.node{cursor:pointer}
.chart rect{stroke:var(--bg);stroke-width:1}
.chart g.node.unpriced rect{stroke:#b3261e;stroke-dasharray:4 3;stroke-width:1.5}
.chart g.node:hover rect,.chart g.node:focus rect{filter:brightness(.9)}
.chart g.node:focus{outline:none}
.chart text{font-size:12px;fill:#1b1f27;pointer-events:none}
.legend{display:flex;gap:14px;flex-wrap:wrap;color:var(--muted);font-size:12.5px;margin-top:8px}
.legend span::before{content:"";display:inline-block;width:10px;height:10px;border-radius:2px;
margin-right:5px;background:var(--swatch);vertical-align:-1px}
.legend .dashed::before{background:none;border:1.5px dashed #b3261e}
.note{color:#9a5b00;font-size:13px;margin:6px 0 0}.note:empty{display:none}
.help{color:var(--muted);font-size:12.5px;margin:6px 0 0}
.hints ul{margin:8px 0 0;padding-left:20px}.hints li{margin:3px 0;overflow-wrap:anywhere}
.hints .none{color:var(--muted)}
table{border-collapse:collapse;width:100%;margin-top:8px;font-variant-numeric:tabular-nums}
th,td{padding:5px 10px;border-bottom:1px solid var(--line);text-align:left;white-space:nowrap}
thead th{color:var(--muted);font-weight:500;font-size:12.5px}
tbody th{font-weight:500;max-width:420px;overflow:hidden;text-overflow:ellipsis}
.num{text-align:right}td.zero{color:var(--muted);opacity:.6}.cost{font-weight:600}
details summary{cursor:pointer;font-weight:600;font-size:15px}
.empty{color:var(--muted)}
.tip{position:fixed;z-index:10;max-width:420px;background:var(--bg);color:var(--fg);
border:1px solid var(--line);border-radius:8px;box-shadow:0 6px 24px rgba(0,0,0,.18);padding:10px 12px;
font-size:12.5px;pointer-events:none}
.tip .t{font-weight:600;font-size:14px;word-break:break-all}.tip .k{color:var(--muted)}
.tip .p{color:var(--muted);word-break:break-all;margin-bottom:6px}
.tip table{margin:4px 0 0;width:auto}.tip td{padding:1px 10px 1px 0;border:0}
.tip tr.sub td.k{padding-left:12px}.tip tr.h td{padding-top:6px;color:var(--muted);font-size:11.5px;
text-transform:uppercase;letter-spacing:.04em}
.tip .flags{color:#9a5b00;margin-top:4px}
"""

# Builds the chart with DOM calls only (createElementNS + textContent): names never become markup.
_JS = r"""
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg", ROW = 28;
  var HUES = {root: 220, session: 212, "function": 28, chain: 268, agent: 330, tool: 150, retriever: 180,
              node: 45, query: 195, step: 95, unattributed: 0};
  var data = JSON.parse(document.getElementById("tokenspy-data").textContent);
  var root = data.tree, chart = document.getElementById("chart");
  if (!chart) { return; }
  var tip = document.getElementById("tip"), crumbs = document.getElementById("crumbs");
  var note = document.getElementById("chart-note"), legend = document.getElementById("legend");
  var nodes = [], maxDepth = 0;
  (function index(n, parent, depth) {
    n.parent = parent; n.depth = depth; n.i = nodes.length; nodes.push(n);
    maxDepth = Math.max(maxDepth, depth);
    n.children.forEach(function (c) { index(c, n, depth + 1); });
  })(root, null, 0);
  var metric = root.cost > 0 ? "cost" : "tokens", focus = root;

  function el(tag, attrs, text) {
    var e = tag === "div" || tag === "span" || tag === "button" || tag === "table" || tag === "tr" ||
            tag === "td" ? document.createElement(tag) : document.createElementNS(NS, tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) { e.textContent = text; }
    return e;
  }
  function hash(s) {
    var h = 0;
    for (var i = 0; i < s.length; i++) { h = (h * 31 + s.charCodeAt(i)) | 0; }
    return h;
  }
  function color(n) {
    var hue = HUES.hasOwnProperty(n.kind) ? HUES[n.kind] : 300;
    if (n.kind === "root") { return "hsl(220, 14%, 82%)"; }
    if (n.kind === "unattributed") { return "hsl(0, 0%, 78%)"; }
    // Neighbours of one kind differ by a hash of their name, so siblings stay distinguishable.
    var h = Math.abs(hash(n.name));
    return "hsl(" + (hue + h % 31 - 15) + ", 70%, " + (64 + (h >> 5) % 14) + "%)";
  }
  function layout(n, x0, x1) {
    n.x0 = x0; n.x1 = x1;
    var size = n[metric], x = x0;
    n.children.forEach(function (c) {
      var w = size > 0 ? (x1 - x0) * c[metric] / size : 0;
      layout(c, x, x + w); x += w;
    });
  }
  function isAncestorOrSelf(a, n) { for (; n; n = n.parent) { if (n === a) { return true; } } return false; }
  function label(n, w) {
    var chars = Math.floor((w - 10) / 6.8);
    if (chars < 3) { return ""; }
    var full = n.name + "  " + (metric === "cost" ? n.costText : n.tokens.toLocaleString() + " tokens");
    if (full.length <= chars) { return full; }
    return n.name.length <= chars ? n.name : n.name.slice(0, chars - 1) + "\u2026";
  }

  function render() {
    var W = Math.max(chart.clientWidth, 320), depth = 0;
    layout(root, 0, 1);
    nodes.forEach(function (n) { if (isAncestorOrSelf(focus, n)) { depth = Math.max(depth, n.depth); } });
    var svg = el("svg", {width: W, height: (depth + 1) * ROW, viewBox: "0 0 " + W + " " + (depth + 1) * ROW,
                         role: "group", "aria-label": "cost tree"});
    var span = focus.x1 - focus.x0, hidden = 0;
    nodes.forEach(function (n) {
      var x0, x1;
      if (isAncestorOrSelf(n, focus)) { x0 = 0; x1 = W; }
      else if (isAncestorOrSelf(focus, n)) {
        x0 = (n.x0 - focus.x0) / span * W; x1 = (n.x1 - focus.x0) / span * W;
      }
      else { return; }
      var w = Math.max(x1 - x0, 0), y = n.depth * ROW;
      if (w === 0 && n.calls > 0) { hidden++; }
      var g = el("g", {"class": "node" + (n.ownUnpriced ? " unpriced" : ""), tabindex: "0", "data-i": n.i,
                       "data-name": n.name, "data-kind": n.kind, "data-path": JSON.stringify(n.path),
                       "data-cost": n.cost, "data-tokens": n.tokens});
      g.appendChild(el("title", {}, (n.path.join(" / ") || n.name) + " \u2014 " + n.costText +
                       (n.share ? " (" + n.share + ")" : "")));
      g.appendChild(el("rect", {x: x0.toFixed(3), y: y, width: w.toFixed(3), height: ROW - 2, rx: 3,
                                fill: color(n)}));
      var text = label(n, w);
      if (text) { g.appendChild(el("text", {x: (x0 + 6).toFixed(1), y: y + 17}, text)); }
      svg.appendChild(g);
    });
    chart.replaceChildren(svg);
    note.textContent = hidden ? hidden + " block(s) with calls have no width when sized by " + metric +
      (metric === "cost" ? " (unpriced or free); size by tokens to see them." : ".") : "";
    renderCrumbs();
    document.querySelectorAll(".metric button").forEach(function (b) {
      b.setAttribute("aria-pressed", String(b.getAttribute("data-metric") === metric));
    });
  }
  function renderCrumbs() {
    var parts = [], n;
    for (n = focus; n; n = n.parent) { parts.unshift(n); }
    crumbs.replaceChildren();
    if (focus === root) { return; }
    parts.forEach(function (p, k) {
      if (k) { crumbs.appendChild(document.createTextNode(" / ")); }
      if (p === focus) { crumbs.appendChild(el("span", {}, p.name)); return; }
      var b = el("button", {type: "button"}, p.name);
      b.addEventListener("click", function () { zoom(p); });
      crumbs.appendChild(b);
    });
  }
  function zoom(n) {
    if (n !== root && !(n.x1 > n.x0)) { return; }
    focus = n; hideTip(); render();
  }
  function row(table, k, v, cls) {
    var tr = el("tr", cls ? {"class": cls} : {});
    tr.appendChild(el("td", {"class": "k"}, k)); tr.appendChild(el("td", {}, v));
    table.appendChild(tr);
  }
  function showTip(n, x, y) {
    tip.replaceChildren();
    var head = el("div", {"class": "t"}, n.name);
    head.appendChild(el("span", {"class": "k"}, "  " + n.kind));
    tip.appendChild(head);
    if (n.path.length > 1) { tip.appendChild(el("div", {"class": "p"}, n.path.join(" / "))); }
    var t = el("table");
    row(t, "cost", n.costText + (n.share ? "  (" + n.share + " of total)" : ""));
    if (n.selfCalls) { row(t, "own calls", n.selfText + " in " + n.selfCalls.toLocaleString() + " call(s)"); }
    row(t, "calls", n.calls.toLocaleString());
    row(t, "tokens", n.tokens.toLocaleString());
    n.tok.forEach(function (kv) { row(t, kv[0], kv[1].toLocaleString(), "sub"); });
    if (n.models.length) {
      row(t, n.selfCalls && n.children.length ? "own calls by model" : "by model", "", "h");
    }
    n.models.forEach(function (m) {
      row(t, m[0], m[1] + " \u00b7 " + m[2].toLocaleString() + " tokens \u00b7 " + m[3] + " call(s)", "sub");
    });
    tip.appendChild(t);
    if (n.flags) { tip.appendChild(el("div", {"class": "flags"}, n.flags)); }
    tip.hidden = false;
    var r = tip.getBoundingClientRect();
    tip.style.left = Math.min(x + 14, window.innerWidth - r.width - 8) + "px";
    tip.style.top = (y + 16 + r.height > window.innerHeight ? y - r.height - 10 : y + 16) + "px";
  }
  function hideTip() { tip.hidden = true; }
  function nodeOf(e) {
    var g = e.target.closest ? e.target.closest("g.node") : null;
    return g ? nodes[+g.getAttribute("data-i")] : null;
  }
  chart.addEventListener("mousemove", function (e) {
    var n = nodeOf(e);
    if (n) { showTip(n, e.clientX, e.clientY); } else { hideTip(); }
  });
  chart.addEventListener("mouseleave", hideTip);
  chart.addEventListener("click", function (e) {
    var n = nodeOf(e); if (n) { zoom(n === focus && n.parent ? n.parent : n); }
  });
  chart.addEventListener("focusin", function (e) {
    var n = nodeOf(e); if (!n) { return; }
    var r = e.target.getBoundingClientRect(); showTip(n, r.left, r.bottom - 10);
  });
  chart.addEventListener("focusout", hideTip);
  chart.addEventListener("keydown", function (e) {
    var n = nodeOf(e);
    if (n && (e.key === "Enter" || e.key === " ")) {
      e.preventDefault(); zoom(n === focus && n.parent ? n.parent : n);
    }
    if (e.key === "Escape") { zoom(root); }
  });
  document.querySelectorAll(".metric button").forEach(function (b) {
    b.addEventListener("click", function () {
      metric = b.getAttribute("data-metric"); focus = root; render();
    });
  });
  var kinds = {};
  nodes.forEach(function (n) { if (n.kind !== "root") { kinds[n.kind] = color({kind: n.kind, name: ""}); } });
  Object.keys(kinds).forEach(function (k) {
    var s = el("span", {style: "--swatch:" + kinds[k]}, k); legend.appendChild(s);
  });
  if (nodes.some(function (n) { return n.ownUnpriced; })) {
    legend.appendChild(el("span", {"class": "dashed"}, "own calls unpriced"));
  }
  var pending = 0;
  window.addEventListener("resize", function () {
    cancelAnimationFrame(pending); pending = requestAnimationFrame(render);
  });
  render();
})();
"""
