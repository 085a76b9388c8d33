"""README.md is generated from nbs/index.ipynb and must not drift from it."""
import importlib.util
import re

from conftest import ROOT

spec = importlib.util.spec_from_file_location("readme", ROOT / "docs" / "readme.py")
readme = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme)


def test_readme_matches_index():
    assert (ROOT / "README.md").read_text(encoding="utf-8") == readme.render(), \
        "README.md differs from nbs/index.ipynb: run `python docs/readme.py` and commit"


def test_readme_has_one_setup_and_one_test_command():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for marker in ("setup-command", "test-command", "docs-command"):
        assert text.count(f"<!-- {marker} -->") == 1, marker
    block = re.search(r"<!-- setup-command -->\n```sh\n(.*?)\n```", text, re.S).group(1)
    assert len(block.splitlines()) == 1 and "torch==" in block and '".[dev]"' in block


def test_readme_demo_command_and_images():
    "The main job is one command under its marker, and every image the README shows is a file in the repository."
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.count("<!-- demo-command -->") == 1
    block = re.search(r"<!-- demo-command -->\n```sh\n(.*?)\n```", text, re.S).group(1)
    assert block == "ddpm_nb demo", block
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)
    assert images and all((ROOT / i).is_file() for i in images), images


def test_demo_time_is_stated_alike():
    "README and the demo's --help give the same measured times, with native bf16 and without."
    import contextlib
    import io
    from ddpm_nb.cli import main
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"The demo takes (\S+) minutes on two cores of a CPU with native bf16.*?and (\S+) minutes on a CPU without it", text, re.S)
    assert m, "README does not state the demo's time with and without native bf16"
    for argv in (["--help"], ["demo", "--help"]):
        with contextlib.redirect_stdout(io.StringIO()) as out: assert main(argv) == 0
        assert f"{m[1]} min on two CPU cores with native bf16, {m[2]} without" in out.getvalue(), out.getvalue()
