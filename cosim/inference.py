"""`eie run` and `eie demo`: a compressed model's test set through the simulated chip, every output checked.

Every fully connected layer is loaded onto the chip at once; layers chain on chip (source/destination
activation banks swap), so the host writes only the first input and reads only the last output. The chip's
outputs are compared with the bit-exact reference on every sample; the first mismatch is traced to its
layer and row and recorded as a waveform.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

from eie.errors import EieError
from eie.cosim.commands import add_chip_args, fit_image

__all__ = ["register", "chip_inference"]

CHUNK = 1000   # samples per simulator start, so progress shows
# EIE's SRAM per PE: 128 KB sparse matrix + 32 KB pointers + 2 KB activations.
EIE_SRAM_BYTES_PER_PE = 162 * 1024


def _progress(total, desc):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=None)


def load_compressed(run_dir):
    """The run folder's chip image, checked against its digest."""
    from eie.sw.image import load_image
    run = Path(run_dir)
    if not run.is_dir():
        raise EieError(f"{run} is not a run folder")
    if not (run / "image.npz").exists():
        raise EieError(f"{run} has no compressed model (image.npz): run 'eie compress {run}' first")
    return load_image(run / "image.npz")


def _test_set(run, samples):
    from eie.sw.pipeline import load_data
    from eie.sw.runs import RunFolder
    data = load_data(RunFolder(run, []))
    n = len(data.x_test) if samples is None else min(samples, len(data.x_test))
    return data, data.x_test[:n], data.y_test[:n]


def chip_inputs(run, images, image):
    """Integer inputs of the chip's first layer: the images in fixed point, through the host's convolutions
    when the run folder has them (host.npz, e.g. LeNet-5), else flattened."""
    from eie.sw.host import front_forward, load_front
    from eie.sw.quant import to_fixed
    host = Path(run) / "host.npz"
    if not host.exists():
        return to_fixed(images.reshape(len(images), -1), image.fracs[0][0], image.config.act_bits)
    ops, in_frac = load_front(host)
    return front_forward(ops, to_fixed(images, in_frac, image.config.act_bits), image.config)


def _float_accuracy(run, x, y):
    path = Path(run) / "compressed.pt"
    if not path.exists():
        return None
    from eie.sw import models, train
    model, _, _ = models.load_checkpoint(path)
    return round(train.evaluate(model, x, y), 2)


def _trace_mismatch(image, x, refs, sample, waves, log):
    """Rerun one sample with growing layer chains to find the first layer and row that differ."""
    from eie.sw.image import build_image
    from eie.cosim.sim import simulate
    layers = image.quant_layers()
    for l in range(len(layers)):
        sub = build_image(layers[:l + 1], image.config)
        got = simulate(sub, x[sample:sample + 1], log=log).outputs[0]
        rows = np.flatnonzero(got != refs[l][sample])
        if len(rows):
            simulate(sub, x[sample:sample + 1], waves=waves, log=log)
            return l, int(rows[0]), int(got[rows[0]]), int(refs[l][sample][rows[0]])
    return None


