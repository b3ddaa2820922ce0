"""`eie verilog`, `eie spmv`: the chip's Verilog, and one layer run on the simulated chip and checked.
(`eie run` and `eie demo` live in `eie.cosim.inference`.) Heavy imports happen inside the commands."""

import contextlib
import json
from pathlib import Path
import sys
import warnings

from eie.config import ChipConfig
from eie.errors import EieError, InputRangeWarning

__all__ = ["register", "add_chip_args", "chip_changes", "chip_config", "standard_chip", "stamped_run",
           "add_range_arg", "input_range", "DEMO_MODELS", "sequence_demo"]


def add_range_arg(p) -> None:
    """`--allow-out-of-range`, for the commands that run a model on images (`input_range` reads it)."""
    p.add_argument("--allow-out-of-range", action="store_true",
                   help="run even when more than 1%% of the input values lie outside the range the model was "
                        "calibrated on (they saturate; refused by default)")


@contextlib.contextmanager
def input_range(allow: bool):
    """Inputs outside the model's calibrated range, inside the block: refused in one line (the API only warns)
    unless `allow` (--allow-out-of-range), then each warning one line on stderr."""
    with warnings.catch_warnings(record=allow) as caught:
        warnings.simplefilter("always" if allow else "error", InputRangeWarning)
        try:
            yield
        except InputRangeWarning as w:
            raise EieError(f"{w}; --allow-out-of-range runs them anyway") from None
    for w in caught or ():
        print(f"warning: {w.message}", file=sys.stderr, flush=True)


def add_chip_args(p, sized=False, from_image=False):
    """Chip parameters (defaults from ChipConfig). With `sized`, memory depths left out fit the workload;
    with `from_image`, every field left out is the model's own (what it was compressed for)."""
    d = ChipConfig()
    g = p.add_argument_group("chip configuration" + (" (default: the model's own)" if from_image else ""))

    def add(name, help_, fit=False):
        field = name.replace("-", "_")
        default = getattr(d, field)
        if from_image:
            g.add_argument(f"--{name}", type=int, default=None, help=f"{help_} (default: the model's)")
        elif fit and sized:
            g.add_argument(f"--{name}", type=int, default=None,
                           help=f"{help_} (default: fit the workload, rounded up to a power of two)")
        else:
            g.add_argument(f"--{name}", type=int, default=default, help=f"{help_} (default {default})")

    add("pes", "processing elements, 1..64")
    add("index-bits", "relative row index bits z (4 = EIE, 5 = the pruning paper)")
    add("weight-index-bits", "codebook index bits v, 2..8 (4: a 16-entry codebook)")
    add("queue-depth", "activation queue depth per PE")
    add("jobs-depth", "column spans between the pointer read and the matrix read, per PE")
    add("entries-per-word", "entries per sparse-matrix SRAM word")
    add("max-layers", "layer table size")
    add("acts-per-cycle", "non-zero activations broadcast per cycle: 1 (EIE) or 2 (pairs sharing a pointer word)")
    add("outputs-per-cycle", "rows each PE puts out per cycle in the output pass: 1 (EIE) or 2")
    add("count-bits", "bits of each column's entry count in a pointer word", fit=True)
    add("matrix-words", "sparse-matrix SRAM words per PE", fit=True)
    add("ptr-words", "pointer SRAM words per PE", fit=True)
    add("act-depth", "activations per PE and bank (a layer has at most act-depth x PEs rows)", fit=True)


_CHIP_FLAGS = ("pes", "index_bits", "weight_index_bits", "queue_depth", "jobs_depth", "entries_per_word",
               "max_layers", "count_bits", "matrix_words", "ptr_words", "act_depth", "acts_per_cycle",
               "outputs_per_cycle")


def chip_changes(args):
    """{field: value} of the chip flags given (a flag left at None means "the default or the model's").
    Values are checked by ChipConfig: zero or negative sizes are refused, never replaced by a default."""
    return {f: getattr(args, f) for f in _CHIP_FLAGS if getattr(args, f, None) is not None}


