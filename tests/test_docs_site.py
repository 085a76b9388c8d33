"""Static checks of the built documentation site in `_docs/` (built by `python docs/build.py`).

Skipped when `_docs/index.html` does not exist, unless DDPM_NB_REQUIRE_DOCS=1 (as in CI
after the docs build), where a missing site is a failure.

What is checked:
- every notebook in nbs/ has its page, titled with the notebook's `# Title` and showing
  its `> summary`; every module of the package has its source page;
- no file of the site refers to another host (see `ALLOWED` below for the only URLs
  that may appear);
- every internal href/src/CSS url() resolves to a file, and every #fragment to an id;
- every show_doc [source] link lands on the line of the documented `def`/`class`.
"""
from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from conftest import docs_problem

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "_docs"
NBS = ROOT / "nbs"
LIB = ROOT / "ddpm_nb"
REQUIRED = os.environ.get("DDPM_NB_REQUIRE_DOCS") == "1"

PROBLEM = docs_problem()
if PROBLEM and not REQUIRED:
    pytest.skip(f"{PROBLEM} (DDPM_NB_REQUIRE_DOCS=1 makes this a failure)", allow_module_level=True)


@pytest.fixture(autouse=True, scope="module")
def _site_required():
    "With DDPM_NB_REQUIRE_DOCS=1 a missing or stale site fails every test here (and the rest of the suite still runs)."
    if PROBLEM:
        pytest.fail(f"DDPM_NB_REQUIRE_DOCS=1 but the {PROBLEM}", pytrace=False)

if REQUIRED:
    import bs4
else:
    bs4 = pytest.importorskip("bs4")

# --- the whitelist -------------------------------------------------------------------
# A URL with a scheme may appear in the site only if it is
#   * on this machine: host 127.0.0.1 or localhost, or
#   * an XML namespace name (an identifier that is never fetched), exactly one of these.
# Anything else, in any attribute, CSS url(), or anywhere in the text of an HTML, CSS or
# JS file (comments, strings and code shown verbatim included), fails. A command that
# needs another host's address (a pip index) is described in words, not spelled out.
# Only the theme's licence notices (`*LICENSE*.txt`) are kept verbatim and not scanned.
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
XML_NAMESPACES = {
    "http://www.w3.org/1998/Math/MathML",
    "http://www.w3.org/2000/svg",
    "http://www.w3.org/1999/xhtml",
    "http://www.w3.org/1999/xlink",
    "http://www.w3.org/XML/1998/namespace",
    "http://www.w3.org/2000/xmlns/",
}
# attributes that carry a URL (srcset: a list of "url width" candidates)
URL_ATTRS = ("href", "src", "srcset", "action", "formaction", "poster", "data", "cite",
             "background", "xlink:href", "longdesc", "manifest", "ping")
# every file of the site is scanned as text except these (images, fonts)
BINARY_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".ico", ".woff", ".woff2", ".ttf", ".otf", ".eot"}

_re_url_text = re.compile(r"""(?i)\b(?:https?|wss?|ftp)://[^\s"'<>`)\\]+""")
_re_css_url = re.compile(r"""url\(\s*(['"]?)(.*?)\1\s*\)""")
_re_css_import = re.compile(r"""@import\s+(['"])(.*?)\1""")


def is_allowed(url: str) -> bool:
    url = url.rstrip(".,;")
    return url in XML_NAMESPACES or (urlsplit(url).hostname or "") in LOCAL_HOSTS


def leaves_site(url: str) -> bool:
    "True for a URL that points to another host (scheme://host or //host)."
    url = url.strip()
    if url.startswith("//"):
        return True
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("", "data", "mailto", "javascript", "about", "blob"):
        return False
    return not is_allowed(url)


# --- helpers -----------------------------------------------------------------------
def nb_page(nb: Path) -> str:
    "nbdev's page name: 01_forward.ipynb -> forward.html"
    return re.sub(r"^\d+[a-zA-Z0-9]*_", "", nb.name.lower()).rsplit(".", 1)[0] + ".html"


def notebooks() -> list[Path]:
    return sorted(p for p in NBS.glob("*.ipynb") if not p.name.startswith(("_", ".")))


def nb_title_summary(nb: Path) -> tuple[str | None, str | None]:
    "The `# Title` and `> summary` of a notebook (nbdev's frontmatter convention)"
    for c in json.loads(nb.read_text(encoding="utf-8"))["cells"]:
        if c["cell_type"] != "markdown":
            continue
        src = "".join(c["source"]).strip()
        m = re.match(r"#\s+(.+?)\s*$", src.splitlines()[0]) if src else None
        if m:
            s = re.search(r"^>\s*(.+?)\s*$", src, re.M)
            return m.group(1), s.group(1) if s else None
    return None, None


