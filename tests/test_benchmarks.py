"""The benchmarks in benchmarks/ run end to end, and ddpm_nb's samplers give the samples diffusers gives.

`python benchmarks/run_all.py --quick` (with diffusers installed) and `python benchmarks/scale.py --quick` run in a subprocess, as a user runs them. Only what does not depend on the
machine's speed is asserted: the exit status, that every benchmark reported, the markdown file, and the same-outputs
check (ours and diffusers' DDPM, DDIM and DPM-Solver++(2M) from the same x_T and noise agree to float32 rounding). No timing is asserted.
The subprocess runs with one thread (OMP_NUM_THREADS=1), so a busy machine slows it less; the benchmarks themselves
leave torch's thread count at its default.
"""
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT

BENCH = ROOT / "benchmarks"
NAMES = ("sampler", "unet", "precision", "trainer")


def run(*args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)


def test_run_all_quick(tmp_path):
    pytest.importorskip("diffusers")
    out = tmp_path / "results.md"
    res = run(BENCH / "run_all.py", "--quick", "--out", out)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for name in NAMES:
        assert f"== {name}:" in res.stdout, f"the {name} benchmark did not report"
    assert "machine: CPU" in res.stdout and "torch threads" in res.stdout
    diffs = {k: float(v) for k, v in re.findall(r"same outputs: max abs diff, ([^:]+): ([-+0-9.e]+)", res.stdout)}
    assert len(diffs) == 5, res.stdout[-3000:]                     # DDPM with and without clipping, DDIM η = 0 and 1, DPM-Solver++(2M)
    assert max(diffs.values()) < 1e-3, diffs                       # samples are O(1): float32 rounding over 1000 steps
    md = out.read_text()
    assert md.startswith("# ddpm_nb benchmarks") and all(f"| {name} |" in md for name in NAMES)
    assert not list(tmp_path.glob(".*.tmp")), "a temporary file of the atomic write was left behind"


HELP = """
import contextlib, io, runpy, sys
for path in sys.argv[1:]:
    sys.argv, out = [path, "--help"], io.StringIO()
    with contextlib.redirect_stdout(out):
        try: runpy.run_path(path, run_name="__main__")
        except SystemExit as e: assert e.code == 0, (path, e.code)
    assert "--quick" in out.getvalue() and "--out" in out.getvalue(), (path, out.getvalue()[:500])
    print("ok", path)
"""


def test_help():
    "Every script answers --help, with or without diffusers (one interpreter for all six: torch is imported once)."
    scripts = [BENCH / "run_all.py", *(BENCH / f"{name}.py" for name in (*NAMES, "scale"))]
    res = run("-c", HELP, *scripts)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert res.stdout.count("ok ") == len(scripts), res.stdout


def test_scale_quick(tmp_path):
    "The CIFAR-10 throughput benchmark, at smoke size on whatever device there is; needs no diffusers."
    out = tmp_path / "scale.md"
    res = run(BENCH / "scale.py", "--quick", "--out", out)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "parameters: 35,746,307" in res.stdout, res.stdout[-3000:]          # the paper's 35.7M
    gflop = {k: float(v) for k, v in re.findall(r"GFLOP per image, (forward \+ backward|forward)[^:]*: ([0-9.]+)", res.stdout)}
    assert set(gflop) == {"forward", "forward + backward"}, res.stdout[-3000:]
    assert 2.5 < gflop["forward + backward"] / gflop["forward"] < 3.5         # backward costs about two forwards
    for figure in ("images/s", "fraction of the", "ms per denoising step", "800k steps of batch 128 would take", "50 000 samples"):
        assert figure in res.stdout, f"no {figure!r} figure\n{res.stdout[-3000:]}"
    md = out.read_text()
    assert md.startswith("# ddpm_nb benchmarks") and "| scale |" in md
    assert not list(tmp_path.glob(".*.tmp")), "a temporary file of the atomic write was left behind"


def test_recipe_lab_smoke(tmp_path):
    "The recipe lab lists its experiments, and one shortened experiment trains, evaluates and appends its JSON line."
    res = run(BENCH / "recipes.py", "--list")
    assert res.returncode == 0 and "baseline" in res.stdout and "dropout0" in res.stdout, res.stdout + res.stderr
    out = tmp_path / "lab.jsonl"
    res = run(BENCH / "recipes.py", "cosine_lr", "--steps", "20", "--n", "180", "--samplers", "ddim:5", "--seeds", "0",
              "--out", out)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    import json
    row = json.loads(out.read_text().splitlines()[-1])
    assert row["name"] == "cosine_lr" and row["steps"] == 20 and row["fd_copies"]["ddim-5"]["mean"] > 1
    res = run(BENCH / "recipes.py", "no_such_thing")
    assert res.returncode == 2 and "unknown experiment" in res.stderr
