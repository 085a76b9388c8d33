"""Every notebook in nbs/ runs top to bottom: its check cells are the math tests.

`test_notebook` runs each notebook as `nbdev_test` does (execnb, in this process). Cells flagged with one of
settings.ini's `tst_flags` (notest, slow, cuda, hub) are skipped unless the flag is listed in DDPM_NB_TEST_FLAGS (never hub, which needs the network),
e.g. `DDPM_NB_TEST_FLAGS=slow python -m pytest tests`. On a machine without a GPU the `cuda` cells always run:
each starts with `has_cuda(...)`, which prints a line and skips the rest (chapter 11's shrink to a smoke size
instead), so a cell that demands a GPU fails the default run, as it would stop a reader's Run All.

`test_run_all` (flagged slow, like the cells it adds) runs each notebook as JupyterLab's Run All does: a real
kernel through nbclient, every cell, no flag honoured, in a copy of the repository. Both honour the notebooks'
`FULL` switch, which DDPM_NB_FULL=1 turns on (the full-size runs whose outputs the docs show).
"""
import json
import re
import shutil
import time

import pytest
import torch
from conftest import ROOT, force_flags
from nbdev.config import get_config
from nbdev.test import test_nb as run_notebook  # renamed so pytest does not collect it

NOTEBOOKS = sorted(p for p in (ROOT / "nbs").glob("*.ipynb") if not p.name.startswith(("_", ".")))
CHAPTERS = [p for p in NOTEBOOKS if re.match(r"\d\d[a-z]?_", p.name)] + [ROOT / "nbs" / "reliability.ipynb"]
SMOKE_WITHOUT_GPU = {"11_scale"}   # notebooks whose cuda cells run at a smoke size on a CPU instead of skipping
RUN_ALL_LIMIT = 10 * 60            # seconds: what a chapter may state for Run All on two CPU cores


def cells(nb):
    return json.loads(nb.read_text(encoding="utf-8"))["cells"]


def flags(source: str) -> set[str]:
    return set(re.findall(r"^#\|\s*(\w+)\s*$", source, re.M))


def test_notebooks_found():
    names = {p.name for p in NOTEBOOKS}
    assert {"index.ipynb", *(f"{n}.ipynb" for n in ("01_forward", "02_schedule", "03_vae", "04_loss", "05_unet", "05a_ckpt", "06_data", "07_train", "08_sample", "08a_solvers", "09_eval", "10_cli", "11_scale", "12_pretrained"))} <= names, names


CELL_LINES = 40   # the longest code cell a reader meets


def test_code_cells_are_short():
    "No code cell of any notebook exceeds CELL_LINES lines: longer code is split, with prose saying what comes next."
    long = [f"{nb.name} cell {i}: {len(''.join(c['source']).splitlines())} lines"
            for nb in NOTEBOOKS for i, c in enumerate(cells(nb))
            if c["cell_type"] == "code" and len("".join(c["source"]).splitlines()) > CELL_LINES]
    assert not long, long


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook(nb):
    skip = get_config(path=ROOT).tst_flags.split()
    force = force_flags() + (["cuda"] if not torch.cuda.is_available() else [])   # without a GPU, cuda cells skip themselves
    ok, secs = run_notebook(nb, skip_flags=skip, force_flags=force, showerr=True)
    assert ok, f"{nb.name} failed (traceback in the captured stderr above)"


def test_gpu_cells_skip_politely():
    "A `cuda` cell starts with `if has_cuda(...)`, a `hub` cell runs behind `if has_hub(...)`; no cell anywhere asserts that a GPU is there."
    bad = []
    for nb in NOTEBOOKS:
        for i, c in enumerate(cells(nb)):
            src = "".join(c["source"])
            if re.search(r"assert[^\n]*torch\.cuda\.is_available\(\)", src): bad.append(f"{nb.name} cell {i}: asserts a GPU")
            body = [l for l in src.splitlines() if not l.startswith("#|")]
            if "cuda" in flags(src) and nb.stem not in SMOKE_WITHOUT_GPU and not (body and body[0].startswith("if has_cuda(")):
                bad.append(f"{nb.name} cell {i}: a cuda cell that does not start with `if has_cuda(...)`")
            if "hub" in flags(src) and not any(l.startswith("if has_hub(") for l in body):
                bad.append(f"{nb.name} cell {i}: a hub cell without `if has_hub(...)`, which skips it offline")
    assert not bad, bad


def stated_run_all(nb) -> float:
    "The Run All time a chapter states at its top, in seconds."
    text = "".join("".join(c["source"]) for c in cells(nb)[:6] if c["cell_type"] == "markdown")
    m = re.search(r"\*Run All: about (\d+) (seconds|minutes?) on two CPU cores", text)
    assert m, f"{nb.name} does not say at its top how long Run All takes"
    return int(m.group(1)) * (60 if m.group(2).startswith("minute") else 1)


@pytest.mark.parametrize("nb", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_run_all_time_is_stated(nb):
    "Each chapter states how long Run All takes (within the 10 minutes allowed); a chapter with long runs has the FULL switch, off by default."
    assert stated_run_all(nb) <= RUN_ALL_LIMIT
    sources = ["".join(c["source"]) for c in cells(nb) if c["cell_type"] == "code"]
    switch = [s for s in sources if s.startswith("FULL = ")]
    uses = any(re.search(r"\bFULL\b", s) for s in sources if not s.startswith("FULL = "))
    assert len(switch) == (1 if uses else 0), f"{nb.name}: FULL is defined {len(switch)} times and used: {uses}"
    if switch: assert switch[0].startswith('FULL = os.environ.get("DDPM_NB_FULL") == "1"'), switch[0]


@pytest.mark.slow
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_run_all(nb, tmp_path, monkeypatch):
    "JupyterLab's Run All on this machine: every cell in order, in a kernel, in a copy of the repository; the time is printed beside the stated one."
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")                       # the hub cells skip themselves: no test fetches from the network
    import nbformat
    from nbclient import NotebookClient
    for part in ("nbs", "tests", "benchmarks", "ddpm_nb"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("runs", "__pycache__", ".ipynb_checkpoints"))
    shutil.copy(ROOT / "settings.ini", tmp_path)
    book = nbformat.read(tmp_path / "nbs" / nb.name, as_version=4)
    t0 = time.time()
    NotebookClient(book, timeout=RUN_ALL_LIMIT, kernel_name="python3", resources={"metadata": {"path": str(tmp_path / "nbs")}}).execute()
    took = time.time() - t0
    stated = stated_run_all(nb) if nb in CHAPTERS else None
    print(f"{nb.name}: Run All took {took:.0f} s" + (f" (stated: about {stated:.0f} s)" if stated else ""))