def chip_inference(image, x_int, log=None, model_samples=20):
    """Run `x_int` through `image` on the chip; returns (chip outputs, reference outputs of every layer,
    results dict).

    `model_samples`: how many samples the cycle model also predicts (it steps every cycle in Python)."""
    from eie.sw.encode import encode_layer
    from eie.sw.perf import dense_energy_pj, energy_pj, layer_events, layer_perf
    from eie.sw.reference import forward
    from eie.cosim.build import build
    from eie.cosim.sim import simulate
    config = image.config
    layers = image.quant_layers()
    refs = forward(layers, x_int, config)
    build(config, log=log)                 # outside the timing: a build happens once per configuration
    outputs, cycles, free_s = [], [], 0.0
    t0 = time.perf_counter()
    with _progress(len(x_int), f"chip ({config.pes} PEs)") as bar:
        for start in range(0, len(x_int), CHUNK):
            r = simulate(image, x_int[start:start + CHUNK], layer_cycles=True, log=log)
            outputs.append(r.outputs)
            cycles.append(r.layer_cycles)
            free_s += r.free_run_seconds
            bar.update(len(r.outputs))
    wall = time.perf_counter() - t0
    outputs, cycles = np.concatenate(outputs), np.concatenate(cycles)
    inputs = [x_int] + refs[:-1]
    per_layer, energy = [], {}
    for l, layer in enumerate(layers):
        enc = encode_layer(layer.w_index, config)
        events = layer_events(enc, inputs[l] != 0, config)
        for part, pj in energy_pj(events, config).items():
            energy[part] = energy.get(part, 0.0) + float(pj.mean())
        work, macs = events["work"], events["macs"]
        c = cycles[:, l].astype(float)
        m = min(model_samples, len(x_int))
        model = np.array([layer_perf(enc, inputs[l][s], config).model_cycles for s in range(m)], float)
        per_layer.append({
            "rows": layer.rows, "cols": layer.cols, "weights": int(np.count_nonzero(layer.w_index)),
            "nonzero_inputs_pct": round(100 * float((inputs[l] != 0).mean()), 1),
            "cycles": round(float(c.mean()), 1), "ideal_cycles": round(float(np.ceil(work.sum(1) / config.pes).mean()), 1),
            "bound_cycles": round(float(work.max(1).mean()), 1),
            "utilization": round(float((macs.sum(1) / (config.pes * c)).mean()), 3),
            "load_imbalance": round(float((work.max(1) / np.maximum(work.mean(1), 1e-9)).mean()), 3),
            "model_cycles_error_pct": round(100 * float(np.abs(model / c[:m] - 1).max()), 2) if m else None,
            "dense_dram_energy_pj": dense_energy_pj(layer.rows, layer.cols),
        })
    total_cycles = cycles.sum(1)
    results = {
        "samples": len(x_int), "cycles_per_image": round(float(total_cycles.mean()), 1), "layers": per_layer,
        "sim_cycles_per_s": round(float(total_cycles.sum()) / free_s) if free_s else None,
        "images_per_s": round(len(x_int) / wall, 1), "sim_wall_seconds": round(wall, 1),
        "energy_pj_per_image": {k: round(v, 1) for k, v in {**energy, "total": sum(energy.values())}.items()},
        "dense_dram_energy_pj_per_image": sum(p["dense_dram_energy_pj"] for p in per_layer),
    }
    return outputs, refs, results


def _sram(image):
    c = image.config
    per_pe = (image.matrix_words_used * c.matrix_word_bits + image.ptr_base.shape[1] * c.ptr_word_bits
              + len(image.layers) * (c.codebook_size * c.weight_bits + c.act_depth * c.act_bits)) / 8
    return {"bytes_per_pe": round(per_pe), "total_bytes": round(per_pe * c.pes),
            "matrix_words_used": image.matrix_words_used, "matrix_words": c.matrix_words,
            "fits_chip": image.matrix_words_used <= c.matrix_words,
            "fits_eie_sram_per_pe": per_pe <= EIE_SRAM_BYTES_PER_PE}


