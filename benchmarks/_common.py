"""What every benchmark shares: alternating timings, the figures they report, machine information and the markdown table.

Timing rule: candidates are timed in ONE process on the same inputs, in turn (A B, then B A, ...), after untimed
warm-up rounds; a time is the median over rounds and a ratio is the median of the per-round ratios, so a slow
patch of the machine (another job starting) hits both sides of a ratio alike.
"""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ddpm_nb.ckpt import atomic_path

DIFFUSERS_HINT = "diffusers is not installed (pip install -e \".[bench]\")"


def have_diffusers() -> bool:
    try: importlib.import_module("diffusers")
    except ImportError: return False
    return True


def diffusers_version() -> str | None:
    if not have_diffusers(): return None
    import diffusers
    return diffusers.__version__


# ---------------------------------------------------------------- timing

def alternate(fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 1, repeat: int = 1) -> dict[str, list[float]]:
    "Seconds per call of each function, one list entry per timed round; the order flips every round (A B, B A, ...)."
    if rounds < 1: raise ValueError(f"rounds must be >= 1, got {rounds}")
    names, times = list(fns), {k: [] for k in fns}
    for r in range(warmup + rounds):
        for k in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            for _ in range(repeat): fns[k]()
            dt = (time.perf_counter() - t0) / repeat
            if r >= warmup: times[k].append(dt)
    return times


def eq14_step(net, opt, x_t, t, eps, dtype=None):
    "A bare training step on a fixed batch: forward (under CPU autocast when dtype is given), Eq. 14's loss, backward, optimiser step."
    def f():
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            out = net(x_t, t)
        loss = (out.float() - eps).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return f


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def ratio(times: dict[str, list[float]], a: str, b: str) -> float:
    "Median over rounds of time(a) / time(b)."
    return median([x / y for x, y in zip(times[a], times[b])])


def spread(xs: list[float]) -> float:
    "Half the range between the lower and upper quartile, relative to the median: how noisy the rounds were."
    if len(xs) < 4: return (max(xs) - min(xs)) / 2 / median(xs)
    q = statistics.quantiles(xs, n=4)
    return (q[2] - q[0]) / 2 / median(xs)


# ---------------------------------------------------------------- figures

@dataclass
class Figure:
    bench: str          # which benchmark: sampler, unet, precision, trainer
    name: str           # what was measured
    value: str          # formatted value, or "skipped"
    target: str = ""    # e.g. "≤ 0.80×"; empty when the figure is for information
    ok: bool | None = None  # target met? None: no target, or skipped


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, bench: str, name: str, value, fmt: str = "{:.3g}", target: str = "", ok: bool | None = None) -> Figure:
        "Record a figure and print it at once (so a long run shows progress)."
        f = Figure(bench, name, value if isinstance(value, str) else fmt.format(value), target, ok)
        self.figures.append(f)
        status = "" if ok is None else ("  met" if ok else "  MISSED")
        tgt = f"  (target {target})" if target else ""
        print(f"  {name}: {f.value}{tgt}{status}", flush=True)
        return f

    def skip(self, bench: str, name: str, why: str):
        self.figures.append(Figure(bench, name, "skipped"))
        print(f"  {name}: skipped ({why})", flush=True)

    def note(self, text: str):
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    def to_markdown(self, info: dict, wall_s: float, settings: str) -> str:
        lines = ["# ddpm_nb benchmarks", "",
                 "| machine | |", "|---|---|", *[f"| {k} | {v} |" for k, v in info.items()], "",
                 f"{settings}; wall time {wall_s:.0f} s.", "",
                 "| benchmark | figure | value | target | met |", "|---|---|---:|---|---|"]
        for f in self.figures:
            met = "" if f.ok is None else ("yes" if f.ok else "**no**")
            lines.append(f"| {f.bench} | {f.name} | {f.value} | {f.target} | {met} |")
        if self.notes: lines += ["", "Notes:", "", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines) + "\n"


def write_atomic(path: str | Path, text: str):
    "Write text to path with the package's one atomic writer (ddpm_nb.ckpt.atomic_path): the file is whole or absent."
    with atomic_path(path) as tmp: tmp.write_text(text)


# ---------------------------------------------------------------- machine and command line

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"): return line.split(":", 1)[1].strip()
    except OSError: pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    try: bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError): bf16 = False
    info = {"CPU": cpu_model(), "cores (os.cpu_count)": os.cpu_count(), "torch threads": torch.get_num_threads(),
            "torch": torch.__version__, "diffusers": diffusers_version() or "not installed",
            "python": platform.python_version(), "native bf16 (oneDNN)": "yes" if bf16 else "no"}
    if hasattr(os, "getloadavg"): info["load average at start (1 min)"] = f"{os.getloadavg()[0]:.1f}"
    return info


def print_machine(info: dict):
    print("machine: " + "; ".join(f"{k} {v}" for k, v in info.items()), flush=True)


def add_common_args(p: argparse.ArgumentParser):
    p.add_argument("--quick", action="store_true", help="a smoke run of a few seconds: small sizes, few rounds")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per comparison (default 7; 3 with --quick)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds before the timed ones (default 1)")
    p.add_argument("--out", default=None, metavar="FILE.md", help="also write every figure as a markdown table (atomically)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads(N) before anything runs (default: torch's own choice, one per core); "
                        "on a machine busy with other jobs, 1 gives steadier figures")


def apply_threads(args):
    if args.threads is not None:
        if args.threads < 1: raise SystemExit(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)


def rounds(args) -> int:
    return args.rounds if args.rounds is not None else (3 if args.quick else 7)


def settings_line(args) -> str:
    return (f"Medians of {rounds(args)} alternating timed rounds after {args.warmup} warm-up round(s)"
            + (" (--quick: smoke-test sizes, not representative)" if args.quick else ""))


def main_for(module_run: Callable, add_args: Callable | None, description: str, argv=None) -> int:
    "The command line of a single benchmark script: parse, print the machine, run, write --out."
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    if add_args: add_args(p)
    args = p.parse_args(argv)
    apply_threads(args)
    t0 = time.perf_counter()
    info = machine_info(); print_machine(info)
    rep = Report()
    module_run(rep, args)
    wall = time.perf_counter() - t0
    print(f"wall time {wall:.1f} s", flush=True)
    if args.out: write_atomic(args.out, rep.to_markdown(info, wall, settings_line(args)))
    return 0


def header(title: str):
    print(f"\n== {title}", flush=True)


def fmt_ratio(x: float) -> str:
    return f"{x:.2f}×"


if __name__ == "__main__":
    sys.exit("this module is shared by the benchmark scripts; run benchmarks/run_all.py")