def modules() -> list[tuple[Path, str]]:
    out = []
    for py in sorted(LIB.rglob("*.py")):
        if py.name == "_modidx.py" or "__pycache__" in py.parts:
            continue
        mod = py.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
        out.append((py, mod.removesuffix(".__init__")))
    return out


def norm(s: str) -> str:
    "Compare prose loosely: drop markdown/TeX delimiters, headerlink pilcrows, spacing; typographic quotes as plain ones"
    s = s.translate(str.maketrans("‘’“”", "''\"\""))
    s = re.sub(r"\\[()\[\]]|[`*$¶]", "", s)
    return re.sub(r"\s+", " ", s).strip()


@lru_cache(None)
def soup(path: Path):
    return bs4.BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


@lru_cache(None)
def ids(path: Path) -> frozenset:
    s = soup(path)
    return frozenset([t["id"] for t in s.find_all(id=True)] + [t["name"] for t in s.find_all("a", attrs={"name": True})])


def site_files(*suffixes) -> list[Path]:
    return sorted(f for f in SITE.rglob("*") if f.is_file() and (not suffixes or f.suffix in suffixes))


def rel(f: Path) -> str:
    return f.relative_to(SITE).as_posix()


def attr_urls(tag) -> list[tuple[str, str]]:
    out = []
    for a in URL_ATTRS:
        v = tag.get(a)
        if not v:
            continue
        if a == "srcset":
            out += [(a, c.strip().split()[0]) for c in v.split(",") if c.strip()]
        else:
            out.append((a, v.strip()))
    if tag.name == "meta" and (tag.get("http-equiv") or "").lower() == "refresh":
        m = re.search(r"url\s*=\s*(\S+)", tag.get("content", ""), re.I)
        if m:
            out.append(("content", m.group(1)))
    if tag.get("style"):
        out += [("style", m.group(2)) for m in _re_css_url.finditer(tag["style"])]
    return out


# --- tests -------------------------------------------------------------------------
@pytest.mark.parametrize("nb", notebooks(), ids=lambda p: p.name)
def test_notebook_has_page(nb):
    page = SITE / nb_page(nb)
    assert page.exists(), f"{nb.name}: no page {rel(page) if page.is_relative_to(SITE) else page}"
    title, summary = nb_title_summary(nb)
    assert title, f"{nb.name} has no `# Title` markdown cell"
    h1 = soup(page).find("article").find("h1")
    assert h1 is not None and norm(h1.get_text()) == norm(title), f"{nb.name}: page heading {h1 and h1.get_text()!r} != {title!r}"
    if summary:
        lead = soup(page).find("article").find("p", class_="lead")
        assert lead is not None and norm(lead.get_text()) == norm(summary), \
            f"{nb.name}: summary {summary!r} not shown (lead: {lead and lead.get_text()!r})"


def test_home_page_is_index():
    assert (NBS / "index.ipynb").exists()
    title, _ = nb_title_summary(NBS / "index.ipynb")
    assert norm(soup(SITE / "index.html").find("article").find("h1").get_text()) == norm(title)


def test_pages_in_reading_order():
    "The sidebar lists the notebooks in file-name order, after the home page."
    tree = soup(SITE / "index.html").find(class_="sidebar-tree")
    hrefs = [a["href"] for a in tree.find_all("a", href=True)]
    want = [nb_page(nb) for nb in notebooks() if nb.name != "index.ipynb"]
    got = [h for h in hrefs if h in want]
    assert got == want, f"sidebar order {got} != {want}"


@pytest.mark.parametrize("py,mod", modules(), ids=lambda x: str(x) if isinstance(x, str) else x.name)
def test_module_has_source_page(py, mod):
    page = SITE / "source" / f"{mod}.html"
    assert page.exists(), f"no source page for {mod}"
    n = len(py.read_text(encoding="utf-8").splitlines())
    missing = [i for i in range(1, n + 1) if f"L{i}" not in ids(page)]
    assert not missing, f"{rel(page)}: lines without an id anchor: {missing[:10]}"


def test_no_reference_to_other_hosts():
    problems = []
    for f in site_files():
        if f.suffix.lower() in BINARY_SUFFIXES or "LICENSE" in f.name:   # licence notices stay verbatim
            continue
        text = f.read_text(encoding="utf-8", errors="replace")
        # 1. any absolute URL anywhere in the text (attributes, scripts, styles, comments)
        problems += [f"{rel(f)}: text: {u}" for u in _re_url_text.findall(text) if not is_allowed(u)]
        # 2. protocol-relative and scheme URLs in CSS url()/@import
        if f.suffix == ".css":
            for m in list(_re_css_url.finditer(text)) + list(_re_css_import.finditer(text)):
                if leaves_site(m.group(2)):
                    problems.append(f"{rel(f)}: css url({m.group(2)})")
        # 3. every attribute that carries a URL, <style> blocks
        if f.suffix in (".html", ".svg"):
            s = soup(f)
            for tag in s.find_all(True):
                problems += [f"{rel(f)}: <{tag.name} {a}={u!r}>" for a, u in attr_urls(tag) if leaves_site(u)]
            for st in s.find_all("style"):
                problems += [f"{rel(f)}: <style> url({m.group(2)})" for m in _re_css_url.finditer(st.get_text())
                             if leaves_site(m.group(2))]
    assert not problems, "references to other hosts:\n" + "\n".join(problems[:50])


