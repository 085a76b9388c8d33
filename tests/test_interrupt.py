"""A training run killed with SIGKILL, again and again, loses nothing it had saved and ends exactly as an uninterrupted run.

What is guaranteed (CPU, fixed seed, one thread per process):

* After every kill, wherever it lands (in the imports, between steps, in the middle of writing a checkpoint, while old
  checkpoints are deleted), the run folder holds a loadable latest checkpoint as soon as one had ever been completed:
  `latest_checkpoint` finds it, `load_model` loads it, `Trainer.resume` restores from it, and its step never goes back.
* `list_checkpoints` never lists an incomplete checkpoint: every listed one has all its files.
* Resuming after the kills finishes the run with weights, EMA weights and loss history bit-identical to a run that was
  never interrupted.
* What interrupted processes leave behind (temporary folders `.ckpt-XXXXXXXX.tmp-PID` of cut-short writes, checkpoints
  they were deleting) is gone once a later run has saved: the folder holds the newest `keep` checkpoints, nothing else.

How: one small training script (a tiny U-Net on 128 digits, a checkpoint after every step, so that about half of the
time goes into writing checkpoints) is started on a run folder again and again: a new run while the folder holds no
complete checkpoint, else a resumed one. A process is killed

* after a random delay (seeded), drawn from the start of the process (the ~2-3 s of imports and set-up included)
  to the end of a step some way ahead of the last one saved;
* while a checkpoint is being written: the folder is polled every 0.5 ms and the process is killed a random fraction of
  a write's duration after the temporary folder of a chosen step's checkpoint appears, the chosen steps spread over
  the run (retried until the kill lands mid-write; the test fails if none did, so it cannot pass without that case);
* while a checkpoint is being deleted (polled for in the same way): the oldest one, which keeping `keep` removes;
  and a finished run started again (as `ddpm_nb train --resume` does) is watched for any change to its last checkpoint,
  which it must leave alone.

The folder is checked after each kill. In the first test the script then runs to the end and its last checkpoint is
compared with that of the same script run once without interruption in another folder.
"""
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import terminal_signals
from safetensors.torch import load_file, save_file

from ddpm_nb.data import ArrayDataset, load_digits
from ddpm_nb.train import Trainer, latest_checkpoint, list_checkpoints, load_model

STEPS = 30                                   # optimiser steps of the run that is killed at random; a checkpoint after each
KEEP = 2                                     # checkpoints kept
KILLS = 6                                    # kills of each kind: at random, and mid-write
TRIES = 3                                    # attempts at a kill aimed at a moment before giving up on that one
TIMEOUT = 120                                # seconds any one process may take before the test fails
POLL = 0.0005                                # seconds between looks at the run folder
CKPT_FILES = {"model.safetensors", "ema.safetensors", "state.safetensors", "state.json"}

CHILD = """
import sys, time
from safetensors.torch import load_file
from ddpm_nb.data import ArrayDataset
from ddpm_nb.train import Trainer, TrainConfig, latest_checkpoint
out, data_file, steps, keep = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
d = load_file(data_file)
data = ArrayDataset(d["x"], d["labels"], n_levels=17, name="digits/train[:128]")
if latest_checkpoint(out) is None:                    # nothing complete saved yet: a new run
    trainer = Trainer(TrainConfig(model="tiny", conditional=True, batch_size=16, lr=1e-3, warmup=3, steps=steps, ema_decay=0.99,
                                  precision="fp32", log_every=1, ckpt_every=1, keep=keep, seed=7, progress=False, device="cpu",
                                  out=out), dataset=data)
else:
    trainer = Trainer.resume(out, dataset=data, steps=steps)
t = time.perf_counter()
trainer.fit()
print(f"fit {time.perf_counter() - t:.4f} s")
"""


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> tuple[ArrayDataset, Path]:
    "128 training digits, and a file holding them for the training script (which then need not load them again)."
    d = load_digits("train")
    data = ArrayDataset(d.x[:128], d.labels[:128], n_levels=17, name="digits/train[:128]")
    path = tmp_path_factory.mktemp("data") / "digits.safetensors"
    save_file({"x": data.x.contiguous(), "labels": data.labels.contiguous()}, path)
    return data, path


