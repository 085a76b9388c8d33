"""The `ddpm_nb` command line as a user runs it: the installed console script, in a subprocess, at tiny sizes.

Falls back to `python -m ddpm_nb.cli` when the script is not installed next to this interpreter.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import terminal_signals

_SCRIPT = Path(sys.executable).parent / "ddpm_nb"
CMD = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "ddpm_nb.cli"]
TINY = ["--batch-size", "16", "--lr", "1e-3", "--warmup", "2", "--device", "cpu", "--no-progress"]


def start(*args, cwd):
    "Start `ddpm_nb args` in `cwd`, one thread per process: the tests run several at once on few cores."
    return subprocess.Popen([*CMD, *map(str, args)], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=terminal_signals if os.name == "posix" else None)


def finish(p, expect=0, timeout=240):
    "Wait for `p` (killed after `timeout` s); check its exit status and that no traceback reached the user. Returns (stdout, stderr)."
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill(); p.communicate()
        raise
    assert "Traceback" not in err, err
    assert p.returncode == expect, f"exit status {p.returncode}, expected {expect}\n{p.args}\n{out}\n{err}"
    return out, err


def ddpm_nb(*args, cwd, expect=0):
    "Run `ddpm_nb args` in `cwd`: (stdout, stderr)."
    return finish(start(*args, cwd=cwd), expect)


def in_parallel(cases, cwd):
    "Run several short commands at once: [(args, expected exit status)] -> [(stdout, stderr)]."
    procs = [start(*args, cwd=cwd) for args, _ in cases]
    return [finish(p, expect) for p, (_, expect) in zip(procs, cases)]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def runs(work):
    "Two tiny runs, trained at the same time: class-conditional digits (U-Net) and moons (the default MLP)."
    digits = start("train", "--data", "digits", "--out", "runs/digits", "--conditional", "--steps", 4, "--ckpt-every", 2, *TINY, cwd=work)
    moons = start("train", "--data", "moons", "--out", "runs/moons", "--steps", 4, *TINY, cwd=work)
    out_digits, _ = finish(digits)
    out_moons, _ = finish(moons)
    return {"digits": work / "runs/digits", "moons": work / "runs/moons", "out_digits": out_digits, "out_moons": out_moons}


def state(ckpt):
    return json.loads((Path(ckpt) / "state.json").read_text())


def test_help_everywhere(work):
    outs = in_parallel([(["--help"], 0), *(([cmd, "--help"], 0) for cmd in ("train", "sample", "eval", "demo"))], work)
    top = outs[0][0]
    assert top.startswith("usage: ddpm_nb") and all(c in top for c in ("train", "sample", "eval", "demo"))
    for (out, _), cmd in zip(outs[1:], ("train", "sample", "eval", "demo")):
        assert out.startswith(f"usage: ddpm_nb {cmd}") and "(default: " in out and "examples:" in out, out
    assert "--batch-size N" in outs[1][0] and "(default: 128)" in outs[1][0]
    sample_help = " ".join(outs[2][0].split())                           # argparse wraps lines
    assert "--sampler {ddpm,ddim,dpm++2m,heun}" in sample_help and "default: ddpm for 2-D points, ddim for images" in sample_help
    assert "--spacing {linspace,leading,trailing,karras}" in sample_help and "dpm++2m: karras" in sample_help


def test_train_writes_checkpoints(runs):
    digits, moons = runs["digits"], runs["moons"]
    assert sorted(p.name for p in digits.glob("ckpt-*")) == ["ckpt-00000002", "ckpt-00000004"]
    cfg = state(digits / "ckpt-00000004")["config"]
    assert (cfg["model"], cfg["conditional"], cfg["batch_size"], cfg["lr"], cfg["steps"]) == ("tiny", True, 16, 1e-3, 4)
    assert "trained to step 4" in runs["out_digits"] and "ckpt-00000004" in runs["out_digits"]
    meta = state(moons / "ckpt-00000004")
    assert meta["config"]["model"] == "mlp" and meta["model"]["kind"] == "mlp"     # the default network for 2-D points


def test_resume_and_one_run_per_folder(runs, work):
    run = work / "resumed"
    shutil.copytree(runs["digits"], run)
    refused = start("train", "--data", "digits", "--out", run, "--steps", 6, *TINY, cwd=work)     # the folder holds a run
    out, _ = ddpm_nb("train", "--out", run, "--resume", "--steps", 6, "--no-progress", cwd=work)
    _, err = finish(refused, expect=1)
    assert "already holds a run (last checkpoint ckpt-00000004): add --resume" in err, err
    assert "steps 4 to 6" in out and state(run / "ckpt-00000006")["step"] == 6
    assert state(run / "ckpt-00000006")["config"]["out"] == str(run)
    out, _ = ddpm_nb("train", "--out", run, "--resume", cwd=work)
    assert "nothing to do" in out


def test_sample_images(runs, work):
    ddpm_out, ddim_out = in_parallel([
        (["sample", "--ckpt", runs["digits"], "--sampler", "ddpm", "--steps", 10, "--n", 20, "--out", "ddpm.png", "--no-progress"], 0),
        (["sample", "--ckpt", runs["digits"] / "ckpt-00000002", "--label", 7, "--guidance", 3, "--n", 12, "--eta", 0.5,
          "--out", "sevens.png", "--npz", "out/sevens.npz", "--no-progress"], 0)], work)
    assert "DDPM 10 steps, one row per class" in ddpm_out[0] and "(step 4)" in ddpm_out[0]
    assert "DDIM 50 steps, eta 0.5, label 7, guidance 3" in ddim_out[0] and "(step 2)" in ddim_out[0]
    assert (work / "ddpm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (work / "sevens.png").exists()
    with np.load(work / "out/sevens.npz") as f:
        x, y = f["x"], f["y"]
    assert x.shape == (12, 1, 8, 8) and x.dtype == np.float32 and x.min() >= -1 and x.max() <= 1
    assert (y == 7).all() and y.shape == (12,)
    assert not list((work / "out").glob(".*"))                          # the temporary file was renamed into place


def test_sample_points(runs, work):
    out, _ = ddpm_nb("sample", "--ckpt", runs["moons"], "--n", 300, "--out", "moons.png", "--npz", "moons.npz", "--no-progress", cwd=work)
    assert "wrote moons.png" in out and (work / "moons.png").read_bytes()[:4] == b"\x89PNG"
    assert "DDPM 50 steps" in out, out                                  # the default sampler for points (chapter 8a)
    with np.load(work / "moons.npz") as f:
        assert f["x"].shape == (300, 2) and "y" not in f.files         # unconditional: no labels


def test_eval(runs, work):
    (text, _), (js, _) = in_parallel([
        (["eval", "--ckpt", runs["digits"], "--n", 180, "--steps", 5, "--device", "cpu", "--no-progress"], 0),   # 180: the fewest for the digits
        (["eval", "--ckpt", runs["moons"], "--n", 200, "--steps", 5, "--json", "--device", "cpu", "--no-progress"], 0)], work)
    assert text.startswith("digits: 180 samples, DDIM 5 steps"), text
    report = json.loads(js)
    assert report["data"] == "moons" and report["settings"]["n"] == 200 and report["metrics"], report
    assert report["settings"]["sampler"] == "ddpm" and report["settings"]["run"] == "DDPM 5 steps", report["settings"]


def test_demo_tiny(work):
    out, _ = ddpm_nb("demo", "--out", "demo", "--steps", 4, "--sample-steps", 5, "--eval-n", 180, "--device", "cpu", "--no-progress", cwd=work)
    grid = work / "demo" / "samples.png"
    assert grid.read_bytes()[:4] == b"\x89PNG" and "samples: demo/samples.png" in out, out
    assert state(work / "demo" / "ckpt-00000004")["config"]["conditional"] is True
    assert "metrics of demo/ckpt-00000004 (180 samples, DDIM 5 steps, no guidance)" in out, out


def test_bad_arguments_exit_2(work):
    cases = [["frobnicate"], ["train", "--data", "digits", "--out", "x", "--steps", "ten"], ["sample", "--ckpt", "x", "--sampler", "euler"],
             ["sample", "--ckpt", "x"], ["train", "--data", "digits", "--dry-run"], ["sample", "--ckpt", "x", "--out", "x.npz"],
             ["sample", "--ckpt", "x", "--spacing", "cosine"]]
    outs = in_parallel([(c, 2) for c in cases], work)
    for (out, err), c in zip(outs, cases):                               # the short usage line and the error, not every option
        assert err.startswith("usage: ddpm_nb") and err.count("\n") == 2 and "error:" in err.split("\n")[1] and not out, (c, err)
    assert outs[1][1].startswith("usage: ddpm_nb train [options]   (ddpm_nb train --help lists every option)\n"), outs[1][1]
    assert outs[3][1].startswith("usage: ddpm_nb sample --ckpt DIR [options]"), outs[3][1]
    assert "argument --steps: expected an integer >= 1, got 'ten'" in outs[1][1]
    assert "invalid choice: 'euler'" in outs[2][1]
    assert "--out DIR is required" in outs[4][1]
    assert "--out writes a png file: give a name ending in .png, got 'x.npz'" in outs[5][1]
    assert "argument --spacing: invalid choice: 'cosine'" in outs[6][1]


def test_missing_and_broken_checkpoints_exit_1(runs, work):
    broken = work / "broken"
    shutil.copytree(runs["digits"] / "ckpt-00000004", broken)
    (broken / "ema.safetensors").write_bytes((broken / "ema.safetensors").read_bytes()[:300])
    damaged = work / "damaged"                                          # a run whose last checkpoint has a damaged state.json
    shutil.copytree(runs["digits"], damaged)
    (damaged / "ckpt-00000004" / "state.json").write_text("{not json")
    outs = in_parallel([(["sample", "--ckpt", "nowhere", "--out", "x.png"], 1), (["eval", "--ckpt", "nowhere"], 1),
                        (["sample", "--ckpt", broken, "--out", "x.png"], 1), (["train", "--out", damaged, "--resume"], 1)], work)
    for out, err in outs:
        assert err.startswith("ddpm_nb: error: ") and err.count("\n") == 1 and not out, err
    assert outs[0][1] == "ddpm_nb: error: no checkpoint at nowhere\n"
    assert "no checkpoint at nowhere" in outs[1][1]
    assert f"{broken}/ema.safetensors is damaged: 300 bytes, but" in outs[2][1]
    assert f"{damaged}/ckpt-00000004/state.json is not valid JSON" in outs[3][1]
    assert not (work / "x.png").exists()


def test_warnings_are_one_line(work):
    "A run shorter than its warm-up trains, and says why its samples will be noise, in one line (no Python warning header)."
    out, err = ddpm_nb("train", "--data", "moons", "--out", "runs/short", "--steps", 3, "--batch-size", 16, "--device", "cpu", "--no-progress", cwd=work)
    assert err == ("ddpm_nb: warning: the warm-up (500 steps) is longer than the run (3 steps): the learning rate never reaches its peak, 0.0002, "
                   "only 1.2e-06 at the last step, and so short a run usually samples noise; make the warm-up a tenth of the run or less (0 steps)\n"), err
    assert "trained to step 3" in out


def write_images(folder, sizes, mode="L"):
    "PNG files of random pixels, one per (width, height), in `folder` (created)."
    from PIL import Image
    folder.mkdir(parents=True)
    for i, (w, h) in enumerate(sizes):
        a = np.random.default_rng(i).integers(0, 256, (h, w) if mode == "L" else (h, w, 3), dtype=np.uint8)
        Image.fromarray(a).convert(mode if i % 2 else "L").save(folder / f"{i:03d}.png")


def test_image_folder_options_end_to_end(work):
    """A folder of grey and colour images in several sizes: the error names --image-size, then --channels; with both the run
    trains, samples and evaluates, evaluation reading the folder the way training did. A folder named like a built-in dataset
    is an error that says how to name each."""
    write_images(work / "photos", [(12, 10), (9, 9), (10, 14), (16, 16)] * 10, mode="RGB")
    args = ["train", "--data", "photos", "--out", "runs/photos", "--steps", 2, *TINY]
    (_, size_err), = in_parallel([(args, 1)], work)
    assert size_err.startswith("ddpm_nb: error: images differ in size: ") and size_err.endswith(
        "; pass --image-size N to crop every image to a square and resize it to N×N\n"), size_err
    _, chan_err = ddpm_nb(*args, "--image-size", 8, cwd=work, expect=1)
    assert "images differ in channels" in chan_err and chan_err.endswith("; pass --channels 1 (grey) or --channels 3 (RGB) to convert every image\n"), chan_err
    out, _ = ddpm_nb(*args, "--image-size", 8, "--channels", 3, cwd=work)
    cfg = state(work / "runs/photos/ckpt-00000002")["config"]
    assert (cfg["image_size"], cfg["channels"]) == (8, 3) and "(40 items of shape (3, 8, 8))" in out, out
    (sampled, _), (evaluated, _) = in_parallel([
        (["sample", "--ckpt", "runs/photos", "--n", 4, "--steps", 3, "--npz", "photos.npz", "--no-progress"], 0),
        (["eval", "--ckpt", "runs/photos", "--n", 20, "--steps", 3, "--device", "cpu", "--no-progress"], 0)], work)
    with np.load(work / "photos.npz") as f: assert f["x"].shape == (4, 3, 8, 8)
    assert evaluated.startswith("photos: 20 samples") and "Verdict: the samples are" in evaluated, evaluated
    (work / "moons").mkdir()                                             # a folder named like a built-in dataset
    _, err = ddpm_nb("train", "--data", "moons", "--out", "runs/which", "--steps", 2, *TINY, cwd=work, expect=1)
    assert "say which, ./moons for the folder or builtin:moons for the built-in dataset" in err, err
    ddpm_nb("train", "--data", "builtin:moons", "--out", "runs/which", "--steps", 2, *TINY, cwd=work)


def test_python_m(work):
    r = subprocess.run([sys.executable, "-m", "ddpm_nb.cli", "--version"], cwd=work, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("ddpm_nb "), r
