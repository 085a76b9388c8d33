"""What the installed package guarantees a user, beyond the math: bad input is refused by name, nothing written is
pickled, arithmetic stays in float32 under mixed precision, long schedules stay finite, and the same seed gives the
same bits on a CPU. The docs' Reliability page lists each guarantee with the test that holds it.
"""
import ast
import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import ROOT

from ddpm_nb import loss as loss_module
from ddpm_nb.data import ArrayDataset, load_dataset, load_digits, save_array
from ddpm_nb.elbo import p_variance, q_posterior, x0_from_eps
from ddpm_nb.forward import q_sample
from ddpm_nb.loss import ddpm_loss, vlb_weight
from ddpm_nb.sample import SAMPLERS, ddim_step, ddpm_step, make_sampler, sample, timesteps
from ddpm_nb.schedule import SCHEDULES, Schedule
from ddpm_nb.train import Trainer, TrainConfig
from ddpm_nb.unet import MLPDenoiser, UNet

S = Schedule.from_name("linear", 1000)
X = torch.rand(4, 1, 8, 8) * 2 - 1                                  # images in [-1, 1]
T4 = torch.tensor([0, 10, 500, 999])
EPS = torch.randn(4, 1, 8, 8)
NAN = torch.full((4, 1, 8, 8), float("nan"))
INF = torch.full((4, 1, 8, 8), float("inf"))


class Zero(torch.nn.Module):
    "A noise predictor that predicts no noise."
    def forward(self, x, t, labels=None): return torch.zeros_like(x)


def small_trainer(tmp, dataset, **changes):
    cfg = dict(model="tiny", batch_size=8, steps=2, warmup=1, lr=1e-3, progress=False, device="cpu", precision="fp32", out=str(tmp / "run"))
    return Trainer(TrainConfig(**{**cfg, **changes}), dataset=dataset)


def write_npy(tmp, name, array):
    p = tmp / name
    np.save(p, array)
    return p