def start(out: Path, data_file: Path, steps: int = STEPS, keep: int = KEEP) -> subprocess.Popen:
    "Start the training script on run folder `out`: a new run of `steps` steps, or the run in `out` resumed up to `steps`."
    return subprocess.Popen([sys.executable, "-c", CHILD, *map(str, (out, data_file, steps, keep))], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})


def finish(p: subprocess.Popen) -> str:
    "Wait for `p` to end by itself and check that it succeeded; its stdout."
    try:
        out, err = p.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        p.kill(); p.communicate()
        raise AssertionError(f"the training script ran over {TIMEOUT} s") from None
    assert p.returncode == 0, f"exit status {p.returncode}\n{err[-3000:]}"
    return out


def kill(p: subprocess.Popen) -> bool:
    "SIGKILL `p` and reap it; whether it was still running (False: it had ended by itself, and must have succeeded)."
    running = p.poll() is None
    p.kill()
    _, err = p.communicate(timeout=TIMEOUT)
    assert running or p.returncode == 0, f"the training script failed by itself: exit status {p.returncode}\n{err[-3000:]}"
    return running


def wait_until(p: subprocess.Popen, seen) -> bool:
    "Poll until `seen()` is true (True) or `p` has ended (False)."
    deadline = time.perf_counter() + TIMEOUT
    while p.poll() is None:
        if seen(): return True
        if time.perf_counter() > deadline:
            p.kill(); p.communicate()
            raise AssertionError(f"the training script ran over {TIMEOUT} s")
        time.sleep(POLL)
    return False


def tmp_folders(out: Path, pid: int | str = "*") -> list[Path]:
    "Temporary checkpoint folders in `out` (of process `pid`): writes in progress, or cut short."
    return sorted(out.glob(f".ckpt-*.tmp-{pid}"))


def files(folder: Path) -> set[str] | None:
    "The names in `folder`; None if it is gone."
    try: return set(os.listdir(folder))
    except FileNotFoundError: return None


def step_of(ckpt: Path) -> int: return int(ckpt.name.split("-")[1].split(".")[0])   # ckpt-XXXXXXXX or .ckpt-XXXXXXXX.tmp-PID


def saved(ckpt: Path) -> tuple[dict, dict, dict]:
    "Weights, EMA weights and state.json of a checkpoint."
    return load_file(ckpt / "model.safetensors"), load_file(ckpt / "ema.safetensors"), json.loads((ckpt / "state.json").read_text())


def same(a: dict, b: dict) -> bool: return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def check_folder(out: Path, data: ArrayDataset, last_step: int | None) -> int | None:
    "What must hold after any kill, given the latest step saved before it (None: none yet); the latest step saved now."
    ckpts = list_checkpoints(out)
    for c in ckpts:
        assert files(c) == CKPT_FILES, f"{c.name} is listed as a complete checkpoint but holds {sorted(files(c))}"
    if last_step is None and not ckpts: return None
    latest = latest_checkpoint(out)
    assert latest is not None, f"step {last_step} had been saved, now no checkpoint is complete: {sorted(p.name for p in out.iterdir())}"
    _, _, meta = load_model(out, device="cpu")
    trainer = Trainer.resume(out, dataset=data)
    assert meta["step"] == trainer.step == step_of(latest) and len(trainer.history) == trainer.step   # log_every=1
    assert last_step is None or trainer.step >= last_step, (
        f"the latest checkpoint went back from step {last_step} to {trainer.step}: {sorted(p.name for p in out.iterdir())}")
    return trainer.step


def assert_only_newest_kept(out: Path, steps: int, keep: int = KEEP):
    "After a successful save at the end of a run: the newest `keep` checkpoints, complete, and nothing else."
    assert not tmp_folders(out), f"temporary folders left behind: {[p.name for p in tmp_folders(out)]}"
    expected = [f"ckpt-{s:08d}" for s in range(steps - keep + 1, steps + 1)]
    assert [c.name for c in list_checkpoints(out)] == expected
    assert sorted(p.name for p in out.iterdir()) == expected, (
        "left behind: " + ", ".join(f"{p.name} {sorted(files(p) or [])}" for p in sorted(out.iterdir()) if p.name not in expected))


