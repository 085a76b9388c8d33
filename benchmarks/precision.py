"""bf16 autocast against fp32 on the CPU, and the two other speed options of the Trainer (channels_last, torch.compile).

Speed: a training step (forward, loss, backward, AdamW step) and a sampling step (forward in inference mode and one
DDPM step) of the tiny U-Net, fp32 against torch.autocast("cpu", dtype=torch.bfloat16), alternating rounds; the
untrained mnist preset (28x28) at its recipe's batch of 64, with and without dropout, shows the ratio on larger
feature maps, with a profile of where the bf16 step's time goes (dropout's random masks cost as much in bf16 as in
fp32). Target: bf16 at least 1.5x faster.

Accuracy: with a trained-ish tiny U-Net (trained here for a few hundred steps on the digits, or the checkpoint given
with --ckpt), ||eps_bf16 - eps_fp32|| / ||eps_fp32|| on the held-out digits noised at a grid of t. Target: at most 2%.
The network's own error ||eps_fp32 - eps|| / ||eps|| is printed beside it for scale.

channels_last and torch.compile are measured the same way against the eager, contiguous model (compile is left out
with --quick or --no-compile). The Trainer keeps them off by default; they are worth turning on only where they help.

Sample quality, bf16 against fp32 across seeds (--quality, off by default: minutes of sampling): the Frechet distance
in the features of ddpm_nb.metrics.classifier_for("digits") (chapter 9).
"""
from __future__ import annotations

import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from torch import nn

from _common import Report, eq14_step, alternate, fmt_ratio, header, main_for, ratio, rounds
from ddpm_nb.data import load_digits
from ddpm_nb.forward import q_sample
from ddpm_nb.sample import ddpm_step, sample
from ddpm_nb.schedule import Schedule
from ddpm_nb.train import TrainConfig, Trainer, load_model
from ddpm_nb.unet import UNet, UNetConfig

BENCH = "precision"
BF16 = torch.bfloat16


class Autocast(nn.Module):
    "Run a model under CPU autocast (bf16), returning float32: what sample() sees from a bf16 model."
    def __init__(self, model: nn.Module, dtype=BF16):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x, t, *args):
        with torch.autocast("cpu", dtype=self.dtype, enabled=self.dtype is not None):
            return self.model(x, t, *args).float()


