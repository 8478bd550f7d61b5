"""The pytest plugin, driven through pytester on real test files (amounts worked out in conftest.py)."""

from __future__ import annotations

import json
import sys

import pytest
from plugin_files import COSTS_TABLE, LEAN, PRELUDE

from tokenspy_core import use_span


def _comparable(lines: list[str]) -> list[str]:
    # The header lists the plugins and the last line carries the duration; nothing else may differ.
    return [line for line in lines if not line.startswith("plugins:") and not line.startswith("=====")]


# -- the table and the JSON ----------------------------------------------------------------------
def test_table_and_json_list_the_tests_that_made_llm_calls_by_cost(costs: pytest.Pytester) -> None:
    result = costs.runpytest("--tokenspy", "--tokenspy-json", "ci/tokenspy.json")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines([*COSTS_TABLE, f"tokenspy: wrote {costs.path / 'ci' / 'tokenspy.json'}"],
                                consecutive=True)
    result.stdout.no_fnmatch_line("*test_no_llm*")
    data = json.loads((costs.path / "ci" / "tokenspy.json").read_text())
    keys = ("nodeid", "calls", "tokens", "cost_usd_exact", "partial_calls", "estimated_calls")
    assert [tuple(t[k] for k in keys) for t in data["tests"]] == [
        ("test_costs.py::test_long", 2, 6_300, "0.012200000000000", 0, 0),
        ("test_costs.py::test_short", 1, 700, "0.002600000000000", 0, 0),
        ("test_costs.py::test_streams", 2, 720, "0.000370000000000", 1, 1),
    ]
    assert data["tests"][0] == {
        "nodeid": "test_costs.py::test_long", "calls": 2, "tokens": 6_300, "input_tokens": 6_000,
        "output_tokens": 300, "unpriced_calls": 0, "partial_calls": 0, "estimated_calls": 0,
        "failed_calls": 0, "cost_usd": 0.0122, "cost_usd_exact": "0.012200000000000"}
    assert data["total"] == {
        "tests": 3, "calls": 5, "tokens": 7_720, "input_tokens": 7_200, "output_tokens": 520,
        "unpriced_calls": 0, "partial_calls": 1, "estimated_calls": 1, "failed_calls": 0,
        "cost_usd": 0.01517, "cost_usd_exact": "0.015170000000000"}
    assert (data["budget_usd"], data["over_budget"]) == (None, False)


def test_json_that_cannot_be_written_fails_the_run_with_a_message(costs: pytest.Pytester) -> None:
    (costs.path / "blocker").write_text("a file, not a directory")
    result = costs.runpytest("--tokenspy-json", "blocker/tokenspy.json")
    result.assert_outcomes(passed=4)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines([f"tokenspy: could not write {costs.path / 'blocker' / 'tokenspy.json'}: *"])


# -- budgets -------------------------------------------------------------------------------------
def test_session_budget_fails_the_run_when_the_total_passes_it(costs: pytest.Pytester) -> None:
    result = costs.runpytest("--tokenspy-budget", "0.015")
    result.assert_outcomes(passed=4)  # every test passed: the run fails on its spending alone
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "tokenspy: budget exceeded: the tests spent $0.01517 on LLM calls, over --tokenspy-budget $0.015 "
        "(costliest test: test_costs.py::test_long, $0.0122)"])
    result.stdout.no_fnmatch_line("*LLM calls by test*")  # the table is --tokenspy's


def test_session_budget_passes_when_the_total_stays_within(costs: pytest.Pytester) -> None:
    result = costs.runpytest("--tokenspy-budget", "0.01517")  # exactly spent is not over
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        ["tokenspy: the tests spent $0.01517 on LLM calls, within --tokenspy-budget $0.01517"])


def test_session_budget_option_rejects_nonsense(costs: pytest.Pytester) -> None:
    result = costs.runpytest("--tokenspy-budget", "lots")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--tokenspy-budget*"])


MARKED = PRELUDE + '''

@pytest.mark.tokenspy(budget_usd=0.01)
def test_over():
    summarize(5_000)                                                    # 11,600 µ$
    tokenspy.record("m-small", input_tokens=1_000, output_tokens=100)  #    600 µ$


@pytest.mark.tokenspy(budget_usd=0.0122)
def test_exactly_at_budget():
    summarize(5_000)
    tokenspy.record("m-small", input_tokens=1_000, output_tokens=100)


@pytest.mark.tokenspy(budget_usd=0.001)
def test_over_in_teardown(request):
    request.addfinalizer(lambda: tokenspy.record("m-small", input_tokens=4_000, output_tokens=0))  # 2,000 µ$


@pytest.mark.tokenspy(budget_usd="cheap")
def test_bad_marker():
    pass


def test_unmarked():
    summarize(50_000)
'''


