#!/usr/bin/env python
"""Build the ddpm_nb documentation site into `_docs/` (run from the repo root).

    python docs/build.py

Quarto (which `nbdev_docs` needs) is not available, so the site is built from
nbdev's own processed notebooks by Sphinx + myst-nb + furo:

1. MathJax 3: `npm ci --prefix docs` when docs/node_modules is missing or stale
   (docs/package-lock.json pins the exact version).
2. `nbdev.serve.proc_nbs(force=True)` writes `_proc/*.ipynb`: show_doc cells
   executed into markdown, `#| hide`/`#| export` cells removed, `# Title` +
   `> summary` turned into a Quarto frontmatter raw cell.
3. Stage docs/_build/src/: every processed notebook, translated from Quarto to
   MyST (frontmatter -> `# Title` + lead paragraph, `#|` cell options -> myst-nb
   tags, callouts -> admonitions, show_doc output -> markdown with a label and a
   local [source] link, nbdev doc links -> cross-references, notebook links ->
   pages, links to other hosts -> plain text); one highlighted page per module of
   the package (`source/<module>.html`, an id `L<n>` on every line).
4. `sphinx-build -W --keep-going` (conf.py beside this file; notebooks are not
   executed: the committed outputs are shown).
5. Copy the HTML to `_docs/` and the MathJax components it loads to
   `_docs/_static/mathjax/`.
6. Check the result: no URL to another host in any HTML/CSS/JS file, every
   internal href/src resolves (file and #fragment).  Any failure exits non-zero.
"""
from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from configparser import ConfigParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
BUILD = DOCS / "_build"
SRC = BUILD / "src"  # staged Sphinx source tree (generated)
HTML = BUILD / "html"
DOCTREES = BUILD / "doctrees"
SHIM = BUILD / "nbdev_entry_point"
PROC = ROOT / "_proc"
OUT = ROOT / "_docs"
MATHJAX = DOCS / "node_modules" / "mathjax"
ASSET_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp"}
BINARY_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".ico", ".woff", ".woff2", ".ttf", ".otf", ".eot"}


class BuildError(Exception):
    pass


def log(msg: str) -> None:
    print(f"[docs] {msg}", flush=True)


def read_settings() -> dict:
    ini = ConfigParser(delimiters=["="])
    if not ini.read(ROOT / "settings.ini", encoding="utf-8"):
        raise BuildError(f"no settings.ini in {ROOT}")
    cfg = dict(ini["DEFAULT"])
    cfg["doc_base"] = cfg["doc_host"].rstrip("/") + "/" + cfg.get("doc_baseurl", "").strip("/")
    return cfg


def run(cmd: list[str], **kw) -> None:
    res = subprocess.run(cmd, cwd=kw.pop("cwd", ROOT), **kw)
    if res.returncode:
        raise BuildError(f"command failed ({res.returncode}): {' '.join(map(str, cmd))}")


# ---------------------------------------------------------------- 1. MathJax
def ensure_mathjax() -> None:
    lock = DOCS / "package-lock.json"
    stamp = DOCS / "node_modules" / ".package-lock.json"  # written by npm ci
    want = json.loads(lock.read_text())["packages"]["node_modules/mathjax"]["version"]
    have = None
    if (MATHJAX / "package.json").exists():
        have = json.loads((MATHJAX / "package.json").read_text())["version"]
    stale = (have != want or not stamp.exists()
             or stamp.stat().st_mtime < max(lock.stat().st_mtime, (DOCS / "package.json").stat().st_mtime))
    if not stale:
        log(f"mathjax {have} already in docs/node_modules")
        return
    npm = shutil.which("npm")
    if not npm:
        raise BuildError("npm is needed once to fetch MathJax (docs/package-lock.json); install Node.js")
    log(f"npm ci --prefix docs (mathjax {want})")
    run([npm, "ci", "--prefix", str(DOCS), "--no-audit", "--no-fund"])
    if not (MATHJAX / "es5" / "startup.js").exists():
        raise BuildError("npm ci did not install mathjax/es5/startup.js")


