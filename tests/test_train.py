"""Training as a user runs it: separate processes for the first half of a run and its resumption.

The notebook (nbs/07_train.ipynb) checks exact resume within one process; here each part runs in its own
interpreter, so nothing but the checkpoint on disk carries the state across.
"""
import json
import subprocess
import sys

import torch
from safetensors.torch import load_file

RUN = """
import sys
from ddpm_nb.data import ArrayDataset, load_digits
from ddpm_nb.train import Trainer, TrainConfig
out, until, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "resume"
d = load_digits("train")
data = ArrayDataset(d.x[:192], d.labels[:192], n_levels=17)
if resume:
    trainer = Trainer.resume(out, dataset=data)
else:
    trainer = Trainer(TrainConfig(model="tiny", conditional=True, batch_size=32, lr=1e-3, warmup=3, steps=8, ema_decay=0.99,
                                  log_every=1, progress=False, device="cpu", out=out), dataset=data)
trainer.fit(until=until)
"""


def run(*args):
    res = subprocess.run([sys.executable, "-c", RUN, *map(str, args)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]


def final(out):
    ckpt = sorted(p for p in out.iterdir() if p.name.startswith("ckpt-"))[-1]
    return ckpt, load_file(ckpt / "model.safetensors"), load_file(ckpt / "ema.safetensors"), json.loads((ckpt / "state.json").read_text())


def test_resume_in_a_new_process_is_exact(tmp_path):
    "8 steps in one process == 4 steps, exit, resume in a new process, 4 steps: identical weights, EMA, losses (conditional, dropout on)."
    run(tmp_path / "straight", 8, "new")
    run(tmp_path / "halves", 4, "new")
    run(tmp_path / "halves", 8, "resume")
    c1, m1, e1, s1 = final(tmp_path / "straight")
    c2, m2, e2, s2 = final(tmp_path / "halves")
    assert c1.name == c2.name == "ckpt-00000008"
    assert m1.keys() == m2.keys() and all(torch.equal(m1[k], m2[k]) for k in m1)
    assert all(torch.equal(e1[k], e2[k]) for k in e1)
    assert s1["history"] == s2["history"] and len(s1["history"]) == 8
