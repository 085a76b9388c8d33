"""Every notebook in nbs/ runs top to bottom, as `nbdev_test` runs it: its check cells are the math tests.

Cells flagged with one of settings.ini's `tst_flags` (notest, slow, cuda) are skipped unless the flag
is listed in DDPM_NB_TEST_FLAGS, e.g. `DDPM_NB_TEST_FLAGS=slow python -m pytest tests`.
Chapter 11's `cuda` cells are the exception: without a GPU they shrink to a smoke size, so on a machine
with no GPU they run by default, and the GPU recipe's commands are tested everywhere.
"""
import pytest
import torch
from conftest import ROOT, force_flags
from nbdev.config import get_config
from nbdev.test import test_nb as run_notebook  # renamed so pytest does not collect it

NOTEBOOKS = sorted(p for p in (ROOT / "nbs").glob("*.ipynb") if not p.name.startswith(("_", ".")))
SMOKE_WITHOUT_GPU = {"11_scale"}   # notebooks whose cuda cells run at a smoke size on a CPU


def test_notebooks_found():
    names = {p.name for p in NOTEBOOKS}
    assert {"index.ipynb", *(f"{n}.ipynb" for n in ("01_forward", "02_schedule", "03_vae", "04_loss", "05_unet", "06_data", "07_train", "08_sample", "09_eval", "10_cli", "11_scale"))} <= names, names


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook(nb):
    skip = get_config(path=ROOT).tst_flags.split()
    force = force_flags() + (["cuda"] if nb.stem in SMOKE_WITHOUT_GPU and not torch.cuda.is_available() else [])
    ok, secs = run_notebook(nb, skip_flags=skip, force_flags=force, showerr=True)
    assert ok, f"{nb.name} failed (traceback in the captured stderr above)"