def test_internal_links_resolve():
    problems = []
    for f in site_files(".html"):
        for tag in soup(f).find_all(True):
            for a, url in attr_urls(tag):
                if leaves_site(url) or url.startswith(("data:", "mailto:", "javascript:", "about:", "blob:")):
                    continue
                path, _, frag = url.partition("#")
                path = unquote(path.split("?")[0])
                target = (f.parent / path).resolve() if path else f
                if target.is_dir():
                    target = target / "index.html"
                if not target.is_file():
                    problems.append(f"{rel(f)}: <{tag.name} {a}={url!r}>: no such file")
                elif frag and target.suffix == ".html" and unquote(frag) not in ids(target):
                    problems.append(f"{rel(f)}: <{tag.name} {a}={url!r}>: no id {frag!r} in {rel(target)}")
    for f in site_files(".css"):
        for m in _re_css_url.finditer(f.read_text(encoding="utf-8")):
            url = m.group(2)
            if leaves_site(url) or url.startswith(("data:", "#")):
                continue
            if not (f.parent / unquote(url.split("#")[0].split("?")[0])).resolve().is_file():
                problems.append(f"{rel(f)}: url({url}): no such file")
    assert not problems, "broken internal links:\n" + "\n".join(problems[:50])


_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"RIFF", b"<svg", b"<?xml")


def test_images_are_images():
    "Every <img> of the site is a local file that starts like an image (PNG, JPEG, GIF, WebP, SVG)."
    problems, n = [], 0
    for f in site_files(".html"):
        for img in soup(f).find_all("img"):
            src = img.get("src", "")
            if src.startswith("data:image/"):
                continue
            target = (f.parent / unquote(src.split("#")[0])).resolve()
            n += 1
            if not target.is_file():
                problems.append(f"{rel(f)}: <img src={src!r}>: no such file")
            elif not target.read_bytes()[:16].lstrip().startswith(_IMAGE_MAGIC):
                problems.append(f"{rel(f)}: <img src={src!r}>: not an image")
    assert not problems, "\n".join(problems)


def source_links():
    "(page, symbol, href) of every show_doc [source] link"
    out = []
    for f in site_files(".html"):
        if f.parent != SITE:
            continue
        for a in soup(f).find_all("a", href=True):
            if a.get_text(strip=True) not in ("[source]", "source"):
                continue
            sec = a.find_parent("section")
            h = sec.find(re.compile(r"^h[1-6]$")) if sec else None
            out.append((f, norm(h.get_text()) if h else None, a["href"]))
    return out


def documented_symbols() -> int:
    "How many show_doc headings the site has for symbols of the package's _modidx"
    idx = LIB / "_modidx.py"
    if not idx.exists():
        return 0
    ns: dict = {}
    exec(idx.read_text(encoding="utf-8"), ns)
    n = 0
    for syms in ns["d"]["syms"].values():
        for doc, _ in syms.values():
            page, _, anchor = doc.partition("#")
            f = SITE / page
            if f.exists():
                heads = {norm(h.get_text()).lower() for h in soup(f).find("article").find_all(re.compile("^h[2-6]$"))}
                n += anchor.lower() in heads
    return n


def test_source_links_land_on_definitions():
    links = source_links()
    n_doc = documented_symbols()
    assert len(links) >= n_doc, f"{n_doc} documented symbols but only {len(links)} [source] links"
    problems = []
    for page, sym, href in links:
        path, _, frag = href.partition("#")
        target = (page.parent / path).resolve()
        if not (target.is_file() and target.is_relative_to(SITE / "source") and re.fullmatch(r"L\d+", frag)):
            problems.append(f"{rel(page)}: [source] of {sym}: {href!r} is not a local source line")
            continue
        line = soup(target).find(id=frag)
        text = line.get_text() if line else ""
        text = re.sub(r"^\s*\d+", "", text)  # the line number shown in the gutter
        name = (sym or "").split(".")[-1]
        if not re.match(rf"\s*(async\s+def|def|class)\s+{re.escape(name)}\b", text):
            problems.append(f"{rel(page)}: [source] of {sym} -> {href}: line is {text.strip()!r}")
    assert not problems, "\n".join(problems)
