"""Checkpoints as a user meets them: one written by the first format still loads, samples and resumes; the model record
says what the network predicts, and `load_model` hands that on to every sampler."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from ddpm_nb.ckpt import CKPT_FORMAT, load_model, read_checkpoint
from ddpm_nb.sample import sample
from ddpm_nb.train import Trainer

OLD = Path(__file__).parent / "fixtures" / "format1-moons" / "ckpt-00000020"


def test_first_format_loads_as_an_eps_predictor():
    meta = json.loads((OLD / "state.json").read_text())
    assert "format" not in meta and "prediction" not in meta["model"]           # the fixture is what the first format wrote
    model, s, meta = load_model(OLD, device="cpu")
    assert model.prediction == "eps" and meta["model"]["prediction"] == "eps"
    assert type(model).__name__ == "MLPDenoiser" and s.n_steps == 100 and s.name == "linear"
    assert model.out_norm                                                       # the first release's MLP: LayerNorm before its output
    x = sample(model, (64, 2), s, sampler="ddim", n_steps=10, generator=torch.Generator().manual_seed(0), progress=False)
    assert x.shape == (64, 2) and torch.isfinite(x).all()


def test_first_format_resumes_into_the_current_one(tmp_path):
    run = tmp_path / "old"
    shutil.copytree(OLD, run / OLD.name)
    trainer = Trainer.resume(run, steps=24, out=str(run), progress=False)
    assert trainer.step == 20 and trainer.model.prediction == "eps"
    trainer.fit()
    new = read_checkpoint(run / "ckpt-00000024")
    assert new["format"] == CKPT_FORMAT and new["model"]["prediction"] == "eps" and new["step"] == 24
    assert new["model"]["config"]["out_norm"] is True                          # the network it was trained as, said explicitly now


def test_cli_samples_a_first_format_checkpoint(tmp_path):
    out = subprocess.run([sys.executable, "-m", "ddpm_nb.cli", "sample", "--ckpt", str(OLD), "--n", "50", "--steps", "5",
                          "--npz", str(tmp_path / "x.npz"), "--device", "cpu", "--no-progress"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "DDPM 5 steps" in out.stdout and (tmp_path / "x.npz").exists()     # the default sampler for points
