"""`make bench`: the chip on EIE's reference workload, a random 1024x1024 layer with 10% of the weights
and 35% non-zero activations, at 16 and 64 PEs, 4- and 5-bit indices and two queue depths. Prints one table
row per design point: RTL cycles beside the busiest PE's work (the floor for a fixed row placement), the
even spread (ideal), the performance model, utilization and simulation speed; then the targets.
">bound" and "model err" are the worst sample's."""

import argparse
import sys
import time

import numpy as np

from eie.config import ChipConfig
from eie.sw.encode import encode_layer
from eie.sw.image import build_image, fit_config
from eie.sw.perf import layer_perf
from eie.sw.quant import QuantLayer
from eie.sw.reference import forward
from eie.cosim.sim import simulate


def workload(rows, cols, density, act_density, samples, seed):
    rng = np.random.default_rng(seed)
    w = rng.integers(1, 16, (rows, cols)) * (rng.random((rows, cols)) < density)
    layer = QuantLayer(w, np.concatenate([[0], rng.integers(-3000, 3000, 15)]), rng.integers(-500, 500, rows), 14,
                       True)
    x = rng.integers(-2000, 2000, (samples, cols)) * (rng.random((samples, cols)) < act_density)
    return layer, x


def design_point(layer, x, pes, index_bits, queue_depth):
    config = fit_config([layer], ChipConfig(pes=pes, index_bits=index_bits, queue_depth=queue_depth, count_bits=8))
    image = build_image([layer], config)
    t0 = time.perf_counter()
    result = simulate(image, x, log=lambda s: print(f"  {s}", file=sys.stderr, flush=True))
    wall = time.perf_counter() - t0
    mismatches = int((result.outputs != forward(image.quant_layers(), x, config)[-1]).sum())
    enc = encode_layer(layer.w_index, config)
    perf = layer_perf(enc, x, config)
    cycles = result.cycles.astype(float)
    bound = perf.bound_cycles.astype(float)
    model = perf.model_cycles.astype(float)
    return {
        "pes": pes, "index_bits": index_bits, "queue": queue_depth, "mismatches": mismatches,
        "cycles": cycles.mean(), "bound": bound.mean(), "ideal": perf.ideal_cycles.mean(),
        "model": model.mean(), "over_bound": (cycles / bound - 1).max(),
        "model_error": np.abs(model / cycles - 1).max(),
        "utilization": perf.utilization(cycles).mean(),
        "padding": sum(pe.n_padding for pe in enc.pes) / sum(pe.n_entries for pe in enc.pes),
        "sim_cycles_per_s": result.sim_cycles_per_s, "wall": wall,
    }


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m eie.cosim.bench", description=__doc__)
    p.add_argument("--samples", type=int, default=8, help="input vectors per design point (default 8)")
    p.add_argument("--points", default="16:4:8,16:5:8,64:4:8,64:4:16", metavar="PES:ZBITS:QUEUE,...",
                   help="design points: PEs, relative index bits, activation queue depth "
                        "(default 16:4:8,16:5:8,64:4:8,64:4:16)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        points = [tuple(int(v) for v in point.split(":")) for point in args.points.split(",")]
        assert all(len(point) == 3 for point in points)
    except (ValueError, AssertionError):
        p.error(f"--points {args.points!r}: give PES:ZBITS:QUEUE triples separated by commas")
    layer, x = workload(1024, 1024, 0.10, 0.35, args.samples, args.seed)
    rows = []
    print(f"1024x1024 layer, {np.count_nonzero(layer.w_index)} weights (10%), {args.samples} inputs with 35% "
          f"non-zero activations", flush=True)
    head = (f"{'PEs':>4} {'z bits':>6} {'queue':>5} {'cycles':>8} {'bound':>8} {'ideal':>8} {'model':>8} {'>bound':>7} "
            f"{'model err':>9} {'util':>6} {'padding':>8} {'sim c/s':>9} {'mism.':>6}")
    print(head)
    for pes, ib, queue in points:
        r = design_point(layer, x, pes, ib, queue)
        rows.append(r)
        print(f"{pes:>4} {ib:>6} {queue:>5} {r['cycles']:>8.0f} {r['bound']:>8.0f} {r['ideal']:>8.0f} "
              f"{r['model']:>8.0f} {r['over_bound']:>7.2%} {r['model_error']:>9.2%} {r['utilization']:>6.3f} "
              f"{r['padding']:>8.1%} {r['sim_cycles_per_s']:>9,.0f} {r['mismatches']:>6}", flush=True)
    print("\ntargets (EIE workload):")
    checks = [
        ("bit-exact on every sample", all(r["mismatches"] == 0 for r in rows)),
        ("utilization >= 0.90 at 16 PEs (5-bit index)",
         all(r["utilization"] >= 0.90 for r in rows if r["pes"] == 16 and r["index_bits"] == 5)),
        ("cycles within 5% of the busiest PE's work (best design point per PE count)",
         all(min(r["over_bound"] for r in rows if r["pes"] == n) <= 0.05 for n in {r["pes"] for r in rows})),
        ("RTL cycles within 2% of the model", all(r["model_error"] <= 0.02 for r in rows)),
        (">= 200k simulated cycles/s at 16 PEs", all(r["sim_cycles_per_s"] >= 2e5 for r in rows if r["pes"] == 16)),
    ]
    for name, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
