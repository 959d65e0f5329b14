"""The site builds with warnings as errors, fully offline, and renders in a real browser."""

import json
import functools
import math
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import matplotlib.pyplot as plt
import numpy as np
import pytest

from conftest import in_ci
from distillbook.core import plotting, site
from distillbook.core.claims import Claim, curve

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
PAGES_WITH_MATH = ("book/intro.html", "book/chapters/foundations.html", "book/chapters/lm-kd-dynamics.html")


def test_committed_generated_pages_are_current():
    """Runs before the build below, which therefore never needs to rewrite them."""
    from distillbook.core.paths import BOOK_DIR, REPO_ROOT

    pages = site.generated_pages()
    assert {REPO_ROOT / "_toc.yml", BOOK_DIR / "papers.md", BOOK_DIR / "scoreboard.md",
            BOOK_DIR / "_generated" / "summary.md", BOOK_DIR / "_generated" / "worked-example.md"} <= set(pages)
    for path, text in pages.items():
        assert path.exists() and path.read_text(encoding="utf-8") == text, \
            f"{path.relative_to(REPO_ROOT)} is out of date: run `python -m distillbook build`"


def test_intro_includes_the_generated_summary_and_worked_example():
    from distillbook.core.paths import BOOK_DIR

    intro = (BOOK_DIR / "intro.md").read_text(encoding="utf-8")
    for name in ("summary.md", "worked-example.md"):
        assert f"```{{include}} _generated/{name}" in intro
    assert "≤ 5 minutes on 2 cores" in intro


def test_papers_page_lists_every_paper_with_its_chapter_state():
    page = site.papers_page()
    assert page.count("\n| ") == 87 + 1  # header + one row per paper
    assert "planned" in page
    scoreboard = site.scoreboard_page()
    assert "foundations" in scoreboard and "omitted-class-recognised" in scoreboard


# ------------------------------------------------------------------ pages from claims in the new format (no browser)

def _new_format_results() -> dict[str, dict]:
    """Claims evaluated by today's rules, one per verdict and inconclusive reason, for two chapters."""
    beats = Claim("beats", None, "A beats B", a="A", b="B", margin=0.01, rationale="a point of accuracy",
                  reference="Ref (2020)").evaluate([1.0, 1.1, 1.2, 1.15], [0.5, 0.6, 0.55, 0.52])
    loses = Claim("loses", None, "B beats A", a="B", b="A", margin=0.01, rationale="a point of accuracy",
                  reference="Ref (2020)", explanation="the test bed is too easy",
                  diagnosis="beats").evaluate([0.5, 0.6, 0.55, 0.52], [1.0, 1.1, 1.2, 1.15])
    saturated = Claim("at-ceiling", 3, "A matches B at the ceiling", a="A", b="B", margin=0.0, rationale="r",
                      ceiling=1.0, saturation_tol=0.01).evaluate([1.0, 1.0, 0.999, 1.0], [1.0, 0.995, 1.0, 1.0])
    drifting = Claim("still-moving", 3, "A ends above B", a="A", b="B", margin=0.0, rationale="r",
                     explanation="too short a schedule").evaluate(
        curve([[0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 3, 4, 5, 6, 8], [0, 1, 2, 3, 4, 5, 7, 8]]), [1, 1, 1])
    few = Claim("two-seeds", 3, "A lies in [0, 1]", a="A", margin=0.0, rationale="r", statistic="value",
                region=("within", (0.0, 1.0))).evaluate([0.2, 0.3])
    spans = Claim("spans", 3, "A below B", a="A", b="B", region=("<", 0.0), margin=0.0, rationale="r",
                  ).evaluate([0.1, -0.2, 0.05, -0.1], [0.0, 0.0, 0.0, 0.0])
    groups = Claim("per-group", 3, "A beats B on every task", a="A", b="B", margin=0.0, rationale="r").evaluate(
        {"x": [1, 2, 3], "y": [0.0, 0.1, -0.1]}, {"x": [0, 0.5, 1], "y": [0.2, 0.3, 0.1]})
    ratio = Claim("ratio-floor", 3, "A's excess is below B's", a="A", b="B", statistic="ratio", region=("<", 1.0),
                  margin=0.05, rationale="r", floor=0.5, saturation_tol=0.001).evaluate([0.5] * 3, [0.5] * 3)
    return {"foundations": {"claims": [beats, loses, saturated], "metrics": {"seeds": [10, 11, 12, 13]}},
            "lm-kd-dynamics": {"claims": [drifting, few, spans, groups, ratio], "metrics": {"seeds": [0, 1, 2, 3]}}}


