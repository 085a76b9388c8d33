"""The built documentation site (`_docs/`) in a real browser: headless Chromium via Playwright.

Serves `_docs/` on 127.0.0.1 (a free port) and, for every page -- the home page, each
notebook's page, each module's source page -- checks that it loads with its title, that
MathJax typeset all its math (no TeX left in the text), that every image loaded, that
there is no console or page error, and that the browser asked for nothing but 127.0.0.1
(every request is routed; any other is aborted and reported).
A full-page screenshot of each page goes to `_screenshots/<page>.png`.

Skipped when `_docs/index.html` or /usr/bin/chromium is missing, unless
DDPM_NB_REQUIRE_DOCS=1, where either is a failure.
"""
from __future__ import annotations

import functools
import json
import os
import re
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import docs_problem

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "_docs"
NBS = ROOT / "nbs"
LIB = ROOT / "ddpm_nb"
SHOTS = ROOT / "_screenshots"
CHROMIUM = Path(os.environ.get("DDPM_NB_CHROMIUM", "/usr/bin/chromium"))
REQUIRED = os.environ.get("DDPM_NB_REQUIRE_DOCS") == "1"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

MISSING = [p for p in [docs_problem(), None if CHROMIUM.exists() else f"chromium is missing: install Debian's chromium ({CHROMIUM})"] if p]
if MISSING and not REQUIRED:
    pytest.skip(f"{MISSING[0]} (DDPM_NB_REQUIRE_DOCS=1 makes this a failure)", allow_module_level=True)
if REQUIRED:
    import playwright.sync_api as sync_api
else:
    sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(autouse=True, scope="module")
def _site_required():
    "With DDPM_NB_REQUIRE_DOCS=1 a missing site or browser fails every test here (the rest of the suite still runs)."
    if MISSING:
        pytest.fail(f"DDPM_NB_REQUIRE_DOCS=1 but {'; '.join(MISSING)}", pytrace=False)


# --- the pages ---------------------------------------------------------------------
def _title(nb: Path) -> str:
    for c in json.loads(nb.read_text(encoding="utf-8"))["cells"]:
        src = "".join(c["source"]).strip()
        if c["cell_type"] == "markdown" and src.startswith("# "):
            return src.splitlines()[0][2:].strip()
    return nb.stem


def _tex_title(md: str) -> str:
    "How Sphinx writes a markdown title into <title>: $x$ -> \\(x\\), no code/emphasis marks"
    md = re.sub(r"\$([^$]+)\$", r"\\(\1\\)", md)
    return re.sub(r"[`*]", "", md)


def pages() -> list[tuple[str, str]]:
    "(path in the site, expected <title>) for every page the site must have"
    out = []
    for nb in sorted(p for p in NBS.glob("*.ipynb") if not p.name.startswith(("_", "."))):
        page = re.sub(r"^\d+[a-zA-Z0-9]*_", "", nb.name.lower()).rsplit(".", 1)[0] + ".html"
        title = _tex_title(_title(nb))
        out.append((page, title if page == "index.html" else f"{title} - ddpm_nb"))
    out.sort(key=lambda p: p[0] != "index.html")
    for py in sorted(LIB.rglob("*.py")):
        if py.name == "_modidx.py" or "__pycache__" in py.parts:
            continue
        mod = py.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
        out.append((f"source/{mod}.html", f"{py.relative_to(ROOT).as_posix()} - ddpm_nb"))
    out.append(("search.html", "Search - ddpm_nb"))
    return out


def test_every_page_is_checked():
    "The site has no HTML page that the browser test would not visit."
    have = {f.relative_to(SITE).as_posix() for f in SITE.rglob("*.html") if "_static" not in f.parts}
    want = {p for p, _ in pages()}
    assert have == want, f"pages not checked: {sorted(have - want)}; pages missing: {sorted(want - have)}"


def test_search_works_offline(server, browser):
    "Sphinx's search page finds a word of the home page's title, from the local index."
    word = re.findall(r"\w+", _title(NBS / "index.ipynb"))[0]
    page = browser.new_page()
    try:
        page.goto(f"{server}/search.html?q={word}")
        page.wait_for_selector("#search-results ul.search li", timeout=10_000)
        assert page.locator("#search-results ul.search li").count() > 0
    finally:
        page.close()