# ------------------------------------------------------------- 2. proc_nbs
def write_entry_point_shim(cfg: dict) -> None:
    """A dist-info that declares the package's nbdev entry point.

    nbdev finds `_modidx.py` (for the show_doc [source] links and the backtick doc
    links) through the `nbdev` entry point of the *installed* package.  Putting this
    shim first on PYTHONPATH makes it point at this checkout whether or not (or from
    wherever) the package is installed.
    """
    lib = cfg["lib_name"]
    shutil.rmtree(SHIM, ignore_errors=True)
    di = SHIM / f"{lib}-{cfg['version']}.dist-info"
    di.mkdir(parents=True)
    (di / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {lib}\nVersion: {cfg['version']}\n")
    (di / "entry_points.txt").write_text(f"[nbdev]\n{lib} = {cfg['lib_path']}._modidx:d\n")


def process_notebooks(cfg: dict) -> None:
    write_entry_point_shim(cfg)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SHIM), str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("MPLBACKEND", "Agg")
    # nbdev's advice to split import cells (it runs such cells whole to render show_doc): noise here
    env["PYTHONWARNINGS"] = ",".join(filter(None, [env.get("PYTHONWARNINGS"),
                                                   "ignore:Found cells containing imports and other code:UserWarning"]))
    code = ("import warnings; warnings.simplefilter('ignore');"
            "from nbdev.serve import proc_nbs; proc_nbs(force=True)")
    log("nbdev proc_nbs(force=True) -> _proc/")
    run([sys.executable, "-c", code], env=env)


# ----------------------------------------------------------- 3. staging
_re_fence = re.compile(r"^\s*(`{3,}|~{3,})")
_re_link = re.compile(r"(!?)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^)\s>]*)>?(\s+\"[^\"]*\")?\s*\)(\{[^}\n]*\})?")
_re_autolink = re.compile(r"<(https?://[^>\s]+)>")
_re_bare_url = re.compile(r"(?<![\(<\"'=])\bhttps?://[^\s)<>\]]+")
_re_code_span = re.compile(r"(`+)(.+?)\1")
_re_div_open = re.compile(r"^(\s*)(:{3,})\s*\{([^}]*)\}\s*$|^(\s*)(:{3,})\s*([\w-]+)\s*$")
_re_div_close = re.compile(r"^(\s*)(:{3,})\s*$")
_CALLOUTS = {"note": "note", "tip": "tip", "warning": "warning", "important": "important", "caution": "caution"}


def nbpage(path: Path) -> str:
    "nbdev's page name for a notebook: `01_forward.ipynb` -> `forward`"
    return re.sub(r"^\d+[a-zA-Z0-9]*_", "", path.name.lower()).rsplit(".", 1)[0]


class Site:
    """What the link rewriting needs to know about the whole site."""

    def __init__(self, cfg: dict, notebooks: list[Path]):
        self.cfg = cfg
        self.lib = cfg["lib_path"]
        self.git_blob = cfg["git_url"].rstrip("/") + f"/blob/{cfg['branch']}/"
        self.doc_base = cfg["doc_base"].rstrip("/") + "/"
        self.pages = {}  # page name -> notebook path
        for nb in notebooks:
            self.pages[nbpage(nb)] = nb
        self.nb_names = {nb.name: nbpage(nb) for nb in notebooks}
        self.labels: dict[tuple[str, str], str] = {}  # (page, nbdev anchor) -> label
        self.modules = {}  # "ddpm_nb/forward.py" -> "ddpm_nb.forward"
        for py in sorted((ROOT / self.lib).rglob("*.py")):
            rel = py.relative_to(ROOT).as_posix()
            if py.name == "_modidx.py" or "__pycache__" in rel:
                continue
            mod = rel[:-3].replace("/", ".")
            self.modules[rel] = mod[: -len(".__init__")] if mod.endswith(".__init__") else mod
        self.notices: list[str] = []

    def source_href(self, url: str, prefix: str = "") -> str | None:
        "GitHub blob URL of a package file -> local source page (or None)"
        if not url.startswith(self.git_blob):
            return None
        path, _, frag = url[len(self.git_blob):].partition("#")
        mod = self.modules.get(path)
        if mod is None:
            return None
        return f"{prefix}source/{mod}.html" + (f"#{frag}" if frag else "")

    def doc_target(self, url: str) -> str | None:
        "nbdev doc URL (doc_host/doc_baseurl/page.html#anchor) -> MyST link target"
        if not url.startswith(self.doc_base):
            return None
        page, _, anchor = url[len(self.doc_base):].partition("#")
        page = page.removesuffix(".html") or "index"
        if page not in self.pages:
            return None
        label = self.labels.get((page, anchor.lower()))
        if label:
            return f"#{label}"
        return f"{page}.ipynb"