@pytest.fixture
def new_format(monkeypatch):
    data = _new_format_results()
    monkeypatch.setattr(site, "_load_results", lambda chapter, profile: data.get(chapter) if profile == "cpu" else None)
    return data


def test_scoreboard_leads_with_the_verdict_and_counts_reasons(new_format):
    page = site.scoreboard_page()
    rows = [line for line in page.splitlines() if line.startswith("| <span")]
    assert len(rows) == 8
    assert all(line.startswith('| <span class="verdict verdict-') for line in rows)
    assert '<span class="verdict verdict-inconclusive">inconclusive</span> <span class="verdict-reason">saturated' \
        in page
    assert ("inconclusive</span> 5; by reason: too few seeds: 1, interval spans the region: 1, not converged: 1, "
            "saturated: 2") in page
    assert "test bed to fix" in page and "This profile has 3: **at-ceiling** (foundations, saturated)" in page
    assert "diagnosis: tested by beats" in page and "diagnosis: untested explanation" in page
    assert "by ≥ 0.01" in page and "per group: x: reproduced; y: not reproduced" in page
    assert "undefined, n = 3" in page  # the saturated ratio has no finite statistic
    assert "```{figure} _generated/scoreboard-forest-cpu.svg" in page
    assert "No chapter has committed `gpu` results yet." in page
    # every claim has a stable, citable address on the page, unique across chapters
    anchors = [line.split('<a id="', 1)[1].split('"', 1)[0] for line in rows]
    assert len(set(anchors)) == len(rows) and all(a.startswith("claim-") for a in anchors)
    assert all(f'href="#{a}"' in page for a in anchors)


def test_summary_counts_verdicts_per_part(new_format):
    page = site.summary_page()
    assert "Profile `cpu`: 8 claims from 2 chapters." in page
    foundations = next(line for line in page.splitlines() if line.startswith("| Foundations"))
    assert "| 3 |" in foundations and "reproduced</span> 1</span>" in foundations
    assert "(saturated: 1)" in foundations
    part_a = next(line for line in page.splitlines() if line.startswith("| Part A: Language models"))
    assert "(too few seeds: 1, interval spans the region: 1, not converged: 1, saturated: 1)" in part_a
    assert "Part B" not in page  # parts without results are left out
    assert site.chapter_state(next(c for c in site.catalog.CHAPTERS if c.id == "foundations")) == \
        "3 claims (cpu): 1 reproduced, 1 not reproduced, 1 inconclusive"


def test_worked_example_recomputes_the_interval(new_format):
    page = site.worked_example_page()
    assert "claim **beats**" in page  # distilled-beats-labels is absent: the chapter's first claim
    d = np.array([0.5, 0.5, 0.65, 0.63])
    half = 3.182446305284263 * d.std(ddof=1) / 2
    assert f"[{d.mean() - half:.4g},\\ {d.mean() + half:.4g}]" in page
    assert "| 10 | 1 | 0.5 | 0.5 |" in page  # seeds from metrics.json
    assert "the margin is $\\delta = 0.01$ (a point of accuracy)" in page and "= 0.01$" in page
    assert "*room to move*: the metric declares no floor or ceiling" in page and "no drift check applies" in page
    assert "**reproduced**" in page


