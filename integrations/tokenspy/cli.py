"""The `tokenspy` command: reports, history and comparisons read from the SQLite store.

Every number comes from replaying stored records into the engine's own aggregation (`Tracker` for
the box, `Aggregate` for grouped tables), so the CLI and `tokenspy.report()` cannot disagree.
User errors (missing file, not a tokenspy database, bad arguments) print one line on stderr and
exit with status 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from tokenspy_core import CallRecord, Tracker
from tokenspy_core.pricing import FEMTO_PER_USD, usd
from tokenspy_core.report import BOX_GLYPHS, fmt_cost, one_line
from tokenspy_core.store import SPAN_SEPARATOR, StoreError, iter_records, resolve_path
from tokenspy_core.tracker import UNATTRIBUTED, Aggregate

from ._api import _can_encode

__all__ = ["CliError", "main"]

_GROUPS = ("function", "model", "tag", "day", "commit")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_OFF = ("", "0", "false")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")


@dataclass(frozen=True, slots=True)
class _Glyphs:
    """The non-ASCII characters of the CLI's own text, or their ASCII stand-ins."""

    ascii: bool
    arrow: str
    plus_minus: str
    dot: str
    warning: str


_UNICODE_GLYPHS = _Glyphs(False, "→", "±", "·", "⚠️")
_ASCII_GLYPHS = _Glyphs(True, "->", "+-", "-", "!")
# One check for every command: a stdout that cannot encode any of these (a Windows console redirected
# to a file is cp1252) gets ASCII throughout, so no command fails and none mixes the two.
_GLYPH_SAMPLE = BOX_GLYPHS + "".join(
    (_UNICODE_GLYPHS.arrow, _UNICODE_GLYPHS.plus_minus, _UNICODE_GLYPHS.dot, _UNICODE_GLYPHS.warning))


class CliError(Exception):
    """A user error: one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse prints usage + exits; we want one line
        raise CliError(message)


class _Once(argparse.Action):
    """An option that takes one value: given twice it is a usage error, not "the last one wins" (which
    would report one of two databases and say nothing of the other)."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, hint: str = "", **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.hint = hint

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if getattr(namespace, self.dest, None) is not None:
            parser.error(f"{option_string} given twice: {parser.prog} takes one{self.hint}")
        setattr(namespace, self.dest, values)


# -- argument types --------------------------------------------------------------------------------