def trained_model(args) -> tuple[nn.Module, Schedule, str]:
    "The model whose predictions are compared: a checkpoint, or the tiny U-Net trained here for args.train_steps steps."
    if args.ckpt:
        model, s, meta = load_model(args.ckpt, ema=True, device="cpu")
        return model, s, f"checkpoint {args.ckpt} (step {meta.get('step')}, EMA weights)"
    steps = args.train_steps or (10 if args.quick else 300)
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(model="tiny", steps=steps, batch_size=32 if args.quick else 64, lr=2e-3, warmup=min(50, steps // 4),
                          progress=False, device="cpu", out=out, ckpt_every=steps, log_every=max(1, steps // 5))
        t0 = time.perf_counter()
        trainer = Trainer(cfg, dataset=load_digits("train"))
        hist = trainer.fit()
        secs = time.perf_counter() - t0
    return (trainer.model.eval(), trainer.schedule,
            f"tiny U-Net trained here: {steps} steps, batch {cfg.batch_size}, {trainer.precision}, {secs:.0f} s, final loss {hist[-1][1]:.3f}")


def _prepare(model, channels_last, compiled, train):
    m = copy.deepcopy(model).train(train)
    if channels_last: m = m.to(memory_format=torch.channels_last)
    return m, (torch.compile(m) if compiled else m)


def train_step(model, s, x0, dtype=None, channels_last=False, compiled=False):
    "A bare training step: loss of Eq. 14 on fixed t and ε, backward, AdamW step, on a copy of the model."
    m, net = _prepare(model, channels_last, compiled, train=True)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-5)
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, s.n_steps, (len(x0),), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    x_t = q_sample(x0, t, eps, s)
    if channels_last: x_t = x_t.contiguous(memory_format=torch.channels_last)
    return eq14_step(net, opt, x_t, t, eps, dtype)


def sample_step(model, s, x, dtype=None, channels_last=False, compiled=False):
    "One step of a sampling loop: the forward pass in inference mode and a DDPM step (Algorithm 2)."
    m, net = _prepare(model, channels_last, compiled, train=False)
    tt = torch.full((len(x),), s.n_steps // 2, dtype=torch.long)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    if channels_last: x = x.contiguous(memory_format=torch.channels_last)

    def f():
        with torch.inference_mode():
            with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                eps = net(x, tt)
            ddpm_step(eps.float(), tt, x, s, noise=z)
    return f


def compare(rep, args, name, a, b, target=None, repeat=1):
    "Time a and b in alternating rounds; add the speed-up time(a) / time(b)."
    times = alternate({"a": a, "b": b}, rounds(args), args.warmup, repeat)
    r = ratio(times, "a", "b")
    kw = dict(target=f"≥ {target:.2f}×", ok=r >= target) if target else {}
    rep.add(BENCH, name, fmt_ratio(r), **kw)
    return r


def profile_shares(rep, step, tag):
    "Where a step's time goes: the share of self CPU time of the costliest kinds of operation (torch.profiler)."
    from torch.profiler import ProfilerActivity, profile
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3): step()
    ops = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(ops.values())
    kinds = {"convolutions (forward and backward)": ("convolution",), "dropout's random masks": ("bernoulli",),
             "group norm": ("group_norm",), "attention matmuls and softmax": ("bmm", "softmax")}
    shares = {k: sum(v for op, v in ops.items() if any(w in op for w in words)) / total for k, words in kinds.items()}
    shares["everything else"] = 1 - sum(shares.values())
    rep.add(BENCH, f"share of a {tag}", ", ".join(f"{k} {100 * v:.0f}%" for k, v in shares.items()))


def accuracy(rep, model, s, quick):
    "‖ε_bf16 − ε_fp32‖ / ‖ε_fp32‖ on held-out digits at a grid of t, with the network's own error for scale."
    x0 = load_digits("test").x[:64 if quick else 360]
    g = torch.Generator().manual_seed(0)
    num = den = err = ref = 0.
    worst = (0., None)
    for t_int in (0, 10, 50, 100, 250, 500, 750, 999):
        t = torch.full((len(x0),), t_int, dtype=torch.long)
        eps = torch.randn(x0.shape, generator=g)
        x_t = q_sample(x0, t, eps, s)
        with torch.inference_mode():
            e32 = model(x_t, t).float()
            e16 = Autocast(model)(x_t, t)
        d, n = (e16 - e32).pow(2).sum().item(), e32.pow(2).sum().item()
        num, den, err, ref = num + d, den + n, err + (e32 - eps).pow(2).sum().item(), ref + eps.pow(2).sum().item()
        worst = max(worst, ((d / n) ** 0.5, t_int), key=lambda w: w[0])
    rel = (num / den) ** 0.5
    rep.add(BENCH, "‖ε_bf16 − ε_fp32‖ / ‖ε_fp32‖, held-out digits, 8 values of t", f"{100 * rel:.2f}%", target="≤ 2%", ok=rel <= 0.02)
    rep.add(BENCH, f"‖ε_bf16 − ε_fp32‖ / ‖ε_fp32‖ at the worst t (t = {worst[1]})", f"{100 * worst[0]:.2f}%")
    rep.add(BENCH, "for scale: the network's own error ‖ε_fp32 − ε‖ / ‖ε‖", f"{100 * (err / ref) ** 0.5:.1f}%")


def _distance_fn():
    "The Fréchet distance of chapter 9 between two sets of digits, in the features of its digits classifier."
    import ddpm_nb.metrics as M
    net = M.classifier_for("digits")
    return (lambda x, ref: float(M.frechet_distance(M.features(net, x), M.features(net, ref)))), "Fréchet distance in classifier_for('digits') features"


def quality(rep, args, model, s):
    "Sample quality of bf16 against fp32 across seeds, with the metrics of ddpm_nb.metrics."
    dist_fn, how = _distance_fn()
    ref = load_digits("test").x
    n, seeds = (64, (0, 1)) if args.quick else (360, (0, 1, 2))
    dist = {"fp32": [], "bf16": []}
    for seed in seeds:
        for prec, m in (("fp32", model), ("bf16", Autocast(model))):
            x = sample(m, (n, 1, 8, 8), s, sampler="ddim", n_steps=50, generator=torch.Generator().manual_seed(seed), progress=False)
            dist[prec].append(dist_fn(x, ref))
    for prec, v in dist.items():
        sd = statistics.stdev(v) if len(v) > 1 else 0.
        rep.add(BENCH, f"{how} to held-out digits, {prec}, DDIM 50 steps, {len(seeds)} seeds × {n}", f"{statistics.mean(v):.3g} ± {sd:.2g}")
    gap = statistics.mean(dist["bf16"]) - statistics.mean(dist["fp32"])
    rep.add(BENCH, "bf16 − fp32 distance (mean over seeds)", f"{gap:+.3g}")


def add_args(p):
    p.add_argument("--ckpt", default=None, help="a checkpoint or run folder to compare predictions with (default: train the tiny U-Net here)")
    p.add_argument("--train-steps", type=int, default=None, help="steps of that training (default 300; 10 with --quick)")
    p.add_argument("--no-compile", action="store_true", help="leave out the torch.compile comparison (always left out with --quick)")
    p.add_argument("--quality", action="store_true", help="also compare sample quality bf16 vs fp32 (needs ddpm_nb.metrics)")


def run(rep: Report, args):
    header("precision: bf16 autocast vs fp32 on the CPU; channels_last; torch.compile")
    model, s, how = trained_model(args)
    rep.add(BENCH, "model compared", how)
    x0 = load_digits("train").x
    bt, bs = (32, 16) if args.quick else (128, 64)                       # training batch (the Trainer's default), sampling batch
    xs = torch.randn(bs, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    tag = f"tiny 8×8, train b={bt} / sample b={bs}"
    compare(rep, args, f"bf16 speed-up, training step, {tag}", train_step(model, s, x0[:bt]), train_step(model, s, x0[:bt], BF16), 1.5)
    compare(rep, args, f"bf16 speed-up, sampling step, {tag}", sample_step(model, s, xs), sample_step(model, s, xs, BF16), 1.5, repeat=3)
    if not args.quick:                                                    # the mnist preset at its recipe's batch (weights do not matter)
        for dropout in (0.1, 0.0):
            torch.manual_seed(0)
            big = UNet(UNetConfig.preset("mnist", dropout=dropout))
            xm, xb = torch.randn(64, 1, 28, 28), torch.randn(100, 1, 28, 28)
            tag = f"mnist 28×28, dropout {dropout:g}, train b=64 / sample b=100"
            compare(rep, args, f"bf16 speed-up, training step, {tag}", train_step(big, s, xm), train_step(big, s, xm, BF16), 1.5)
            if dropout:                                                   # dropout is off when sampling
                compare(rep, args, "bf16 speed-up, sampling step, mnist 28×28 b=100", sample_step(big, s, xb), sample_step(big, s, xb, BF16), 1.5)
            profile_shares(rep, train_step(big, s, xm, BF16), f"bf16 training step, {tag}")
    accuracy(rep, model, s, args.quick)
    for dtype, pname in ((None, "fp32"), (BF16, "bf16")):
        compare(rep, args, f"channels_last speed-up, training step, {pname}",
                train_step(model, s, x0[:bt], dtype), train_step(model, s, x0[:bt], dtype, channels_last=True))
        compare(rep, args, f"channels_last speed-up, sampling step, {pname}",
                sample_step(model, s, xs, dtype), sample_step(model, s, xs, dtype, channels_last=True), repeat=3)
    if args.quick or args.no_compile:
        rep.skip(BENCH, "torch.compile speed-up", "--quick" if args.quick else "--no-compile")
    else:
        for dtype, pname in ((None, "fp32"), (BF16, "bf16")):
            for kind, make, rep_n in (("training", train_step, 1), ("sampling", sample_step, 3)):
                data = x0[:bt] if kind == "training" else xs
                compiled = make(model, s, data, dtype, compiled=True)
                t0 = time.perf_counter(); compiled(); first = time.perf_counter() - t0
                rep.add(BENCH, f"torch.compile: first {kind} step, {pname} (compilation; cache may be warm)", f"{first:.1f} s")
                compare(rep, args, f"torch.compile speed-up, {kind} step, {pname}", make(model, s, data, dtype), compiled, repeat=rep_n)
    if args.quality: quality(rep, args, model, s)
    else: rep.skip(BENCH, "sample quality bf16 vs fp32", "off by default; --quality turns it on")


if __name__ == "__main__":
    sys.exit(main_for(run, add_args, __doc__))
