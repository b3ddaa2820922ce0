"""Large user matrices within memory: `python -m eie.sw.bench_large`.

What `eie spmv --matrix W.npy --input x.npy` does before and after the simulation, on EIE's two largest
layers at 64 PEs: a float32 matrix of the published shape and density (random), quantized to a linear codebook
(`layer_from_matrix`), encoded and packed into a chip image sized to fit (`fit_image`, then every PE's
sparse-matrix and pointer words as the host writes them), decoded back and run through the bit-exact reference
(`forward(image.quant_layers())`), and the work per PE (`layer_perf`'s entry counts). No Verilator here: the
simulation itself is not measured. Each shape runs in a fresh process so that its peak resident memory
(`getrusage`) is its own; beside it, the matrix's own size and what the process held before making it
(the interpreter and its libraries).
"""

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

from eie.config import ChipConfig

# name: (rows, cols, weights kept, non-zero inputs), from EIE (ISCA 2016) Table III.
SHAPES = {"VGG-6": (4096, 25088, 0.04, 0.183), "Alex-6": (4096, 9216, 0.09, 0.351)}
TARGET_PEAK_GB = 3.0   # issue 11: eie spmv on VGG-6's shape


def random_matrix(rows, cols, density, seed=0, chunk=256):
    """A float32 rows x cols matrix with about `density` non-zeros, made in row chunks so that making it
    costs no more than the matrix."""
    rng = np.random.default_rng(seed)
    w = np.zeros((rows, cols), np.float32)
    for r in range(0, rows, chunk):
        block = w[r:r + chunk]
        mask = rng.random(block.shape, dtype=np.float32) < density
        block[mask] = rng.standard_normal(int(mask.sum()), dtype=np.float32)
    return w


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: KiB


def measure(name, pes=64, seed=0):
    """Time per stage and peak resident memory of the spmv path without the simulation, in this process."""
    from eie.sw.image import fit_image
    from eie.sw.perf import layer_perf
    from eie.sw.quant import layer_from_matrix
    from eie.sw.reference import forward
    rows, cols, density, act_density = SHAPES[name]
    start_mb = _peak_mb()                     # the interpreter and its libraries
    w = random_matrix(rows, cols, density, seed)
    rng = np.random.default_rng(seed + 1)
    x = (rng.uniform(-1, 1, cols) * (rng.random(cols) < act_density)).astype(np.float32)
    base_mb = _peak_mb()
    config = ChipConfig(pes=pes)
    times = {}

    def stage(key, f):
        t0 = time.perf_counter()
        out = f()
        times[key] = round(time.perf_counter() - t0, 2)
        return out
    layer, x_int = stage("quantize", lambda: layer_from_matrix(w, x, config))
    image = stage("image", lambda: fit_image([layer], config))
    stage("pack", lambda: [(image.matrix_words(k), image.pointer_words(k)) for k in range(pes)])
    ref = stage("reference", lambda: forward(image.quant_layers(), x_int[None, :], image.config)[-1])
    perf = stage("work", lambda: layer_perf(image.encoded_layers()[0], x_int, image.config))
    return {"shape": name, "rows": rows, "cols": cols, "pes": pes, "weights": int(np.count_nonzero(layer.w_index)),
            "nonzero_inputs": int(perf.nonzero[0]), "outputs_nonzero": int(np.count_nonzero(ref)),
            "matrix_mb": round(w.nbytes / 2**20), "start_mb": round(start_mb), "after_matrix_mb": round(base_mb),
            "peak_mb": round(_peak_mb()),
            "seconds": times, "total_seconds": round(sum(times.values()), 2),
            "busiest_pe_work": int(perf.bound_cycles[0]), "ideal_work": int(perf.ideal_cycles[0])}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m eie.sw.bench_large", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, of {', '.join(SHAPES)}")
    p.add_argument("--pes", type=int, default=64)
    p.add_argument("--one", metavar="SHAPE", help=argparse.SUPPRESS)   # the child process: one shape, JSON out
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.pes)))
        return 0
    names = args.shapes.split(",")
    unknown = [n for n in names if n not in SHAPES]
    if unknown:
        p.error(f"unknown shape(s) {', '.join(unknown)}; choose from {', '.join(SHAPES)}")
    print(f"spmv without simulation (quantize, image, pack, reference, work per PE) at {args.pes} PEs; "
          f"float32 matrices; peak = the process's peak resident memory")
    print(f"{'shape':<8} {'matrix':>11} {'weights':>9} {'matrix MB':>9} {'libs MB':>7} {'peak MB':>8} "
          f"{'quantize':>8} {'image':>6} "
          f"{'pack':>6} {'ref':>6} {'work':>6} {'total s':>7}")
    results = []
    for name in names:
        out = subprocess.run([sys.executable, "-m", "eie.sw.bench_large", "--one", name, "--pes", str(args.pes)],
                             capture_output=True, text=True)
        if out.returncode:
            print(f"{name}: failed\n{out.stderr}", file=sys.stderr)
            return 1
        r = json.loads(out.stdout)
        results.append(r)
        s = r["seconds"]
        print(f"{name:<8} {r['rows']:>5}x{r['cols']:<5} {r['weights']:>9,} {r['matrix_mb']:>9} {r['start_mb']:>7} {r['peak_mb']:>8} "
              f"{s['quantize']:>8} {s['image']:>6} {s['pack']:>6} {s['reference']:>6} {s['work']:>6} "
              f"{r['total_seconds']:>7}", flush=True)
    print("\ntargets:")
    checks = [(f"peak memory on VGG-6's shape < {TARGET_PEAK_GB:g} GB (issue 11)",
               [r["peak_mb"] < TARGET_PEAK_GB * 1024 for r in results if r["shape"] == "VGG-6"]),
              ("peak memory above the libraries' within 3x the float32 matrix on every shape",
               [r["peak_mb"] - r["start_mb"] < 3 * r["matrix_mb"] for r in results]),
              ("seconds, not minutes: under 30 s per shape without the simulation",
               [r["total_seconds"] < 30 for r in results])]
    for name, oks in checks:
        print(f"  {'PASS' if all(oks) else 'FAIL'}  {name}" + ("" if oks else " (not measured)"))
    return 0 if all(all(oks) for _, oks in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
