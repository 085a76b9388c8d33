"""Training-step overhead: a Trainer step against a bare forward + backward + optimiser step on the same model and batch.

The Trainer's step adds to the bare one: picking the batch, drawing t and eps from a per-step generator, the loss's
checks, gradient clipping, the learning-rate schedule and the EMA update. Both sides run the same model object with
the same batch size and precision (fp32, and the Trainer's default "auto", which is bf16 on CPUs with native bf16);
a round times `fit` over k steps (checkpoint writing switched off: it is disk I/O, timed once on its own) and k bare
steps. Every model: the 2-D MLP (moons, batch 256), the tiny (digits 8x8, 128), mnist (the digits at 32x32, 64) and cifar10 (32x32
RGB, 8) presets. Target: Trainer step <= 1.10x the bare step on each.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from torch import nn

from _common import Report, eq14_step, alternate, fmt_ratio, header, main_for, median, ratio, rounds
from ddpm_nb.forward import q_sample
from ddpm_nb.train import TrainConfig, Trainer

BENCH = "trainer"


def bare_step(trainer: Trainer):
    "Forward, Eq. 14's loss, backward and an AdamW step on the trainer's own model, with a fixed batch, t and ε."
    model, s, b = trainer.model, trainer.schedule, trainer.config.batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=trainer.config.lr)
    g = torch.Generator().manual_seed(0)
    x0 = trainer.dataset.x[:b]
    t = torch.randint(0, s.n_steps, (b,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    x_t = q_sample(x0, t, eps, s)
    dtype = {"bf16": torch.bfloat16}.get(trainer.precision)
    return eq14_step(model, opt, x_t, t, eps, dtype)


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
             "gradient clipping": med(lambda: nn.utils.clip_grad_norm_(m.parameters(), trainer.config.grad_clip)),
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
                bare = bare_step(trainer)

                def fit():
                    trainer.fit(until=trainer.step + k)

                def bare_k():
                    for _ in range(k): bare()

                n_rounds = 3 if model == "cifar10" else rounds(args)
                times = alternate({"trainer": fit, "bare": bare_k}, n_rounds, args.warmup)
                r = ratio(times, "trainer", "bare")
                name = f"{precision} = {trainer.precision}" if precision == "auto" else precision
                rep.add(BENCH, f"Trainer step / bare step, {model} b={b}, {name}", fmt_ratio(r), target="≤ 1.10×", ok=r <= 1.10)
                rep.add(BENCH, f"ms per step, Trainer / bare, {model}, {name}",
                        f"{median(times['trainer']) / k * 1e3:.1f} / {median(times['bare']) / k * 1e3:.1f}")
                if model == "tiny":
                    parts(rep, trainer, 3 if args.quick else 10)
                    rep.add(BENCH, f"checkpoint write, once ({trainer.precision})", f"{ckpt * 1e3:.0f} ms")


if __name__ == "__main__":
    sys.exit(main_for(run, add_args, __doc__))