def test_claim_distance_agrees_with_the_verdict():
    """Positive means inside the region: the verdict reads off the sign of the interval's ends."""
    rng = np.random.default_rng(0)
    seen = set()
    for i in range(300):
        kind = ("<", ">", "within")[i % 3]
        region = (kind, (-0.5, 0.5)) if kind == "within" else (kind, float(rng.normal()))
        claim = Claim(f"c{i}", None, "s", a="A", margin=0.0 if kind == "within" else float(rng.uniform(0, 0.3)),
                      rationale="r", statistic="value", region=region)
        r = claim.evaluate(rng.normal(rng.normal(0, 0.8), rng.uniform(0.05, 1.0), size=int(rng.integers(3, 8))))
        lo, mean, hi = plotting.claim_distance(r)
        assert lo <= mean <= hi
        seen.add(r["verdict"])
        if r["verdict"] == "reproduced":
            assert lo >= 0
        elif r["verdict"] == "not reproduced":
            assert hi <= 0
        else:
            assert lo <= 0 <= hi
    assert seen == {"reproduced", "not reproduced", "inconclusive"}
    exact = {"region_kind": ">", "region_bound": 0.5, "decision_line": 0.5,
             "measured": {"mean": 1.0, "std": 0.0, "per_seed": [1.0] * 3, "ci95": [1.0, 1.0]}}
    assert plotting.claim_distance(exact) == (math.inf, math.inf, math.inf)  # zero spread beyond the line
    within = {"region_kind": "within", "region_bound": [-0.02, 0.02], "decision_line": [-0.02, 0.02]}
    assert plotting.claim_region(within) == ("within", (-0.02, 0.02), (-0.02, 0.02))


def test_forest_plots_draw_old_and_new_results():
    from distillbook.core.results import load_results

    new = [r for rs in _new_format_results().values() for r in rs["claims"]]
    committed = load_results("foundations", "cpu")
    old = committed["claims"] if committed else []
    for results in (new, old):
        if results:
            plt.close(plotting.forest_plot(results, title="claims"))
    fig = plotting.scoreboard_forest({"new": new, "old": old, "empty": []})
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[0] == "new" and "at-ceiling · saturated" in labels and "spans" in labels
    assert ("old" in labels) == bool(old) and "empty" not in labels
    plt.close(fig)
    with pytest.raises(ValueError):
        plotting.scoreboard_forest({"empty": []})


# ------------------------------------------------------------------ the built site

@pytest.fixture(scope="module")
def html(tmp_path_factory) -> Path:
    return site.build(strict=True, output=tmp_path_factory.mktemp("site"), generate=False)


@pytest.mark.slow
def test_no_external_resources(html):
    assert site.external_urls_in(html) == []
    assert (html / "_static" / "mathjax" / "tex-chtml.js").exists()


@pytest.fixture(scope="module")
def server(html):
    handler = functools.partial(_QuietHandler, directory=str(html))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
def test_every_page_renders_in_chromium(html, server):
    executable = _chromium()
    if executable is None:
        if in_ci():
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium")
        pytest.skip("chromium not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    pages = sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html") if "_static" not in p.parts)
    assert "book/chapters/foundations.html" in pages
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        page = browser.new_page()
        offsite, failed = [], []
        page.on("request", lambda r: offsite.append(r.url) if urlparse(r.url).hostname not in ("127.0.0.1", None) and not r.url.startswith("data:") else None)
        page.on("requestfailed", lambda r: failed.append(r.url))
        for name in pages:
            page.goto(f"{server}/{name}", wait_until="load")
            math_nodes = page.locator(".math").count()
            if math_nodes:
                page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise")
                page.evaluate("() => MathJax.startup.promise")
                rendered = page.locator("mjx-container").count()
                assert rendered >= math_nodes, f"{name}: {rendered} of {math_nodes} formulas rendered"
                assert page.locator("mjx-merror").count() == 0, f"{name}: MathJax reported an error"
            if name in PAGES_WITH_MATH:
                assert math_nodes > 0, f"{name} should contain math"
            widths = page.evaluate("() => Array.from(document.images).map(i => [i.src, i.complete ? i.naturalWidth : 0])")
            broken = [src for src, width in widths if width == 0]
            assert not broken, f"{name}: images failed to load: {broken}"
            if name == "book/chapters/foundations.html":
                assert len(widths) >= 4, "the foundations chapter shows its figures"
            text = page.inner_text("body")
            assert "Traceback (most recent call last)" not in text, f"{name} shows a traceback"
            assert page.locator(".output.traceback, .output.error").count() == 0, f"{name} shows an error output"
        browser.close()
    assert offsite == [], f"pages requested off-site resources: {offsite[:5]}"
    assert failed == [], f"requests failed: {failed[:5]}"