def run_command(args):
    log = lambda s: print(s, file=sys.stderr, flush=True)
    stored = load_compressed(args.run)
    bits = stored.config.weight_index_bits
    if args.weight_index_bits not in (None, bits):
        raise EieError(f"{args.run}/image.npz was built with {bits}-bit weight indices, not "
                       f"{args.weight_index_bits}: run with --weight-index-bits {bits} or compress again "
                       f"for this chip")
    if args.samples is not None and args.samples < 1:
        raise EieError(f"--samples must be at least 1, not {args.samples}")
    args.weight_index_bits = stored.config.weight_index_bits
    args.pes = args.pes or stored.config.pes
    image = fit_image(stored.quant_layers(), args)
    data, x, y = _test_set(args.run, args.samples)
    x_int = chip_inputs(args.run, x.numpy(), image)
    if x_int.shape[1] != image.layers[0].cols:
        raise EieError(f"the chip's first layer takes {image.layers[0].cols} inputs but {data.name} images give "
                       f"{x_int.shape[1]}: this run's model has layers the chip does not run")
    if stored.config.pes != image.config.pes:
        log(f"laid out for {image.config.pes} PEs (the run's image was built for {stored.config.pes})")
    outputs, refs, results = chip_inference(image, x_int, log=log)
    labels = y.numpy()
    bad = np.flatnonzero((outputs != refs[-1]).any(axis=1))
    results = {
        "run": str(args.run), "chip": image.config.to_dict(),
        "chip_accuracy": round(100 * float((outputs.argmax(1) == labels).mean()), 2),
        "reference_accuracy": round(100 * float((refs[-1].argmax(1) == labels).mean()), 2),
        "float_accuracy": _float_accuracy(args.run, x, y),
        "mismatches": int(len(bad)), **results, "sram": _sram(image),
    }
    if len(bad):
        waves = Path(args.run) / f"mismatch-sample{bad[0]}.vcd"
        found = _trace_mismatch(image, x_int, refs, int(bad[0]), waves, log)
        if found:
            l, row, got, want = found
            results["first_mismatch"] = {"sample": int(bad[0]), "layer": l, "row": row, "chip": got,
                                         "reference": want, "waveform": str(waves)}
    if args.verilog is not None:
        from eie.cosim.build import write_verilog
        write_verilog(image.config, args.verilog)
        results["verilog"] = str(args.verilog)
    if args.waves is not None:
        from eie.cosim.sim import simulate
        s = args.waves_sample
        if not 0 <= s < len(x_int):
            raise EieError(f"--waves-sample must be in 0..{len(x_int) - 1}, not {s}")
        simulate(image, x_int[s:s + 1], waves=args.waves, log=log)
        results["waveform"] = str(args.waves)
    if args.json:
        print(json.dumps(results))
    else:
        print_summary(results)
    return 0 if not len(bad) else 1


def print_summary(r):
    c = r["chip"]
    print(f"\n{r['samples']} test images through {r['run']} on a {c['pes']}-PE chip "
          f"({c['index_bits']}-bit indices, {c['weight_index_bits']}-bit weight indices)")
    print(f"  accuracy: chip {r['chip_accuracy']}%  reference {r['reference_accuracy']}%  "
          f"float {r['float_accuracy']}%  mismatches {r['mismatches']}")
    if "first_mismatch" in r:
        m = r["first_mismatch"]
        print(f"  FIRST MISMATCH: sample {m['sample']}, layer {m['layer']}, row {m['row']}: chip {m['chip']}, "
              f"reference {m['reference']}; waveform {m['waveform']}")
    print(f"  {'layer':<6}{'size':>10}{'weights':>9}{'nz in':>7}{'cycles':>9}{'bound':>8}{'ideal':>8}"
          f"{'util':>7}{'imbal':>7}{'model err':>10}")
    for n, l in enumerate(r["layers"]):
        print(f"  {n:<6}{l['rows']:>5}x{l['cols']:<4}{l['weights']:>9}{l['nonzero_inputs_pct']:>6}%{l['cycles']:>9}"
              f"{l['bound_cycles']:>8}{l['ideal_cycles']:>8}{l['utilization']:>7}{l['load_imbalance']:>7}"
              f"{l['model_cycles_error_pct']:>9}%")
    e = r["energy_pj_per_image"]
    print(f"  cycles per image {r['cycles_per_image']}; simulated {r['images_per_s']} images/s, "
          f"{r['sim_cycles_per_s']} cycles/s; {r['sim_wall_seconds']} s")
    print(f"  energy per image {e['total'] / 1e3:.1f} nJ on chip ("
          + ", ".join(f"{k} {v / 1e3:.1f}" for k, v in e.items() if k != "total")
          + f") vs {r['dense_dram_energy_pj_per_image'] / 1e3:.0f} nJ for the dense model from DRAM")
    s = r["sram"]
    print(f"  SRAM {s['bytes_per_pe']} B per PE ({s['total_bytes']} B in all): "
          f"{'fits' if s['fits_eie_sram_per_pe'] else 'does NOT fit'} EIE's 162 KB per PE")
    for key in ("verilog", "waveform"):
        if key in r:
            print(f"  {key}: {r[key]}")


