"""`eie compare`: the command. The comparison itself is `eie.sw.compare` (software only); this layer adds what
it must not import: the chip's cycles as time at the measured Fmax of each point's chip
(`eie.cosim.timing`, which reads `eie.cosim.fmax`), passed in as `chip_time`."""

import math
from pathlib import Path

from eie.cosim import timing
from eie.cosim.commands import add_range_arg, input_range
from eie.errors import EieError
from eie.sw.compare import DEFAULT_BUDGETS, METHODS, _log, compare
from eie.sw.image import SIZED_FIELDS

__all__ = ["register", "compare_command"]


def register(sub):
    p = sub.add_parser(
        "compare", help="pruning against the alternatives: accuracy, bytes, CPU time, chip cycles and energy",
        description="Shrink the run folder's dense baseline by every method (iterative and one-shot magnitude "
                    "pruning with L1/L2, OBD, truncated SVD, 8/4-bit weights, Deep Compression) at matched kept "
                    "fractions and measure each point the same way: test accuracy, parameters, storage bytes by one "
                    "rule, CPU wall-clock per inference (batch 1 and 64; dense torch, torch CSR, scipy CSR) and, "
                    "for sparse and dense forms, the chip's cycles and energy, and its time per image beside the "
                    "CPU's: at the chip's measured Fmax where 'eie synth --ecp5' recorded one, and at EIE's 800 MHz. "
                    "Writes compare.json, compare.md and "
                    "plots into the run folder. With --kernels, times dense against sparse kernels on EIE's "
                    "benchmark layer shapes instead.")
    p.add_argument("run", type=Path, nargs="?", metavar="RUN_DIR",
                   help="run folder holding baseline.pt (from 'eie prune'); not needed with --kernels")
    p.add_argument("--budgets", default=",".join(f"{b:g}" for b in DEFAULT_BUDGETS), metavar="F,F,...",
                   help="kept fractions of the weights, each in (0, 1) (default 0.25,0.1,0.08,0.05)")
    p.add_argument("--methods", metavar="M,M,...",
                   help=f"methods to run (default all: {', '.join(METHODS)}; 2:4 left out, with a log line, "
                        "where 4 does not divide a layer's inputs)")
    p.add_argument("--epochs", type=int, default=8, help="training epochs per point, every method alike (default 8)")
    p.add_argument("--iterations", type=int, default=3,
                   help="prune/retrain steps of the iterative methods (iterative, obd; default 3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for training and CPU timing (default 1)")
    p.add_argument("--pes", type=int, default=16, help="PEs of the chip whose cycles and energy are reported (default 16)")
    for flag, what in (("matrix-words", "sparse-matrix SRAM words per PE"), ("ptr-words", "pointer SRAM words per PE"),
                       ("count-bits", "bits of each column's entry count"),
                       ("act-depth", "activations per PE and bank")):
        p.add_argument(f"--{flag}", type=int, metavar="N",
                       help=f"{what} of the chip (default: fitted to each point; give a synthesized chip's memories, "
                            "e.g. --matrix-words 2048 --ptr-words 512 --count-bits 6, for times at its measured Fmax)")
    p.add_argument("--chip-samples", type=int, default=20,
                   help="test images the cycle model steps through per point (default 20; energy uses all)")
    p.add_argument("--timing-seconds", type=float, default=0.2,
                   help="seconds of repeated calls behind each CPU time (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed for training and sampling (default 0)")
    p.add_argument("--data", metavar="NAME", help="data set (default: the one the run folder was made with)")
    p.add_argument("--data-dir", type=Path, metavar="DIR", help="folder of MNIST-format IDX files")
    p.add_argument("--force", action="store_true", help="replace an earlier comparison's files")
    add_range_arg(p)
    p.add_argument("--kernels", action="store_true",
                   help="print the CPU micro-benchmark (dense versus sparse on Alex/VGG fc6-8 shapes, batch 1 and 64, "
                        "crossover density) instead")
    p.set_defaults(func=compare_command)


def compare_command(args):
    if args.kernels:
        from eie.sw.cputime import kernel_benchmark, kernel_table
        if args.threads < 1:
            raise EieError(f"--threads must be at least 1, not {args.threads}")
        rows = kernel_benchmark(threads=args.threads, min_run_time=args.timing_seconds, log=_log)
        print(kernel_table(rows))
        return 0
    if args.run is None:
        raise EieError("give a run folder (eie compare RUN_DIR) or --kernels")
    if not (math.isfinite(args.timing_seconds) and args.timing_seconds > 0):
        raise EieError(f"--timing-seconds must be a positive number, not {args.timing_seconds}")
    # the chip's cycles as time, beside the CPU's: at each point's chip's measured Fmax, and at EIE's 800 MHz
    chip_time = lambda config, cycles: timing.entry(config, cycles, cycles_from="model")
    with input_range(args.allow_out_of_range):
        results = compare(args.run, args.budgets, args.methods, epochs=args.epochs, iterations=args.iterations,
                          threads=args.threads, pes=args.pes, chip_samples=args.chip_samples,
                          min_run_time=args.timing_seconds, seed=args.seed, force=args.force, data=args.data,
                          data_dir=args.data_dir, chip_time=chip_time,
                          chip={f: getattr(args, f) for f in SIZED_FIELDS if getattr(args, f) is not None})
    v = results["verdict"]
    print(f"{len(results['points'])} points in {results['wall_seconds']:.0f} s; best accuracy per byte: "
          f"{v['best_accuracy_per_kb']['point']}; see {args.run / 'compare.md'}")
    return 0
