"""U-Net efficiency: ddpm_nb.unet.UNet against diffusers' UNet2DModel built with the same channel layout.

For each preset (tiny 8x8, mnist 28x28, cifar10 32x32 at a small batch) both networks get the same base channels,
multipliers, residual blocks per level, single-head attention at the same levels, GroupNorm eps 1e-6, dropout and
sinusoidal embedding, so their parameter counts agree. FLOPs are counted with torch.utils.flop_counter.FlopCounterMode
(convolutions and matrix products, attention included: the fused CPU attention kernel that diffusers reaches is
added to the counter's table), and GFLOP/s = FLOPs / median time, forward (eval, no grad) and forward + backward
(train mode). Targets: ours >= 0.9x diffusers' GFLOP/s, and >= 0.6x the rate of a large square fp32 matmul timed
in the same rounds.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
import torch.utils.flop_counter as fc
from torch import nn

from _common import DIFFUSERS_HINT, Report, alternate, fmt_ratio, have_diffusers, header, main_for, median, ratio, rounds
from ddpm_nb.unet import UNet, UNetConfig

BENCH = "unet"
aten = torch.ops.aten


def diffusers_unet(cfg: UNetConfig) -> nn.Module:
    "diffusers' UNet2DModel with the layout of our UNetConfig."
    from diffusers import UNet2DModel
    levels = range(len(cfg.ch_mult))
    return UNet2DModel(
        sample_size=cfg.image_size, in_channels=cfg.image_channels, out_channels=cfg.image_channels,
        block_out_channels=tuple(cfg.ch * m for m in cfg.ch_mult), layers_per_block=cfg.num_res_blocks,
        down_block_types=tuple("AttnDownBlock2D" if i in cfg.attn_levels else "DownBlock2D" for i in levels),
        up_block_types=tuple("AttnUpBlock2D" if i in cfg.attn_levels else "UpBlock2D" for i in reversed(levels)),
        dropout=cfg.dropout, norm_num_groups=cfg.groups, norm_eps=1e-6,
        attention_head_dim=None,                     # None: one head as wide as the block, as in DDPM
        freq_shift=1, flip_sin_to_cos=False)         # our embedding: sin then cos, ω_i = 10000^(−i/(half − 1))


def _cpu_sdpa(query, key, value, *args, out_shape=None, **kwargs):
    return fc.sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs):
    return fc.sdpa_backward_flop_count(grad_out, query, key, value)


def _custom_mapping() -> dict:
    "FLOP formulas for the CPU's fused attention, which FlopCounterMode does not count by itself."
    m = {}
    for name, f in (("_scaled_dot_product_flash_attention_for_cpu", _cpu_sdpa),
                    ("_scaled_dot_product_flash_attention_for_cpu_backward", _cpu_sdpa_backward)):
        if hasattr(aten, name): m[getattr(aten, name)] = f
    return m


def count_flops(f) -> int:
    with fc.FlopCounterMode(display=False, custom_mapping=_custom_mapping()) as counter:
        f()
    return counter.get_total_flops()


def matmul_fn(n: int):
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    return (lambda: torch.mm(a, b, out=out)), 2 * n ** 3


def add_args(p):
    p.add_argument("--presets", default=None, help="comma-separated presets (default tiny,mnist,cifar10; tiny with --quick)")


def run(rep: Report, args):
    header("unet: ddpm_nb.unet.UNet vs diffusers' UNet2DModel, same layout")
    ref = have_diffusers()
    if not ref: print(f"  {DIFFUSERS_HINT}: timing ours alone", flush=True)
    presets = (args.presets or ("tiny" if args.quick else "tiny,mnist,cifar10")).split(",")
    batches = {"tiny": 8 if args.quick else 64, "mnist": 4 if args.quick else 16, "cifar10": 1}
    mm, mm_flops = matmul_fn(768 if args.quick else 1536)
    for name in presets:
        cfg = UNetConfig.preset(name)
        b = batches.get(name, 1)
        torch.manual_seed(0)
        models = {"ours": UNet(cfg)}
        if ref: models["diffusers"] = diffusers_unet(cfg)
        tag = f"{name} {cfg.image_size}×{cfg.image_size} b={b}"
        rep.add(BENCH, f"parameters, {name}: ours / diffusers",
                f"{sum(p.numel() for p in models['ours'].parameters()):,} / " +
                (f"{sum(p.numel() for p in models['diffusers'].parameters()):,}" if ref else "n/a"))
        x = torch.randn(b, cfg.image_channels, cfg.image_size, cfg.image_size)
        t = torch.randint(0, 1000, (b,))
        call = {"ours": lambda m: m(x, t), "diffusers": lambda m: m(x, t).sample}

        def fwd(k):
            m = models[k]
            def f():
                with torch.no_grad(): call[k](m)
            return f

        def fwd_bwd(k):
            m = models[k]
            def f():
                call[k](m).square().mean().backward()
                m.zero_grad(set_to_none=True)
            return f

        for mode, make, train in (("forward", fwd, False), ("forward+backward", fwd_bwd, True)):
            for m in models.values(): m.train(train)
            flops = {k: count_flops(make(k)) for k in models}
            fns = {k: make(k) for k in models}
            fns["matmul"] = mm
            times = alternate(fns, rounds(args), args.warmup)
            rate = {k: flops[k] / median(times[k]) / 1e9 for k in models}
            mm_rate = mm_flops / median(times["matmul"]) / 1e9
            if ref:
                drift = abs(flops["ours"] - flops["diffusers"]) / flops["diffusers"]
                rep.add(BENCH, f"GFLOP, {mode}, {tag}: ours / diffusers", f"{flops['ours'] / 1e9:.2f} / {flops['diffusers'] / 1e9:.2f}")
                if drift > 0.05: rep.note(f"{name} {mode}: the FLOP counts differ by {100 * drift:.0f}%")
                r = ratio(times, "diffusers", "ours") * flops["ours"] / flops["diffusers"]   # (F_o/t_o) / (F_d/t_d)
                rep.add(BENCH, f"GFLOP/s, {mode}, {tag}: ours / diffusers", f"{rate['ours']:.1f} / {rate['diffusers']:.1f}")
                rep.add(BENCH, f"GFLOP/s ratio ours / diffusers, {mode}, {tag}", fmt_ratio(r), target="≥ 0.90×", ok=r >= 0.9)
            else:
                rep.add(BENCH, f"GFLOP/s, {mode}, {tag}: ours", f"{rate['ours']:.1f}")
                rep.skip(BENCH, f"GFLOP/s ratio ours / diffusers, {mode}, {tag}", DIFFUSERS_HINT)
            f = median([flops["ours"] / a / (mm_flops / c) for a, c in zip(times["ours"], times["matmul"])])
            rep.add(BENCH, f"GFLOP/s ratio ours / fp32 matmul ({mm_rate:.0f} GFLOP/s), {mode}, {tag}", fmt_ratio(f), target="≥ 0.60×", ok=f >= 0.6)


if __name__ == "__main__":
    sys.exit(main_for(run, add_args, __doc__))