# (id, call, the message it must contain); each call gets the tmp_path fixture's folder.
BAD_INPUT = [
    # wrong shapes
    ("noise of another shape", lambda tmp: q_sample(X, T4, EPS[:2], S), "eps must have the shape of x0, (4, 1, 8, 8); got (2, 1, 8, 8)"),
    ("prediction of another shape", lambda tmp: ddpm_step(EPS[:, :, :4], T4, X, S), "eps_pred must have the shape of x_t"),
    ("posterior inputs of different shapes", lambda tmp: q_posterior(X, X[:2], T4, S), "x_t must have the shape of x0"),
    ("RGB images into a grey U-Net", lambda tmp: UNet("tiny")(torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long)), "UNet expects images (b, 1, h, w), got shape (2, 3, 8, 8)"),
    ("one t too many", lambda tmp: UNet("tiny")(torch.zeros(2, 1, 8, 8), torch.zeros(3, dtype=torch.long)), "t must have shape (2,), got (3,)"),
    ("images into the point MLP", lambda tmp: MLPDenoiser()(X, T4), "MLPDenoiser expects points (b, 2), got shape (4, 1, 8, 8)"),
    ("a sample shape with a zero", lambda tmp: sample(Zero(), (2, 0, 8), S, n_steps=2, progress=False), "shape must be (b, ...) with b and every size a positive int, got (2, 0, 8)"),
    ("a schedule that is not 1-D", lambda tmp: Schedule(torch.full((2, 2), 0.1)), "betas must be 1-D with shape (T,), got shape (2, 2)"),
    # wrong dtypes
    ("integer pixels", lambda tmp: q_sample((X * 127).long(), T4, EPS, S), "x0 must be a float tensor (images scaled to [-1, 1]), got torch.int64"),
    ("integer pixels in the loss", lambda tmp: ddpm_loss(Zero(), (X * 127).long(), S), "x0 must be a float tensor"),
    ("float timesteps", lambda tmp: q_sample(X, T4.float(), EPS, S), "t must be an integer tensor, got dtype torch.float32"),
    ("t / T given to the U-Net", lambda tmp: UNet("tiny")(X, T4 / 1000), "t must be an integer tensor of code steps 0..T-1, got torch.float32"),
    # NaN and inf
    ("NaN images", lambda tmp: q_sample(NAN, T4, EPS, S), "x0 must be finite, found 256 NaN or infinite values among 256"),
    ("infinite noise", lambda tmp: q_sample(X, T4, INF, S), "eps must be finite, found 256 NaN or infinite values"),
    ("NaN images in the loss", lambda tmp: ddpm_loss(Zero(), NAN, S), "x0 must be finite"),
    ("NaN prediction in a DDPM step", lambda tmp: ddpm_step(NAN, T4, X, S), "eps_pred must be finite"),
    ("NaN x_t in a DDIM step", lambda tmp: ddim_step(EPS, T4, T4 - 1, NAN, S), "x_t must be finite"),
    ("infinite x_T", lambda tmp: sample(Zero(), (4, 1, 8, 8), S, n_steps=2, x_T=INF, progress=False), "x_T must be finite"),
    ("a model that returns NaN", lambda tmp: sample(lambda x, t: x * float("nan"), (2, 1, 8, 8), S, n_steps=2, progress=False), "the samples hold 128 NaN or infinite values"),
    ("NaN in a dataset", lambda tmp: ArrayDataset(NAN), "x must be finite, found 256 NaN or infinite values"),
    ("a NaN beta", lambda tmp: Schedule([0.1, float("nan")]), "every beta must lie in (0, 1); got beta[1] = nan"),
    ("a NaN learning rate", lambda tmp: TrainConfig(lr=float("nan")), "lr must be a finite number > 0, got nan"),
    # t out of range, n_steps larger than T
    ("t = T", lambda tmp: q_sample(X, torch.tensor([0, 0, 0, 1000]), EPS, S), "t must be in [0, 999], got 1000"),
    ("t = -1", lambda tmp: ddpm_step(EPS, torch.tensor([-1, 0, 0, 0]), X, S), "t must be in [0, 999], got -1"),
    ("DDIM going up", lambda tmp: ddim_step(EPS, T4, T4, X, S), "t_prev must satisfy -1 <= t_prev < t"),
    ("n_steps > T in sample", lambda tmp: sample(Zero(), (2, 1, 8, 8), S, n_steps=1001, progress=False), "n_steps must be an integer in [1, 1000] (the schedule's T), got 1001"),
    ("n_steps > T in timesteps", lambda tmp: timesteps(2000, 1000), "n_steps must be an integer in [1, 1000] (the schedule's T), got 2000"),
    # images outside [-1, 1]
    ("pixels 0..255 as floats in a dataset", lambda tmp: ArrayDataset(X * 127 + 128), "images must lie in [-1, 1], found values in"),
    ("float images outside [-1, 1] in a file", lambda tmp: load_dataset(write_npy(tmp, "big.npy", np.full((4, 8, 8), 3.0, np.float32))), "float images must lie in [-1, 1], found values in [3, 3]"),
    # empty data
    ("an empty dataset", lambda tmp: ArrayDataset(torch.zeros(0, 1, 8, 8)), "x must have shape (n, ...) with n >= 1"),
    ("an empty array file", lambda tmp: load_dataset(write_npy(tmp, "empty.npy", np.zeros((0, 8, 8), np.uint8))), "the array is empty, shape (0, 8, 8)"),
    ("an empty image folder", lambda tmp: load_dataset(tmp), "no image files (.png, .jpg, .jpeg, any case) in"),
    ("an empty batch", lambda tmp: ddpm_loss(Zero(), X[:0], S), "x0 must hold at least one item, got shape (0, 1, 8, 8)"),
    ("training on nothing", lambda tmp: small_trainer(tmp, []), "the dataset has 0 items, fewer than one batch of 8"),
    ("a batch larger than the data", lambda tmp: small_trainer(tmp, ArrayDataset(X)), "the dataset has 4 items, fewer than one batch of 8"),
    # schedules whose ᾱ_t would not decrease strictly inside (0, 1)
    ("a zero beta (ᾱ flat)", lambda tmp: Schedule([0.1, 0.0, 0.2]), "every beta must lie in (0, 1); got beta[1] = 0.0"),
    ("a negative beta (ᾱ rising)", lambda tmp: Schedule([0.1, -0.05]), "every beta must lie in (0, 1); got beta[1] = -0.05"),
    ("a beta of 1 (ᾱ reaching 0)", lambda tmp: Schedule([0.1, 1.0]), "got beta[1] = 1.0"),
    ("a beta below float32's resolution", lambda tmp: Schedule([1e-3, 1e-9]), "alpha_bar must decrease strictly, in the float32 it is stored in"),
    ("ᾱ underflowing float32", lambda tmp: Schedule([0.9] * 400), "alpha_bar underflows float32 at t=45"),
    ("a linear schedule too short for its betas", lambda tmp: Schedule.from_name("linear", 10), "beta_end must be in (0, 1), got 2.0"),
    # settings
    ("an unknown schedule", lambda tmp: Schedule.from_name("quadratic"), "unknown schedule 'quadratic'"),
    ("a negative learning rate", lambda tmp: TrainConfig(lr=-1e-3), "lr must be a finite number > 0, got -0.001"),
    ("an EMA decay of 1", lambda tmp: TrainConfig(ema_decay=1.0), "ema_decay must be in [0, 1), got 1.0"),
    ("no timesteps", lambda tmp: TrainConfig(timesteps=0), "timesteps must be an integer >= 1, got 0"),
    ("an unknown TrainConfig field", lambda tmp: TrainConfig.from_dict({"epochs": 3}), "unknown TrainConfig field(s): ['epochs']"),
]


