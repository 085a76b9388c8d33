"""The recipe lab: quality per CPU minute on the digits, one change at a time against chapter 9's recipe.

Each experiment trains the tiny U-Net on the digits with chapter 9's recipe (4000 steps, batch 128, lr 1e-3 after a
200-step warm-up, EMA 0.999) and one change, then evaluates the EMA model as chapter 9 does: 900 samples, the feature
Frechet distance over the training-copies floor (fd/copies), for sample seeds 0, 1 and 2, with DDIM-50 and
DPM-Solver++(2M) at 20 steps. It prints one JSON line per experiment (and appends it to --out). The Benchmarks page
lists every experiment with its outcome.

    python benchmarks/recipes.py --list
    python benchmarks/recipes.py baseline dropout0 --out lab.jsonl
    python benchmarks/recipes.py baseline --samplers ddpm:1000,ddim:50 --seeds 0,1,2

Train alone on the machine: the budget is wall time on two idle cores, and a second job sharing them slows both.
Some experiments change what TrainConfig has no field for (a decaying learning rate, another EMA warm-up); those
changes are made here, on the Trainer, and are named in the experiment's description.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ddpm_nb.ckpt import load_model
from ddpm_nb.metrics import evaluate, reference_for
from ddpm_nb.train import RECIPES, TrainConfig, Trainer

# the digits recipe (chapter 9's): the baseline every experiment changes one thing of
BASE = {**{k: v for k, v in RECIPES["digits"].items() if k != "out"}, "seed": 0}


def _cosine_lr(trainer: Trainer):
    "After the warm-up, the learning rate decays to 0 on a half cosine over the rest of the run."
    c = trainer.config

    def factor(k):
        if k < c.warmup: return (k + 1) / max(c.warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (k - c.warmup) / max(c.steps - c.warmup, 1))))
    trainer.lr_sched = torch.optim.lr_scheduler.LambdaLR(trainer.opt, factor)


# name: (TrainConfig changes, a change made on the Trainer or None, what it tests)
EXPERIMENTS = {
    "baseline": ({}, None, "chapter 9's recipe"),
    "dropout0": ({"model_changes": {"dropout": 0.0}}, None, "no dropout (the tiny preset has 0.1): 20% faster steps"),
    "min_snr": ({"weighting": "min_snr"}, None, "Min-SNR-5 loss weighting"),
    "v": ({"prediction": "v"}, None, "the network predicts v instead of eps"),
    "cosine": ({"schedule": "cosine"}, None, "the cosine noise schedule"),
    "ema9995": ({"ema_decay": 0.9995}, None, "EMA decay 0.9995 (with the warm-up min(d, (1+k)/(10+k)))"),
    "ema_no_warmup": ({"ema_warmup": False}, None, "EMA decay 0.999 from the first step, no warm-up"),
    "cosine_lr": ({}, _cosine_lr, "learning rate decays to 0 on a cosine after the warm-up"),
    "dropout0_lr2e-3": ({"model_changes": {"dropout": 0.0}, "lr": 2e-3}, None, "no dropout, learning rate 2e-3"),
    "dropout0_b64": ({"model_changes": {"dropout": 0.0}, "batch_size": 64, "steps": 5000}, None,
                     "no dropout, batch 64 for 5000 steps (about the same wall time)"),
}


def run_one(name: str, samplers: list[tuple[str, int]], seeds: list[int], out_dir: Path, steps: int | None = None,
            n: int = 900, train_seed: int = 0) -> dict:
    changes, tweak, what = EXPERIMENTS[name]
    run = out_dir / (name if train_seed == 0 else f"{name}-seed{train_seed}")
    config = {**BASE, **changes, "seed": train_seed}
    if steps: config.update(steps=steps, warmup=min(config["warmup"], steps // 4))
    tr = Trainer(TrainConfig(**config, out=str(run), log_every=min(100, config["steps"]), ckpt_every=10 ** 6, keep=1,
                             progress=False))
    if tweak: tweak(tr)
    load = os.getloadavg()[0]
    t0, c0 = time.time(), time.process_time()
    tr.fit()
    wall, cpu = time.time() - t0, time.process_time() - c0
    model, s, _ = load_model(run)
    ref = reference_for("digits")
    res = {}
    for sampler, k in samplers:
        r = [evaluate(model, s, ref, n=n, seed=seed, sampler=sampler, n_steps=k)["fd_ratio"] for seed in seeds]
        res[f"{sampler}-{k}"] = {"mean": float(np.mean(r)), "sd": float(np.std(r)), "per_seed": [round(x, 3) for x in r]}
    return dict(name=name, what=what, changes=changes, train_seed=train_seed, steps=config["steps"], n=n, train_wall_s=round(wall), train_cpu_s=round(cpu),
                load_before=round(load, 2), threads=torch.get_num_threads(), final_loss=round(tr.history[-1][1], 4),
                fd_copies=res)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help="experiments to run (see --list)")
    p.add_argument("--list", action="store_true", help="list the experiments and stop")
    p.add_argument("--samplers", default="ddim:50,dpm++2m:20", help="sampler:steps pairs, comma-separated")
    p.add_argument("--seeds", default="0,1,2", help="sample seeds, comma-separated")
    p.add_argument("--train-seed", type=int, default=0, help="the training run's seed: weights, data order, t and noise")
    p.add_argument("--runs", default=None, help="folder for the runs (default: a temporary one)")
    p.add_argument("--out", default=None, help="append each result as a JSON line to this file")
    p.add_argument("--steps", type=int, default=None, help="train this many steps instead (a smoke test; not comparable)")
    p.add_argument("--n", type=int, default=900, help="samples per evaluation (at least 180)")
    args = p.parse_args(argv)
    if args.list or not args.names:
        for k, (changes, tweak, what) in EXPERIMENTS.items(): print(f"{k:16s} {what}")
        return 0
    unknown = [n for n in args.names if n not in EXPERIMENTS]
    if unknown: p.error(f"unknown experiment(s) {unknown}; expected some of {list(EXPERIMENTS)}")
    samplers = [(a, int(b)) for a, b in (x.split(":") for x in args.samplers.split(","))]
    seeds = [int(x) for x in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.names:
            row = run_one(name, samplers, seeds, Path(args.runs or tmp), args.steps, args.n, args.train_seed)
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as fh: fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
