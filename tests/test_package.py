"""What a user of the installed package does: import it in a fresh interpreter, build the wheel,
install it into a clean virtual environment without nbdev, and use it from outside the repository."""
import configparser
import re
import subprocess
import sys
import textwrap
import zipfile

import pytest
import torch
from conftest import ROOT

MODULES = ["ddpm_nb"] + sorted(f"ddpm_nb.{p.stem}" for p in (ROOT / "ddpm_nb").glob("*.py") if not p.stem.startswith("_"))
USE = textwrap.dedent("""
    import sys, torch, ddpm_nb, ddpm_nb.forward, ddpm_nb.schedule, ddpm_nb.elbo, ddpm_nb.loss
    from ddpm_nb.schedule import Schedule
    from ddpm_nb.forward import q_sample
    from ddpm_nb.elbo import nll_bits_per_dim
    from ddpm_nb.loss import ddpm_loss
    s = Schedule.from_name("cosine", n_steps=100)
    x0 = torch.zeros(2, 1, 4, 4)
    x_t = q_sample(x0, torch.tensor([0, 99]), torch.ones_like(x0), s)
    assert torch.allclose(x_t[1], s.sqrt_one_minus_alpha_bar[99].expand(1, 4, 4))
    class Net(torch.nn.Module):
        def __init__(self): super().__init__(); self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
        def forward(self, x_t, t): return self.conv(x_t)
    net, x0 = Net(), torch.randint(0, 17, (4, 1, 8, 8)).float() / 8 - 1      # digits-like: 17 grey levels
    ddpm_loss(net, x0, s, generator=torch.Generator().manual_seed(0)).backward()
    assert all(p.grad is not None for p in net.parameters())
    r = nll_bits_per_dim(net, x0, s, n_levels=17, generator=torch.Generator().manual_seed(0))
    assert r.n == 4 and r.total > 0 and r.terms.shape == (101,), r
    print(ddpm_nb.__version__, ddpm_nb.__file__)
    print("dev-only modules imported:", sorted(m for m in ("nbdev", "fastcore", "execnb") if m in sys.modules))
""")


def settings():
    cfg = configparser.ConfigParser(delimiters=["="])
    cfg.read(ROOT / "settings.ini", encoding="utf-8")
    return cfg["DEFAULT"]


def test_version_matches_settings():
    import ddpm_nb
    assert ddpm_nb.__version__ == settings()["version"]


def test_import_needs_no_dev_tools(tmp_path):
    "Importing and using the library loads neither nbdev nor fastcore."
    out = subprocess.run([sys.executable, "-c", USE], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert "dev-only modules imported: []" in out, out


def test_every_module_imports_without_dev_tools(tmp_path):
    "Each exported module imports in a fresh interpreter, and none of them pulls in nbdev or fastcore."
    code = f"import sys; import {', '.join(MODULES)}; " \
           "print(sorted(m for m in ('nbdev', 'fastcore', 'execnb') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
    assert {f"ddpm_nb.{m}" for m in ("forward", "schedule", "elbo", "loss", "unet", "data", "train", "sample", "cli")} <= set(MODULES), MODULES


def test_runtime_requirements_exclude_nbdev():
    req = settings()["requirements"].split()
    assert not any(r.startswith(("nbdev", "fastcore", "execnb", "ghapi", "jupyter")) for r in req), req
    assert any(r.startswith("nbdev") for r in settings()["dev_requirements"].split())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)], check=True)
    (whl,) = out.glob("ddpm_nb-*.whl")
    return whl


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for m in ("ddpm_nb/__init__.py", *(f"ddpm_nb/{n}.py" for n in ("forward", "schedule", "elbo", "loss", "unet", "data", "train", "sample", "cli")), "ddpm_nb/_modidx.py"):
        assert m in names, m
    assert not any(n.startswith(("nbs/", "tests/", "docs/")) for n in names)
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    reqs = [l for l in meta.splitlines() if l.startswith("Requires-Dist:")]
    assert all("extra ==" in l for l in reqs if "nbdev" in l or "fastcore" in l), reqs
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "ddpm_nb = ddpm_nb.cli:main" in entry_points, entry_points      # the `ddpm_nb` command


