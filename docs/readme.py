"""Generate README.md from nbs/index.ipynb (the home page), or check that they agree.

    python docs/readme.py          # write README.md
    python docs/readme.py --check  # exit 1 if README.md differs from what index.ipynb gives

Markdown cells are copied; code cells become ```python blocks, their printed and displayed
text outputs ``` blocks; cells marked `#| hide` are left out, and `#|` directive lines removed.
Links to sibling notebooks (`01_forward.ipynb`) and to images in nbs/images/ are pointed at nbs/.
"""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = "<!-- Generated from nbs/index.ipynb by docs/readme.py: edit the notebook, not this file. -->\n\n"


def _directives(src: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^#\|\s*([\w-]+)", src, re.M)}


def _text_outputs(cell) -> list[str]:
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream" and o.get("name") == "stdout":
            out.append("".join(o["text"]))
        elif o.get("output_type") in ("execute_result", "display_data"):
            data = o.get("data", {})
            if "text/markdown" in data: out.append("".join(data["text/markdown"]))
            elif "text/plain" in data: out.append("".join(data["text/plain"]))
    return out


def render(nb_path: Path = ROOT / "nbs" / "index.ipynb") -> str:
    "README.md's text for the notebook at `nb_path`."
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    parts = []
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            parts.append(re.sub(r"\]\((?!https?:|#)([\w-]+\.ipynb|images/)", r"](nbs/\1", src).strip())
        elif cell["cell_type"] == "code":
            if _directives(src) & {"hide", "exporti"}: continue
            code = "\n".join(l for l in src.splitlines() if not l.startswith("#|")).strip()
            if code: parts.append(f"```python\n{code}\n```")
            parts += [f"```\n{t.rstrip()}\n```" for t in _text_outputs(cell) if t.strip()]
    return HEADER + "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    text, readme = render(), ROOT / "README.md"
    if "--check" in sys.argv:
        same = readme.exists() and readme.read_text(encoding="utf-8") == text
        print("README.md is up to date" if same else "README.md differs from nbs/index.ipynb: run python docs/readme.py")
        sys.exit(0 if same else 1)
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(readme)
    print(f"wrote {readme}")