def demo_command(args):
    """prune -> compress -> the chip (its Verilog written beside the results), with one summary at the end."""
    from eie.cli import main
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run = args.run_dir or Path("runs") / (f"demo-quick-{stamp}" if args.quick else f"demo-{stamp}")
    if args.quick:
        steps = [["prune", run, "--data", "digits", "--epochs", "20", "--quality", "1.0", "--iterations", "2",
                  "--retrain-epochs", "2", "--final-epochs", "4"],
                 ["compress", run, "--finetune-epochs", "1", "--calibration", "500", "--pes", str(args.pes)]]
        samples = ["--samples", str(args.samples or 100)]
    else:
        steps = [["prune", run], ["compress", run, "--pes", str(args.pes)]]
        samples = ["--samples", str(args.samples)] if args.samples else []
    steps.append(["run", run, "--pes", str(args.pes), "--verilog", Path(run) / "eie_chip.v", *samples])
    t0 = time.perf_counter()
    for step in steps:
        print(f"\n$ eie {' '.join(map(str, step))}", flush=True)
        code = main([str(a) for a in step])
        if code:
            return code
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s; everything is in {run}")
    return 0


def register(sub):
    p = sub.add_parser("run", help="run a compressed model's test set on the simulated chip, checked bit-exact",
                       description="Run a compressed model's test images through the simulated chip. Every fully "
                                   "connected layer is loaded at once and layers chain on chip; convolutions before "
                                   "them (host.npz, e.g. LeNet-5) run on the host in the same fixed point. The "
                                   "model is laid out for the chip asked for (PE count, index bits, depths); its "
                                   "weight-index width must match the image's. Every output is compared with the "
                                   "bit-exact reference; the first mismatch is traced to its layer and row and "
                                   "written as a VCD. Exit status 1 on any mismatch.")
    p.add_argument("run", type=Path, metavar="RUN_DIR", help="run folder with a compressed model (image.npz)")
    p.add_argument("--samples", type=int, metavar="K", help="test images to run (default: the whole test set)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--waves", type=Path, metavar="FILE.vcd", help="write a VCD waveform of one sample (GTKWave, Surfer)")
    p.add_argument("--waves-sample", type=int, default=0, metavar="K", help="the sample --waves records (default 0)")
    p.add_argument("--verilog", type=Path, metavar="FILE.v", help="also write the Verilog of the chip it ran on")
    add_chip_args(p, sized=True, from_image=True)
    p.set_defaults(func=run_command)

    p = sub.add_parser("demo", help="the whole flow: prune, compress, Verilog, run on the simulated chip",
                       description="Prune LeNet-300-100 on Fashion-MNIST, compress it, write the chip's Verilog "
                                   "and run the test set on the simulated chip, bit-exact. --quick does the same "
                                   "on scikit-learn's digits in about a minute.")
    p.add_argument("--quick", action="store_true", help="tiny data set and budgets, 100 test images")
    p.add_argument("--pes", type=int, default=16, help="processing elements (default 16)")
    p.add_argument("--samples", type=int, metavar="K", help="test images to run on the chip (default: all)")
    p.add_argument("--run-dir", type=Path, metavar="DIR", help="run folder (default runs/demo-<time>)")
    p.set_defaults(func=demo_command)
