"""The HTML report in a real headless Chromium: the cost tree is drawn, hover and zoom work.

Needs Debian's `chromium` (`apt-get install -y chromium`); skipped without it, except under CI
(env `CI` set), where a missing browser fails the suite. Screenshots go to `test-artifacts/`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tokenspy_core.html_report import render_html

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--force-device-scale-factor=1"]


@pytest.fixture(scope="module")
def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail("chromium is required in CI for the HTML report tests: apt-get install -y chromium")
    pytest.skip("chromium is not installed (apt-get install -y chromium)")


def _run(chromium: str, page: Path, tmp_path: Path, *args: str) -> str:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    done = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _dump_dom(chromium: str, html: str, tmp_path: Path, name: str, script: str = "") -> _Dom:
    page = tmp_path / f"{name}.html"
    # A test-only script after the report's own one drives the page (hover, click) before the dump.
    page.write_text(html.replace("</body>", f"<script>{script}</script></body>") if script else html,
                    encoding="utf-8")
    dom = _Dom()
    dom.feed(_run(chromium, page, tmp_path, "--window-size=1200,800", "--dump-dom"))
    return dom


class _Dom(HTMLParser):
    """The chart's blocks (attributes and rect geometry), model rows, the tooltip and the crumbs."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks: list[dict[str, Any]] = []
        self.models: list[str] = []
        self.tip_hidden: bool | None = None
        self.tip_text: list[str] = []
        self.crumb_text: list[str] = []
        self.note: list[str] = []
        self._in: list[str] = []
        self._tip_divs = 0  # divs open inside the tooltip

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "div" and self._tip_divs:
            self._tip_divs += 1
        if tag == "g" and "node" in (a.get("class") or "").split():
            self.blocks.append({"path": tuple(json.loads(a["data-path"] or "[]")), "name": a["data-name"],
                                "cost": float(a["data-cost"] or 0), "class": a["class"], "label": ""})
        elif tag == "rect" and self.blocks and "width" not in self.blocks[-1]:
            self.blocks[-1].update(x=float(a["x"] or 0), y=float(a["y"] or 0), width=float(a["width"] or 0))
        elif tag == "text" and self.blocks:
            self._in.append("label")
        elif tag == "tr" and a.get("data-model"):
            self.models.append(a["data-model"] or "")
        elif a.get("id") == "tip":
            self.tip_hidden = "hidden" in a
            self._in.append("tip")
            self._tip_divs = 1
        elif a.get("id") in ("crumbs", "chart-note"):
            self._in.append(a["id"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "text" and self._in and self._in[-1] == "label":
            self._in.pop()
        elif tag == "div" and self._tip_divs:
            self._tip_divs -= 1
            if not self._tip_divs:
                self._in.pop()
        elif tag in ("nav", "p") and self._in and self._in[-1] in ("crumbs", "chart-note"):
            self._in.pop()

    def handle_data(self, data: str) -> None:
        where = self._in[-1] if self._in else None
        if where == "label":
            self.blocks[-1]["label"] += data
        elif where == "tip":
            self.tip_text.append(data)
        elif where == "crumbs":
            self.crumb_text.append(data)
        elif where == "chart-note":
            self.note.append(data)


def _nodes(tree: dict[str, Any], path: tuple[str, ...] = ()) -> dict[tuple[str, ...], dict[str, Any]]:
    out = {path: tree}
    for child in tree["children"]:
        out.update(_nodes(child, (*path, child["name"])))
    return out


def test_chromium_draws_one_block_per_tree_node_with_width_proportional_to_cost(
        chromium: str, known_stats: dict[str, Any], tmp_path: Path) -> None:
    dom = _dump_dom(chromium, render_html(known_stats), tmp_path, "tree")
    blocks = {b["path"]: b for b in dom.blocks}
    expected = _nodes(known_stats["tree"])
    assert len(dom.blocks) == len(blocks) == len(expected) + 1  # + the "(unattributed)" block
    assert set(blocks) == {*expected, ("(unattributed)",)}
    root = blocks[()]
    assert root["name"] == "all calls" and root["x"] == 0 and root["width"] > 1000
    total_femto = known_stats["tree"]["cost_femto"]
    for path, node in expected.items():
        block = blocks[path]
        assert block["name"] == (path[-1] if path else "all calls")
        assert block["width"] == pytest.approx(root["width"] * node["cost_femto"] / total_femto, abs=0.01)
        assert block["y"] == 28 * len(path)  # one row per depth
    unattributed = blocks[("(unattributed)",)]
    assert unattributed["width"] == pytest.approx(root["width"] * 10**12 / total_femto, abs=0.01)
    # Children are laid out inside their parent, in the tracker's order (by cost).
    for path in expected:
        if path:
            parent, child = blocks[path[:-1]], blocks[path]
            assert parent["x"] - 0.01 <= child["x"]
            assert child["x"] + child["width"] <= parent["x"] + parent["width"] + 0.01
    assert [blocks[("pipeline", n)]["x"] for n in ("answer", "summarize", "retrieve")] == sorted(
        blocks[("pipeline", n)]["x"] for n in ("answer", "summarize", "retrieve"))
    # Labels: names with the cost where they fit; the one with unpriced own calls is outlined.
    assert blocks[("pipeline", "answer")]["label"] == "answer  $0.0840"
    assert blocks[("pipeline", "summarize")]["class"] == "node unpriced"
    assert dom.models == ["model-a", "model-b", "unpriced-model"]
    assert dom.tip_hidden is True


def test_chromium_hover_shows_tokens_by_kind_calls_flags_cost_and_share(
        chromium: str, known_stats: dict[str, Any], tmp_path: Path) -> None:
    hover = """
      var rect = document.querySelector('g.node[data-name="summarize"] rect').getBoundingClientRect();
      document.querySelector('g.node[data-name="summarize"] rect').dispatchEvent(new MouseEvent("mousemove",
        {bubbles: true, clientX: rect.left + 5, clientY: rect.top + 5}));
    """
    dom = _dump_dom(chromium, render_html(known_stats), tmp_path, "hover", hover)
    assert dom.tip_hidden is False
    text = "|".join(s.strip() for s in dom.tip_text if s.strip())
    assert text.startswith("summarize|function|pipeline / summarize|"
                           "cost|$0.0140 + 1 unpriced  (12.7% of total)|"
                           "calls|2|tokens|9,900|input|9,000|output|900|")
    for piece in ("by model|model-a|$0.0140 · 5,500 tokens · 1 call(s)",
                  "unpriced-model|unpriced · 4,400 tokens · 1 call(s)", "1 unpriced"):
        assert piece in text


def test_chromium_click_zooms_into_a_span_and_tokens_mode_shows_unpriced_blocks(
        chromium: str, known_stats: dict[str, Any], tmp_path: Path) -> None:
    click = """document.querySelector('g.node[data-name="answer"] rect').dispatchEvent(
                 new MouseEvent("click", {bubbles: true}));"""
    dom = _dump_dom(chromium, render_html(known_stats), tmp_path, "zoom", click)
    blocks = {b["path"]: b for b in dom.blocks}
    # The zoomed span and its ancestors span the chart; its children scale up; the rest is gone.
    assert set(blocks) == {(), ("pipeline",), ("pipeline", "answer"), ("pipeline", "answer", "rerank")}
    width = blocks[()]["width"]
    assert blocks[("pipeline", "answer")]["width"] == width
    assert blocks[("pipeline", "answer", "rerank")]["width"] == pytest.approx(width * 4 / 84, abs=0.01)
    assert "".join(dom.crumb_text) == "all calls / pipeline / answer"

    tokens = """document.querySelector('button[data-metric="tokens"]').click();"""
    dom = _dump_dom(chromium, render_html(known_stats), tmp_path, "tokens", tokens)
    blocks = {b["path"]: b for b in dom.blocks}
    summarize = _nodes(known_stats["tree"])[("pipeline", "summarize")]
    assert blocks[("pipeline", "summarize")]["width"] == pytest.approx(
        blocks[()]["width"] * summarize["tokens"] / known_stats["total_tokens"], abs=0.01)


def test_chromium_sized_by_cost_says_which_blocks_have_no_width(chromium: str, tmp_path: Path) -> None:
    import warnings

    import tokenspy

    tokenspy.set_price("model-a", input=1, output=1)

    @tokenspy.profile
    def priced() -> None:
        tokenspy.record("model-a", input_tokens=100, output_tokens=100)

    @tokenspy.profile
    def unknown() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokenspy.record("not-a-priced-model", input_tokens=100, output_tokens=100)

    priced()
    unknown()
    dom = _dump_dom(chromium, render_html(tokenspy.stats()), tmp_path, "note")
    assert {b["name"]: b["width"] for b in dom.blocks}["unknown"] == 0
    assert "".join(dom.note) == ("1 block(s) with calls have no width when sized by cost (unpriced or free); "
                                 "size by tokens to see them.")


def test_chromium_screenshots_for_review(chromium: str, known_stats: dict[str, Any], tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page = tmp_path / "report.html"
    page.write_text(render_html(known_stats), encoding="utf-8")
    shot = ARTIFACTS / "html-report.png"
    shot.unlink(missing_ok=True)
    _run(chromium, page, tmp_path, "--window-size=1200,800", f"--screenshot={shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    # The same page with the tooltip open (hover is scripted; headless has no mouse).
    hovered = page.read_text(encoding="utf-8").replace("</body>", """<script>
      var r = document.querySelector('g.node[data-name="summarize"] rect');
      var b = r.getBoundingClientRect();
      r.dispatchEvent(new MouseEvent("mousemove",
                                     {bubbles: true, clientX: b.left + 20, clientY: b.top + 12}));
    </script></body>""")
    page.write_text(hovered, encoding="utf-8")
    hover_shot = ARTIFACTS / "html-report-hover.png"
    hover_shot.unlink(missing_ok=True)
    _run(chromium, page, tmp_path, "--window-size=1200,800", f"--screenshot={hover_shot}")
    assert hover_shot.stat().st_size > 20_000