# ------------------------------------------------------------------ verdicts on a desktop and on a phone

VIEWPORTS = {"desktop": (1280, 800), "phone": (390, 844)}

# Every verdict badge with its box and the visible horizontal span left to it by the viewport and by any ancestor
# that clips or scrolls sideways (a table's scroll container hides what sticks out of it).
_BADGES = """() => Array.from(document.querySelectorAll('.verdict')).map(el => {
  const r = el.getBoundingClientRect();
  let left = 0, right = window.innerWidth;
  for (let a = el.parentElement; a; a = a.parentElement) {
    if (getComputedStyle(a).overflowX !== 'visible') {
      const b = a.getBoundingClientRect();
      left = Math.max(left, b.left);
      right = Math.min(right, b.right);
    }
  }
  return {text: el.textContent.trim(), left: r.left, right: r.right, width: r.width, height: r.height,
          visibleLeft: left, visibleRight: right};
})"""


def badges_off_screen(page) -> tuple[list[dict], list[dict]]:
    """(every badge, those not wholly visible without scrolling sideways)."""
    badges = page.evaluate(_BADGES)
    off = [b for b in badges if b["width"] <= 0 or b["height"] <= 0 or b["left"] < b["visibleLeft"] - 1
           or b["right"] > b["visibleRight"] + 1]
    return badges, off


def no_sideways_scroll(page) -> bool:
    return page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")


def check_scoreboard(page, server: str) -> None:
    page.goto(f"{server}/book/scoreboard.html", wait_until="load")
    n_claims = sum(len(cs) for profile in site.PROFILE_ORDER for _, cs in site._profile_claims(profile))
    badges, off = badges_off_screen(page)
    assert len(badges) >= n_claims > 0, f"{len(badges)} verdict badges for {n_claims} claims"
    assert off == [], f"verdicts cut off or beyond the screen: {off[:3]}"
    assert no_sideways_scroll(page), "the scoreboard scrolls sideways"
    first = page.locator(".scoreboard-table tbody tr").first.inner_text().strip()
    assert first.split("\n")[0].startswith(("reproduced", "not reproduced", "inconclusive")), first[:80]
    forest = page.evaluate("() => Array.from(document.images).filter(i => i.src.includes('scoreboard-forest'))"
                           ".map(i => [i.complete ? i.naturalWidth : 0, i.getBoundingClientRect().right])")
    assert forest, "the scoreboard shows its forest plot"
    assert all(width > 0 for width, _ in forest), "the forest plot failed to load"
    assert all(right <= page.viewport_size["width"] + 1 for _, right in forest), "the forest plot overflows"


def check_chapter(page, server: str, chapter: str = "foundations") -> None:
    page.goto(f"{server}/book/chapters/{chapter}.html", wait_until="load")
    rows = page.locator("table.claims-table tbody tr").count()
    badges, off = badges_off_screen(page)
    assert rows > 0 and len(badges) >= rows, f"{chapter}: {len(badges)} verdict badges for {rows} claims"
    assert off == [], f"{chapter}: verdicts cut off or beyond the screen: {off[:3]}"
    assert no_sideways_scroll(page), f"{chapter} scrolls sideways"


