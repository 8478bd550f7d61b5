"""The HTML page without a browser: self-contained, escaped, honest about unpriced calls."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

import tokenspy
from tokenspy_core.hints import Hint
from tokenspy_core.html_report import render_html
from tokenspy_core.report import render_box

EVIL = "</script><img src=x onerror=alert(1)>&amp;\u2028"


class _Page(HTMLParser):
    """Collects tags, the JSON data block and the text of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.text: list[str] = []
        self._script: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._script = dict(attrs)
            self.scripts.append((self._script, ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script = None

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)
        else:
            self.text.append(data)


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    return parser


def _data(page: str) -> dict[str, Any]:
    parsed = _parse(page)
    (block,) = [text for attrs, text in parsed.scripts if attrs.get("id") == "tokenspy-data"]
    data: dict[str, Any] = json.loads(block)
    return data


def _chart_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node["children"] for n in _chart_nodes(child))]


def test_report_html_writes_one_self_contained_file(known_stats: dict[str, Any], tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    assert tokenspy.report(format="html", path=target) == str(target)
    page = target.read_text(encoding="utf-8")
    parsed = _parse(page)
    # Nothing is fetched: no external scripts, stylesheets, images, fonts or imports.
    assert not [tag for tag, attrs in parsed.tags if "src" in attrs or "href" in attrs]
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert re.findall(r"https?://[^\s\"']+", page) == ["http://www.w3.org/2000/svg"]  # a namespace name
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")


def test_report_html_default_path_is_tokenspy_report_html(known_stats: dict[str, Any], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert tokenspy.report(format="html") == "tokenspy_report.html"
    assert (tmp_path / "tokenspy_report.html").read_text(encoding="utf-8").count("id='tokenspy-data'") == 1


def test_chart_data_has_one_node_per_tree_node_plus_unattributed(known_stats: dict[str, Any]) -> None:
    tree = _data(render_html(known_stats))["tree"]
    paths = [tuple(n["path"]) for n in _chart_nodes(tree)]
    assert paths == [(), ("pipeline",), ("pipeline", "answer"), ("pipeline", "answer", "rerank"),
                     ("pipeline", "summarize"), ("pipeline", "retrieve"), ("(unattributed)",)]
    by_path = {tuple(n["path"]): n for n in _chart_nodes(tree)}
    answer = by_path[("pipeline", "answer")]
    assert answer["cost"] == pytest.approx(0.084) and answer["costText"] == "$0.0840"
    assert answer["share"] == "76.3%"  # 0.084 / 0.110034
    assert answer["selfText"] == "$0.0800" and answer["selfCalls"] == 1
    assert dict(answer["tok"]) == {"input": 38_000, "output": 2_500, "cached": 10_000, "reasoning": 500}
    assert answer["models"] == [["model-a", "$0.0800", 32_500, 1]]  # its own calls, by model
    summarize = by_path[("pipeline", "summarize")]
    assert summarize["costText"] == "$0.0140 + 1 unpriced" and summarize["ownUnpriced"] == 1
    assert by_path[("(unattributed)",)]["costText"] == "$0.0010"
    # Children sum to no more than their parent: the layout never overflows a block.
    for node in _chart_nodes(tree):
        assert sum(c["cost"] for c in node["children"]) <= node["cost"] + 1e-12


def test_model_table_has_a_row_per_model_with_tokens_by_kind(known_stats: dict[str, Any]) -> None:
    page = render_html(known_stats)
    rows = re.findall(r"<tr data-model='([^']*)'>(.*?)</tr>", page)
    assert [name for name, _ in rows] == ["model-a", "model-b", "unpriced-model"]
    cells = {name: re.findall(r"<td[^>]*>(.*?)</td>", body) for name, body in rows}
    # calls, input, output, cached, cache write, reasoning, total, cost, share, flags
    assert cells["model-b"] == ["3", "30,000", "1,000", "0", "0", "0", "31,000", "$0.0160", "14.5%", ""]
    assert cells["unpriced-model"][7:] == ["unpriced", "", "1 unpriced"]
    assert cells["model-a"][9] == "1 partial · 1 estimated"


def test_totals_header(known_stats: dict[str, Any]) -> None:
    page = render_html(known_stats)
    cards = dict(re.findall(r"data-card='([^']*)'><div class='label'>[^<]*</div><div class='value'>([^<]*)<",
                            page))
    assert cards == {"total cost": "$0.1100 + 1 unpriced", "tokens": f"{known_stats['total_tokens']:,}",
                     "calls": "7"}
    assert "1 unpriced · 1 partial · 1 estimated" in page


def test_unpriced_costs_are_shown_as_unpriced_never_zero_dollars(tmp_path: Path) -> None:
    @tokenspy.profile
    def mystery() -> None:
        with pytest.warns(UserWarning, match="no price known"):
            tokenspy.record("no-such-model-xyz", input_tokens=100, output_tokens=10)

    mystery()
    page = render_html(tokenspy.stats())
    assert "$0" not in page
    assert "<div class='value'>unpriced</div>" in page
    node = _data(page)["tree"]["children"][0]
    assert (node["name"], node["costText"], node["share"], node["cost"]) == ("mystery", "unpriced", "", 0)


def test_unpriced_call_counts_keep_their_thousands_separator(known_stats: dict[str, Any]) -> None:
    @tokenspy.profile
    def bulk() -> None:
        tokenspy.record("model-b", input_tokens=2_000, output_tokens=0)  # $0.001
        with pytest.warns(UserWarning, match="no price known"):
            for _ in range(1_200):
                tokenspy.record("bulk-unpriced-model", input_tokens=1, output_tokens=1)

    bulk()
    stats = tokenspy.stats()
    node = next(n for n in _chart_nodes(_data(render_html(stats))["tree"]) if n["path"] == ["bulk"])
    assert (node["costText"], node["flags"]) == ("$0.0010 + 1,200 unpriced", "1,200 unpriced")
    box = render_box(stats)  # the box the page mirrors
    assert "$0.0010 + 1,200 unpriced" in box and "1,201 unpriced" in box


def test_user_strings_are_escaped_in_markup_and_json(tmp_path: Path) -> None:
    tokenspy.set_price(f"m{EVIL}", input=1, output=1)

    @tokenspy.profile(name=EVIL)
    def evil() -> None:
        tokenspy.record(f"m{EVIL}", input_tokens=10, output_tokens=10)

    evil()
    page = render_html(tokenspy.stats(), title=f"t{EVIL}", hints=False)
    assert "<img" not in page and "</script><" not in page.replace("</script>\n", "")
    parsed = _parse(page)
    (block,) = [text for attrs, text in parsed.scripts if attrs.get("id") == "tokenspy-data"]
    assert "\u2028" not in block and "<" not in block  # JSON-escaped, so no line break inside JS strings
    assert [tag for tag, _ in parsed.tags if tag == "img"] == []
    assert len(parsed.scripts) == 2  # the data block and the code: no injected script element
    # The names survive intact as data (the script writes them with textContent).
    tree = _data(page)["tree"]
    assert tree["children"][0]["name"] == EVIL and tree["children"][0]["models"][0][0] == f"m{EVIL}"
    assert f"t{EVIL}" in "".join(parsed.text)


def test_hints_come_from_compute_hints(known_stats: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []

    def fake_hints(stats: dict[str, Any], *, limit: int = 5) -> list[Hint]:
        seen.append(stats)
        return [Hint("cache", "pipeline/answer", "model-a", 0.01, "answer: cache the <system> prompt")]

    monkeypatch.setattr("tokenspy_core.hints.compute_hints", fake_hints)
    page = render_html(known_stats)
    assert seen == [known_stats]
    assert "<li>answer: cache the &lt;system&gt; prompt</li>" in page
    assert "Hints" not in render_html(known_stats, hints=False)


def test_hints_already_in_stats_are_used(known_stats: dict[str, Any]) -> None:
    page = render_html({**known_stats, "hints": [{"text": "from a saved report"}]})
    assert "<li>from a saved report</li>" in page


def test_json_report_round_trip_renders(known_stats: dict[str, Any]) -> None:
    """The CLI may render a saved `report(format="json")`: same page from the parsed JSON."""
    loaded = json.loads(tokenspy.report(format="json") or "")
    assert _data(render_html(loaded)) == _data(render_html(known_stats))


def test_no_calls_renders_an_empty_report() -> None:
    page = render_html(tokenspy.stats())
    assert "No LLM calls recorded." in page and "id='chart'" not in page
    assert _data(page)["tree"]["children"] == []