@pytest.mark.parametrize("call, message", [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_named(tmp_path, call, message):
    "Each bad input raises a ValueError (FloatingPointError for a model that returns NaN) whose message names the value and what was expected."
    with pytest.raises((ValueError, FloatingPointError)) as e:
        call(tmp_path)
    assert message in str(e.value), str(e.value)


def test_suspicious_images_warn_once():
    "Images outside [-1, 1] are legal but suspicious: ddpm_loss warns, naming the range, once per process (not at every training step)."
    loss_module._warned.discard("range")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3): ddpm_loss(Zero(), X * 127 + 128, S)
        ddpm_loss(Zero(), X, S)
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert "outside [-1, 1]" in str(caught[0].message) and "scale_to_unit" in str(caught[0].message)
    with warnings.catch_warnings(record=True) as caught:                # 2-D points are not images: no range is expected of them
        warnings.simplefilter("always")
        loss_module._warned.discard("range")
        ddpm_loss(Zero(), torch.randn(64, 2) * 3, S)
    assert not caught


def test_no_pickle_anywhere(tmp_path):
    "The package never calls torch.load or pickle, and a checkpoint folder holds only safetensors and JSON files."
    for path in (ROOT / "ddpm_nb").glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        imports = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        imports |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not ({"pickle", "dill", "cloudpickle", "joblib"} & imports), f"{path.name} imports a pickler"
        loads = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in ("load", "save")
                 and isinstance(n.func.value, ast.Name) and n.func.value.id == "torch"]
        for call in loads:
            assert call.func.attr == "load" and any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in call.keywords), \
                f"{path.name}:{call.lineno}: torch.{call.func.attr} without weights_only=True"
        assert "allow_pickle=True" not in path.read_text(), f"{path.name} lets NumPy unpickle"
    d = load_digits("train")
    trainer = small_trainer(tmp_path, ArrayDataset(d.x[:32], d.labels[:32], n_levels=17), conditional=True)
    trainer.fit()
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert files and {p.suffix for p in files} <= {".safetensors", ".json"}, sorted(p.name for p in files)
    for p in files:
        head = p.read_bytes()[:16]
        assert not head.startswith((b"\x80", b"PK\x03\x04")), f"{p} looks like a pickle or a torch.save zip"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_autocast_keeps_the_arithmetic_in_float32(dtype):
    "Under bf16/fp16 autocast the network runs in low precision, but the schedule, the forward process, the loss and both samplers stay float32."
    net = UNet("tiny").eval()
    s = Schedule.from_name("cosine", 1000)
    with torch.autocast("cpu", dtype=dtype):
        eps_pred = net(X, T4)
        assert eps_pred.dtype == dtype                                     # the network is in low precision...
        x_t = q_sample(X, T4, EPS, s)
        outs = {"q_sample": x_t, "q_posterior": q_posterior(X, x_t, T4, s)[0], "x0_from_eps": x0_from_eps(x_t, T4, eps_pred, s),
                "ddpm_step": ddpm_step(eps_pred, T4, x_t, s, noise=EPS)[0], "ddim_step": ddim_step(eps_pred, T4, T4 - 1, x_t, s, eta=0.5, noise=EPS)[0],
                "ddpm_loss": ddpm_loss(net, X, s, generator=torch.Generator().manual_seed(0))}
        g = lambda: torch.Generator().manual_seed(1)
        outs["sample ddpm"] = sample(net, (4, 1, 8, 8), s, n_steps=20, generator=g(), progress=False)
        outs["sample ddim"] = sample(net, (4, 1, 8, 8), s, sampler="ddim", n_steps=20, generator=g(), progress=False)
    for name, v in outs.items():
        assert v.dtype == torch.float32, f"{name} returned {v.dtype} under {dtype} autocast"   # ...the rest is not
        assert torch.isfinite(v).all(), name
    ref = sample(net, (4, 1, 8, 8), s, sampler="ddim", n_steps=20, generator=torch.Generator().manual_seed(1), progress=False)
    assert (outs["sample ddim"] - ref).abs().max() < 0.05                  # only the network's rounding differs: a small change of the samples


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_long_schedules_stay_finite(name):
    "T = 4000 (the cosine schedule's ᾱ_T is 1.5e-10): every coefficient, every sampler coefficient and every step at every t is finite."
    s = Schedule.from_name(name, 4000)
    for k, v in {**vars(s), **{f"float64 {k}": v for k, v in s.float64().items()}}.items():
        if isinstance(v, torch.Tensor): assert torch.isfinite(v).all(), f"{name}: {k} is not finite"
    assert (s.alpha_bar[1:] < s.alpha_bar[:-1]).all() and s.alpha_bar[-1] > 0 and s.alpha_bar[0] < 1
    for v in (p_variance(s, "beta"), p_variance(s, "beta_tilde"), vlb_weight(s)): assert torch.isfinite(v).all()
    for sampler, cls in SAMPLERS.items():
        for n in (4000, 50):
            smp = make_sampler(sampler, s, timesteps(n, 4000), **({"eta": 1.} if "eta" in cls.options else {}))
            assert all(math.isfinite(c) for row in smp.coefs for c in row), (sampler, n)
    t = torch.arange(4000)
    x_t, eps = torch.randn(4000, 3), torch.randn(4000, 3)
    for out in (*ddpm_step(eps, t, x_t, s, noise=eps), *ddim_step(eps, t, t - 1, x_t, s, eta=1., noise=eps)):
        assert torch.isfinite(out).all()
    x = sample(lambda x, t: x * 0.5, (8, 3), s, n_steps=4000, generator=torch.Generator().manual_seed(0), progress=False)
    assert torch.isfinite(x).all()