def is_external(url: str) -> bool:
    u = urlsplit(url)
    if u.scheme in ("http", "https") or url.startswith("//"):
        return (u.hostname or "") not in ("localhost", "127.0.0.1")
    return u.scheme not in ("", "mailto", "data") if u.scheme else False


def strip_scheme(url: str) -> str:
    return re.sub(r"^[a-z]+://", "", url)


def md_inline_to_html(text: str) -> str:
    "Markdown link text (code spans only) -> HTML"
    out, pos = [], 0
    for m in _re_code_span.finditer(text):
        out.append(html.escape(text[pos:m.start()]))
        out.append(f'<code class="docutils literal notranslate"><span class="pre">{html.escape(m.group(2).strip())}</span></code>')
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


def rewrite_line_links(line: str, site: Site, page: str) -> str:
    "Rewrite the links of one markdown line (outside code spans)."

    def link(m: re.Match) -> str:
        bang, text, url, title, _attrs = m.groups()  # Quarto `{...}` attributes are dropped
        title = title or ""
        if bang:  # images: local ones are left to Sphinx (it checks them)
            if is_external(url):
                site.notices.append(f"{page}: external image {url} removed")
                return f"*[image: {text or strip_scheme(url)}]*"
            return f"![{text}]({url}{title})"
        if url.startswith("#"):
            return f"[{text}]({url}{title})"
        src = site.source_href(url)
        if src:
            return f'<a class="reference internal" href="{src}">{md_inline_to_html(text)}</a>'
        doc = site.doc_target(url)
        if doc:
            return f"[{text}]({doc}{title})"
        if is_external(url):
            shown = strip_scheme(text) if text.strip() else strip_scheme(url)
            if strip_scheme(url).rstrip("/") in (shown.rstrip("/"), strip_scheme(text).rstrip("/")) or text.startswith("`"):
                return shown  # e.g. nbdev links to other libraries' docs: keep the code span
            site.notices.append(f"{page}: link to another host shown as text: {url}")
            return f"{shown} ({strip_scheme(url)})"
        # local: notebooks -> their pages; `page.html` -> page
        path, _, frag = url.partition("#")
        name = Path(path).name
        target = None
        if name in site.nb_names:
            target = site.nb_names[name]
        elif name.endswith(".html") and name[:-5] in site.pages:
            target = name[:-5]
        if target:
            return f"[{text}]({target}.ipynb" + (f"#{frag}" if frag else "") + f"{title})"
        return f"[{text}]({url}{title})"

    # protect code spans, rewrite, restore
    spans: list[str] = []

    def protect(m: re.Match) -> str:
        spans.append(m.group(0))
        return f"\x00{len(spans) - 1}\x00"

    # code spans inside link text must stay with the link: protect only spans outside links
    parts, pos = [], 0
    for m in _re_link.finditer(line):
        parts.append(_re_code_span.sub(protect, line[pos:m.start()]))
        parts.append(m.group(0))
        pos = m.end()
    parts.append(_re_code_span.sub(protect, line[pos:]))
    line = "".join(parts)
    line = _re_link.sub(link, line)
    line = _re_autolink.sub(lambda m: strip_scheme(m.group(1)) if is_external(m.group(1)) else m.group(0), line)
    line = _re_bare_url.sub(lambda m: strip_scheme(m.group(0)) if is_external(m.group(0)) else m.group(0), line)
    return re.sub(r"\x00(\d+)\x00", lambda m: spans[int(m.group(1))], line)


