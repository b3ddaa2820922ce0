"""Row placement on EIE's benchmark layers: `python -m eie.sw.bench_placement`.

For each layer of EIE's Table III (published shape and weight density, random weights) at 64 PEs: the busiest
PE's work over the ideal (total work / PEs), per input and averaged, from `eie.sw.perf`, for EIE's interleaving,
balanced placement knowing only the matrix, and balanced placement calibrated on inputs. Inputs have the
published share of non-zero activations, but each input's chance of being non-zero varies (Beta-distributed,
as real activations do); the calibration inputs are drawn apart from the measured ones. No Verilator: this is
the work per PE, the floor of the cycles for a fixed placement; "paired" says whether balanced placement paired
the PEs (`eie.sw.placement.can_pair`). With `--cycles`, the performance model's cycles
(equal to the RTL's) over the ideal instead, and mean cycles: with `--samples 2` (and the default seed and
calibration) these are the inputs, and the figures, of `eie bench --suite eie` at the same design point
(`--index-bits`, `--queue-depth`, `--jobs-depth`, `--acts-per-cycle`; EIE's by default here).
"""

import argparse
import sys
import time

import numpy as np

from eie.config import ChipConfig

# name: (rows, cols, weights kept, non-zero inputs), EIE (ISCA 2016) Table III; rows x cols is W's shape.
EIE_LAYERS = {
    "Alex-6": (4096, 9216, 0.09, 0.351), "Alex-7": (4096, 4096, 0.09, 0.353), "Alex-8": (1000, 4096, 0.25, 0.375),
    "VGG-6": (4096, 25088, 0.04, 0.183), "VGG-7": (4096, 4096, 0.04, 0.375), "VGG-8": (1000, 4096, 0.23, 0.411),
    "NT-We": (600, 4096, 0.10, 1.0), "NT-Wd": (8791, 600, 0.11, 1.0), "NT-LSTM": (2400, 1201, 0.10, 1.0),
}

# EIE's front end (ISCA 2016): the design point `eie bench` compares EIE's figures at.
EIE_DESIGN = {"index_bits": 4, "queue_depth": 8, "jobs_depth": 16, "acts_per_cycle": 1, "outputs_per_cycle": 1}


def workload(rows, cols, density, act_density, samples, calibration, seed=0):
    """(index matrix, measured inputs, calibration inputs): inputs share per-column non-zero rates."""
    rng = np.random.default_rng(seed)
    w = np.zeros((rows, cols), np.uint8)
    for r in range(0, rows, 512):
        block = w[r:r + 512]
        block[...] = rng.integers(1, 16, block.shape) * (rng.random(block.shape, np.float32) < density)
    rate = np.ones(cols) if act_density >= 1 else rng.beta(4 * act_density, 4 * (1 - act_density), cols)

    def draw(n):
        return rng.integers(1, 2000, (n, cols)) * (rng.random((n, cols)) < rate)
    return w, draw(samples), draw(calibration)


def compare(name, pes=64, samples=20, calibration=64, seed=0, cycles=False, **design):
    """Figures per placement; `design`: ChipConfig fields of the chip's front end (index_bits, queue_depth, ...)."""
    from eie.sw.encode import encode_layer
    from eie.sw.perf import layer_perf
    from eie.sw.placement import place_layers
    from eie.sw.quant import QuantLayer
    rows, cols, density, act_density = EIE_LAYERS[name]
    w, x, calib = workload(rows, cols, density, act_density, samples, calibration, seed)
    config = ChipConfig(pes=pes, act_depth=-(-max(rows, cols) // pes), count_bits=8, matrix_words=1 << 16,
                        ptr_words=1 << 12, **design)
    layer = QuantLayer(w, np.arange(config.codebook_size), np.zeros(rows, np.int64), 0, False)
    out = {"layer": name, "rows": rows, "cols": cols}
    for key, placement, calib_inputs in (("interleaved", "interleaved", None), ("matrix", "balanced", None),
                                         ("calibrated", "balanced", calib)):
        t0 = time.perf_counter()
        (held,), _, (paired,) = place_layers([layer], config, placement, calib_inputs)
        placed = time.perf_counter() - t0
        enc = encode_layer(held.w_index, config, paired=paired)
        perf = layer_perf(enc, x, config, model_samples=None if cycles else 0)
        ratio = (perf.model_cycles if cycles else perf.bound_cycles) / perf.ideal_cycles
        out[key] = {"over_ideal": float(ratio.mean()), "worst": float(ratio.max()), "seconds": placed, "paired": paired,
                    "cycles": float(perf.model_cycles.mean()) if cycles else None,
                    "padding": sum(pe.n_padding for pe in enc.pes) / max(1, sum(pe.n_entries for pe in enc.pes))}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m eie.sw.bench_placement", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", default=",".join(EIE_LAYERS), help="comma-separated names (default: all nine)")
    p.add_argument("--pes", type=int, default=64)
    p.add_argument("--samples", type=int, default=20, help="measured inputs per layer (default 20)")
    p.add_argument("--calibration", type=int, default=64, help="calibration inputs, drawn apart (default 64)")
    p.add_argument("--seed", type=int, default=0)
    for field, value in EIE_DESIGN.items():   # the chip's front end, EIE's by default (the suite runs ours)
        p.add_argument(f"--{field.replace('_', '-')}", type=int, default=value, help=f"default {value}, as EIE")
    p.add_argument("--cycles", action="store_true", help="the cycle model's cycles / ideal, and mean cycles")
    args = p.parse_args(argv)
    names = args.layers.split(",")
    unknown = [n for n in names if n not in EIE_LAYERS]
    if unknown:
        p.error(f"unknown layer(s) {', '.join(unknown)}; choose from {', '.join(EIE_LAYERS)}")
    what = "model cycles / ideal [mean cycles]" if args.cycles else "busiest PE's work / ideal"
    design = {field: getattr(args, field) for field in EIE_DESIGN}
    print(f"{what} at {args.pes} PEs, {', '.join(f'{k} {v}' for k, v in design.items())}, mean over "
          f"{args.samples} inputs (worst in brackets); EIE reports real time about 1.10 x ideal")
    width = 27 if args.cycles else 16
    print(f"{'layer':<8} {'shape':>11} {'padding':>7} {'interleaved':>{width}} {'matrix-only':>{width}} "
          f"{'calibrated':>{width}} {'placing s':>9} {'paired':>6}")
    rows = []
    for name in names:
        r = compare(name, args.pes, args.samples, args.calibration, args.seed, args.cycles, **design)
        rows.append(r)
        cell = lambda k: (f"{r[k]['over_ideal']:.4f} ({r[k]['worst']:.4f})"
                          + (f" [{r[k]['cycles']:,.0f}]" if args.cycles else ""))
        print(f"{name:<8} {r['rows']:>5}x{r['cols']:<5} {r['interleaved']['padding']:>7.1%} "
              f"{cell('interleaved'):>{width}} {cell('matrix'):>{width}} {cell('calibrated'):>{width}} "
              f"{max(r['matrix']['seconds'], r['calibrated']['seconds']):>9.1f} "
              f"{'yes' if r['matrix']['paired'] else 'no':>6}", flush=True)
    mean = lambda k: np.mean([r[k]["over_ideal"] for r in rows])
    print(f"{'mean':<8} {'':>11} {'':>7} {mean('interleaved'):>{width}.4f} {mean('matrix'):>{width}.4f} "
          f"{mean('calibrated'):>{width}.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
