"""The site builds with warnings as errors, fully offline, and renders in a real browser."""

import functools
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pytest

from conftest import in_ci
from distillbook import site

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
PAGES_WITH_MATH = ("book/intro.html", "book/chapters/foundations.html", "book/chapters/lm-kd-dynamics.html")


def test_committed_generated_pages_are_current():
    """Runs before the build below, which therefore never needs to rewrite them."""
    from distillbook.paths import BOOK_DIR, REPO_ROOT

    for path, text in ((REPO_ROOT / "_toc.yml", site.toc_yaml()), (BOOK_DIR / "papers.md", site.papers_page()),
                       (BOOK_DIR / "scoreboard.md", site.scoreboard_page())):
        assert path.read_text(encoding="utf-8") == text, f"{path.name} is out of date: run `python -m distillbook build`"


def test_papers_page_lists_every_paper_with_its_chapter_state():
    page = site.papers_page()
    assert page.count("\n| ") == 87 + 1  # header + one row per paper
    assert "planned" in page
    scoreboard = site.scoreboard_page()
    assert "foundations" in scoreboard and "omitted-class-recognised" in scoreboard


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