def kill_while_deleting(out: Path, data_file: Path, steps: int, keep: int = KEEP) -> tuple[bool, bool]:
    """Start the script and kill it the moment one of the complete checkpoints it found has lost a file or is gone, i.e.
    while it deletes one. (killed, whether a checkpoint folder was left partly deleted)."""
    ckpts = list_checkpoints(out)
    p = start(out, data_file, steps, keep)
    deleting = wait_until(p, lambda: any(files(c) != CKPT_FILES for c in ckpts))
    killed = kill(p) and deleting
    return killed, any(files(c) not in (None, CKPT_FILES) for c in ckpts)


def test_sigkill_at_random_moments_and_mid_write(digits, tmp_path):
    "Kills of a 30-step run, at random moments and mid-write, then resumption: the same final weights as without kills."
    data, data_file = digits
    t0 = time.perf_counter()
    fit_s = float(finish(start(tmp_path / "reference", data_file)).split()[1])
    startup_s = time.perf_counter() - t0 - fit_s                         # interpreter, imports, model: before the first step
    write_s = fit_s / STEPS / 3                                          # a write lasts about a third of a step, or more
    ref_model, ref_ema, ref_state = saved(latest_checkpoint(tmp_path / "reference"))
    assert ref_state["step"] == STEPS

    # the plan: a kill in the checkpoint write of step t_i or later, then one at a random moment up to the end of step
    # t_(i+1) - 1 (at the latest as the next write begins, should the process run faster than the reference did), with
    # t_1 < t_2 < ... spread over the run: the run advances, and no kill falls in a run already finished
    rng = random.Random(0)
    targets = [rng.randint((STEPS - 1) * i // KILLS + 1, (STEPS - 1) * (i + 1) // KILLS) for i in range(KILLS)]
    plan = [e for t, t_next in zip(targets, [*targets[1:], STEPS]) for e in (("write", t), ("random", t_next - 1))]
    out, last_step, log = tmp_path / "interrupted", None, []
    for kind, step in plan:
        for _ in range(TRIES if kind == "write" else 1):
            if last_step == STEPS: break                                 # (a finished run is the last test's case)
            p = start(out, data_file)
            if kind == "write":                                          # in the write of step `step` or a later one
                if wait_until(p, lambda: any(step_of(t) >= step for t in tmp_folders(out, p.pid))):
                    time.sleep(rng.uniform(0, write_s))                  # at some point of the write
            else:                                                        # from the start to the end of step `step`
                at = time.perf_counter() + rng.uniform(0, startup_s + fit_s * max(0, step - (last_step or 0)) / STEPS)
                wait_until(p, lambda: time.perf_counter() > at or any(step_of(t) > step for t in tmp_folders(out, p.pid)))
            killed = kill(p)
            mid_write = killed and bool(tmp_folders(out, p.pid))        # a write of this process was cut short
            last_step = check_folder(out, data, last_step)
            log.append((kind, step, killed, mid_write, last_step))
            if kind == "random" or mid_write: break

    kills, hits = sum(e[2] for e in log), sum(e[3] for e in log)
    summary = "\n".join(f"  {k:6s} {t:3d}: killed={kd!s:5s} mid-write={m!s:5s} latest step saved: {s}" for k, t, kd, m, s in log)
    print(f"\nstart-up {startup_s:.2f} s, {STEPS} steps {fit_s:.2f} s; {kills} kills, {hits} in the middle of a checkpoint write\n{summary}")
    assert hits >= 1, f"no kill landed while a checkpoint was being written:\n{summary}"
    assert kills >= KILLS, f"too many runs ended before they were killed:\n{summary}"

    stale = tmp_folders(out)                                            # left by the kills; the next save removes them
    finish(start(out, data_file))                                       # resume to the end
    print(f"temporary folders of cut-short writes before the last run: {len(stale)}")
    final = latest_checkpoint(out)
    assert final.name == f"ckpt-{STEPS:08d}"
    model, ema, state = saved(final)
    assert same(model, ref_model), "the resumed run's weights differ from the uninterrupted run's"
    assert same(ema, ref_ema), "the resumed run's EMA weights differ from the uninterrupted run's"
    assert state["history"] == ref_state["history"] and state["step"] == STEPS
    assert not tmp_folders(out), f"temporary folders left behind: {[p.name for p in tmp_folders(out)]}"
    assert [c.name for c in list_checkpoints(out)] == [f"ckpt-{s:08d}" for s in range(STEPS - KEEP + 1, STEPS + 1)]


def test_sigkill_while_an_old_checkpoint_is_deleted(digits, tmp_path):
    "Kills while keeping `keep` deletes the oldest checkpoint: nothing of it may stay behind once later runs have saved."
    data, data_file = digits
    out, steps = tmp_path / "run", 6
    finish(start(out, data_file, KEEP))                                 # KEEP checkpoints: the next save deletes the oldest
    last_step, hits = KEEP, 0
    for _ in range(2):
        killed, partly = kill_while_deleting(out, data_file, steps)
        hits += killed
        last_step = check_folder(out, data, last_step)
        print(f"\nkilled while deleting an old checkpoint: {killed}, it was left partly deleted: {partly}; latest step {last_step}")
    assert hits >= 1, "no kill landed while an old checkpoint was being deleted"
    finish(start(out, data_file, steps))
    assert_only_newest_kept(out, steps)


def test_sigkill_while_a_finished_run_rewrites_its_last_checkpoint(digits, tmp_path):
    """A finished run started again (`Trainer.resume(run).fit()`, `ddpm_nb train --resume`) must leave its last checkpoint
    alone: replacing it could not be atomic, and with keep=1 it is the only one. The process is watched for any change to
    it and killed at the first; the folder must hold the same checkpoint, byte for byte, afterwards."""
    data, data_file = digits
    out, steps = tmp_path / "run", 2
    finish(start(out, data_file, steps, keep=1))
    check_folder(out, data, None)
    last = latest_checkpoint(out)
    before = {f: (last / f).read_bytes() for f in CKPT_FILES}
    killed, partly = kill_while_deleting(out, data_file, steps, keep=1)
    print(f"\nkilled while changing the last checkpoint: {killed}, left partly deleted: {partly}; "
          f"folder: {sorted(p.name for p in out.iterdir())}")
    assert not killed and not partly, "the finished run touched its last checkpoint"
    assert check_folder(out, data, steps) == steps and latest_checkpoint(out) == last
    assert {f: (last / f).read_bytes() for f in CKPT_FILES} == before, "the last checkpoint was rewritten"
    assert_only_newest_kept(out, steps, keep=1)


# --- SIGINT and SIGTERM: the step in progress is saved, and the run resumes from it exactly -----------------------------

_SCRIPT = Path(sys.executable).parent / "ddpm_nb"
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "ddpm_nb.cli"]
TRAIN = ["train", "--data", "digits", "--batch-size", "16", "--lr", "1e-3", "--warmup", "2", "--log-every", "3", "--ckpt-every", "4",
         "--device", "cpu", "--seed", "3"]


def cli(*args, cwd) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *map(str, args)], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=terminal_signals)