def quarto_div(line: str, stack: list[str]) -> str | None:
    "Translate Quarto fenced divs (callouts) to MyST colon fences; None = drop the line"
    m = _re_div_open.match(line)
    if m:
        indent = m.group(1) or m.group(4) or ""
        colons = m.group(2) or m.group(5)
        attrs = m.group(3) if m.group(3) is not None else "." + m.group(6)
        kind = re.search(r"\.callout-(\w+)", attrs)
        title = re.search(r'title\s*=\s*"([^"]*)"', attrs)
        if kind and kind.group(1) in _CALLOUTS:
            stack.append("fence")
            if title:
                return f"{indent}{colons}{{admonition}} {title.group(1)}\n{indent}:class: {_CALLOUTS[kind.group(1)]}"
            return f"{indent}{colons}{{{_CALLOUTS[kind.group(1)]}}}"
        stack.append("drop")  # other Quarto divs (columns, tabsets, ...): keep the content only
        return None
    if _re_div_close.match(line) and stack:
        return None if stack.pop() == "drop" else line
    return line


def transform_markdown(src: str, site: Site, page: str) -> str:
    out, fence, stack = [], None, []
    for line in src.splitlines():
        fm = _re_fence.match(line)
        if fence:
            out.append(line)
            if fm and fm.group(1)[0] == fence[0] and len(fm.group(1)) >= len(fence):
                fence = None
            continue
        if fm:
            fence = fm.group(1)
            out.append(line)
            continue
        if line.lstrip().startswith(":::"):
            new = quarto_div(line, stack)
            if new is not None:
                out.append(new)
            continue
        if line.strip().startswith("<!-- WARNING: THIS FILE WAS AUTOGENERATED"):
            continue
        line = _re_ams_env.sub(lambda m: f"\\{m.group(1)}{{{m.group(2)}*}}", line)
        out.append(split_display_math(rewrite_line_links(line, site, page)))
    return "\n".join(out)


# Quarto numbers no equation unless asked to; myst's amsmath numbers every unstarred
# environment -- and such numbers would clash with the paper's, which the text cites.
_re_ams_env = re.compile(r"\\(begin|end)\{(equation|align|alignat|gather|multline|flalign|eqnarray)\}")


def split_display_math(line: str) -> str:
    "`text $$x$$ more` inside a paragraph -> its own display block (valid HTML, same look)"
    if line[:1] in (" ", "\t", ">", "|", "-", "*", "+") or re.match(r"\d+[.)]\s", line) or "$$" not in line or "`" in line:
        return line
    parts = re.split(r"(\$\$.+?\$\$)", line)
    if len(parts) == 1 or (len(parts) == 3 and not parts[0].strip() and not parts[2].strip()):
        return line
    return "\n\n".join(p.strip() for p in parts if p.strip())


_re_sd_source = re.compile(r"^\s*\[source\]\(([^)\s]+)\)(\{[^}\n]*\})?\s*$")
_re_heading = re.compile(r"^(#{1,6})\s+(.+?)\s*$")


def showdoc_markdown(md: str, site: Site, page: str, seen: set) -> str:
    """show_doc's markdown -> MyST: label + heading, local [source] link, signature."""
    lines = md.splitlines()
    while lines and lines[0].strip() in ("", "---"):
        lines.pop(0)  # the horizontal rule nbdev puts above each entry
    source = None
    if lines and _re_sd_source.match(lines[0]):
        source = _re_sd_source.match(lines.pop(0)).group(1)
        while lines and not lines[0].strip():
            lines.pop(0)
    if not lines or not _re_heading.match(lines[0]):
        return transform_markdown("\n".join(lines), site, page)
    hashes, name = _re_heading.match(lines.pop(0)).groups()
    plain = re.sub(r"[`*\\]", "", name)
    out = []
    label = site.labels.get((page, plain.lower()))
    if label and label not in seen:
        seen.add(label)
        out.append(f"({label})=")
    out.append(f"{hashes} {name}")
    out.append("")
    body = "\n".join(lines)
    if source:
        href = site.source_href(source)
        if href:
            out.append(f'<p class="sd-source"><a class="reference internal" href="{href}">[source]</a></p>')
            out.append("")
            if is_class_at(site, source, plain.split(".")[-1]):
                body = re.sub(rf"^def {re.escape(plain.split('.')[-1])}\(", f"class {plain.split('.')[-1]}(", body,
                              count=1, flags=re.MULTILINE)
        else:
            site.notices.append(f"{page}: [source] link of {plain} points outside the package; dropped")
    out.append(transform_markdown(body, site, page))
    return "\n".join(out)


