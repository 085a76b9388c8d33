"""Training-step overhead: a Trainer step against a bare forward + backward + optimiser step on the same model and batch.

The Trainer's step adds to the bare one: picking the batch, drawing t and eps from a per-step generator, the first
step's data checks, gradient clipping, the learning-rate schedule and the EMA update. Both sides run the same model
object with the same batch size, precision (fp32, and the Trainer's default "auto", which is bf16 on CPUs with native
bf16) and AdamW kernel (fused on a CPU); a round times `fit` over k steps (checkpoint writing switched off: it is disk
I/O, timed once on its own), k bare steps, and k bare steps with DDPM's clipping and EMA update, so the ratio splits
into the algorithm's own work and the Trainer's bookkeeping. Every model: the 2-D MLP (moons, batch 256), the tiny
(digits 8x8, 128), mnist (the digits at 32x32, 64) and cifar10 (32x32 RGB, 8) presets. Target: Trainer step <= 1.10x
the bare step on each. Also: the fused AdamW update against torch's per-tensor default, on each model.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch

from _common import Report, eq14_step, alternate, fmt_ratio, header, main_for, median, ratio, rounds
from ddpm_nb.forward import q_sample
from ddpm_nb.train import TrainConfig, Trainer, _clip_grad_norm

BENCH = "trainer"


def bare_step(trainer: Trainer, clip_and_ema: bool = False):
    """Forward, Eq. 14's loss, backward and an AdamW step on the trainer's own model, with a fixed batch, t and ε.
    clip_and_ema: also DDPM's gradient clipping before the update and the EMA update after it, the algorithm's own work."""
    model, s, b = trainer.model, trainer.schedule, trainer.config.batch_size
    # the Trainer's own AdamW kernel (fused on a CPU): the optimiser's speed is not the Trainer's overhead
    opt = torch.optim.AdamW(model.parameters(), lr=trainer.config.lr, fused=bool(trainer.opt.param_groups[0].get("fused")))
    g = torch.Generator().manual_seed(0)
    x0 = trainer.dataset.x[:b]
    t = torch.randint(0, s.n_steps, (b,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    x_t = q_sample(x0, t, eps, s)
    dtype = {"bf16": torch.bfloat16}.get(trainer.precision)
    if not clip_and_ema:
        return eq14_step(model, opt, x_t, t, eps, dtype)
    update = opt.step
    opt.step = lambda: (_clip_grad_norm(trainer._params, trainer.config.grad_clip), update())
    step = eq14_step(model, opt, x_t, t, eps, dtype)

    def f():
        step()
        trainer.ema.update(model, 10_000)
    return f


def adam_speedup(rep: Report, trainer: Trainer, n: int):
    "One AdamW update on the model's parameters: the fused kernel the Trainer uses against torch's per-tensor default."
    params = [torch.nn.Parameter(p.detach().clone()) for p in trainer.model.parameters()]
    for p in params: p.grad = torch.randn_like(p) * 1e-3
    opts = {"per-tensor": torch.optim.AdamW(params, lr=1e-4), "fused": torch.optim.AdamW(params, lr=1e-4, fused=True)}
    for o in opts.values(): o.step()
    times = alternate({k: (lambda o=o: [o.step() for _ in range(n)]) for k, o in opts.items()}, 5, 1)
    rep.add(BENCH, f"AdamW update, fused speed-up over per-tensor, {trainer.config.model}",
            f"{fmt_ratio(ratio(times, 'per-tensor', 'fused'))} ({median(times['per-tensor']) / n * 1e3:.2f} / {median(times['fused']) / n * 1e3:.2f} ms)")


def parts(rep: Report, trainer: Trainer, n: int):
    "Where the extra time goes: each addition of the Trainer's step, timed alone (median of n calls)."
    m = trainer.model

    def med(f):
        ts = []
        for _ in range(n + 1):
            t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
        return median(ts[1:])
    # gradients are needed for clipping: make one set
    trainer.model.train()
    bare_step(trainer)()
    found = {"batch + t, ε draw": med(lambda: (trainer._batch(0), trainer._noise(0, trainer.dataset.x[:1]))),
             "gradient clipping": med(lambda: _clip_grad_norm(trainer._params, trainer.config.grad_clip)),
             "EMA update": med(lambda: trainer.ema.update(m, 10_000))}
    for k, v in found.items():
        rep.add(BENCH, f"Trainer step part: {k} ({trainer.precision})", f"{v * 1e3:.2f} ms")


def add_args(p):
    p.add_argument("--trainer-batch", type=int, default=None, help="batch size of the tiny U-Net (default 128, the Trainer's; 32 with --quick)")
    p.add_argument("--trainer-steps", type=int, default=None, help="steps per timed round (default 5; 2 with --quick)")
    p.add_argument("--trainer-models", default=None,
                   help="comma-separated subset of mlp,tiny,mnist,cifar10 (default: all; mlp,tiny with --quick)")


# each model with the data and batch it trains on here: the 2-D MLP on the moons (chapter 9's recipe), the U-Net presets on
# images near their size (mnist on the digits at 32x32; cifar10 at a small batch: a CPU step of DDPM's model takes seconds)
SETUPS = {"mlp": ("moons", 256), "tiny": ("digits", 128), "mnist": ("digits32", 64), "cifar10": (None, 8)}


def _data(name: str):
    if name is None:                                            # cifar10-shaped random images: the step does not read them
        from ddpm_nb.data import ArrayDataset
        return ArrayDataset(torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1, name="random 32x32 RGB")
    from ddpm_nb.data import load_dataset
    return load_dataset(name, "train")


def run(rep: Report, args):
    header("trainer: Trainer.fit step vs a bare forward + backward + optimiser step, every preset")
    k = args.trainer_steps or (2 if args.quick else 5)
    models = (args.trainer_models or ("mlp,tiny" if args.quick else ",".join(SETUPS))).split(",")
    for model in models:
        data_name, b = SETUPS[model]
        if model == "tiny":
            b = args.trainer_batch or (32 if args.quick else b)
        data = _data(data_name)
        for precision in ("fp32", "auto"):
            with tempfile.TemporaryDirectory() as out:
                cfg = TrainConfig(model=model, batch_size=b, steps=10 ** 9, ckpt_every=10 ** 9, progress=False, device="cpu",
                                  out=out, precision=precision)
                trainer = Trainer(cfg, dataset=data)
                t0 = time.perf_counter(); trainer.save(); ckpt = time.perf_counter() - t0
                trainer.save = lambda: None                          # fit() ends with a checkpoint: disk I/O, timed above
                bare, algo = bare_step(trainer), bare_step(trainer, clip_and_ema=True)

                def fit():
                    trainer.fit(until=trainer.step + k)

                n_rounds = 3 if model == "cifar10" else rounds(args)
                times = alternate({"trainer": fit, "bare": lambda: [bare() for _ in range(k)],
                                   "algo": lambda: [algo() for _ in range(k)]}, n_rounds, args.warmup)
                r = ratio(times, "trainer", "bare")
                name = f"{precision} = {trainer.precision}" if precision == "auto" else precision
                rep.add(BENCH, f"Trainer step / bare step, {model} b={b}, {name}", fmt_ratio(r), target="≤ 1.10×", ok=r <= 1.10)
                rep.add(BENCH, f"Trainer step / (bare step + clipping + EMA), {model}, {name}", fmt_ratio(ratio(times, "trainer", "algo")))
                rep.add(BENCH, f"ms per step, Trainer / bare + clipping + EMA / bare, {model}, {name}",
                        " / ".join(f"{median(times[x]) / k * 1e3:.1f}" for x in ("trainer", "algo", "bare")))
                if model == "tiny":
                    parts(rep, trainer, 3 if args.quick else 10)
                    rep.add(BENCH, f"checkpoint write, once ({trainer.precision})", f"{ckpt * 1e3:.0f} ms")
                if precision == "fp32":
                    adam_speedup(rep, trainer, 3 if args.quick else 20)


if __name__ == "__main__":
    sys.exit(main_for(run, add_args, __doc__))