# --- fixtures ----------------------------------------------------------------------
class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(SITE)))
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


# JS run in the page once MathJax (if any) is done
_PAGE_STATE = r"""async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  await document.fonts.ready;  // the web fonts MathJax's output asked for
  const main = document.querySelector('article') || document.body;
  const math = [...document.querySelectorAll('.math')];
  const prose = main.cloneNode(true);
  prose.querySelectorAll('pre, code, .highlight, mjx-container, script, style').forEach(e => e.remove());
  return {
    mathjax: !!(window.MathJax && MathJax.startup),
    math: math.length,
    untypeset: math.filter(e => !e.querySelector('mjx-container') && e.tagName !== 'MJX-CONTAINER')
                   .map(e => e.textContent.trim().slice(0, 80)),
    mjx: document.querySelectorAll('mjx-container').length,
    mjxErrors: [...document.querySelectorAll('mjx-merror, [data-mjx-error]')].map(e => e.getAttribute('data-mjx-error') || e.textContent),
    // a backslash in typeset math is TeX MathJax did not understand (an undefined macro, \_ in \texttt)
    texLeaks: [...document.querySelectorAll('mjx-container')].filter(e => (e.querySelector('mjx-assistive-mml') || {textContent: ''}).textContent.includes('\\'))
                  .map(e => (e.querySelector('mjx-assistive-mml').textContent || '').slice(0, 80)),
    text: prose.innerText,
    images: [...document.images].map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0})),
  };
}"""

# TeX that should have become math: display/inline delimiters, environments, $...$ pairs
_RAW_TEX = re.compile(r"\$\$|\\\(|\\\)|\\\[|\\\]|\\begin\{|\\end\{|(?<![\w$])\$(?=\S)[^$\n]{1,200}(?<=\S)\$(?![\w$])")


@pytest.mark.parametrize("path,title", pages(), ids=[p for p, _ in pages()])
def test_page_in_browser(server, browser, path, title):
    requests, foreign, bad_responses, console, errors = [], [], [], [], []
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")

    def route(r):
        url = r.request.url
        requests.append(url)
        if urlsplit(url).hostname == "127.0.0.1" or url.startswith(("data:", "blob:", "about:")):
            r.continue_()
        else:
            foreign.append(url)
            r.abort()

    ctx.route("**/*", route)
    page = ctx.new_page()
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("response", lambda r: bad_responses.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("requestfailed", lambda r: bad_responses.append(f"failed {r.url} ({r.failure})")
            if urlsplit(r.url).hostname == "127.0.0.1" else None)
    try:
        resp = page.goto(f"{server}/{path}", wait_until="load")
        assert resp is not None and resp.status == 200, f"{path}: HTTP {resp and resp.status}"
        state = page.evaluate(_PAGE_STATE)  # waits for MathJax and fonts
        SHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SHOTS / (path.removesuffix(".html").replace("/", "_") + ".png")), full_page=True)
        quotes = str.maketrans("‘’“”", "''\"\"")                  # Sphinx's smart quotes turn ' into ’
        assert page.title().translate(quotes) == title, f"{path}: title {page.title()!r} != {title!r}"
    finally:
        ctx.close()

    assert not foreign, f"{path}: requests to other hosts: {foreign}"
    assert not bad_responses, f"{path}: failed requests: {bad_responses}"
    assert not errors, f"{path}: page errors: {errors}"
    assert not console, f"{path}: console errors: {console}"
    broken = [i["src"] for i in state["images"] if not i["ok"]]
    assert not broken, f"{path}: images that did not load: {broken}"
    if state["math"]:
        assert state["mathjax"], f"{path}: has {state['math']} math elements but MathJax did not start"
        assert state["mjx"] > 0, f"{path}: MathJax typeset nothing"
        assert not state["untypeset"], f"{path}: math left as TeX: {state['untypeset'][:5]}"
        assert not state["mjxErrors"], f"{path}: MathJax errors: {state['mjxErrors'][:5]}"
        assert not state["texLeaks"], f"{path}: TeX shown raw inside typeset math: {state['texLeaks'][:5]}"
    raw = sorted({m.group(0) for m in _RAW_TEX.finditer(state["text"])})
    assert not raw, f"{path}: raw TeX in the visible text: {raw[:10]}"
