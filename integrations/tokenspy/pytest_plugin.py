"""pytest plugin: what each test spent on LLM calls, budgets, and a per-test session fixture.

    pytest --tokenspy                        after the run, the tests that made LLM calls, by cost
    pytest --tokenspy-json tokenspy.json     the same as JSON (a CI artifact)
    pytest --tokenspy-budget 0.50            fail the run when its tests together spend more
    @pytest.mark.tokenspy(budget_usd=0.01)   fail this test when its own calls cost more
    def test_x(tokenspy_session): ...        this test's own calls (`.cost`, `.tokens`, `.calls`)

Inert unless asked: without the options nothing is wrapped and nothing is printed; the marker and the
fixtures (`tokenspy_session`, and `fake_provider` from `tokenspy.testing`) are only registered. A test
with the marker is tracked even without the options: a budget the user wrote must not be ignored.

A tracked test runs (setup, call and teardown) inside a session-like span of its own, so the calls the
code under test makes through any adapter or `tokenspy.record` land in its bucket, also while other
tests run concurrently (spans follow the context). That span adds nothing to span paths: records,
the stats tree and the user's own sessions read exactly as without the options. Under pytest-xdist
each worker ships its rows to the controller in `workeroutput`; the controller merges them, prints
and judges the budget.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from decimal import Decimal, InvalidOperation
from typing import Any

import pytest

from tokenspy_core import Span, Tracker, use_span
from tokenspy_core.pricing import FEMTO_PER_USD, exact_amount, usd
from tokenspy_core.tracker import Aggregate

from . import _instrument, _profile
from ._profile import Session

__all__ = ["tokenspy_session"]

_FAKE_PROVIDER_PLUGIN = "tokenspy.testing.fixtures"
_WORKER_KEY = "tokenspy_rows"
_BUCKET = pytest.StashKey[Tracker]()
_BUDGET = pytest.StashKey[int]()  # the marker's budget, femto-dollars
_OVER = pytest.StashKey[bool]()
_NOTE = pytest.StashKey[str]()  # the budget message for a phase that failed on its own
_FAILURE = pytest.StashKey[BaseException]()  # the budget failure a phase raised
_MARKER_KEYWORDS = ("budget_usd",)


def _budget_option(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite() or value < 0:
        # argparse shows an ArgumentTypeError's own message; a ValueError only as "invalid <function name> value".
        raise argparse.ArgumentTypeError(f"--tokenspy-budget takes a number of USD >= 0, got {text!r}")
    return value


def _json_option(text: str) -> str:
    if not text.strip():
        # Likely an unset variable (`--tokenspy-json "$OUT"`): a CI job that asked for the artifact
        # must not pass without it, nor have it written to a name nobody meant.
        raise argparse.ArgumentTypeError(f"--tokenspy-json takes a file path, got {text!r} (an unset variable?)")
    return text


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tokenspy", "LLM tokens and cost per test (tokenspy)")
    group.addoption("--tokenspy", action="store_true", default=False,
                    help="after the run, list the tests that made LLM calls: calls, tokens, cost")
    group.addoption("--tokenspy-json", metavar="PATH", type=_json_option, default=None,
                    help="write the per-test LLM cost table to PATH as JSON")
    group.addoption("--tokenspy-budget", metavar="USD", type=_budget_option, default=None,
                    help="fail the run when the LLM calls of all tests cost more than USD")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "tokenspy(budget_usd): fail the test when its own LLM calls cost more than budget_usd")
    _register_fake_provider(config)
    config.pluginmanager.register(_Tracking(config), "tokenspy-tracking")


def _register_fake_provider(config: pytest.Config) -> None:
    """Offer `fake_provider` to every test, as if the user listed it in `pytest_plugins`.

    Registered under its module name, so a conftest that does list it (or `-p no:` it) wins instead
    of clashing; imported only here, and skipped if the fake provider is not there.
    """
    if config.pluginmanager.has_plugin(_FAKE_PROVIDER_PLUGIN):
        return
    try:
        import tokenspy.testing.fixtures as module
    except ImportError:
        return
    config.pluginmanager.register(module, _FAKE_PROVIDER_PLUGIN)


@pytest.fixture
def tokenspy_session(request: pytest.FixtureRequest) -> Iterator[Session]:
    """A `tokenspy.session` around this test: exactly its own LLM calls (`.cost`, `.tokens`, `.calls`,
    `.records()`), whatever else runs at the same time."""
    with _profile.session(request.node.name) as own:
        yield own


class _TestSpan(Span):
    """The span a tracked test runs in. It carries the test's bucket (a sink) like a session's span,
    but its path is empty: a call made in the test records the path it would have without the plugin,
    so `--tokenspy` cannot change what a test asserting on tokenspy's own numbers sees."""

    __slots__ = ()

    def __init__(self, nodeid: str, bucket: Tracker) -> None:
        super().__init__(nodeid, "test", None, sink=bucket)
        self.path, self.kinds = (), ()