def cli_done(p: subprocess.Popen, expect: int) -> tuple[str, str]:
    try: out, err = p.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        p.kill(); p.communicate()
        raise AssertionError(f"{p.args} ran over {TIMEOUT} s") from None
    assert p.returncode == expect and "Traceback" not in err, f"exit status {p.returncode}, expected {expect}\n{err[-3000:]}"
    return out, err


def interrupt_after_first_checkpoint(p: subprocess.Popen, run: Path, sig, rng: random.Random):
    "Send `sig` to `p` at a random moment once training is under way (its first checkpoint, step 4, is on disk)."
    assert wait_until(p, lambda: (run / "ckpt-00000004" / "state.json").exists()), "the run ended before its first checkpoint"
    time.sleep(rng.uniform(0, 0.5))
    p.send_signal(sig)


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_signal_saves_the_step_and_resumes_exactly(tmp_path, sig):
    """`ddpm_nb train` stopped by Ctrl-C (SIGINT) or SIGTERM at a random moment, progress bar on: it saves the step it was
    in, says so as its last line, exits with 128 + the signal's number; resumed to a later step, it ends bit-identical
    (weights, EMA, loss history) to a run that was never stopped."""
    import signal
    signum = getattr(signal, sig)
    run = tmp_path / "stopped"
    p = cli(*TRAIN, "--steps", 100_000, "--out", run, cwd=tmp_path)
    interrupt_after_first_checkpoint(p, run, signum, random.Random(signum))
    _, err = cli_done(p, 128 + signum)
    last = latest_checkpoint(run)
    step = step_of(last)
    lines = err.rstrip("\n").split("\n")
    assert lines[-1] == f"ddpm_nb: interrupted by {sig} at step {step}: saved {last} (continue with: ddpm_nb train --out {run} --resume)", lines[-3:]
    assert f"{sig}: saving step {step}, then stopping" in lines[-2], lines[-3:]
    assert step > 4 and json.loads((last / "state.json").read_text())["step"] == step
    target = step + 5                                                    # resume past a history entry and a checkpoint
    cli_done(cli("train", "--out", run, "--resume", "--steps", target, "--no-progress", cwd=tmp_path), 0)
    cli_done(cli(*TRAIN, "--steps", target, "--out", tmp_path / "straight", "--no-progress", cwd=tmp_path), 0)
    model, ema, state = saved(latest_checkpoint(run))
    ref_model, ref_ema, ref_state = saved(latest_checkpoint(tmp_path / "straight"))
    assert same(model, ref_model) and same(ema, ref_ema), "the resumed run's weights differ from the uninterrupted run's"
    assert state["history"] == ref_state["history"] and state["step"] == ref_state["step"] == target


