"""`eie bench --suite eie`: EIE's nine benchmark layers (ISCA 2016: Alex-6/7/8, VGG-6/7/8, NT-We/Wd/LSTM) on the
simulated 64-PE chip, beside the figures EIE published for them.

Each layer is random, of the published shape, weight density and share of non-zero inputs
(`eie.sw.bench_placement.workload`), with 4-bit weight indices as EIE's, and runs on the chip's design point
(`DESIGN`: 5-bit relative indices, 16-deep queues, 64-deep jobs FIFOs, two activations broadcast and two
outputs per PE per cycle; `--index-bits 4 --queue-depth 8 --jobs-depth 16 --acts-per-cycle 1
--outputs-per-cycle 1` is EIE's). It runs a few
input vectors under three row placements: EIE's interleaving (row i -> PE i mod N), balanced knowing only the
matrix (the default) and balanced with calibration inputs drawn apart from the measured ones; balanced placement
pairs PEs on the layers with few rows per PE (`eie.sw.placement.can_pair`). One chip
configuration serves the whole suite, so one Verilator build and one simulator start run every layer; every
output is checked bit-exact against the reference. Per layer: the RTL's cycles, the performance model's, the
ideal (all work spread evenly), the busiest PE's work, utilization, padding, EIE's cycles (its time x 800 MHz)
and ours over EIE's; then the issue's targets, PASS or FAIL, with the measured values.
"""

import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np

from eie.errors import EieError
from eie.sw.bench_placement import EIE_DESIGN

__all__ = ["EIE_TIME_US", "PLACEMENTS", "DESIGN", "EIE_DESIGN", "suite_layers", "suite_config", "run_suite", "targets",
           "register"]

# Time per layer at 64 PEs and 800 MHz, EIE (ISCA 2016) Table IV.
EIE_TIME_US = {"Alex-6": 30.3, "Alex-7": 12.2, "Alex-8": 9.9, "VGG-6": 34.4, "VGG-7": 8.7, "VGG-8": 8.4,
               "NT-We": 8.0, "NT-Wd": 13.9, "NT-LSTM": 7.5}
# Suite name -> (placement `build_image` takes, with calibration inputs?)
PLACEMENTS = {"interleaved": ("interleaved", False), "matrix": ("balanced", False), "calibrated": ("balanced", True)}
DEFAULT = "matrix"
# The chip's design point in the suite, and EIE's (ISCA 2016: 4-bit relative indices, 8-deep activation queues,
# one activation broadcast per cycle). Ours pairs activations (dense inputs are otherwise bound by the broadcast,
# not by the PEs: NT-We has 4,096 inputs and about 3,840 entries per PE), and its deeper queues and jobs FIFOs
# keep the PEs fed while another PE's queue is full; 5-bit indices halve the padding at 4% density; two outputs
# per cycle halve the output pass, which is most of what is left above the busiest PE on the tall layers.
DESIGN = {"index_bits": 5, "queue_depth": 16, "jobs_depth": 64, "acts_per_cycle": 2, "outputs_per_cycle": 2}
_DESIGN_NAMES = {"index_bits": "relative index bits", "queue_depth": "activation queue depth per PE",
                 "jobs_depth": "jobs FIFO depth per PE", "acts_per_cycle": "activations broadcast per cycle",
                 "outputs_per_cycle": "outputs per PE per cycle"}
LABELS = {"interleaved": "interleaved", "matrix": "matrix-only", "calibrated": "calibrated"}


def suite_layers(shapes, config, samples=2, calibration=64, seed=0):
    """[(name, QuantLayer, measured inputs, calibration inputs)] for {name: (rows, cols, weights kept, non-zero
    inputs)}. Codebook and bias are random; the shift is the least that keeps the largest exact output of the
    measured inputs in range, so outputs do not saturate and every bit of them is checked."""
    from eie.sw.bench_placement import workload
    from eie.sw.quant import QuantLayer
    from eie.sw.reference import weight_matrix
    out = []
    for name, (rows, cols, density, act_density) in shapes.items():
        w, x, calib = workload(rows, cols, density, act_density, samples, calibration, seed)
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])   # the same layer in any subset
        codebook = np.concatenate([[0], rng.integers(-3000, 3000, config.codebook_size - 1)])
        layer = QuantLayer(w, codebook, rng.integers(-500, 500, rows), 0, False)
        peak = int(np.abs(weight_matrix(layer) @ x.T).max(initial=0))
        layer.shift = max(0, peak.bit_length() - (config.act_bits - 2))
        out.append((name, layer.check(config, name), x, calib))
    return out