def test_marker_fails_a_test_whose_own_calls_cost_more(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_marked=MARKED)
    # No option: a budget the user wrote applies on its own. --strict-markers: the marker is registered.
    result = pytester.runpytest("--strict-markers")
    # test_over_in_teardown passes its call, then errors at teardown.
    result.assert_outcomes(passed=3, failed=1, errors=2)
    result.stdout.fnmatch_lines([
        "tokenspy budget exceeded: test_marked.py::test_over spent $0.0122 on 2 LLM calls, over its budget "
        "of $0.01; costliest call: m-large in summarize, $0.0116"])
    result.stdout.fnmatch_lines([
        "*ERROR at teardown of test_over_in_teardown*",
        "tokenspy budget exceeded: test_marked.py::test_over_in_teardown spent $0.002 on 1 LLM call, "
        "over its budget of $0.001; costliest call: m-small in the test itself, $0.002"])
    result.stdout.fnmatch_lines(["*ERROR at setup of test_bad_marker*",
                                 "@pytest.mark.tokenspy takes budget_usd=<USD >= 0>, got 'cheap'"])
    result.stdout.no_fnmatch_line("*LLM calls by test*")


XFAIL_MARKED = PRELUDE + '''

@pytest.mark.xfail(reason="known to be too dear")
@pytest.mark.tokenspy(budget_usd=0.001)
def test_xfail_over_budget():
    summarize(500)                                                      # 2,600 µ$


@pytest.mark.xfail(strict=True, reason="known to be too dear")
@pytest.mark.tokenspy(budget_usd=0.001)
def test_strict_xfail_over_budget():
    summarize(500)


@pytest.mark.xfail(raises=ValueError)
@pytest.mark.tokenspy(budget_usd=0.001)
def test_xfail_for_another_reason_over_budget():
    summarize(500)


@pytest.mark.xfail
@pytest.mark.tokenspy(budget_usd=0.01)
def test_xfail_within_budget():
    summarize(500)


@pytest.mark.xfail(strict=True)
@pytest.mark.tokenspy(budget_usd=0.01)
def test_strict_xfail_within_budget():
    summarize(500)


@pytest.mark.skip
@pytest.mark.tokenspy(budget_usd=0.0)
def test_skipped():
    summarize(500)


@pytest.mark.tokenspy(budget_usd=0.001)
def test_skips_itself_after_spending():
    summarize(500)
    pytest.skip("no provider")


@pytest.mark.tokenspy(budget_usd=0.001)
def test_fails_on_its_own_over_budget():
    summarize(500)
    raise ValueError("boom")
'''


def test_marker_budget_follows_pytest_xfail_and_skip(pytester: pytest.Pytester) -> None:
    # Over budget is a failure of the test like any other: an expected failure is xfailed (strict or
    # not), unless `raises=` names another exception; a test that fails or skips on its own keeps that
    # outcome, the budget added as a note.
    pytester.makepyfile(test_xfail=XFAIL_MARKED)
    result = pytester.runpytest("-rfxXs")
    result.assert_outcomes(xfailed=2, failed=3, xpassed=1, skipped=2)
    result.stdout.fnmatch_lines([
        "FAILED test_xfail.py::test_xfail_for_another_reason_over_budget - tokenspy bu*",
        "FAILED test_xfail.py::test_strict_xfail_within_budget - [[]XPASS(strict)[]]*",
        "FAILED test_xfail.py::test_fails_on_its_own_over_budget - ValueError: boom",
        "XFAIL test_xfail.py::test_xfail_over_budget - known to be too dear",
        "XFAIL test_xfail.py::test_strict_xfail_over_budget - known to be too dear",
        "XPASS test_xfail.py::test_xfail_within_budget",
    ], consecutive=False)
    result.stdout.fnmatch_lines([
        "*_ test_fails_on_its_own_over_budget _*", "*", "*raise ValueError*", "E * ValueError: boom", "*",
        "*- tokenspy budget -*",
        "tokenspy budget exceeded: test_xfail.py::test_fails_on_its_own_over_budget spent $0.0026 on 1 LLM "
        "call, over its budget of $0.001; costliest call: m-large in summarize, $0.0026"])