def is_class_at(site: Site, url: str, name: str) -> bool:
    path, _, frag = url[len(site.git_blob):].partition("#")
    m = re.fullmatch(r"L(\d+)", frag)
    f = ROOT / path
    if not m or not f.exists():
        return False
    line = f.read_text(encoding="utf-8").splitlines()[int(m.group(1)) - 1:][:1]
    return bool(line) and bool(re.match(rf"\s*class\s+{re.escape(name)}\b", line[0]))


_re_directive = re.compile(r"^\s*#\s*\|\s*([\w-]+)\s*:?\s*(.*?)\s*$")


def split_directives(src: str) -> tuple[dict, str]:
    lines = src.splitlines()
    d = {}
    while lines and (_re_directive.match(lines[0]) or not lines[0].strip()):
        m = _re_directive.match(lines.pop(0))
        if m:
            d[m.group(1).lower()] = m.group(2).strip().strip("'\"").lower()
    # `#|` lines further down (rare): drop them from the shown code too
    lines = [ln for ln in lines if not re.match(r"^\s*#\|", ln)]
    return d, "\n".join(lines).strip("\n")


def md_cell(src: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": src}


def frontmatter(nb: dict) -> dict:
    import yaml

    for c in nb["cells"]:
        if c["cell_type"] == "raw":
            s = "".join(c["source"]).strip()
            if s.startswith("---"):
                c["_fm"] = True
                return yaml.safe_load(s.strip("-\n")) or {}
    return {}


def stage_notebook(proc_nb: Path, site: Site, page: str, toctree: str | None) -> None:
    nb = json.loads(proc_nb.read_text(encoding="utf-8"))
    fm = frontmatter(nb)
    title = fm.get("title") or page
    if not fm.get("title"):
        site.notices.append(f"{proc_nb.name}: no `# Title` cell; page titled {page!r}")
    head = f"# {title}\n"
    if fm.get("description"):
        head += "\n{.lead}\n" + transform_markdown(str(fm["description"]), site, page) + "\n"
    cells, seen = [md_cell(head)], set()
    for c in nb["cells"]:
        if c.get("_fm"):
            continue
        src = "".join(c.get("source", []))
        if c["cell_type"] == "markdown":
            new = transform_markdown(src, site, page)
            if new.strip():
                cells.append(md_cell(new))
            continue
        if c["cell_type"] == "raw":
            continue  # Quarto raw blocks have no meaning for Sphinx
        d, code = split_directives(src)
        if d.get("include") == "false":
            continue
        meta = {k: v for k, v in c.get("metadata", {}).items() if k not in ("tags", "language")}
        tags = [t for t in c.get("metadata", {}).get("tags", [])]
        outputs = c.get("outputs", [])
        asis = []
        if d.get("output") == "asis":  # show_doc: the markdown output *is* the document
            keep = []
            for o in outputs:
                mdo = o.get("data", {}).get("text/markdown")
                if mdo is not None:
                    asis.append(showdoc_markdown("".join(mdo), site, page, seen))
                else:
                    keep.append(o)
            outputs = keep
        for o in outputs:  # other markdown outputs: links rewritten, rendered by myst-nb
            mdo = o.get("data", {}).get("text/markdown")
            if mdo is not None:
                o["data"]["text/markdown"] = transform_markdown("".join(mdo), site, page)
        echo = d.get("echo") != "false"
        if d.get("output") == "false":
            outputs = []
        if d.get("code-fold") == "true":
            tags.append("hide-input")
        if not echo:
            tags.append("remove-input")
        if (echo and code.strip()) or outputs:
            if not outputs and not echo:
                pass
            else:
                meta["tags"] = sorted(set(tags))
                cells.append({"cell_type": "code", "execution_count": None, "metadata": meta,
                              "outputs": outputs, "source": code})
        cells.extend(md_cell(a) for a in asis if a.strip())
    if toctree:
        cells.append(md_cell(toctree))
    nb["cells"] = cells
    nb.setdefault("metadata", {}).pop("widgets", None)
    nb["metadata"].setdefault("language_info", {"name": "python"})
    dst = SRC / f"{page}.ipynb"
    dst.write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding="utf-8")


