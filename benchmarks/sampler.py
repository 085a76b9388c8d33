"""Sampler overhead: ddpm_nb.sample.sample against a hand-written loop over diffusers' DDPMScheduler, DDIMScheduler and
DPMSolverMultistepScheduler (DPM-Solver++(2M), given the same visited steps: the Karras spacing of chapter 8a).

1. With a noise predictor that costs next to nothing (a gather and a multiply), a loop's time is the sampler's own
   work: the Python around each step, the step's arithmetic, the noise. Ours should take at most 0.8x diffusers' time.
2. Both sides start from the same x_T and draw the same per-step noise from one seeded CPU generator (the draw
   order is the same: x_T, then one draw per step with t > 0), so the samples must agree to float32 rounding.
3. With the tiny U-Net (8x8, batch 64), the sampler's share of the loop is
   (loop time - n_steps x forward time) / loop time; it should be at most 1%. The forward time is taken two ways:
   inside the very loop being timed (the target is judged on this one: it does not drift between rounds), and as
   n_steps bare forward passes timed in alternating rounds (reported beside it; on a busy machine it is noisy).

Settings that make the two sides compute the same thing: DDPM with sigma_t^2 = beta_tilde (diffusers'
variance_type "fixed_small"), x0_hat clipping set the same on both sides, DDIM with diffusers' default
timestep_spacing "leading" (ours: spacing="leading") and set_alpha_to_one=True (ours: alpha_bar = 1 after the
last step). The reference loop does not call DDPMScheduler.set_timesteps for the full 1000 steps (the scheduler
already holds them), which keeps diffusers on its fast previous-timestep path.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from torch import nn

from _common import DIFFUSERS_HINT, Report, alternate, fmt_ratio, have_diffusers, header, main_for, median, ratio, rounds
from ddpm_nb.sample import sample, timesteps
from ddpm_nb.schedule import Schedule
from ddpm_nb.unet import UNet

BENCH = "sampler"
T = 1000


class CheapModel(nn.Module):
    "A stand-in noise predictor that costs a gather and a multiply: ε̂ = √(1 − ᾱ_t) x_t, the exact one for data ~ N(0, I)."
    def __init__(self, s: Schedule):
        super().__init__()
        self.c = s.sqrt_one_minus_alpha_bar.clone()

    def forward(self, x, t): return self.c[t].view(-1, *[1] * (x.ndim - 1)) * x   # samples stay O(1)


class Timed(nn.Module):
    "Wrap a model and add up the seconds spent in its forward calls."
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.seconds = model, 0.

    def forward(self, x, t):
        t0 = time.perf_counter()
        out = self.model(x, t)
        self.seconds += time.perf_counter() - t0
        return out


def ours(model, shape, s, seed, **kw):
    return sample(model, shape, s, generator=torch.Generator().manual_seed(seed), progress=False, **kw)


def diffusers_loop(model, shape, sched, seed, n_steps=None, eta=None, steps=None):
    "The loop of diffusers' DDPMPipeline / DDIMPipeline, written out: one scheduler.step per timestep."
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    if n_steps is not None: sched.set_timesteps(n_steps)
    if steps is not None: sched.set_timesteps(timesteps=steps)     # the visited steps given explicitly
    extra = {} if eta is None else {"eta": eta}
    with torch.inference_mode():
        for t in sched.timesteps:
            eps = model(x, torch.full((shape[0],), int(t), dtype=torch.long))
            x = sched.step(eps, t, x, generator=g, **extra).prev_sample
    return x


def schedulers(clip: bool):
    from diffusers import DDIMScheduler, DDPMScheduler
    # diffusers' defaults are DDPM's linear schedule (β from 1e-4 to 0.02, T = 1000), like Schedule.from_name("linear")
    ddpm = DDPMScheduler(num_train_timesteps=T, variance_type="fixed_small", clip_sample=clip)
    ddim = DDIMScheduler(num_train_timesteps=T, clip_sample=clip, set_alpha_to_one=True, steps_offset=0)
    return ddpm, ddim


def dpm_solver():
    "diffusers' DPM-Solver++(2M), configured as chapter 8a's: data prediction, order 2, first order at the last step (to σ = 0)."
    from diffusers import DPMSolverMultistepScheduler
    return DPMSolverMultistepScheduler(num_train_timesteps=T, algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero")


def karras_steps_list(n):
    return timesteps(n, T, "karras", Schedule.from_name("linear", T)).tolist()


def check_spacings(rep: Report):
    "Our three spacings against diffusers' set_timesteps with the same timestep_spacing."
    from diffusers import DDIMScheduler
    default = DDIMScheduler().config.timestep_spacing
    agree = []
    for sp in ("linspace", "leading", "trailing"):
        same = True
        for n in (10, 50, 100, 250, 1000):
            d = DDIMScheduler(num_train_timesteps=T, timestep_spacing=sp); d.set_timesteps(n)
            same &= torch.equal(timesteps(n, T, sp), d.timesteps.long())
        if same: agree.append(sp)
    rep.add(BENCH, "spacings equal to diffusers' (n = 10, 50, 100, 250, 1000)", ", ".join(agree) or "none")
    rep.add(BENCH, "diffusers' default timestep_spacing (used for DDIM)", default)
    return default


def same_outputs(rep: Report, shape, seed=0):
    "Max |ours − diffusers| over the samples, same x_T and noise; samples are O(1)."
    s = Schedule.from_name("linear", T)
    m = CheapModel(s)
    cases = [("DDPM 1000 steps, no clipping", dict(sampler="ddpm", clip=False), False, {}),
             ("DDPM 1000 steps, x̂_0 clipped", dict(sampler="ddpm", clip=True), True, {}),
             ("DDIM 50 steps, η = 0", dict(sampler="ddim", n_steps=50, eta=0., spacing="leading", clip=False), False, dict(n_steps=50, eta=0.)),
             ("DDIM 50 steps, η = 1", dict(sampler="ddim", n_steps=50, eta=1., spacing="leading", clip=False), False, dict(n_steps=50, eta=1.))]
    cases.append(("DPM-Solver++(2M) 20 steps, Karras", dict(sampler="dpm++2m", n_steps=20, clip=False), False, dict(steps=karras_steps_list(20))))
    worst = 0.
    for name, kw, clip, dkw in cases:
        ddpm, ddim = schedulers(clip)
        a = ours(m, shape, s, seed, **kw)
        b = diffusers_loop(m, shape, {"ddpm": ddpm, "ddim": ddim}.get(kw["sampler"]) or dpm_solver(), seed, **dkw)
        diff = (a - b).abs().max().item()
        worst = max(worst, diff)
        rep.add(BENCH, f"same outputs: max abs diff, {name}", diff, "{:.1e}", target="≤ 1e-3", ok=diff <= 1e-3)
    print(f"  same-outputs worst max abs diff: {worst:.3e}", flush=True)


def overhead(rep: Report, args, shape):
    "Ours against diffusers with a model that costs nothing: the time is the sampler's own."
    s = Schedule.from_name("linear", T)
    m = CheapModel(s)
    n_ddpm = 1000
    cases = [("DDPM 1000 steps, no clipping", dict(sampler="ddpm", clip=False), False, {}, n_ddpm),
             ("DDPM 1000 steps, x̂_0 clipped", dict(sampler="ddpm", clip=True), True, {}, n_ddpm),
             ("DDIM 50 steps, η = 0", dict(sampler="ddim", n_steps=50, eta=0., spacing="leading", clip=False), False, dict(n_steps=50, eta=0.), 50),
             ("DPM-Solver++(2M) 20 steps, Karras", dict(sampler="dpm++2m", n_steps=20, clip=False), False, dict(steps=karras_steps_list(20)), 20)]
    for name, kw, clip, dkw, n in cases:
        ddpm, ddim = schedulers(clip)
        sched = {"ddpm": ddpm, "ddim": ddim}.get(kw["sampler"]) or dpm_solver()
        times = alternate({"ours": lambda: ours(m, shape, s, 0, **kw), "diffusers": lambda: diffusers_loop(m, shape, sched, 0, **dkw)},
                          rounds(args), args.warmup, repeat=1 if n > 100 else 5)
        r = ratio(times, "ours", "diffusers")
        rep.add(BENCH, f"ours / diffusers time, {name}", fmt_ratio(r), target="≤ 0.80×", ok=r <= 0.8)
        rep.add(BENCH, f"µs per step, ours / diffusers, {name}",
                f"{median(times['ours']) / n * 1e6:.0f} / {median(times['diffusers']) / n * 1e6:.0f}")


def share(rep: Report, args, batch, n_steps):
    "With the tiny U-Net: the part of a sampling loop that is not the network's forward pass."
    s = Schedule.from_name("linear", T)
    torch.manual_seed(0)
    model = Timed(UNet("tiny").eval())
    shape = (batch, 1, 8, 8)
    x = torch.randn(shape)
    for sampler, kw in (("ddpm", dict(spacing="linspace")), ("ddim", dict(spacing="leading", eta=0.))):
        tts = [torch.full((batch,), int(t), dtype=torch.long) for t in timesteps(n_steps, T, kw["spacing"])]
        inside = []                                             # per round: seconds in the network during the loop

        def loop():
            model.seconds = 0.
            ours(model, shape, s, 0, sampler=sampler, n_steps=n_steps, **kw)
            inside.append(model.seconds)

        def bare():
            with torch.inference_mode():
                for tt in tts: model.model(x, tt)

        times = alternate({"loop": loop, "bare": bare}, rounds(args), args.warmup)
        inside = inside[args.warmup:]
        name = f"tiny U-Net b={batch}, {sampler.upper()} {n_steps} steps"
        # the brief's definition: (loop − n_steps × bare forward) / loop, from alternating rounds
        frac_alt = median([(a - b) / a for a, b in zip(times["loop"], times["bare"])])
        # the same quantity with the forward time taken inside the very loop being timed: immune to drift between rounds
        frac_in = median([(a - m) / a for a, m in zip(times["loop"], inside)])
        rep.add(BENCH, f"sampler share of the loop, {name} (forwards timed inside the loop)",
                f"{100 * frac_in:.2f}%", target="≤ 1%", ok=frac_in <= 0.01)
        rep.add(BENCH, f"sampler share of the loop, {name} (loop − n_steps × bare forward)", f"{100 * frac_alt:.1f}%")
        rep.add(BENCH, f"ms per step, loop / forward inside it / bare forward, {name}",
                f"{median(times['loop']) / n_steps * 1e3:.2f} / {median(inside) / n_steps * 1e3:.2f} / {median(times['bare']) / n_steps * 1e3:.2f}")


def add_args(p):
    p.add_argument("--sampler-batch", type=int, default=None, help="batch of the cheap-model loops (default 64; 16 with --quick)")


def run(rep: Report, args):
    header("sampler: ddpm_nb.sample vs diffusers' DDPMScheduler / DDIMScheduler")
    b = args.sampler_batch or (16 if args.quick else 64)
    shape = (b, 1, 8, 8)
    if have_diffusers():
        check_spacings(rep)
        same_outputs(rep, shape)
        overhead(rep, args, shape)
    else:
        print(f"  {DIFFUSERS_HINT}: skipping the comparisons with diffusers", flush=True)
        rep.skip(BENCH, "same outputs and ours / diffusers time", DIFFUSERS_HINT)
    share(rep, args, batch=8 if args.quick else 64, n_steps=10 if args.quick else 50)


if __name__ == "__main__":
    sys.exit(main_for(run, add_args, __doc__))
