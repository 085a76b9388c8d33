"""Sphinx configuration of the ddpm_nb documentation site.

Not run by hand: `python docs/build.py` stages the processed notebooks into
docs/_build/src and calls `sphinx-build -c docs docs/_build/src docs/_build/html`.
Everything here must keep the site self-contained: no CDN, no external links.
"""
from configparser import ConfigParser
from pathlib import Path

_root = Path(__file__).resolve().parent.parent
_ini = ConfigParser(delimiters=["="])
_ini.read(_root / "settings.ini", encoding="utf-8")
_cfg = _ini["DEFAULT"]

project = _cfg["lib_name"]
author = _cfg["author"]
copyright = _cfg["copyright"]
release = version = _cfg["version"]
language = "en"

extensions = ["myst_nb", "sphinx.ext.mathjax"]

root_doc = "index"  # the staged index.ipynb (home page)
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
templates_path = [str(Path(__file__).parent / "_templates")]
html_static_path = [str(Path(__file__).parent / "_static")]
html_css_files = ["ddpm_nb.css"]

# --- notebooks: show the committed outputs, never execute -------------------
nb_execution_mode = "off"
nb_output_stderr = "show"
nb_merge_streams = True
nb_render_markdown_format = "myst"  # Markdown(...) outputs get $math$ like the cells
nb_ipywidgets_js = {}  # widget outputs would pull require.js and the widget manager from a CDN
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "attrs_block"]
myst_dmath_double_inline = True  # `$$…$$` inside a paragraph is display math too
myst_heading_anchors = 3  # `[text](page.ipynb#some-heading)` resolves
myst_update_mathjax = True

# --- math: MathJax 3 from the site's own _static (docs/build.py copies it) ----
# startup.js + the tex input and CHTML output components only: the combined
# tex-chtml.js bundles the menu and speech engine, which carry CDN defaults.
mathjax_path = "mathjax/startup.js"
mathjax3_config = {
    "loader": {"load": ["input/tex", "output/chtml", "a11y/assistive-mml", "[tex]/textmacros"]},
    # textmacros: `\_` and friends inside \text{}/\texttt{}, as in JupyterLab and Quarto
    "tex": {"packages": {"[+]": ["textmacros"]}},
    "options": {"enableMenu": False},
}

# --- theme -------------------------------------------------------------------
html_theme = "furo"
html_title = project
html_show_sphinx = False
html_show_sourcelink = False  # the notebooks' sources are not copied into the site
html_copy_source = False
html_use_index = False  # no API objects: the general index would be empty
html_last_updated_fmt = None
html_theme_options = {
    "footer_icons": [],
    "top_of_page_buttons": [],
    "navigation_with_keys": True,
}
pygments_style = "default"
pygments_dark_style = "monokai"

suppress_warnings = ["myst.header"]  # notebooks may start at ### inside show_doc output


def setup(app):
    # MathJax on every page, not only on pages with math in the body: page titles with
    # math appear in every page's sidebar.
    app.set_html_assets_policy("always")