def suite_config(layers, base):
    """One chip like `base` for every layer of the suite (`fit_config` per layer under interleaved and balanced
    placement, the largest need per memory), so that one Verilator build runs them all; calibrated placement
    moves a little padding, well inside the power-of-two rounding of the memories."""
    from eie.sw.image import SIZED_FIELDS, fit_config
    need = {}
    for _, layer, _, _ in layers:
        for placement in ("interleaved", "balanced"):
            fitted = fit_config([layer], base, placement=placement)
            for f in SIZED_FIELDS:
                need[f] = max(need.get(f, 0), getattr(fitted, f))
    return base.replace(**need)


def activation_storage(layers, config):
    """How the suite holds long inputs: one sentence naming the longest input and the tallest output."""
    longest = max(layers, key=lambda l: l[1].cols)
    tallest = max(layers, key=lambda l: l[1].rows)
    kb = 2 * config.act_depth * config.act_bits / 8 / 1024
    return (f"activation storage sized for the longest input ({longest[0]}: {longest[1].cols:,}) and the tallest "
            f"output ({tallest[0]}: {tallest[1].rows:,}): register files of {config.act_depth} activations per PE "
            f"and bank ({config.max_dim:,} per bank, {kb:g} KB per PE), every input held at once, no batching")


def _figures(layer, x, image, config, result, reference):
    """One placement's figures; RTL figures where `result` (a SimResult) is given, else the model's."""
    from eie.sw.perf import layer_perf, output_cycles, pipeline_fill
    order = image.layers[0].order
    enc = image.encoded_layers()[0]
    perf = layer_perf(enc, x, config)
    model = perf.model_cycles
    cycles = model if result is None else result.cycles
    ideal, bound = perf.ideal_cycles, perf.bound_cycles
    out_pass = output_cycles(layer.rows, config)
    fill = pipeline_fill(layer.rows, config)
    out = {
        "cycles_from": "model" if result is None else "rtl",
        "cycles": cycles.tolist(), "model_cycles": model.tolist(),
        "ideal_cycles": ideal.tolist(), "bound_cycles": bound.tolist(),
        "mean_cycles": round(float(cycles.mean()), 1),
        "over_ideal": round(float((cycles / ideal).max()), 4),
        "pipeline_fill": fill,
        "over_ideal_past_fill": round(float(((cycles - fill) / ideal).max()), 4),
        "busiest_over_ideal": round(float((bound / ideal).max()), 4),
        "utilization": round(float(perf.utilization(cycles).mean()), 4),
        "padding_pct": round(100 * sum(pe.n_padding for pe in enc.pes)
                             / max(1, sum(pe.n_entries for pe in enc.pes)), 2),
        "placed": order is not None,
        "paired": image.layers[0].paired,
        # where the cycles above the ideal go (means): the busiest PE's extra work, the output pass (one output
        # per PE per cycle), the pipeline's fixed fill and drain, and the rest (queue stalls, the detector)
        "above_ideal": {"imbalance": round(float((bound - ideal).mean()), 1), "output_pass": out_pass,
                        "pipeline_fill": fill, "rest": round(float((cycles - bound).mean()) - out_pass - fill, 1)},
    }
    if result is not None:
        out["mismatches"] = int((image.unpermute(result.outputs) != reference).sum())
        out["model_error_pct"] = round(100 * float(np.abs(model / cycles - 1).max()), 3)
    return out