def chip_config(args, base=ChipConfig()):
    """The ChipConfig the arguments name, on top of `base`."""
    return base.replace(**chip_changes(args))


def standard_chip(args, default_pes):
    """The standard chip (`ChipConfig.standard`) of ``--pes`` (else `default_pes`) and ``--index-bits``, with
    ``--act-depth`` held if given: (config, the fields held) for the sequence commands (`eie lstm`, `eie decoder`)."""
    pes = default_pes if args.pes is None else args.pes
    config = ChipConfig.standard(pes, index_bits=args.index_bits)
    if args.act_depth is None:
        return config, []
    return config.replace(act_depth=args.act_depth), ["act_depth"]


def stamped_run(args, name):
    """``--run-dir``, else runs/<name>[-quick]-<date and time>."""
    import time
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(args.run_dir or Path("runs") / (f"{name}-quick-{stamp}" if args.quick else f"{name}-{stamp}"))


# -- eie verilog ----------------------------------------------------------------------------------------------

# `eie demo --model`: the MLP is the demo's own flow; the sequence models are their commands' (module, command).
DEMO_MODELS = {"mlp": None, "lstm": ("eie.cosim.lstm", "lstm"), "transformer": ("eie.cosim.decoder", "decoder")}


def sequence_demo(model: str, quick: bool = False, pes: "int | None" = None, samples: "int | None" = None,
                  run_dir: "Path | None" = None) -> int:
    """`eie demo --model lstm|transformer`: the `eie lstm` / `eie decoder` command itself, parsed by its own
    parser from the demo's --quick, --pes (default: that command's), --samples (the LSTM's test sequences; the
    transformer generates characters instead, so it is refused there) and --run-dir. Returns its exit status."""
    import argparse
    import importlib
    if DEMO_MODELS.get(model) is None:
        raise EieError(f"sequence_demo runs {' or '.join(m for m, c in DEMO_MODELS.items() if c)}, not {model!r}")
    module, name = DEMO_MODELS[model]
    argv = [name] + ["--quick"] * bool(quick) + (["--pes", str(pes)] if pes is not None else []) \
        + (["--run-dir", str(run_dir)] if run_dir is not None else [])
    if samples is not None:
        if name == "decoder":
            raise EieError("--samples counts test images (mlp) or sequences (lstm); the transformer demo generates "
                           "characters: use 'eie decoder --tokens N'")
        argv += ["--samples", str(samples)]
    parser = argparse.ArgumentParser(prog="eie")
    importlib.import_module(module).register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def verilog_command(args):
    from eie.cosim.build import LINT_WAIVERS, lint, write_verilog
    config = chip_config(args)
    out = args.output
    if out.parent and not out.parent.exists():
        raise EieError(f"folder {out.parent} does not exist")
    write_verilog(config, out)
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB): {config.describe()}")
    if args.lint:
        lint(out)
        print(f"verilator --lint-only {' '.join(LINT_WAIVERS)}: clean")
    return 0


# -- eie spmv -------------------------------------------------------------------------------------------------

