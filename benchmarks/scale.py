"""Throughput of DDPM's CIFAR-10 recipe: the 35.7M-parameter `cifar10` U-Net at 32x32, on the GPU when there is one.

What it reports, each measured in this process:
- FLOPs per image of the network, forward (sampling) and forward + backward (training), counted with
  torch.utils.flop_counter.FlopCounterMode (chapter 11 derives the same number layer by layer);
- the rate of a large square matmul in bf16 and in fp32 on the same device, timed in the same rounds as the network:
  the reference the network's rate is a fraction of;
- training: images per second of a full training step (forward, Eq. 14's loss, backward, AdamW step, EMA update)
  at the recipe's batch (128; 16 on a CPU) in fp32, bf16 autocast, bf16 + channels-last and, on CUDA,
  bf16 + channels-last + torch.compile; the fraction of the bf16 matmul rate each reaches; the time 800k steps
  would take at that speed; peak GPU memory;
- sampling: milliseconds per denoising step at batch 256 (32 on a CPU) with bf16 autocast, its fraction of the
  matmul rate, and what 50 000 samples of 1000 DDPM steps (the paper's FID protocol) would take.

Timing rule (as in every benchmark here): candidates alternate in one process after warm-up rounds; a time is the
median over rounds, and each rate is also given as a ratio to the matmul timed in the same rounds.
`--quick` is a smoke run of a few seconds (batch 2, two rounds): its figures are not representative.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch

from _common import Report, alternate, fmt_ratio, header, main_for, median, rounds
from unet import count_flops
from ddpm_nb.forward import auto_precision
from ddpm_nb.sample import ddpm_step
from ddpm_nb.schedule import Schedule
from ddpm_nb.train import EMA, TrainConfig, build_model

BENCH = "scale"
PAPER_IMAGES_PER_S = 21 * 128   # DDPM, Appendix B: 21 steps/s at batch 128 on a TPU v3-8


def add_args(p):
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when there is one)")
    p.add_argument("--batch", type=int, default=None, help="training batch (default 128 on CUDA, 16 on a CPU, 2 with --quick)")
    p.add_argument("--sample-batch", type=int, default=None, help="sampling batch (default 256 on CUDA, 32 on a CPU, 2 with --quick)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="include the torch.compile variant (default: on CUDA only; compiling the network takes a minute or more)")


def _sync(device):
    if device.type == "cuda": torch.cuda.synchronize(device)


def matmul(n: int, dtype, device):
    "A square matmul and its FLOPs."
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    def f():
        torch.mm(a, b, out=out); _sync(device)
    return f, 2 * n ** 3


def train_step(config: TrainConfig, device, batch: int, dtype, channels_last: bool, compile: bool):
    "One full training step on a fixed batch (forward under autocast, Eq. 14, backward, clipping, AdamW, EMA): a callable."
    torch.manual_seed(0)
    model = build_model(config, (3, 32, 32)).to(device)
    if channels_last: model = model.to(memory_format=torch.channels_last)
    ema = EMA(model, config.ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.)
    net = torch.compile(model) if compile else model
    s = Schedule.from_name(config.schedule, config.timesteps).to(device)
    x0 = torch.rand(batch, 3, 32, 32, device=device) * 2 - 1
    t = torch.randint(0, config.timesteps, (batch,), device=device)
    eps = torch.randn_like(x0)
    ab = s.alpha_bar[t][:, None, None, None]
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps                          # Eq. 4
    if channels_last: x_t = x_t.contiguous(memory_format=torch.channels_last)
    k = [0]
    def f():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = net(x_t, t)
        loss = (out.float() - eps).pow(2).mean()                          # Eq. 14
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        ema.update(model, k[0]); k[0] += 1
        _sync(device)
    return f


def sample_step(model, device, batch: int, dtype, s: Schedule):
    "One DDPM denoising step at batch `batch` (network forward under autocast, then Algorithm 2's update): a callable."
    x = torch.randn(batch, 3, 32, 32, device=device)
    t = torch.full((batch,), 500, device=device, dtype=torch.long)
    noise = torch.randn_like(x)
    def f():
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            eps_pred = model(x, t)
        ddpm_step(eps_pred.float(), t, x, s, noise=noise)
        _sync(device)
    return f


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds < 72 * 3600 else f"{seconds / 86400:.1f} days"


def run(rep: Report, args):
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    if cuda: torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False   # fp32 means fp32
    header(f"scale: the cifar10 recipe's U-Net on {torch.cuda.get_device_name(device) if cuda else 'the CPU'}")
    config = TrainConfig.recipe("cifar10", device=str(device))
    b = args.batch or (2 if args.quick else 128 if cuda else 16)
    bs = args.sample_batch or (2 if args.quick else 256 if cuda else 32)
    compile = args.compile if args.compile is not None else cuda
    model = build_model(config, (3, 32, 32)).to(device)
    rep.add(BENCH, "parameters", f"{sum(p.numel() for p in model.parameters()):,}")

    x1, t1 = torch.randn(1, 3, 32, 32, device=device), torch.zeros(1, dtype=torch.long, device=device)
    model.eval()
    with torch.no_grad(): f_fwd = count_flops(lambda: model(x1, t1))
    model.train()
    f_train = count_flops(lambda: model(x1, t1).square().mean().backward())
    model.zero_grad(set_to_none=True)
    rep.add(BENCH, "GFLOP per image, forward (one sampling step)", f_fwd / 1e9, "{:.2f}")
    rep.add(BENCH, "GFLOP per image, forward + backward (one training step)", f_train / 1e9, "{:.2f}")

    n = 512 if args.quick else (8192 if cuda else 2048)
    native_bf16 = auto_precision(device) == "bf16"
    ref = "bf16" if native_bf16 else "fp32"                             # the reference: the fastest matmul the device has
    mm32, mm_flops = matmul(n, torch.float32, device)
    mms = {"matmul fp32": mm32}
    if native_bf16: mms["matmul bf16"] = matmul(n, torch.bfloat16, device)[0]
    else: rep.note(f"{device} has no native bf16 (precision='auto' trains in fp32 here): the bf16 variants are skipped, and rates are fractions of the fp32 matmul")

    variants = {"fp32": (None, False, False)}
    if native_bf16: variants.update({"bf16": (torch.bfloat16, False, False), "bf16 + channels_last": (torch.bfloat16, True, False)})
    else: variants["fp32 + channels_last"] = (None, True, False)
    if compile: variants[f"{ref} + channels_last + compile"] = (torch.bfloat16 if native_bf16 else None, True, True)
    fns, peak = {}, {}
    for name, (dtype, cl, comp) in variants.items():
        fns[name] = train_step(config, device, b, dtype, cl, comp)
        if cuda: torch.cuda.reset_peak_memory_stats(device)
        for _ in range(3 if comp else 1): fns[name]()                    # compile and autotune outside the timing
        if cuda: peak[name] = torch.cuda.max_memory_allocated(device)
    fns.update(mms)
    times = alternate(fns, rounds(args), args.warmup)
    for k in mms: rep.add(BENCH, f"{k} {n}×{n}: TFLOP/s", mm_flops / median(times[k]) / 1e12, "{:.3g}")
    for name in variants:
        ips = b / median(times[name])
        frac = median([f_train * b / a / (mm_flops / m) for a, m in zip(times[name], times[f"matmul {ref}"])])
        rep.add(BENCH, f"training, {name}, batch {b}: images/s", ips, "{:.1f}")
        rep.add(BENCH, f"training, {name}: fraction of the {ref} matmul rate", fmt_ratio(frac))
        rep.add(BENCH, f"training, {name}: 800k steps of batch 128 would take", hours(800_000 * 128 / ips))
        if cuda: rep.add(BENCH, f"training, {name}: peak GPU memory", f"{peak[name] / 2**30:.2f} GiB")
    best = max(variants, key=lambda k: b / median(times[k]))
    rep.add(BENCH, f"training, fastest ({best}): speed vs the paper's TPU v3-8 (21 steps/s at batch 128)",
            f"{b / median(times[best]) / PAPER_IMAGES_PER_S:.3g}×")
    del fns

    s = Schedule.from_name("linear", 1000).to(device)
    model.eval()
    samp = {"sampling step fp32": sample_step(model, device, bs, None, s), f"matmul {ref}": mms[f"matmul {ref}"]}
    if native_bf16: samp["sampling step bf16"] = sample_step(model, device, bs, torch.bfloat16, s)
    if cuda: torch.cuda.reset_peak_memory_stats(device)
    times = alternate(samp, rounds(args), args.warmup)
    for k in ("bf16", "fp32")[0 if native_bf16 else 1:]:
        ms = median(times[f"sampling step {k}"]) * 1e3
        frac = median([f_fwd * bs / a / (mm_flops / m) for a, m in zip(times[f"sampling step {k}"], times[f"matmul {ref}"])])
        rep.add(BENCH, f"sampling, {k}, batch {bs}: ms per denoising step", ms, "{:.1f}")
        rep.add(BENCH, f"sampling, {k}: fraction of the {ref} matmul rate", fmt_ratio(frac))
        rep.add(BENCH, f"sampling, {k}: 50 000 samples × 1000 DDPM steps would take", hours(50_000 / bs * 1000 * ms / 1e3))
    if cuda: rep.add(BENCH, f"sampling, batch {bs}: peak GPU memory", f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


if __name__ == "__main__":
    sys.exit(main_for(run, add_args, __doc__))