def test_wheel_in_clean_venv(wheel, tmp_path):
    "The wheel installs into a fresh venv (with this machine's torch build) and imports from outside the repo, without nbdev."
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    # pin the torch build already installed here, so a CPU machine does not fetch a CUDA build
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel), f"torch=={torch.__version__}"], check=True)
    run = subprocess.run([str(py), "-c", USE], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert str(venv) in run.stdout and "dev-only modules imported: []" in run.stdout, run.stdout
    cli = subprocess.run([str(venv / "bin" / "ddpm_nb"), "--version"], cwd=tmp_path, capture_output=True, text=True)
    assert cli.returncode == 0 and cli.stdout.strip() == f"ddpm_nb {settings()['version']}", (cli.stdout, cli.stderr)
    nbdev = subprocess.run([str(py), "-c", "import nbdev"], cwd=tmp_path, capture_output=True)
    assert nbdev.returncode != 0, "nbdev must not be installed by the runtime requirements"


def test_pypi_description(wheel, tmp_path):
    """What PyPI shows renders (twine check), its links and images are absolute (relative ones do not resolve there), the
    chapters point at their docs pages, and the development status is settings.ini's."""
    import re
    meta = zipfile.ZipFile(wheel).read(next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith("METADATA"))).decode()
    head, description = meta.split("\n\n", 1)
    status = int(settings()["status"])
    assert f"Classifier: Development Status :: {status} - " in head, [l for l in head.splitlines() if "Status" in l]
    targets = re.findall(r"\]\(([^)\s]+)\)", description)
    assert targets and all(t.startswith("https://") for t in targets), [t for t in targets if not t.startswith("https://")]
    docs = f"{settings()['doc_host']}{settings()['doc_baseurl']}/"
    pages = {t[len(docs):] for t in targets if t.startswith(docs)}
    assert {"forward.html", "train.html", "cli.html", "reliability.html"} <= pages, pages
    if (ROOT / "_docs").is_dir():                                       # the built site has each page linked to
        assert all((ROOT / "_docs" / p).exists() for p in pages), sorted(p for p in pages if not (ROOT / "_docs" / p).exists())
    images = [t for t in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", description)]
    assert images and all(t.startswith("https://raw.githubusercontent.com/") for t in images), images
    for t in images: assert (ROOT / t.split(f"/{settings()['branch']}/", 1)[1]).exists(), t   # the file is in the repository
    check = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(wheel)], capture_output=True, text=True)
    assert check.returncode == 0 and "PASSED" in check.stdout, check.stdout + check.stderr


def _module_map():
    "The table 'The package at a glance' on the home page: [(module, imports listed, of which in parentheses)]."
    import json
    import re
    cells = json.loads((ROOT / "nbs" / "index.ipynb").read_text(encoding="utf-8"))["cells"]
    text = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    section = text.split("## The package at a glance", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        m = re.match(r"\| `(\w+)` \|[^|]*\|[^|]*\| (.*) \|$", line)
        if m:
            cell = m[2]
            lazy = set(re.findall(r"\b\w+\b", " ".join(re.findall(r"\(([^)]*)\)", cell))))
            rows.append((m[1], cell, lazy))
    return rows


def _imports(module):
    "The ddpm_nb modules that ddpm_nb/<module>.py imports: (at the top, inside functions)."
    import ast
    tree = ast.parse((ROOT / "ddpm_nb" / f"{module}.py").read_text(encoding="utf-8"))
    top, inner = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").startswith("ddpm_nb.")):
            name = (node.module or "").removeprefix("ddpm_nb.")
            if name:
                (top if node in tree.body else inner).add(name)
    return top, inner - top


def test_module_map_matches_the_imports():
    "Every module of the package is in the home page's table, and imports only from the rows above it."
    rows = _module_map()
    names = [r[0] for r in rows]
    modules = sorted(p.stem for p in (ROOT / "ddpm_nb").glob("*.py") if not p.stem.startswith("_"))
    assert sorted(names) == modules, (names, modules)
    for i, (module, cell, lazy) in enumerate(rows):
        above = set(names[:i])
        listed = above if cell == "every module above" else {n for n in names if re.search(rf"\b{n}\b", cell)}
        top, inner = _imports(module)
        assert top <= listed - lazy, f"{module} imports {sorted(top - (listed - lazy))}, not listed for it"
        assert top <= above, f"{module} imports {sorted(top - above)}, a module below it in the table"
        assert inner <= listed, f"{module} imports {sorted(inner - listed)} inside a function, not listed"
        assert listed - lazy == top or cell == "every module above", \
            f"{module}: the table lists {sorted(listed - lazy)}, the code imports {sorted(top)}"