TYPO_MARKERS = PRELUDE + '''

@pytest.mark.tokenspy(budget=0.01)
def test_typo():
    summarize(5_000)


@pytest.mark.tokenspy(budget_usd=0.01, limit=1, on_exceeded="raise")
def test_two_unknown():
    pass


@pytest.mark.tokenspy(0.01, budget_usd=0.02)
def test_two_budgets():
    pass
'''


def test_marker_names_an_unknown_keyword_and_the_accepted_ones(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_typo=TYPO_MARKERS)
    result = pytester.runpytest("--strict-markers")
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines([
        "*ERROR at setup of test_typo*",
        "@pytest.mark.tokenspy got unknown keyword argument 'budget'; it accepts: budget_usd"])
    result.stdout.fnmatch_lines([
        "*ERROR at setup of test_two_unknown*",
        "@pytest.mark.tokenspy got unknown keyword arguments 'limit', 'on_exceeded'; it accepts: budget_usd"])
    result.stdout.fnmatch_lines([
        "*ERROR at setup of test_two_budgets*",
        "@pytest.mark.tokenspy takes one budget, budget_usd=<USD >= 0>, got (0.01, budget_usd=0.02)"])
    result.stdout.no_fnmatch_line("*got None*")


# -- inert by default ----------------------------------------------------------------------------
SPANS = '''
import tokenspy


def test_current_span():
    tokenspy.set_price("m-small", input=0.5, output=1)
    span = tokenspy.current_span()
    record = tokenspy.record("m-small", input_tokens=1, output_tokens=1)
    with tokenspy.session("mine") as mine:
        tokenspy.record("m-small", input_tokens=1, output_tokens=1)
    tree = ",".join(child["name"] for child in mine.stats()["tree"]["children"])
    print("SPAN", None if span is None else span.name, "PATH", record.span_path, "TREE", tree)
'''


def test_inert_by_default_no_output_and_no_wrapping(costs: pytest.Pytester) -> None:
    costs.makepyfile(test_spans=SPANS)
    # In-process runs start from this test's context: clear the span the outer run may have opened
    # (when this suite itself runs with --tokenspy), as a real pytest process starts from none.
    with use_span(None):
        plain = costs.runpytest("-s", "-p", "no:tokenspy")
        with_plugin = costs.runpytest("-s")
    assert with_plugin.ret == plain.ret == 0
    assert _comparable(with_plugin.outlines) == _comparable(plain.outlines)
    with_plugin.stdout.fnmatch_lines(["*SPAN None PATH () TREE mine*"])  # no span around the test


def test_tracked_test_runs_in_a_span_that_changes_no_path(costs: pytest.Pytester) -> None:
    costs.makepyfile(test_spans=SPANS)
    tracked = costs.runpytest("-s", "--tokenspy")
    # Records and the user's own sessions read as without the plugin; the test's bucket got both calls.
    tracked.stdout.fnmatch_lines(["*SPAN test_spans.py::test_current_span PATH () TREE mine*"])
    tracked.stdout.fnmatch_lines(["test_spans.py::test_current_span  *  2  *  4  $0.000003  *"])


# -- the fixtures --------------------------------------------------------------------------------
ISOLATION = '''
import threading

import pytest
import tokenspy


@pytest.fixture(autouse=True)
def _prices():
    tokenspy.set_price("m-small", input=0.5, output=1)


def test_a(tokenspy_session):
    tokenspy.record("m-small", input_tokens=1_000, output_tokens=0)
    tokenspy.record("m-small", input_tokens=1_000, output_tokens=0)
    assert (tokenspy_session.calls, tokenspy_session.tokens, tokenspy_session.cost) == (2, 2_000, 0.001)


def test_b(tokenspy_session):
    tokenspy.record("m-small", input_tokens=0, output_tokens=300)
    assert (tokenspy_session.calls, tokenspy_session.tokens, tokenspy_session.cost) == (1, 300, 0.0003)


def test_c_while_another_thread_spends(tokenspy_session):
    stop = threading.Event()

    def noise():  # a plain thread starts from an empty context: its calls are not this test's
        while not stop.is_set():
            tokenspy.record("m-small", input_tokens=7, output_tokens=7)

    worker = threading.Thread(target=noise)
    worker.start()
    try:
        for _ in range(200):
            tokenspy.record("m-small", input_tokens=10, output_tokens=0)
    finally:
        stop.set()
        worker.join()
    assert len(tokenspy.calls()) > 200  # the noise did run alongside
    assert (tokenspy_session.calls, tokenspy_session.tokens) == (200, 2_000)
    assert {r.input_tokens for r in tokenspy_session.records()} == {10}
'''