def check_landing(page, server: str) -> None:
    page.goto(f"{server}/book/intro.html", wait_until="load")
    summary = page.locator(".verdict-summary")
    assert summary.count() >= 1 and summary.first.is_visible(), "the landing page shows the verdicts per part"
    text = summary.first.inner_text()
    rows = site._profile_claims(site.PROFILE_ORDER[0])
    parts = {"Foundations" if not ch.part else next(f"Part {p.letter}: {p.title}" for p in site.catalog.PARTS
                                                    if p.letter == ch.part) for ch, _ in rows}
    assert parts and all(p in text for p in parts), f"parts missing from the summary: {parts}"
    _, off = badges_off_screen(page)
    assert off == [], f"summary badges cut off: {off[:3]}"
    assert no_sideways_scroll(page), "the landing page scrolls sideways"


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    if executable is None:
        if in_ci():
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium")
        pytest.skip("chromium not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.mark.slow
@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_every_verdict_is_on_screen(browser, server, viewport):
    """Scoreboard, a chapter's claims table and the landing page at 1280 x 800 and 390 x 844 (a phone)."""
    width, height = VIEWPORTS[viewport]
    page = browser.new_page(viewport={"width": width, "height": height})
    try:
        check_scoreboard(page, server)
        check_chapter(page, server)
        check_landing(page, server)
    finally:
        page.close()


def test_citation_file_matches_the_package():
    import yaml

    import distillbook
    from distillbook.core.paths import REPO_ROOT

    cff = yaml.safe_load((REPO_ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["title"] and cff["authors"]
    assert cff["version"] == distillbook.__version__, "release the book and its citation together"
    assert "#claim-" in cff["message"]  # how to cite one verdict


def test_gpu_results_show_beside_the_cpu_ones_with_a_page_of_their_own(monkeypatch, tmp_path):
    """A gpu run gets its own page (never the cpu one), listed under the chapter; the scoreboard shows its verdict
    in the cpu row, and the gpu section links the gpu page."""
    import copy

    from distillbook.core import pipeline

    data = _new_format_results()
    gpu = copy.deepcopy(data["foundations"])
    gpu["claims"][0].update(verdict="not reproduced", reason=None)
    monkeypatch.setattr(site, "_load_results", lambda chapter, profile: (data if profile == "cpu" else
                                                                          {"foundations": gpu}).get(chapter))
    monkeypatch.setattr(site, "EXECUTED_DIR", tmp_path)
    for name in ("foundations.ipynb", "foundations-gpu.ipynb", "lm-kd-dynamics.ipynb"):
        (tmp_path / name).write_text("{}")
    assert pipeline.page_name("foundations", "gpu") == "foundations-gpu.ipynb"
    assert pipeline.page_name("foundations", "cpu") == pipeline.page_name("foundations", "smoke") == "foundations.ipynb"
    toc = site.toc_yaml()
    assert "      - file: book/chapters/foundations\n        sections:\n          - file: book/chapters/foundations-gpu" \
        in toc
    assert "lm-kd-dynamics\n        sections" not in toc
    page = site.scoreboard_page()
    cpu_part, gpu_part = page.split("## Profile `gpu`")
    beats = next(line for line in cpu_part.splitlines() if 'id="claim-foundations-beats"' in line)
    assert "**at gpu**: not reproduced" in beats
    assert "[foundations (gpu)](chapters/foundations-gpu.ipynb)" in gpu_part
    assert "**at cpu**: reproduced" in gpu_part
    assert 'id="claim-' not in gpu_part, "a claim's citable anchor is its cpu row"


def test_a_gpu_page_is_titled_as_such(tmp_path):
    from distillbook.core import pipeline

    nb = {"metadata": {}, "cells": [{"cell_type": "markdown", "metadata": {}, "source": "# Foundations\n\nText."}]}
    path = tmp_path / "x.ipynb"
    path.write_text(json.dumps(nb))
    pipeline.tidy_executed_notebook(path, run_id="r", profile="gpu")
    tidied = json.loads(path.read_text())
    assert tidied["cells"][0]["source"].startswith("# Foundations (gpu profile)\n")
    assert tidied["metadata"]["distillbook"] == {"run_id": "r", "profile": "gpu"}