def collect_labels(site: Site) -> None:
    "One label per show_doc entry: nbdev's anchor (`forward.html#thing.go`) -> `sd-forward-thing.go`"
    idx_file = ROOT / site.lib / "_modidx.py"
    if not idx_file.exists():
        return
    ns: dict = {}
    exec(compile(idx_file.read_text(encoding="utf-8"), str(idx_file), "exec"), ns)
    for mod, syms in ns["d"].get("syms", {}).items():
        for sym, (doc, _py) in syms.items():
            page, _, anchor = doc.partition("#")
            page = page.removesuffix(".html")
            # private names (`_draw`, `Trainer._write`) get no show_doc entry: a link to one goes to its page
            if page in site.pages and anchor and not anchor.split(".")[-1].startswith("_"):
                site.labels[(page, anchor.lower())] = f"sd-{page}-{anchor.lower()}"


def source_page(py: Path, mod: str, site: Site) -> str:
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    text = py.read_text(encoding="utf-8")
    body = highlight(text, PythonLexer(stripnl=False, ensurenl=True), HtmlFormatter(nowrap=True))
    rows = body.split("\n")
    if rows and rows[-1] == "":
        rows.pop()
    # the line number is drawn by CSS from data-n: not part of the text (search, copy)
    lines = [f'<span class="src-line" id="L{i}"><a class="src-lineno" href="#L{i}" data-n="{i}" '
             f'aria-label="line {i}"></a>{row}\n</span>' for i, row in enumerate(rows, 1)]
    rel = py.relative_to(ROOT).as_posix()
    m = re.search(r"File to edit:\s*(\S+?\.ipynb)", text)
    origin = ""
    if m:
        nbname = Path(m.group(1)).name
        if nbname in site.nb_names:
            origin = f" It is generated from [{nbname}](../{site.nb_names[nbname]}.ipynb) by `nbdev_export`."
    title = re.sub(r"([_*\\[\]<>`])", r"\\\1", rel)
    return (f"# {title}\n\n{{.lead}}\nSource of the `{mod}` module.{origin}\n\n"
            f"`````{{raw}} html\n<div class=\"highlight source-listing\" style=\"--digits: {len(str(len(rows)))}\"><pre>{''.join(lines)}</pre></div>\n`````\n")


def stage(cfg: dict) -> Site:
    nbs_path = ROOT / cfg.get("nbs_path", "nbs")
    notebooks = sorted(p for p in nbs_path.glob("*.ipynb") if not p.name.startswith(("_", ".")))
    notebooks.sort(key=lambda p: (p.name != "index.ipynb", p.name))
    if not notebooks or notebooks[0].name != "index.ipynb":
        raise BuildError(f"{nbs_path}/index.ipynb is missing (it is the home page)")
    site = Site(cfg, notebooks)
    collect_labels(site)
    shutil.rmtree(SRC, ignore_errors=True)
    (SRC / "source").mkdir(parents=True)
    # images the notebooks' markdown may reference (`![](images/x.png)`), paths kept
    for f in nbs_path.rglob("*"):
        rel = f.relative_to(nbs_path)
        if f.is_file() and f.suffix.lower() in ASSET_SUFFIXES and not any(p.startswith((".", "_")) for p in rel.parts):
            d = SRC / rel
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, d)
    pages = [nbpage(nb) for nb in notebooks]
    mods = list(site.modules.items())
    toc = "```{toctree}\n:hidden:\n:maxdepth: 2\n\n" + "\n".join(p for p in pages[1:]) + "\n```\n"
    if mods:
        toc += "\n```{toctree}\n:hidden:\n:caption: Source code\n\n" + "\n".join(f"source/{m}" for _, m in mods) + "\n```\n"
    for nb, page in zip(notebooks, pages):
        proc = PROC / nb.name
        if not proc.exists():
            raise BuildError(f"proc_nbs did not write {proc}")
        stage_notebook(proc, site, page, toc if page == "index" else None)
    for rel, mod in mods:
        (SRC / "source" / f"{mod}.md").write_text(source_page(ROOT / rel, mod, site), encoding="utf-8")
    log(f"staged {len(pages)} notebook page(s) and {len(mods)} source page(s) in {SRC.relative_to(ROOT)}")
    return site