def _load_array(path, what):
    import numpy as np
    try:
        a = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise EieError(f"{what} file {path} does not exist") from None
    except (ValueError, OSError) as e:
        raise EieError(f"{what} file {path} is not a .npy array ({e})") from None
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise EieError(f"{what} must be a float or integer array, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise EieError(f"{what} contains NaN or infinite values")
    return a


def _workload(args):
    """(float-or-int matrix, input) from the user's files or a seeded random layer."""
    import numpy as np
    if args.matrix is not None or args.input is not None:
        if args.matrix is None or args.input is None:
            raise EieError("--matrix and --input go together")
        w, x = _load_array(args.matrix, "--matrix"), _load_array(args.input, "--input")
        if w.ndim != 2:
            raise EieError(f"--matrix must be 2-D (rows x cols), got shape {w.shape}")
        if x.ndim != 1 or len(x) != w.shape[1]:
            raise EieError(f"--input must be a vector of {w.shape[1]} values (the matrix's columns), got shape {x.shape}")
        return w, x
    for name in ("density", "act_density"):
        v = getattr(args, name)
        if not 0 <= v <= 1:
            raise EieError(f"--{name.replace('_', '-')} must be in 0..1, got {v}")
    if args.rows < 1 or args.cols < 1:
        raise EieError(f"--rows and --cols must be positive, got {args.rows} x {args.cols}")
    if args.seed < 0:
        raise EieError(f"--seed must be a non-negative integer, not {args.seed}")
    rng = np.random.default_rng(args.seed)
    w = rng.standard_normal((args.rows, args.cols)) * (rng.random((args.rows, args.cols)) < args.density)
    x = rng.uniform(-1, 1, args.cols) * (rng.random(args.cols) < args.act_density)
    return w, x


def _spmv_image(layer, args):
    """The layer's image, its rows placed by --placement (balanced, as `eie compress` places them, or EIE's
    interleaving); with `--calibrate` (samples x cols, or one vector; floats at the measured input's fixed-point
    scale) balanced placement weighs each column by how often its input is non-zero there. Only this file
    calibrates: the measured input does not, unless it is the same file."""
    import numpy as np
    from eie.sw.image import SIZED_FIELDS, build_image, fit_config, fit_image
    from eie.sw.quant import to_fixed
    config, placement = chip_config(args), args.placement
    keep = [f for f in SIZED_FIELDS if f in chip_changes(args)]
    if args.calibrate is None:
        return fit_image([layer], config, keep, placement)
    if placement != "balanced":
        raise EieError("--calibrate weighs the columns for balanced placement: drop --placement interleaved")
    calib = _load_array(args.calibrate, "--calibrate")
    if calib.ndim not in (1, 2) or calib.shape[-1] != layer.cols or not calib.size:
        raise EieError(f"--calibrate must hold inputs of {layer.cols} values (samples x {layer.cols}, or one "
                       f"vector), got shape {calib.shape}")
    if np.issubdtype(calib.dtype, np.floating):
        calib = to_fixed(calib, layer.in_frac, config.act_bits)
    return build_image([layer], fit_config([layer], config, keep, placement="balanced"), "balanced", calib)


def spmv_command(args):
    import numpy as np
    from eie.sw.perf import layer_perf
    from eie.sw.quant import layer_from_matrix
    from eie.sw.reference import forward
    from eie.cosim.sim import simulate

    w, x = _workload(args)
    layer, x_int = layer_from_matrix(w, x, chip_config(args), relu=args.relu)
    image = _spmv_image(layer, args)
    placement = (args.placement + (f", calibrated on {args.calibrate}" if args.calibrate else "")
                 + (", PEs paired" if image.layers[0].paired else ""))
    config = image.config
    log = None if args.json else (lambda s: print(s, flush=True))
    result = simulate(image, x_int[None, :], stats=True, waves=args.waves, log=log)
    held = image.quant_layers()      # rows as the chip holds them (placed), as are its outputs
    ref = forward(held, x_int[None, :], config)[-1][0]
    got = result.outputs[0]
    diff = np.flatnonzero(got != ref)
    perf = layer_perf(image.encoded_layers()[0], x_int, config)
    cycles = int(result.cycles[0])
    stats = result.pe_stats[0]
    report = {
        "rows": int(w.shape[0]), "cols": int(w.shape[1]), "pes": config.pes, "placement": placement,
        "weights_kept": perf.weights, "nonzero_inputs": int(perf.nonzero[0]),
        "mismatches": int(len(diff)), "first_mismatch_row": int(diff[0]) if len(diff) else None,
        "cycles": cycles, "ideal_cycles": int(perf.ideal_cycles[0]), "bound_cycles": int(perf.bound_cycles[0]),
        "model_cycles": int(perf.model_cycles[0]), "utilization": round(float(perf.utilization([cycles])[0]), 4),
        "load_imbalance": round(float(perf.imbalance[0]), 4),
        "rtl_entries_match_model": bool((stats[:, 0] == perf.work[0]).all() and (stats[:, 1] == perf.macs[0]).all()),
        "sim_cycles_per_s": round(result.sim_cycles_per_s), "wall_seconds": round(result.wall_seconds, 2),
        "config": config.to_dict(),
    }
    if args.json:
        print(json.dumps(report))
    else:
        verdict = "bit-exact" if not len(diff) else f"{len(diff)} MISMATCHES (first at row {diff[0]})"
        print(f"{report['rows']}x{report['cols']} layer, {report['weights_kept']} weights kept, "
              f"{report['nonzero_inputs']} non-zero inputs, on {config.describe()}")
        print(f"  outputs          {verdict} against the reference")
        for key in ("placement", "cycles", "model_cycles", "bound_cycles", "ideal_cycles", "utilization",
                    "load_imbalance", "sim_cycles_per_s", "wall_seconds"):
            print(f"  {key:<16} {report[key]}")
        if args.waves:
            print(f"  waveform         {args.waves}")
    return 0 if not len(diff) else 1


def register(sub):
    p = sub.add_parser("verilog", help="write the chip's synthesizable Verilog",
                       description="Generate Verilog for a chip configuration (Amaranth -> Yosys). Memories are "
                                   "loaded at run time, so one file serves every model that fits.")
    add_chip_args(p)
    p.add_argument("-o", "--output", type=Path, default=Path("eie_chip.v"), help="output file (default eie_chip.v)")
    p.add_argument("--lint", action="store_true", help="also run verilator --lint-only on it")
    p.set_defaults(func=verilog_command)

    p = sub.add_parser("spmv", help="run one layer on the simulated chip and check it bit-exact",
                       description="y = W x (+ ReLU) on the Verilator-simulated chip, compared with the bit-exact "
                                   "reference. A random layer, or your own: float arrays are quantized (weights "
                                   "to a linear codebook of 2^weight-index-bits - 1 values over their range, "
                                   "zeros kept as zeros; inputs to 16-bit fixed point scaled to their largest "
                                   "magnitude); integer arrays with few enough distinct weights are used exactly. "
                                   "Exit status 1 on any mismatch.")
    g = p.add_argument_group("random layer")
    g.add_argument("--rows", type=int, default=256, help="rows (default 256)")
    g.add_argument("--cols", type=int, default=256, help="columns (default 256)")
    g.add_argument("--density", type=float, default=0.1, help="fraction of weights kept (default 0.1)")
    g.add_argument("--act-density", type=float, default=0.35, help="fraction of non-zero inputs (default 0.35)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g = p.add_argument_group("your layer")
    g.add_argument("--matrix", type=Path, metavar="W.npy", help="weight matrix, rows x cols")
    g.add_argument("--input", type=Path, metavar="x.npy", help="input vector, cols")
    p.add_argument("--relu", action="store_true", help="apply ReLU to the outputs")
    p.add_argument("--placement", choices=("balanced", "interleaved"), default="balanced",
                   help="rows on PEs: balanced to even out the PEs' work, pairing PEs on layers with few rows per PE "
                        "(default, as eie compress), or EIE's interleaving (row i -> PE i mod N)")
    p.add_argument("--calibrate", type=Path, metavar="X.npy",
                   help="place rows to balance the PEs' work, each column weighed by how often its input is "
                        "non-zero in these inputs (samples x cols; default: balanced placement with every column "
                        "weighed alike)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--waves", type=Path, metavar="FILE.vcd", help="write a VCD waveform of the run (GTKWave, Surfer)")
    add_chip_args(p, sized=True)
    p.set_defaults(func=spmv_command)