def test_tokenspy_session_fixture_sees_only_its_own_test_calls(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_isolation=ISOLATION)
    pytester.runpytest().assert_outcomes(passed=3)  # the xdist test runs them again, with --tokenspy


def test_fake_provider_fixture_comes_with_the_plugin(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_fp='''
from tokenspy.testing import FakeProvider


def test_fp(fake_provider):
    assert isinstance(fake_provider, FakeProvider)
    assert fake_provider.base_url.startswith("http://")
''')
    pytester.runpytest().assert_outcomes(passed=1)


def test_plugin_loads_without_the_fake_provider(pytester: pytest.Pytester,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tokenspy.testing.fixtures", None)  # import now raises ImportError
    pytester.makepyfile(test_costs='''
def test_without(tokenspy_session):
    assert tokenspy_session.calls == 0
''')
    result = pytester.runpytest("--tokenspy")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["no test made an LLM call"])


# -- pytest-xdist ----------------------------------------------------------------------------------
def test_xdist_controller_merges_the_workers_rows(costs: pytest.Pytester,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the plugins this run needs: the others installed here take seconds to start in every worker.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("PYTEST_ADDOPTS", f"{LEAN} -p tokenspy.pytest_plugin -p xdist.plugin")
    costs.makepyfile(test_isolation=ISOLATION)
    costs.makeconftest('''
import os

import pytest


@pytest.fixture(autouse=True)
def _where(request):
    with open(f"ran-{request.node.name}", "w") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"])
''')
    # loadfile: each of the two files goes to its own worker, so both send rows to the controller.
    result = costs.runpytest_subprocess("-n", "2", "--dist", "loadfile", "--tokenspy", "--tokenspy-json",
                                        "merged.json", "--tokenspy-budget", "0.015")
    result.assert_outcomes(passed=7)
    workers = {p.name.removeprefix("ran-"): p.read_text() for p in costs.path.glob("ran-*")}
    assert {workers["test_long"], workers["test_a"]} == {"gw0", "gw1"}
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the controller judges the merged total
    data = json.loads((costs.path / "merged.json").read_text())
    rows = {t["nodeid"]: (t["calls"], t["tokens"], t["cost_usd_exact"]) for t in data["tests"]}
    assert rows == {
        "test_costs.py::test_long": (2, 6_300, "0.012200000000000"),
        "test_costs.py::test_short": (1, 700, "0.002600000000000"),
        "test_isolation.py::test_c_while_another_thread_spends": (200, 2_000, "0.001000000000000"),
        "test_isolation.py::test_a": (2, 2_000, "0.001000000000000"),
        "test_costs.py::test_streams": (2, 720, "0.000370000000000"),
        "test_isolation.py::test_b": (1, 300, "0.000300000000000"),
    }
    assert list(rows) == [  # by cost, then tokens, then id
        "test_costs.py::test_long", "test_costs.py::test_short",
        "test_isolation.py::test_a", "test_isolation.py::test_c_while_another_thread_spends",
        "test_costs.py::test_streams", "test_isolation.py::test_b"]
    assert (data["total"]["tests"], data["total"]["calls"], data["total"]["cost_usd_exact"]) == (
        6, 208, "0.017470000000000")
    result.stdout.fnmatch_lines([
        "=* tokenspy: LLM calls by test =*",
        "test                                                   calls  tokens       cost  partial  estimated",
        "test_costs.py::test_long                                   2   6,300  $0.012200        0          0",
        "test_costs.py::test_short                                  1     700  $0.002600        0          0",
        "test_isolation.py::test_a                                  2   2,000  $0.001000        0          0",
        "test_isolation.py::test_c_while_another_thread_spends    200   2,000  $0.001000        0          0",
        "test_costs.py::test_streams                                2     720  $0.000370        1          1",
        "test_isolation.py::test_b                                  1     300  $0.000300        0          0",
        "-" * 99,
        "total (6 tests)                                          208  12,020  $0.017470        1          1",
        f"tokenspy: wrote {costs.path / 'merged.json'}",
        "tokenspy: budget exceeded: the tests spent $0.01747 on LLM calls, over --tokenspy-budget $0.015 "
        "(costliest test: test_costs.py::test_long, $0.0122)"], consecutive=True)