# ------------------------------------------------------------- 4. Sphinx
def sphinx() -> None:
    shutil.rmtree(HTML, ignore_errors=True)
    warnings = BUILD / "sphinx-warnings.log"
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-c", str(DOCS), "-d", str(DOCTREES),
           "-W", "--keep-going", "-q", "-w", str(warnings), "-E", str(SRC), str(HTML)]
    log("sphinx-build -W --keep-going")
    res = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if res.returncode:
        text = warnings.read_text(encoding="utf-8") if warnings.exists() else ""
        raise BuildError(f"sphinx-build failed ({res.returncode}); warnings:\n{text}")


# ----------------------------------------------------- 5. copy + MathJax
def mathjax_file_ok(f: Path) -> bool:
    "Only MathJax components free of remote URLs (the menu/speech bundles default to a CDN)."
    if f.suffix not in (".js", ".json"):
        return f.suffix in (".woff", ".woff2")
    return not external_urls(f.read_text(encoding="utf-8", errors="replace"))


_re_css_comment = re.compile(r"/\*.*?\*/", re.S)
_re_js_block_comment = re.compile(r"^[ \t]*/\*.*?\*/[ \t]*$", re.S | re.M)
_re_js_line_comment = re.compile(r"^[ \t]*//[^\n]*$", re.M)
_re_source_map = re.compile(r"^[ \t]*(//# sourceMappingURL=\S+|/\*# sourceMappingURL=\S+? \*/|/\*# sourceMappingURL=\S+?\*/)[ \t]*\n?", re.M)


def scrub_comments(root: Path) -> list[str]:
    """Drop the comments that cite a web page from the theme's/extensions' CSS and JS.

    Sphinx, myst-nb and furo ship assets whose comments say where a colour palette or
    a regex came from.  A comment is never fetched, but the site's rule is simple --
    no URL of another host in any file -- so such comments go; nothing else changes.
    """
    changed = []
    for f in root.rglob("*"):
        if f.suffix not in (".css", ".js") or "mathjax" in f.relative_to(root).parts:
            continue
        text = f.read_text(encoding="utf-8")
        drop = lambda m: "" if external_urls(m.group(0)) else m.group(0)  # noqa: E731
        new = _re_css_comment.sub(drop, text) if f.suffix == ".css" else \
            _re_js_line_comment.sub(drop, _re_js_block_comment.sub(drop, text))
        new = _re_source_map.sub("", new)  # the .map files are not published
        if new != text:
            f.write_text(new, encoding="utf-8")
            changed.append(f.relative_to(root).as_posix())
    return changed


def publish() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    shutil.copytree(HTML, OUT, ignore=shutil.ignore_patterns(".buildinfo", ".doctrees", "_sources", "*.map"))
    scrubbed = scrub_comments(OUT)
    if scrubbed:
        log(f"removed comments citing web pages from {', '.join(sorted(scrubbed))}")
    es5, dst = MATHJAX / "es5", OUT / "_static" / "mathjax"
    skipped = []
    for f in sorted(es5.rglob("*")):
        if not f.is_file():
            continue
        if mathjax_file_ok(f):
            d = dst / f.relative_to(es5)
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, d)
        else:
            skipped.append(f.relative_to(es5).as_posix())
    for need in ("startup.js", "input/tex.js", "output/chtml.js", "a11y/assistive-mml.js"):
        if not (dst / need).exists():
            raise BuildError(f"MathJax component {need} missing from {dst}")
    log(f"copied MathJax to _docs/_static/mathjax ({len(skipped)} files with CDN defaults left out)")