def test_sigterm_during_the_demo(tmp_path):
    "`ddpm_nb demo` stopped by SIGTERM while it trains saves its step and says how to go on; the same command continues from that step."
    import signal
    run = tmp_path / "demo"
    demo = ["demo", "--out", run, "--sample-steps", 5, "--eval-n", 180, "--device", "cpu", "--no-progress"]
    p = subprocess.Popen([*CLI, *map(str, demo), "--steps", "100000"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    first = p.stdout.readline()                                         # printed just before training starts
    assert first.startswith("UNet 'tiny'"), first
    time.sleep(random.Random(1).uniform(1, 2))
    p.send_signal(signal.SIGTERM)
    _, err = cli_done(p, 143)
    last = latest_checkpoint(run)
    step = step_of(last)
    assert err.rstrip("\n").split("\n")[-1] == (f"ddpm_nb: interrupted by SIGTERM at step {step}: saved {last} "
                                                f"(continue with: ddpm_nb demo --out {run} --steps 100000)"), err[-500:]
    assert step >= 1 and not (run / "samples.png").exists()
    out, _ = cli_done(cli(*demo, "--steps", step + 2, cwd=tmp_path), 0)
    assert f"continuing the demo's run in {run} from step {step}" in out and (run / "samples.png").exists(), out


def test_ctrl_c_under_torchrun(tmp_path):
    """Ctrl-C in a terminal reaches torchrun and both its workers (one process group), and torchrun passes it on to them
    again: the workers agree on a step through their loss reduction, rank 0 alone saves it and speaks, and the run resumed
    on two processes ends bit-identical to a two-process run that was never stopped."""
    import signal
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ddpm_nb.cli", *TRAIN, "--no-progress"]
    def launch(*args):
        return subprocess.Popen([*torchrun, *map(str, args)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True, preexec_fn=terminal_signals)
    run = tmp_path / "ddp"
    p = launch("--steps", 100_000, "--out", run)
    assert wait_until(p, lambda: (run / "ckpt-00000004" / "state.json").exists()), "the run ended before its first checkpoint"
    time.sleep(random.Random(2).uniform(0, 0.5))
    os.killpg(p.pid, signal.SIGINT)                                      # what the terminal sends to its foreground group
    try: _, err = p.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL); p.communicate()
        raise AssertionError("torchrun did not stop") from None
    last = latest_checkpoint(run)
    step = step_of(last)
    said = [l for l in err.splitlines() if l.startswith("ddpm_nb: ") and not l.startswith("ddpm_nb: warning: ")]
    assert said == [f"ddpm_nb: interrupted by SIGINT at step {step}: saved {last} (continue with: ddpm_nb train --out {run} --resume)"], err[-3000:]
    state = json.loads((last / "state.json").read_text())
    assert step > 4 and (state["step"], state["world_size"]) == (step, 2)
    target = step + 3
    for q in (launch("--out", run, "--resume", "--steps", target), launch("--steps", target, "--out", tmp_path / "straight")):
        out, err = q.communicate(timeout=TIMEOUT)
        assert q.returncode == 0, err[-3000:]
    model, ema, state = saved(latest_checkpoint(run))
    ref_model, ref_ema, ref_state = saved(latest_checkpoint(tmp_path / "straight"))
    assert same(model, ref_model) and same(ema, ref_ema) and state["history"] == ref_state["history"] and state["step"] == target