CHILD = """
import sys, torch
from safetensors.torch import save_file
from ddpm_nb.data import ArrayDataset, load_digits
from ddpm_nb.sample import sample
from ddpm_nb.train import Trainer, TrainConfig
out = sys.argv[1]
d = load_digits("train")
t = Trainer(TrainConfig(model="tiny", conditional=True, batch_size=16, steps=6, warmup=2, lr=1e-3, ema_decay=0.9, seed=3,
                        progress=False, device="cpu", out=out + "/run"), dataset=ArrayDataset(d.x[:64], d.labels[:64], n_levels=17))
t.fit()
x = sample(t.ema.model, (6, 1, 8, 8), t.schedule, sampler="ddpm", n_steps=30, labels=torch.arange(6), guidance_scale=1.,
           generator=torch.Generator().manual_seed(7), progress=False)
save_file({"x": x, **{f"w/{k}": v for k, v in t.model.state_dict().items()}}, out + "/result.safetensors")
"""


def test_same_seed_same_bits_on_cpu(tmp_path):
    "Two separate processes with the same seeds train to bit-identical weights and draw bit-identical samples (CPU)."
    from safetensors.torch import load_file
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    for k in ("a", "b"):
        (tmp_path / k).mkdir()
        res = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / k)], capture_output=True, text=True, env=env, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
    a, b = load_file(tmp_path / "a" / "result.safetensors"), load_file(tmp_path / "b" / "result.safetensors")
    assert a.keys() == b.keys() and len(a) > 1
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