@contextmanager
def _tracked(nodeid: str) -> Iterator[Tracker]:
    """The test's bucket, current for the block (parent None: never nested in a span leaked earlier)."""
    bucket = Tracker(name=nodeid)
    # As `tokenspy.session` does: inside a span, calls of SDK clients nobody observed count too.
    _instrument.auto_instrument()
    span = _TestSpan(nodeid, bucket)
    try:
        with use_span(span):
            yield bucket
    finally:
        span.end()


@dataclass(frozen=True, slots=True)
class _Row:
    """One test's LLM calls: plain data, so a pytest-xdist worker can send it to the controller."""

    nodeid: str
    calls: int
    tokens: int
    input_tokens: int
    output_tokens: int
    cost_femto: int
    unpriced_calls: int
    partial_calls: int
    estimated_calls: int
    failed_calls: int

    @classmethod
    def of(cls, nodeid: str, agg: Aggregate) -> _Row:
        return cls(nodeid, agg.calls, agg.total_tokens, agg.input_tokens, agg.output_tokens, agg.cost,
                   agg.unpriced_calls, agg.partial_calls, agg.estimated_calls, agg.failed_calls)

    @property
    def cost_usd(self) -> float | None:
        # As everywhere in tokenspy: an unknown price is never shown as $0.
        return None if self.calls and self.unpriced_calls == self.calls else self.cost_femto / FEMTO_PER_USD

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["cost_femto"]
        cost = self.cost_usd
        # Plain notation to the femto-dollar for every amount (str() of a Decimal writes "5.00000000E-7"
        # and "0E-15"), and null with cost_usd: the sum of no known price is not $0.
        exact = None if cost is None else format(usd(self.cost_femto), "f")
        return {**data, "cost_usd": cost, "cost_usd_exact": exact}


def _total(rows: list[_Row]) -> _Row:
    numbers = [sum(getattr(r, f.name) for r in rows) for f in fields(_Row)[1:]]
    return _Row(f"total ({len(rows)} test{'s' if len(rows) != 1 else ''})", *numbers)


def _exact(femto: int) -> str:
    """An exact amount for budget messages ($0.0100001 must not print as the $0.01 it exceeds)."""
    return f"${usd(femto).normalize():f}"


def _cost_cell(row: _Row) -> str:
    if row.cost_usd is None:
        return "unpriced"
    cost = f"${usd(row.cost_femto):,.6f}"
    return f"{cost} + {row.unpriced_calls} unpriced" if row.unpriced_calls else cost


def _table(rows: list[_Row]) -> list[str]:
    header = ("test", "calls", "tokens", "cost", "partial", "estimated")
    body = [(r.nodeid, f"{r.calls:,}", f"{r.tokens:,}", _cost_cell(r), f"{r.partial_calls:,}",
             f"{r.estimated_calls:,}") for r in [*rows, _total(rows)]]
    widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]

    def fmt(cells: tuple[str, ...]) -> str:
        # the test id left-aligned, the numbers right-aligned
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return [fmt(header), *(fmt(b) for b in body[:-1]), "-" * len(fmt(header)), fmt(body[-1])]