# ------------------------------------------------------------- 6. checks
# XML namespace names are identifiers, never fetched.
NAMESPACE_URIS = re.compile(r"^https?://www\.w3\.org/(1998/Math/MathML|2000/svg|1999/xhtml|1999/xlink|XML/1998/namespace|2000/xmlns/?)$")


def external_urls(text: str) -> list[str]:
    bad = []
    for m in re.finditer(r"\bhttps?://[^\s\"'<>)\\`]+", text):
        url = m.group(0).rstrip(".,;")
        host = urlsplit(url).hostname or ""
        if host in ("localhost", "127.0.0.1") or NAMESPACE_URIS.match(url):
            continue
        bad.append(url)
    return bad


def check_site() -> None:
    from bs4 import BeautifulSoup

    problems, ids = [], {}

    def file_ids(f: Path) -> set:
        if f not in ids:
            soup = BeautifulSoup(f.read_text(encoding="utf-8"), "html.parser")
            ids[f] = {t["id"] for t in soup.find_all(id=True)} | {t["name"] for t in soup.find_all("a", attrs={"name": True})}
        return ids[f]

    files = [f for f in OUT.rglob("*") if f.is_file()]
    for f in files:
        if f.suffix.lower() not in BINARY_SUFFIXES and "LICENSE" not in f.name:  # licence notices stay verbatim
            text = f.read_text(encoding="utf-8", errors="replace")
            for url in external_urls(text):
                problems.append(f"{f.relative_to(OUT)}: reference to another host: {url}")
    for f in OUT.rglob("*.html"):
        soup = BeautifulSoup(f.read_text(encoding="utf-8"), "html.parser")
        for tag in soup.find_all(True):
            for attr in ("href", "src"):
                url = tag.get(attr)
                if not url or url.startswith(("data:", "mailto:", "javascript:")):
                    continue
                if is_external(url):
                    problems.append(f"{f.relative_to(OUT)}: <{tag.name} {attr}={url!r}> leaves the site")
                    continue
                path, _, frag = url.partition("#")
                path = unquote(path.split("?")[0])
                target = (f.parent / path).resolve() if path else f
                if target.is_dir():
                    target = target / "index.html"
                if not target.exists():
                    problems.append(f"{f.relative_to(OUT)}: {attr}={url!r}: no such file")
                elif frag and target.suffix == ".html" and unquote(frag) not in file_ids(target):
                    problems.append(f"{f.relative_to(OUT)}: {attr}={url!r}: no id {frag!r} in {target.relative_to(OUT)}")
    if problems:
        raise BuildError("the built site has problems:\n  " + "\n  ".join(problems))
    log(f"checked {len(files)} files: no external references, every internal link resolves")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip-proc", action="store_true", help="reuse _proc/ from the last run (faster iteration)")
    args = ap.parse_args(argv)
    os.chdir(ROOT)
    t0 = time.perf_counter()
    try:
        cfg = read_settings()
        steps = [("mathjax", ensure_mathjax)]
        if not args.skip_proc:
            steps.append(("proc_nbs", lambda: process_notebooks(cfg)))
        site_box = {}
        steps += [("stage", lambda: site_box.setdefault("site", stage(cfg))), ("sphinx", sphinx),
                  ("publish", publish), ("check", check_site)]
        for name, fn in steps:
            t = time.perf_counter()
            fn()
            log(f"{name}: {time.perf_counter() - t:.1f}s")
        for n in site_box["site"].notices:
            log(f"note: {n}")
    except BuildError as e:
        print(f"[docs] BUILD FAILED: {e}", file=sys.stderr)
        return 1
    log(f"site built in {OUT.relative_to(ROOT)}/ in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