def run_suite(shapes=None, pes=64, samples=2, calibration=64, seed=0, rtl=tuple(PLACEMENTS), clock_mhz=None,
              chip_shapes=None, simulate=None, log=None, design=None, clock_source="given", measured_fmax=False):
    """The suite as a dict (see the module): `shapes` {name: (rows, cols, weights kept, non-zero inputs)}
    (default: EIE's nine), `design` the chip's design point ({field: value} over `DESIGN`; EIE's own is
    `EIE_DESIGN`; every point is compared with the same published figures), `rtl` the placements simulated
    (the others get the model's figures), `clock_mhz` a clock to state times at (`clock_source`: where it comes
    from), else with `measured_fmax` the suite chip's Fmax where `eie synth --ecp5` stored one
    (`eie.cosim.fmax.lookup`); times are stated at EIE's 800 MHz too. `chip_shapes` more layers the chip must
    hold (so that a subset runs on the whole suite's chip and build), `simulate` the simulator (jobs ->
    SimResults; default Verilator's `simulate_many`, all jobs in one start)."""
    from eie.config import ChipConfig
    from eie.sw.bench_placement import EIE_LAYERS
    from eie.sw.image import build_image
    from eie.sw.reference import forward
    from eie.cosim import fmax, timing
    from eie.cosim.synth import EIE_CLOCK_MHZ
    if simulate is None:
        from eie.cosim.sim import simulate_many as simulate
    shapes = EIE_LAYERS if shapes is None else shapes
    for what, n, least in (("samples", samples, 1), ("calibration", calibration, 1), ("seed", seed, 0)):
        if n < least:
            raise EieError(f"{what} must be at least {least}, not {n}")
    unknown = sorted(set(rtl) - set(PLACEMENTS))
    if unknown or DEFAULT not in rtl:
        raise EieError(f"the RTL runs {DEFAULT} and any of {', '.join(PLACEMENTS)}, not {', '.join(rtl)}")
    if clock_mhz is not None and not clock_mhz > 0:
        raise EieError(f"the clock must be positive (MHz), not {clock_mhz}")
    say = log or (lambda s: None)
    t0 = time.perf_counter()
    base = ChipConfig.for_user(pes=pes, weight_index_bits=4, **{**DESIGN, **(design or {})})
    layers = suite_layers(shapes, base, samples, calibration, seed)
    others = {n: shape for n, shape in (chip_shapes or {}).items() if n not in shapes}
    fitted = layers + suite_layers(others, base, 1, 1, seed)
    config = suite_config(fitted, base)
    say(f"{len(layers)} layers, {samples} inputs each; one chip: {config.describe()}")
    # the clock times are stated at besides EIE's: the one given, else this chip's measured Fmax, else none
    clock, clock_from, hint = None, None, None
    if clock_mhz is not None:
        clock, clock_from = fmax.Clock(float(clock_mhz), clock_source), "given"
    elif measured_fmax:
        clock = fmax.lookup(config)
        clock_from = None if clock is None else "measured"
        hint = None if clock is not None else timing.synth_hint(config)
    storage = activation_storage(fitted, config)
    say(storage)
    images, jobs = [], []
    for name, layer, x, calib in layers:
        per = {}
        for key, (placement, calibrated) in PLACEMENTS.items():
            per[key] = build_image([layer], config, placement, calib if calibrated else None)
            if key in rtl:
                jobs.append((per[key], x))
        images.append(per)
    prepared = time.perf_counter() - t0
    say(f"layers generated and placed in {prepared:.1f} s; simulating {len(jobs)} jobs in one simulator start ...")
    t1 = time.perf_counter()
    results = iter(simulate(jobs))
    simulated = time.perf_counter() - t1
    rows = []
    for (name, layer, x, calib), per in zip(layers, images):
        reference = forward([layer], x, config)[-1]
        eie_us = EIE_TIME_US.get(name)
        row = {"layer": name, "rows": layer.rows, "cols": layer.cols, "weights": int(np.count_nonzero(layer.w_index)),
               "weight_density": shapes[name][2], "act_density": shapes[name][3],
               "nonzero_inputs_pct": round(100 * float(np.count_nonzero(x)) / x.size, 1),
               "eie_us": eie_us, "eie_cycles": None if eie_us is None else round(eie_us * EIE_CLOCK_MHZ),
               "placements": {}}
        for key in PLACEMENTS:
            f = _figures(layer, x, per[key], config, next(results) if key in rtl else None, reference)
            if eie_us is not None:
                f["over_eie"] = round(f["mean_cycles"] / row["eie_cycles"], 4)
                f["worst_over_eie"] = round(max(f["cycles"]) / row["eie_cycles"], 4)
            f["us_at_eie_clock"] = round(fmax.time_us(f["mean_cycles"], fmax.EIE_REFERENCE), 3)
            if clock is not None:
                f["us_at_clock"] = round(fmax.time_us(f["mean_cycles"], clock), 3)
            row["placements"][key] = f
        rows.append(row)
    report = {"suite": "eie", "pes": pes, "samples": samples, "calibration_inputs": calibration, "seed": seed,
              "config": config.to_dict(), "config_described": config.describe(), "activation_storage": storage,
              "rtl_placements": list(rtl),
              "eie_clock_mhz": EIE_CLOCK_MHZ, "clock_mhz": None if clock is None else clock.mhz,
              "clock_source": None if clock is None else clock.source, "clock_from": clock_from,
              "fmax_hint": hint, "layers": rows,
              "seconds": {"prepare": round(prepared, 1), "simulate": round(simulated, 1)}}
    report["targets"] = targets(report)
    report["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    return report


def targets(report):
    """The issue's targets as [{"target", "pass", "measured"}], judged on the default placement except
    bit-exactness and the model's error, which hold for every placement the RTL ran."""
    rows = report["layers"]
    ran = [(r["layer"], LABELS[k], f) for r in rows for k, f in r["placements"].items() if f["cycles_from"] == "rtl"]
    default = [(r["layer"], r["placements"][DEFAULT]) for r in rows]
    bad = [f"{name} ({how}): {f['mismatches']}" for name, how, f in ran if f["mismatches"]]
    worst = lambda key, items: max(items, key=lambda nf: nf[1][key])
    ideal_name, ideal_f = worst("over_ideal_past_fill", default)
    err_name, err_how, err_f = max(ran, key=lambda t: t[2]["model_error_pct"])
    out = [
        {"target": "every layer bit-exact on every sample", "pass": not bad,
         "measured": "; ".join(bad) + " mismatching outputs" if bad else
         f"{sum(len(f['cycles']) for _, _, f in ran)} input vectors, 0 mismatches"},
        {"target": "cycles <= 1.03 x ideal + the pipeline's fixed fill on every layer (matrix-only placement, "
                   "worst sample)",
         "pass": all(f["over_ideal_past_fill"] <= 1.03 for _, f in default),
         "measured": f"worst {ideal_name} {ideal_f['over_ideal_past_fill']:.4f} past a fill of "
                     f"{ideal_f['pipeline_fill']} cycles ({ideal_f['over_ideal']:.4f} with it); over 1.03: " +
                     (", ".join(f"{n} {f['over_ideal_past_fill']:.4f}" for n, f in default
                                if f["over_ideal_past_fill"] > 1.03) or "none")},
    ]
    compared = [(n, f) for n, f in default if "worst_over_eie" in f]
    if compared:
        eie_name, eie_f = worst("worst_over_eie", compared)
        out.append({"target": "fewer cycles than EIE on every layer (matrix-only placement, worst sample)",
                    "pass": all(f["worst_over_eie"] < 1 for _, f in compared),
                    "measured": f"worst {eie_name} {eie_f['worst_over_eie']:.4f} x EIE; not below: " +
                                (", ".join(f"{n} {f['worst_over_eie']:.4f}" for n, f in compared
                                           if f["worst_over_eie"] >= 1) or "none")})
    out.append({"target": "model versus RTL within 1% on every layer", "pass": err_f["model_error_pct"] <= 1,
                "measured": f"worst {err_name} ({err_how}) {err_f['model_error_pct']:.3f}%"})
    return out


def _tables(report):
    """The suite's tables as Markdown: the default placement in full, the placements side by side, times."""
    rows = report["layers"]
    clock = report["clock_mhz"]
    line = lambda cells: "| " + " | ".join(str(c) for c in cells) + " |"
    sim = lambda f: "" if f["cycles_from"] == "rtl" else "*"
    num = lambda v, fmt: "-" if v is None else format(v, fmt)
    head = ["layer", "shape", "non-zero in %", "padding %", "PEs paired", "RTL cycles", "model", "ideal",
            "busiest PE", "util.",
            "/ ideal", "above ideal: imbalance", "output pass", "pipeline fill", "rest", "EIE cycles", "/ EIE",
            "model err %",
            "mismatches"]
    out = [f"Matrix-only placement (the default): means over {report['samples']} inputs; "
           "'/ ideal' is the worst sample", "", line(head), "|" + "---|" * len(head)]
    for r in rows:
        f = r["placements"][DEFAULT]
        out.append(line([r["layer"], f"{r['rows']}x{r['cols']}", r["nonzero_inputs_pct"], f["padding_pct"],
                         "yes" if f["paired"] else "no",
                         f"{f['mean_cycles']:,.0f}{sim(f)}", f"{np.mean(f['model_cycles']):,.0f}",
                         f"{np.mean(f['ideal_cycles']):,.0f}", f"{np.mean(f['bound_cycles']):,.0f}",
                         f"{f['utilization']:.3f}", f"{f['over_ideal']:.4f}",
                         *(f"{f['above_ideal'][k]:,.0f}" for k in ("imbalance", "output_pass", "pipeline_fill",
                                                                   "rest")),
                         num(r["eie_cycles"], ","),
                         num(f.get("over_eie"), ".3f"), num(f.get("model_error_pct"), ".3f"),
                         num(f.get("mismatches"), "d")]))
    head = ["layer"] + [f"{LABELS[k]} {what}" for k in PLACEMENTS for what in ("cycles / ideal", "busiest / ideal")]
    out += ["", "Placements side by side (worst sample; * = the model's cycles, not simulated)", "", line(head),
            "|" + "---|" * len(head)]
    for r in rows:
        out.append(line([r["layer"]] + [v for k in PLACEMENTS for v in (
            f"{r['placements'][k]['over_ideal']:.4f}{sim(r['placements'][k])}",
            f"{r['placements'][k]['busiest_over_ideal']:.4f}")]))
    kind = {"measured": "measured Fmax", "given": "given"}.get(report.get("clock_from"), "")
    head = (["layer", "EIE us (800 MHz)", "ours us (EIE's 800 MHz)"]
            + ([f"ours us ({kind} {clock:g} MHz)"] if clock else []))
    out += ["", "Time per inference, matrix-only placement", "", line(head), "|" + "---|" * len(head)]
    for r in rows:
        f = r["placements"][DEFAULT]
        out.append(line([r["layer"], num(r["eie_us"], "g"), f"{f['us_at_eie_clock']:.2f}"]
                        + ([f"{f['us_at_clock']:.2f}"] if clock else [])))
    out += ["", clock_text(report)]
    return "\n".join(out)


def clock_text(report):
    """Where the times' clock comes from, in one line: this chip's measured Fmax, the clock given, or none
    (then how to measure one); EIE's 800 MHz is always there, for reference."""
    mhz, source, kind = report.get("clock_mhz"), report.get("clock_source"), report.get("clock_from")
    if kind == "measured":
        return f"Clock: {mhz:g} MHz, this chip's measured Fmax ({source}); EIE's 800 MHz for reference."
    if mhz is not None:
        given = "" if source in (None, "given") else f": {source}"
        return f"Clock: {mhz:g} MHz as given (--clock-mhz){given}; EIE's 800 MHz for reference."
    hint = report.get("fmax_hint")
    return ("Clock: none; times at EIE's 800 MHz only, for reference"
            + (f". {hint[0].upper()}{hint[1:]} (or give --clock-mhz)." if hint else "."))


def _targets_text(report):
    return "\n".join(f"  {'PASS' if t['pass'] else 'FAIL'}  {t['target']}: {t['measured']}" for t in report["targets"])


def _design_text(config):
    """The design point beside EIE's, e.g. 'activation queue depth per PE 16 (EIE 8)'."""
    return ", ".join(f"{_DESIGN_NAMES[f]} {config[f]} (EIE {EIE_DESIGN[f]})" for f in DESIGN)


def markdown(report):
    c = report["config"]
    return (f"# EIE benchmark suite at {report['pes']} PEs\n\n"
            f"One chip for every layer: {c['pes']} PEs, {c['index_bits']}-bit relative indices, "
            f"{c['weight_index_bits']}-bit weight indices, {c['matrix_words']} x {c['entries_per_word']} entries "
            f"and {c['ptr_words']} pointer words per PE; {_design_text(c)}. {report['activation_storage'][0].upper()}"
            f"{report['activation_storage'][1:]}.\n\n{_tables(report)}\n\n## Targets\n\n```\n{_targets_text(report)}"
            f"\n```\n\nSeconds: {report['seconds']}\n")


def _clock(text):
    """(MHz, where it came from) from a number or an `eie synth --ecp5 --json` result file."""
    try:
        return float(text), "given"
    except ValueError:
        pass
    try:
        result = json.loads(Path(text).read_text())
        ecp5 = result["ecp5"]
        return float(ecp5["fmax_mhz"]), (f"Fmax of {result['config']['pes']}-PE chip on ECP5 {ecp5['device']} "
                                         f"({', '.join(f'{k} {v}' for k, v in result['tools'].items())}), {text}")
    except FileNotFoundError:
        raise EieError(f"--clock-mhz {text!r} is neither a number nor an existing file") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise EieError(f"--clock-mhz {text}: not an 'eie synth --ecp5 --json' result with an Fmax") from None


def bench_command(args):
    from eie.sw.bench_placement import EIE_LAYERS
    from eie.sw.runs import RunFolder
    names = args.layers.split(",") if args.layers else list(EIE_LAYERS)
    unknown = [n for n in names if n not in EIE_LAYERS]
    if unknown:
        raise EieError(f"unknown layer(s) {', '.join(unknown)}; choose from {', '.join(EIE_LAYERS)}")
    clock, source = _clock(args.clock_mhz) if args.clock_mhz else (None, "given")
    folder = RunFolder(args.out, ["suite.json", "suite.md"], args.force)
    log = None if args.json else (lambda s: print(s, file=sys.stderr, flush=True))
    report = run_suite({n: EIE_LAYERS[n] for n in names}, pes=args.pes, samples=args.samples,
                       calibration=args.calibration, seed=args.seed,
                       rtl=tuple(PLACEMENTS) if args.rtl == "all" else (DEFAULT,),
                       clock_mhz=clock, clock_source=source, measured_fmax=True, chip_shapes=EIE_LAYERS, log=log,
                       design={f: getattr(args, f) for f in DESIGN})
    folder.write_json("suite.json", report)
    folder.write_text("suite.md", markdown(report))
    if args.json:
        print(json.dumps(report))
    else:
        print(f"one chip: {report['config_described']}\ndesign point: {_design_text(report['config'])}\n"
              f"{report['activation_storage']}\n")
        print(_tables(report))
        print(f"\ntargets:\n{_targets_text(report)}")
        print(f"\n{report['seconds']['total']:.0f} s in all ({report['seconds']['simulate']:.0f} s simulating); "
              f"wrote {folder / 'suite.json'} and {folder / 'suite.md'}")
    return 0 if all(t["pass"] for t in report["targets"]) else 1


def register(sub):
    p = sub.add_parser("bench", help="EIE's nine benchmark layers on the simulated 64-PE chip, against EIE's figures",
                       description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--suite", required=True, choices=["eie"], help="the benchmark suite (eie: EIE's Table IV layers)")
    p.add_argument("--layers", metavar="NAME,...", help="a comma-separated subset (default: all nine)")
    p.add_argument("--pes", type=int, default=64, help="processing elements (default 64, as EIE's figures)")
    for field, name in _DESIGN_NAMES.items():
        p.add_argument(f"--{field.replace('_', '-')}", type=int, default=DESIGN[field],
                       help=f"{name} (default {DESIGN[field]}; EIE: {EIE_DESIGN[field]})")
    p.add_argument("--samples", type=int, default=2, help="measured input vectors per layer (default 2)")
    p.add_argument("--calibration", type=int, default=64,
                   help="calibration inputs per layer for the calibrated placement, drawn apart (default 64)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--rtl", choices=["all", "matrix"], default="all",
                   help="placements simulated: all three (default) or matrix-only; the rest get the model's cycles")
    p.add_argument("--clock-mhz", metavar="MHZ|SYNTH.json",
                   help="also state times at this clock, or at the Fmax of an 'eie synth --ecp5 --json' result "
                        "(default: the suite chip's Fmax where 'eie synth --ecp5' recorded one; times at EIE's "
                        "800 MHz are always stated)")
    p.add_argument("--out", type=Path, default=Path("runs/bench-eie"), help="folder for suite.json and suite.md "
                                                                         "(default runs/bench-eie)")
    p.add_argument("--force", action="store_true", help="replace an earlier suite's files")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=bench_command)