class _Tracking:
    """Per-run state, registered by `pytest_configure` (one per config: pytester runs nest)."""

    def __init__(self, config: pytest.Config) -> None:
        self.show = bool(config.getoption("tokenspy"))
        json_path = config.getoption("tokenspy_json")
        # Resolved now: a test may chdir before the file is written.
        self.json_path = config.invocation_params.dir / json_path if json_path else None
        budget: Decimal | None = config.getoption("tokenspy_budget")
        self.budget = None if budget is None else int(budget * FEMTO_PER_USD)
        self.enabled = self.show or self.json_path is not None or self.budget is not None
        self.worker = hasattr(config, "workerinput")
        self.rows: list[_Row] = []
        self.over_budget = False
        self.json_error: str | None = None

    # -- one test --------------------------------------------------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item,
                                nextitem: pytest.Item | None) -> Generator[None, Any, Any]:
        if not self.enabled and item.get_closest_marker("tokenspy") is None:
            return (yield)
        with _tracked(item.nodeid) as bucket:
            item.stash[_BUCKET] = bucket
            try:
                return (yield)
            finally:
                del item.stash[_BUCKET]
                totals = bucket.totals()
                if self.enabled and totals.calls:
                    self.rows.append(_Row.of(item.nodeid, totals))

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        marker = item.get_closest_marker("tokenspy")
        if marker is None:
            return
        unknown = sorted(set(marker.kwargs) - set(_MARKER_KEYWORDS))
        if unknown:  # a typo (budget=) must be named, not reported as a missing budget
            plural = "s" if len(unknown) > 1 else ""
            pytest.fail(f"@pytest.mark.tokenspy got unknown keyword argument{plural} {', '.join(map(repr, unknown))}; "
                        f"it accepts: {', '.join(_MARKER_KEYWORDS)}", pytrace=False)
        if len(marker.args) + len(marker.kwargs) > 1:
            given = ", ".join([*map(repr, marker.args), *(f"{k}={v!r}" for k, v in marker.kwargs.items())])
            pytest.fail(f"@pytest.mark.tokenspy takes one budget, budget_usd=<USD >= 0>, got ({given})",
                        pytrace=False)
        budget = marker.kwargs.get("budget_usd", marker.args[0] if marker.args else None)
        try:  # the amounts profile() and session() take, checked the same way
            amount = exact_amount(budget, "budget_usd", "USD")
        except (TypeError, ValueError):
            amount = None
        if amount is None:
            pytest.fail(f"@pytest.mark.tokenspy takes budget_usd=<USD >= 0>, got {budget!r}", pytrace=False)
        item.stash[_BUDGET] = int(amount * FEMTO_PER_USD)

    # The budget is judged after the body (setup's calls included) and again after teardown (its calls
    # too). Over it, the phase raises as a failing assert would: pytest's own outcome rules then apply
    # (an `xfail` test over budget is xfailed, or fails when `raises=` names another exception).
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        yield from self._judged(item)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item,
                                nextitem: pytest.Item | None) -> Generator[None, None, None]:
        yield from self._judged(item)

    def _judged(self, item: pytest.Item) -> Generator[None, None, None]:
        try:
            yield
        except BaseException:
            # The phase failed on its own (or skipped): that stays its outcome; the budget is a note.
            message = self._over_budget(item)
            if message is not None:
                item.stash[_NOTE] = message
            raise
        message = self._over_budget(item)
        if message is not None:
            failure = pytest.fail.Exception(message, pytrace=False)
            item.stash[_FAILURE] = failure
            raise failure

    def _over_budget(self, item: pytest.Item) -> str | None:
        """The budget message, once per test, when the test's calls so far cost more than its marker allows."""
        bucket, limit = item.stash.get(_BUCKET, None), item.stash.get(_BUDGET, None)
        if bucket is None or limit is None or item.stash.get(_OVER, False):
            return None
        spent = bucket.totals()
        if spent.cost <= limit:
            return None
        item.stash[_OVER] = True
        return (f"tokenspy budget exceeded: {item.nodeid} spent {_exact(spent.cost)} on "
                f"{spent.calls} LLM call{'s' if spent.calls != 1 else ''}, over its budget of "
                f"{_exact(limit)}; {_costliest_call(bucket)}")

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item,
                                  call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
        report: pytest.TestReport = yield
        note = item.stash.get(_NOTE, None)
        if note is not None:
            del item.stash[_NOTE]
            report.sections.append(("tokenspy budget", note))
        elif report.failed and call.excinfo is not None and call.excinfo.value is item.stash.get(_FAILURE, None):
            report.longrepr = str(call.excinfo.value)  # the message alone, also in the short summary
        return report

    # -- the run ---------------------------------------------------------------------------------
    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """pytest-xdist controller: a worker finished; take its rows."""
        rows = getattr(node, "workeroutput", {}).get(_WORKER_KEY, ())
        self.rows.extend(_Row(**row) for row in rows)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if not self.enabled:
            return
        if self.worker:
            session.config.workeroutput[_WORKER_KEY] = [asdict(r) for r in self.rows]  # type: ignore[attr-defined]
            return
        self.rows.sort(key=lambda r: (-r.cost_femto, -r.tokens, r.nodeid))
        total = _total(self.rows)
        if self.budget is not None and total.cost_femto > self.budget:
            self.over_budget = True
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if self.json_path is not None:
            total_json = {"tests": len(self.rows), **total.to_json()}
            del total_json["nodeid"]
            data = {"tests": [r.to_json() for r in self.rows], "total": total_json,
                    "budget_usd": None if self.budget is None else f"{usd(self.budget).normalize():f}",
                    "over_budget": self.over_budget}
            try:
                self.json_path.parent.mkdir(parents=True, exist_ok=True)
                self.json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
            except OSError as exc:
                # A CI job that asked for the artifact must not pass without it, nor end in a traceback.
                self.json_error = f"{type(exc).__name__}: {exc}"
                if session.exitstatus == pytest.ExitCode.OK:
                    session.exitstatus = pytest.ExitCode.USAGE_ERROR

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter, exitstatus: int,
                                config: pytest.Config) -> None:
        if not self.enabled or self.worker:
            return
        tr = terminalreporter
        if self.show:
            tr.write_sep("=", "tokenspy: LLM calls by test")
            lines = _table(self.rows) if self.rows else ["no test made an LLM call"]
            for line in lines:
                tr.write_line(line)
        if self.json_error is not None:
            tr.write_line(f"tokenspy: could not write {self.json_path}: {self.json_error}",
                          red=True, bold=True)
        elif self.json_path is not None:
            tr.write_line(f"tokenspy: wrote {self.json_path}")
        if self.budget is not None:
            spent = _total(self.rows).cost_femto
            if self.over_budget:
                costliest = self.rows[0]
                tr.write_line(f"tokenspy: budget exceeded: the tests spent {_exact(spent)} on LLM calls, "
                              f"over --tokenspy-budget {_exact(self.budget)} (costliest test: "
                              f"{costliest.nodeid}, {_exact(costliest.cost_femto)})", red=True, bold=True)
            else:
                tr.write_line(f"tokenspy: the tests spent {_exact(spent)} on LLM calls, within "
                              f"--tokenspy-budget {_exact(self.budget)}")


def _costliest_call(bucket: Tracker) -> str:
    priced = [r for r in bucket.calls() if r.cost_femto is not None]
    if not priced:
        return "no call was priced"
    top = max(priced, key=lambda r: r.cost_femto or 0)
    where = "/".join(top.span_path) or "the test itself"
    return f"costliest call: {top.model} in {where}, {_exact(top.cost_femto or 0)}"