def _since(text: str) -> float:
    """`30m`, `12h`, `7d`, `2w` ago, or an ISO date/time (local time unless it names a zone)."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match:
        since = datetime.now().timestamp() - float(match[1]) * _UNITS[match[2]]
        if not since >= 0:  # before 1970 (no call is), or past what a float holds
            raise argparse.ArgumentTypeError(f"invalid duration {text!r}: longer than the time since 1970")
        return since
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: use 30m, 12h, 7d, 2w or a date such as 2026-11-01") from None


def _percent(text: str) -> float:
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid percentage {text!r}: use e.g. 10%") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"invalid percentage {text!r}: must be a finite number >= 0")
    return value


def _usd(text: str) -> float:
    try:
        value = float(text.strip().lstrip("$"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid amount {text!r}: use USD, e.g. 0.01") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"invalid amount {text!r}: must be a finite number >= 0")
    return value


def _given(what: str, hint: str = "") -> Callable[[str], str]:
    """A value that must name something: an empty one is most likely an unset variable (`--commit
    "$BASE_SHA"`), and read as "no filter" or "the default database" it would quietly report on
    calls nobody asked for (a baseline of the whole database passes a CI regression check)."""
    def check(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"blank {what} {text!r} (an unset variable?){hint}")
        return text
    return check


_COMMIT = _given("commit", ": it would match every call")
_DB = _given("database path")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: must be a positive integer")
    return value


# -- loading and grouping ----------------------------------------------------------------------------

def _load(db: str | None, *, since: float | None = None, commit: str | None = None,
          limit: int | None = None) -> Iterator[CallRecord]:
    """The stored records, streamed (a years-old database need not fit in memory); store errors
    become CliErrors whenever they surface. A commit named explicitly that matches no call is an error
    (a typo, or a commit recorded without track_git), raised once the records are consumed."""
    path = resolve_path(db)
    found = False
    try:
        for record in iter_records(path, since=since, commit=commit, limit=limit):
            found = True
            yield record
    except FileNotFoundError:
        hint = "" if db else " (record with tokenspy.init(persist=True), or pass --db)"
        raise CliError(f"no tokenspy database at {path}{hint}") from None
    except StoreError as exc:
        raise CliError(str(exc)) from None
    except (sqlite3.Error, OSError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    if commit and not found:
        when = "" if since is None else f" since {datetime.fromtimestamp(since):%Y-%m-%d %H:%M:%S}"
        raise CliError(f"no calls recorded for commit {commit!r} in {path}{when}")


def _span(record: CallRecord) -> str:
    return SPAN_SEPARATOR.join(record.span_path) or UNATTRIBUTED


def _keys(by: str, tag: str | None) -> Callable[[CallRecord], list[str]]:
    if by == "function":
        return lambda r: [_span(r)]
    if by == "model":
        return lambda r: [r.model or "(no model)"]
    if by == "day":  # UTC: the same day boundaries for every host writing one file
        return lambda r: [datetime.fromtimestamp(r.started_at, UTC).date().isoformat()]
    if by == "commit":
        return lambda r: [str(r.tags.get("git_commit") or "(no commit)")[:12]]
    if tag is not None:
        return lambda r: [_tag_text(r.tags[tag]) if tag in r.tags else f"(no {tag})"]
    return lambda r: [f"{k}={_tag_text(v)}" for k, v in sorted(r.tags.items()) if k != "git_commit"] or ["(no tags)"]


def _tag_text(value: Any) -> str:
    """A tag value as a group name: strings as they are, anything else as JSON (`null`, `true`, `{"a": 1}`),
    so that the string "None" and a null, or "True" and true, stay two groups."""
    return value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)


def _group(records: Iterable[CallRecord],
           key: Callable[[CallRecord], list[str]]) -> tuple[dict[str, Aggregate], Aggregate]:
    """One pass: the aggregate of each group, and of all records (each counted once)."""
    groups: dict[str, Aggregate] = {}
    total = Aggregate()
    for record in records:
        total.add(record)
        for name in key(record):
            groups.setdefault(name, Aggregate()).add(record)
    return groups, total


def _replay(records: Iterable[CallRecord]) -> Tracker:
    tracker = Tracker()
    for record in records:
        tracker.add(record)
    return tracker


# -- output ------------------------------------------------------------------------------------------

def _align(rows: list[list[str]], right: set[int]) -> str:
    rows = [[one_line(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
                     for row in rows)


def _csv_cost(aggregate: Aggregate) -> str:
    """Exact, in plain decimal notation (a float would print 8.4e-05); empty when nothing was priced."""
    if aggregate.cost_usd is None:
        return ""
    text = format(usd(aggregate.cost), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().rstrip("\n")


def _flags(agg: Aggregate) -> str:
    counts = ((agg.partial_calls, "partial"), (agg.estimated_calls, "estimated"),
              (agg.failed_calls, "failed"), (agg.unpriced_calls, "unpriced"))
    flags = [f"{n:,} {what}" for n, what in counts if n]
    return ", ".join(flags)


def _write(text: str, *, html: bool = False) -> None:
    """Text to stdout; a character it cannot encode (in a span, model or tag name) becomes "?" rather
    than failing the command."""
    out = sys.stdout
    encoding = getattr(out, "encoding", None)
    if encoding is None:  # an in-memory text stream holds any character
        out.write(text)
        return
    buffer = getattr(out, "buffer", None)
    if html and buffer is not None and not _can_encode(out, text):
        # The page declares UTF-8 (and names in its <script> data cannot be character references):
        # its bytes are exact whatever the console's encoding; the reader is a file or a browser.
        out.flush()
        buffer.write(text.encode("utf-8"))
        buffer.flush()
        return
    try:
        text = text.encode(encoding, "replace").decode(encoding)
    except LookupError:
        text = text.encode("ascii", "replace").decode("ascii")
    out.write(text)


def _emit(text: str, output: str | None, *, html: bool = False) -> None:
    if output is None:
        _write(text + "\n", html=html)
        return
    try:
        Path(output).write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {output}: {exc.strerror or exc}") from None
    print(f"tokenspy: wrote {output}", file=sys.stderr)


# -- report ------------------------------------------------------------------------------------------

def _cmd_report(args: argparse.Namespace) -> int:
    records = _load(args.db, since=args.since, commit=args.commit)
    if args.format == "html":
        if args.by != "function":
            raise CliError("--format html shows the cost tree: use it with --by function")
        from tokenspy_core.html_report import render_html  # the HTML page is optional weight: lazy

        _emit(render_html(_replay(records).stats(), hints=args.hints), args.output, html=True)
    elif args.by == "function" and args.format in ("text", "json"):
        ascii = args.ascii or (args.output is None and args.glyphs.ascii)
        _emit(_replay(records).render(args.format, ascii=ascii, hints=args.hints), args.output)
    else:
        _emit(_grouped(records, args), args.output)
    return 0


def _grouped(records: Iterable[CallRecord], args: argparse.Namespace) -> str:
    groups, total = _group(records, _keys(args.by, args.tag))
    ordered = sorted(groups.items(), key=(lambda kv: kv[0]) if args.by == "day"
                     else (lambda kv: (-kv[1].cost, -kv[1].total_tokens, kv[0])))
    label = args.tag if args.by == "tag" and args.tag else args.by
    if args.format == "json":
        return json.dumps({"by": label, "total": total.to_dict(),
                           "groups": [{label: name, **agg.to_dict()} for name, agg in ordered]}, indent=2)
    if args.format == "csv":
        header = [label, "calls", "input_tokens", "output_tokens", "cached_input_tokens", "total_tokens",
                  "cost_usd", "partial_calls", "estimated_calls", "failed_calls", "unpriced_calls"]
        return _csv(header, [[name, a.calls, a.input_tokens, a.output_tokens, a.cached_input_tokens,
                              a.total_tokens, _csv_cost(a), a.partial_calls, a.estimated_calls, a.failed_calls,
                              a.unpriced_calls] for name, a in ordered])
    rows = [[label, "calls", "input", "output", "tokens", "cost", "share", "flags"]]
    for name, a in [*ordered, ("total", total)]:
        # No price, no share: an unpriced group is not 0% of the cost (the HTML page leaves it empty too).
        share = f"{a.cost / total.cost * 100:.0f}%" if total.cost and a.cost_usd is not None else ""
        rows.append([name, f"{a.calls:,}", f"{a.input_tokens:,}", f"{a.output_tokens:,}",
                     f"{a.total_tokens:,}", fmt_cost(a.cost_usd), share, _flags(a)])
    text = _align(rows, right={1, 2, 3, 4, 5, 6})
    if args.by == "tag" and not args.tag:
        text += "\n(a call with several tags counts under each of them; --tag KEY groups by one key)"
    return text


# -- history -----------------------------------------------------------------------------------------

def _cmd_history(args: argparse.Namespace) -> int:
    records = list(_load(args.db, since=args.since, commit=args.commit, limit=args.limit))
    if args.format == "json":
        _emit(json.dumps([r.to_dict() for r in records], indent=2, default=str), None)
        return 0
    if not records:
        _emit("no LLM calls recorded", None)
        return 0
    rows = []
    for r in records:
        flags = [f for f, on in (("partial", r.partial), ("estimated", r.usage_source != "provider"),
                                 ("cache hit", r.cache_hit)) if on]
        if r.status == "failed":
            flags.append(f"error: {' '.join(r.error.split())}" if r.error else "error")  # one line per call
        rows.append([datetime.fromtimestamp(r.started_at).strftime("%Y-%m-%d %H:%M:%S"), _span(r),
                     r.model or "(no model)", f"{r.input_tokens:,} {args.glyphs.arrow} {r.output_tokens:,} tok",
                     fmt_cost(r.cost_usd), f"{r.latency_s * 1000:,.0f} ms", ", ".join(flags)])
    _emit(_align(rows, right={3, 4, 5}), None)
    return 0


# -- compare and annotate ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Side:
    label: str
    groups: dict[str, Aggregate]
    total: Aggregate


@dataclass(frozen=True, slots=True)
class _Delta:
    key: str
    a: Aggregate
    b: Aggregate

    @property
    def femto(self) -> int:
        return self.b.cost - self.a.cost

    @property
    def pct(self) -> float | None:
        return None if not self.a.cost else self.femto / self.a.cost * 100


def _side(label: str, records: Iterable[CallRecord], by: str) -> _Side:
    groups, total = _group(records, _keys(by, None))
    return _Side(label, groups, total)


def _sides(dbs: list[str], commits: list[str], since: float | None, by: str) -> tuple[_Side, _Side]:
    if len(dbs) == 2 and not commits:
        names = [Path(db).name for db in dbs]
        labels = names if names[0] != names[1] else dbs
        return (_side(labels[0], _load(dbs[0], since=since), by),
                _side(labels[1], _load(dbs[1], since=since), by))
    if len(dbs) <= 1 and len(commits) == 2:
        db = dbs[0] if dbs else None
        sides = []
        for commit in commits:  # _load refuses a commit with no calls
            sides.append(_side(commit[:12], _load(db, since=since, commit=commit), by))
        return sides[0], sides[1]
    raise CliError("compare two databases (--db A --db B) or two commits of one database "
                   "(--commit X --commit Y)")


def _deltas(a: _Side, b: _Side) -> list[_Delta]:
    keys = a.groups.keys() | b.groups.keys()
    rows = [_Delta(k, a.groups.get(k, Aggregate()), b.groups.get(k, Aggregate())) for k in keys]
    rows.sort(key=lambda d: (-abs(d.femto), -d.b.cost, d.key))
    return rows


def _money(femto: int) -> str:
    return fmt_cost(femto / FEMTO_PER_USD)


def _signed(femto: int, glyphs: _Glyphs) -> str:
    text = fmt_cost(abs(femto) / FEMTO_PER_USD)
    return f"{glyphs.plus_minus}$0" if femto == 0 else ("+" if femto > 0 else "-") + text


def _pct_text(d: _Delta) -> str:
    # Presence first: a span gone from B is "removed" (not -100%), one only in B "new", whatever they cost.
    if d.a.calls and not d.b.calls:
        return "removed"
    if d.b.calls and not d.a.calls:
        return "new"
    if d.pct is not None:
        return f"{d.pct:+.1f}%" if d.femto else "0%"
    return "new" if d.b.cost else ""


def _cmd_compare(args: argparse.Namespace) -> int:
    a, b = _sides(args.db or [], args.commit or [], args.since, args.by)
    rows = _deltas(a, b)
    total = _Delta("total", a.total, b.total)
    if args.format == "json":
        def item(d: _Delta) -> dict[str, Any]:
            return {"key": d.key, "a_cost_usd": d.a.cost / FEMTO_PER_USD,
                    "b_cost_usd": d.b.cost / FEMTO_PER_USD, "delta_usd": d.femto / FEMTO_PER_USD,
                    "delta_pct": d.pct, "a_calls": d.a.calls, "b_calls": d.b.calls}

        _emit(json.dumps({"by": args.by, "a": a.label, "b": b.label, "rows": [item(d) for d in rows],
                          "total": item(total)}, indent=2), None)
        return 0
    what = "span" if args.by == "function" else args.by
    arrow = args.glyphs.arrow
    table = [[what, f"A: {a.label}", f"B: {b.label}", "delta", "change", f"calls A {arrow} B"]]
    for d in [*rows, total]:
        table.append([d.key, _money(d.a.cost), _money(d.b.cost),
                      _signed(d.femto, args.glyphs), _pct_text(d), f"{d.a.calls:,} {arrow} {d.b.calls:,}"])
    text = _align(table, right={1, 2, 3, 4, 5})
    unpriced = a.total.unpriced_calls + b.total.unpriced_calls
    if unpriced:
        calls = "call counts" if unpriced == 1 else "calls count"
        text += f"\n({unpriced:,} unpriced {calls} as $0 here: tokenspy.set_price(...) them)"
    _emit(text, None)
    return 0


def _escape_data(text: str) -> str:
    """GitHub workflow-command escaping; the other control characters (ESC: colours in the log, or
    a terminal's escape sequences when run by hand) as spaces, as in every table."""
    return one_line(text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A"))


def _cmd_annotate(args: argparse.Namespace) -> int:
    if args.db:
        base, cur = _sides([args.db], [args.baseline, args.current], args.since, args.by)
    else:
        base, cur = _sides([args.baseline, args.current], [], args.since, args.by)
    rows = _deltas(base, cur)
    min_femto = round(args.min_delta * FEMTO_PER_USD)
    regressed = [d for d in rows
                 if d.femto > 0 and d.femto >= min_femto and (d.pct is None or d.pct > args.threshold)]
    what = "span" if args.by == "function" else args.by
    for d in regressed:
        message = (f"{what} {d.key}: {_money(d.a.cost)} {args.glyphs.arrow} {_money(d.b.cost)} "
                   f"({_pct_text(d)}, threshold +{args.threshold:g}%)")
        _write(f"::warning title=tokenspy cost regression::{_escape_data(message)}\n")
    flagged = set(map(id, regressed))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:  # a UTF-8 file GitHub renders: Unicode whatever stdout can encode
        markdown = _markdown(base, cur, rows, flagged, what, args.threshold, _UNICODE_GLYPHS)
        try:
            with open(summary, "a", encoding="utf-8") as f:
                f.write(markdown + "\n")
        except OSError as exc:
            raise CliError(f"cannot append to $GITHUB_STEP_SUMMARY ({summary}): "
                           f"{exc.strerror or exc}") from None
    else:
        _write(_markdown(base, cur, rows, flagged, what, args.threshold, args.glyphs) + "\n")
    return 1 if regressed and args.fail_on_regression else 0


def _markdown(base: _Side, cur: _Side, rows: list[_Delta], flagged: set[int], what: str,
              threshold: float, glyphs: _Glyphs) -> str:
    def cell(text: str) -> str:
        return one_line(text).replace("|", "\\|")

    money = _money

    lines = ["## tokenspy: LLM cost vs baseline", "",
             f"Baseline **{cell(base.label)}** ({base.total.calls:,} calls, {money(base.total.cost)}) {glyphs.dot} "
             f"current **{cell(cur.label)}** ({cur.total.calls:,} calls, {money(cur.total.cost)}) {glyphs.dot} "
             f"threshold +{threshold:g}% per {what}", "",
             f"| | {what} | baseline | current | delta | change |", "|---|---|---:|---:|---:|---:|"]
    for d in rows:
        mark = glyphs.warning if id(d) in flagged else ""
        lines.append(f"| {mark} | {cell(d.key)} | {money(d.a.cost)} | {money(d.b.cost)} | {_signed(d.femto, glyphs)} "
                     f"| {_pct_text(d)} |")
    total = _Delta("total", base.total, cur.total)
    lines.append(f"| | **total** | {money(total.a.cost)} | {money(total.b.cost)} | {_signed(total.femto, glyphs)} "
                 f"| {_pct_text(total)} |")
    n = len(flagged)
    lines += ["", f"**{n} {what}{'s' if n != 1 else ''}** above the +{threshold:g}% threshold." if n
              else f"No {what} above the +{threshold:g}% threshold."]
    return "\n".join(lines)


# -- parser and entry point --------------------------------------------------------------------------

def _build_parser() -> _Parser:
    from . import __version__

    parser = _Parser(prog="tokenspy", description="Where your LLM tokens and dollars went, from the database "
                     "tokenspy.init(persist=True) writes (default: $TOKENSPY_DB, else ~/.tokenspy/usage.db).")
    parser.add_argument("--version", action="version", version=f"tokenspy {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def filters(p: argparse.ArgumentParser, *, db: bool = True) -> None:
        if db:
            p.add_argument("--db", metavar="PATH", action=_Once, type=_DB,
                           hint=" (to compare two: tokenspy compare --db A --db B)",
                           help="the database (default: $TOKENSPY_DB or ~/.tokenspy/usage.db)")
        p.add_argument("--since", type=_since, metavar="WHEN",
                       help="only calls since 30m, 12h, 7d, 2w ago or a date")

    report = commands.add_parser("report", help="the cost tree, or a table by model, tag, day or commit")
    filters(report)
    report.add_argument("--commit", action=_Once, type=_COMMIT,
                        hint=" (to compare two: tokenspy compare --commit X --commit Y)",
                        help="only calls recorded at this git commit (a prefix is enough)")
    report.add_argument("--by", choices=_GROUPS, default="function",
                        help="group by (default: function, the tree)")
    report.add_argument("--tag", metavar="KEY", type=_given("tag key"), help="with --by tag: group by this tag's value")
    report.add_argument("--format", choices=("text", "json", "csv", "html"), default="text")
    report.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    report.add_argument("--ascii", action="store_true", help="draw the box with ASCII characters only")
    report.add_argument("--no-hints", dest="hints", action="store_false", help="leave out optimization hints")
    report.set_defaults(run=_cmd_report)

    history = commands.add_parser("history", help="the most recent calls, one line each")
    filters(history)
    history.add_argument("--commit", action=_Once, type=_COMMIT, help="only calls recorded at this git commit")
    history.add_argument("--limit", "-n", type=_positive_int, default=20, help="how many calls (default: 20)")
    history.add_argument("--format", choices=("text", "json"), default="text")
    history.set_defaults(run=_cmd_history)

    compare = commands.add_parser("compare", help="cost per span or model: two databases or two commits")
    filters(compare, db=False)
    compare.add_argument("--db", action="append", metavar="PATH", type=_DB,
                         help="give twice to compare two databases")
    compare.add_argument("--commit", action="append", metavar="SHA", type=_COMMIT,
                         help="give twice to compare two commits")
    compare.add_argument("--by", choices=("function", "model"), default="function")
    compare.add_argument("--format", choices=("text", "json"), default="text")
    compare.set_defaults(run=_cmd_compare)

    annotate = commands.add_parser("annotate", help="GitHub Actions warnings and a job-summary table "
                                   "for spans whose cost rose past a threshold")
    filters(annotate, db=False)
    side = _given("value", ": name a database, or a commit with --db")
    annotate.add_argument("--baseline", required=True, type=side, help="baseline database (or commit, with --db)")
    annotate.add_argument("--current", required=True, type=side, help="current database (or commit, with --db)")
    annotate.add_argument("--db", metavar="PATH", action=_Once, type=_DB,
                          hint=" (two databases: --baseline A.db --current B.db)",
                          help="compare two commits of this database")
    annotate.add_argument("--threshold", type=_percent, default=10.0,
                          help="warn above this rise (default: 10%%)")
    annotate.add_argument("--min-delta", type=_usd, default=0.0, metavar="USD",
                          help="ignore rises smaller than this many dollars (default: 0)")
    annotate.add_argument("--by", choices=("function", "model"), default="function")
    annotate.add_argument("--fail-on-regression", action="store_true",
                          help="exit with status 1 if any span regressed")
    annotate.set_defaults(run=_cmd_annotate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `tokenspy` command; returns the exit status (2 for user errors, with one line on stderr)."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            raise CliError("choose a command: report, history, compare or annotate (see tokenspy --help)")
        if getattr(args, "tag", None) and args.by != "tag":
            raise CliError("--tag KEY only applies to --by tag")
        args.glyphs = _UNICODE_GLYPHS if _can_encode(sys.stdout, _GLYPH_SAMPLE) else _ASCII_GLYPHS
        status: int = args.run(args)
        return status
    except CliError as exc:
        print(f"tokenspy: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    except BrokenPipeError:  # `tokenspy history | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get("TOKENSPY_DEBUG") or os.environ.get("TOKENSPY_STRICT", "") not in _OFF:
            raise
        print(f"tokenspy: internal error: {type(exc).__name__}: {exc} (TOKENSPY_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1
