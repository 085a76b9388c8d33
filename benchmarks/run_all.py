"""Run every benchmark of ddpm_nb in one process: sampler, unet, precision, trainer.

    pip install -e ".[bench]"             # diffusers, the reference implementation
    python benchmarks/run_all.py          # the full run: half an hour on a busy 2-core CPU, much of it torch.compile
    python benchmarks/run_all.py --quick  # a smoke run: small sizes, few rounds; its timings mean little
    python benchmarks/run_all.py --out benchmarks/results-cpu.md

Each benchmark also runs alone (python benchmarks/sampler.py --help). Without diffusers the comparisons with it
are skipped, with a message, and the rest runs. A benchmark that fails is reported and the others still run; the
exit status is then 1.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DIFFUSERS_HINT, Report, add_common_args, apply_threads, have_diffusers, machine_info, print_machine, settings_line, write_atomic

import precision
import sampler
import trainer
import unet

BENCHMARKS = {"sampler": sampler, "unet": unet, "precision": precision, "trainer": trainer}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    for mod in BENCHMARKS.values(): mod.add_args(p)
    args = p.parse_args(argv)
    apply_threads(args)
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown: p.error(f"unknown benchmark(s) {unknown}; expected some of {list(BENCHMARKS)}")
    t0 = time.perf_counter()
    info = machine_info()
    print_machine(info)
    print(settings_line(args), flush=True)
    if not have_diffusers(): print(f"{DIFFUSERS_HINT}: the comparisons with diffusers are skipped", flush=True)
    rep, failed = Report(), []
    for name in names:
        t1 = time.perf_counter()
        try:
            BENCHMARKS[name].run(rep, args)
        except Exception:
            traceback.print_exc()
            failed.append(name)
            rep.note(f"the {name} benchmark failed; see the traceback in the log")
        print(f"  ({name}: {time.perf_counter() - t1:.0f} s)", flush=True)
    wall = time.perf_counter() - t0
    missed = [f"{f.bench}: {f.name.strip()}" for f in rep.figures if f.ok is False]
    print(f"\n{sum(f.ok is True for f in rep.figures)} targets met, {len(missed)} missed; wall time {wall:.0f} s", flush=True)
    for m in missed: print(f"  missed: {m}")
    if args.out:
        write_atomic(args.out, rep.to_markdown(info, wall, settings_line(args)))
        print(f"wrote {args.out}", flush=True)
    if failed: print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
