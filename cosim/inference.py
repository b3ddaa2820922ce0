"""`eie run` and `eie demo`: a compressed model's test set through the simulated chip, every output checked.

Every fully connected layer is loaded onto the chip at once; layers chain on chip (source/destination
activation banks swap), so the host writes only the first input and reads only the last output. The chip's
outputs are compared with the bit-exact reference on every sample; the first mismatch is traced to its
layer and row and recorded as a waveform.
"""

import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from eie.cosim import timing
from eie.cosim.commands import DEMO_MODELS, add_chip_args, add_range_arg, chip_changes, input_range, sequence_demo
from eie.errors import EieError

__all__ = ["register", "run_command"]


def _log(message):
    print(message, file=sys.stderr, flush=True)


def _float_accuracy(cm, x, y):
    """The weight-shared float network's accuracy on images `x` (a fully connected network's flattened) with
    labels `y`; None without either."""
    if cm.network is None or y is None:
        return None
    import torch
    from eie.sw import train
    x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    return round(train.evaluate(cm.network, x if cm.host_ops else x.reshape(len(x), -1), torch.as_tensor(y)), 2)


def _write_predictions(path, run, labels):
    """Per-image chip outputs as CSV: sample, label (empty without labels), the chip's and the reference's class,
    then the outputs."""
    from eie.sw.runs import atomic_write

    def write(f):
        out = csv.writer(f)
        out.writerow(["sample", "label", "chip_class", "reference_class"]
                     + [f"out{k}" for k in range(run.outputs.shape[1])])
        for s, (row, chip, ref) in enumerate(zip(run.outputs, run.predictions, run.reference.argmax(axis=1))):
            out.writerow([s, "" if labels is None else int(labels[s]), int(chip), int(ref), *map(int, row)])
    atomic_write(path, write, binary=False)


def _writable(folder):
    return os.access(folder, os.W_OK | os.X_OK)


def _check_output_folder(flag, path):
    """Refuse, before the simulation, a file `eie run` could not write when it is done (its results would be lost)."""
    folder = path.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise EieError(f"{flag} {path}: folder {folder} {what}; create it or name a file in another folder")
    if not _writable(folder):
        raise EieError(f"{flag} {path}: folder {folder} is not writable; name a file in a folder you can write to")


def run_command(args):
    from eie.sw.flow import load
    from eie.sw.runs import RunFolder
    if args.samples is not None and args.samples < 1:
        raise EieError(f"--samples must be at least 1, not {args.samples}")
    started = time.perf_counter()
    cm = load(args.run)
    stored = cm.config
    cm = cm.relayout(**chip_changes(args))
    if cm.config.pes != stored.pes:
        _log(f"laid out for {cm.config.pes} PEs (the model was compressed for {stored.pes})")
    if args.inputs is None:
        cm.data = _data_set(cm.data, args)
    elif args.data is not None or args.data_dir is not None:
        raise EieError("--inputs runs your own images: leave out --data and --data-dir, or --inputs")
    if args.predictions is not None and args.predictions.exists() and not args.force:
        raise EieError(f"--predictions {args.predictions} exists; pass --force to replace it or name another file")
    for flag, path in (("--predictions", args.predictions), ("--verilog", args.verilog)):
        if path is not None:
            _check_output_folder(flag, path)
    x, y, source = _images(cm, args)
    folder = RunFolder(args.run)
    with input_range(args.allow_out_of_range):
        folder.check_writable()      # before the simulation, whose results go there; holds the folder
        results = chip_run(cm, x, y, args.run, source, args.waves, args.waves_sample, args.verilog,
                           args.predictions, started, args.jobs, args.scheduler)
    if args.json:
        print(json.dumps(results))
    else:
        print_summary(results)
    return 0 if not results["mismatches"] else 1


def _data_set(recorded, args):
    """The data set `eie run` uses: the one the run folder records, unless --data / --data-dir say otherwise."""
    data = dict(recorded or {})
    if args.data is not None and args.data != data.get("name"):
        data = {"name": args.data, "data_dir": None}
    if args.data_dir is not None:
        data = {"name": data.get("name", "mnist"), "data_dir": str(args.data_dir)}
    if not data:
        raise EieError(f"{args.run} does not record its data set (no report.json): pass --data NAME")
    return data


def _check_samples(samples, data):
    if samples is not None and samples > len(data.x_test):
        raise EieError(f"--samples {samples}: the test set has {len(data.x_test)} images; give at most that many "
                       "or leave --samples out for all of them")


def _read_array(flag, path):
    """A .npy file (numpy.save) as an array; anything else refused in one line."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise EieError(f"{flag} {path}: no such file") from None
    except (OSError, ValueError, EOFError) as e:
        raise EieError(f"{flag} {path}: not a .npy array ({e}); write it with numpy.save") from None


def _images(cm, args):
    """(images, labels or None, what they are) for `eie run`: the first --samples images of --inputs (with
    --labels), else of the test set."""
    if args.inputs is None:
        if args.labels is not None:
            raise EieError("--labels goes with --inputs (the test set has its own labels)")
        data = cm.dataset()
        _check_samples(args.samples, data)
        n = args.samples or len(data.x_test)
        return data.x_test[:n], data.y_test[:n].numpy(), f"the test set of {data.name}"
    try:
        x = cm.check_images(_read_array("--inputs", args.inputs))
    except EieError as e:
        raise EieError(f"--inputs {args.inputs}: {e}") from None
    if args.samples is not None and args.samples > len(x):
        raise EieError(f"--samples {args.samples}: --inputs {args.inputs} has {len(x)} images; give at most that "
                       "many or leave --samples out for all of them")
    y = None
    if args.labels is not None:
        try:
            y = cm.check_labels(_read_array("--labels", args.labels), len(x))
        except EieError as e:
            raise EieError(f"--labels {args.labels}: {e}") from None
    n = args.samples or len(x)
    return x[:n], None if y is None else y[:n], str(args.inputs)


def chip_run(cm, x, y, run_dir, source, waves=None, waves_sample=0, verilog=None, predictions=None, started=None,
             jobs=1, scheduler=None):
    """`eie run`'s work: images `x` (`source` says what they are) on the chip, checked, with labels `y` (or
    None: no accuracy); the figures merged into the run folder's report (section "run") and returned. A
    mismatch is traced and recorded as a VCD."""
    from eie.sw.runs import RunFolder
    started = started or time.perf_counter()
    n = len(x)
    if waves is not None and not 0 <= waves_sample < n:
        raise EieError(f"--waves-sample must be one of the {n} samples run, 0..{n - 1}, not {waves_sample}")
    run = cm.simulate(x, log=_log, waves=waves, waves_sample=waves_sample,
                      mismatch_waves=Path(run_dir) / "mismatch.vcd", jobs=jobs, scheduler=scheduler, labels=y)
    results = {"run": str(run_dir), "inputs": source, "chip_accuracy": None, "reference_accuracy": None,
               "float_accuracy": _float_accuracy(cm, x, y), **run.figures}
    # cycles as time: at the chip's measured Fmax where `eie synth --ecp5` stored one, and at EIE's 800 MHz
    results["time"] = timing.entry(cm.config, results["cycles_per_image"], [l["cycles"] for l in results["layers"]],
                                   results.get("cycles_from"))
    if verilog is not None:
        cm.verilog(verilog)
        results["verilog"] = str(verilog)
    if predictions is not None:
        _write_predictions(predictions, run, y)
        results["predictions"] = str(predictions)
    RunFolder(run_dir).update_report(run=results, timings={"run": round(time.perf_counter() - started, 1)})
    return results


_US_WIDTH = 15


def _clock_label(key, clock):
    """A column head's clock: 'Fmax 61.2' (MHz, measured) or 'EIE 800' (MHz, reference)."""
    return f"{'Fmax' if key == timing.FMAX else 'EIE'} {clock['mhz']:g}"


def print_summary(r):
    c = r["chip"]
    print(f"\n{r['samples']} images ({r.get('inputs', 'the test set')}) through {r['run']} on a {c['pes']}-PE chip "
          f"({c['index_bits']}-bit indices, {c['weight_index_bits']}-bit weight indices)")
    accuracy = (f"chip {r['chip_accuracy']}%  reference {r['reference_accuracy']}%  float {r['float_accuracy']}%"
                if r["chip_accuracy"] is not None else "not measured (no labels: --labels)")
    print(f"  accuracy: {accuracy}  mismatches {r['mismatches']}")
    if "first_mismatch" in r:
        m = r["first_mismatch"]
        print(f"  FIRST MISMATCH: sample {m['sample']}, layer {m['layer']}, row {m['row']}: chip {m['chip']}, "
              f"reference {m['reference']}; waveform {m['waveform']}")
    clocks = r.get("time", {}).get("clocks", {})
    us_head = "".join(f"{'us ' + _clock_label(k, c):>{_US_WIDTH}}" for k, c in clocks.items())
    print(f"  {'layer':<6}{'size':>10}{'weights':>9}{'nz in':>7}{'cycles':>9}{'bound':>8}{'ideal':>8}"
          f"{'util':>7}{'imbal':>7}{'model err':>10}{us_head}")
    for n, l in enumerate(r["layers"]):
        us = "".join(f"{c['us_per_layer'][n]:>{_US_WIDTH}.3f}" for c in clocks.values())
        print(f"  {n:<6}{l['rows']:>5}x{l['cols']:<4}{l['weights']:>9}{l['nonzero_inputs_pct']:>6}%{l['cycles']:>9}"
              f"{l['bound_cycles']:>8}{l['ideal_cycles']:>8}{l['utilization']:>7}{l['load_imbalance']:>7}"
              f"{l['model_cycles_error_pct']:>9}%{us}")
    e = r["energy_pj_per_image"]
    print(f"  cycles per image {r['cycles_per_image']}; simulated {r['images_per_s']} images/s, "
          f"{r['sim_cycles_per_s']} cycles/s; {r['sim_wall_seconds']} s")
    if "time" in r:
        print("\n".join(f"  time: {line}" for line in timing.summary(r["time"])))
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
    """The whole flow through the library's functions (`eie.sw.flow`, as `eie.api` gives them), into one run
    folder: train, prune, compress, then the test set on the chip with its Verilog written beside the results. The dense and pruned networks are
    kept as `eie prune` keeps them (baseline.pt, pruned.pt), so that `eie compare` can use the folder."""
    from eie.config import ChipConfig
    from eie.sw import flow, models
    from eie.sw.pipeline import Training
    from eie.sw.runs import RunFolder
    if args.model != "mlp":                  # `eie lstm` / `eie decoder` themselves, with the demo's flags
        return sequence_demo(args.model, args.quick, args.pes, args.samples, args.run_dir)
    args.pes = 16 if args.pes is None else args.pes
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run = Path(args.run_dir or Path("runs") / (f"demo-quick-{stamp}" if args.quick else f"demo-{stamp}"))
    folder = RunFolder(run, ["image.npz", "baseline.pt", "pruned.pt"])   # refused before any work
    t0 = time.perf_counter()
    data = flow.load_data("digits" if args.quick else "fashion-mnist")
    _check_samples(args.samples, data)       # before training, pruning and compressing, not after them
    model = flow.build_model("lenet-300-100", data)
    print(f"== train LeNet-300-100 on {data.name}", flush=True)
    training = Training(epochs=20, lr=0.05)
    flow.train(model, data, training)
    models.save_checkpoint(folder.output("baseline.pt"), model, arch="lenet-300-100", data=data.name,
                           training=training.__dict__)
    print("== prune (Han et al. 2015)", flush=True)
    quick = dict(quality=1.0, iterations=2, final_epochs=4, retraining=Training(epochs=2, lr=0.02, l2=5e-4))
    figures = flow.prune(model, data, arch="lenet-300-100", **(quick if args.quick else {}))
    models.save_checkpoint(folder.output("pruned.pt"), model, arch="lenet-300-100", data=data.name,
                           quality=figures["prune"]["quality"])
    print("== compress (Deep Compression)", flush=True)
    cm = flow.compress(model, data, ChipConfig(pes=args.pes),
                       finetuning=Training(epochs=1 if args.quick else 2, lr=1e-4, l2=0.0),
                       calibration=500 if args.quick else 2000)
    cm.save(run)          # the pruning and compression figures, as eie prune and eie compress write them
    print(f"== the test set on the {args.pes}-PE chip", flush=True)
    from eie.cosim.campaign import cores
    n = args.samples or (100 if args.quick else len(data.x_test))
    results = chip_run(cm, data.x_test[:n], data.y_test[:n].numpy(), run, f"the test set of {data.name}",
                       verilog=run / "eie_chip.v", predictions=run / "predictions.csv", jobs=cores())
    print_summary(results)
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s; everything is in {run} (report.md)")
    return 0 if not results["mismatches"] else 1


def register(sub):
    from eie.cosim.campaign import MIN_CHUNK, cores
    p = sub.add_parser("run", help="run a compressed model's test set on the simulated chip, checked bit-exact",
                       description="Run a compressed model's test images (or your own, --inputs) through the simulated "
                                   "chip. Every fully "
                                   "connected layer is loaded at once and layers chain on chip; convolutions before "
                                   "them (host.npz, e.g. LeNet-5) run on the host in the same fixed point. The chip is "
                                   "the one the model was compressed for; any chip flag given changes that field "
                                   "(memory depths not given are the standard chip's, or fitted to the model when it "
                                   "does not fit that). The data set is the one the run folder records, unless "
                                   "--data names one. Every output is compared with the bit-exact reference; the "
                                   "first mismatch is traced to its layer and row and written as a VCD. The results "
                                   "are merged into the run folder's report.json / report.md. Exit status 1 on any "
                                   "mismatch.")
    p.add_argument("run", type=Path, metavar="RUN_DIR", help="run folder with a compressed model (image.npz)")
    p.add_argument("--samples", type=int, metavar="K", help="test images to run (default: the whole test set)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--waves", type=Path, metavar="FILE.vcd", help="write a VCD waveform of one sample (GTKWave, Surfer)")
    p.add_argument("--waves-sample", type=int, default=0, metavar="K", help="the sample --waves records (default 0)")
    p.add_argument("--verilog", type=Path, metavar="FILE.v", help="also write the Verilog of the chip it ran on")
    p.add_argument("--predictions", type=Path, metavar="FILE.csv",
                   help="write every image's chip outputs (and label, chip and reference class) as CSV")
    p.add_argument("--force", action="store_true", help="replace the --predictions file if it exists")
    p.add_argument("--data", metavar="NAME",
                   help="data set whose test images to run: fashion-mnist, mnist or digits (default: the one the run "
                        "folder records)")
    p.add_argument("--data-dir", type=Path, metavar="DIR",
                   help="folder of MNIST-format IDX files, when the one the run folder records has moved")
    add_range_arg(p)
    p.add_argument("--inputs", type=Path, metavar="FILE.npy",
                   help="run your own images instead of the test set: a numpy.save array, samples first, each image "
                        "flat or in the data set's shape, scaled as the training data was")
    p.add_argument("--labels", type=Path, metavar="FILE.npy",
                   help="with --inputs: their classes (integers, one per image), for the accuracy")
    p.add_argument("--jobs", type=int, default=cores(),
                   help=f"simulator processes sharing the samples, on a Dask local cluster (default: the cores, "
                        f"{cores()}; runs of fewer than {MIN_CHUNK} samples per process stay in one)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run the simulations on the Dask cluster at ADDRESS (e.g. tcp://host:8786) instead")
    add_chip_args(p, sized=True, from_image=True)
    p.set_defaults(func=run_command)

    p = sub.add_parser("demo", help="the whole flow: prune, compress, Verilog, run on the simulated chip",
                       description="Prune LeNet-300-100 on Fashion-MNIST, compress it, write the chip's Verilog "
                                   "and run the test set on the simulated chip, bit-exact. --quick does the same "
                                   "on scikit-learn's digits in about a minute. --model lstm and --model transformer run "
                                   "'eie lstm' and 'eie decoder' instead.")
    p.add_argument("--quick", action="store_true", help="tiny data set and budgets, 100 test images")
    p.add_argument("--pes", type=int, help="processing elements (default 16; lstm and transformer: their commands')")
    p.add_argument("--samples", type=int, metavar="K", help="test images (lstm: sequences) to run on the chip "
                                                            "(default: all)")
    p.add_argument("--run-dir", type=Path, metavar="DIR", help="run folder (default runs/demo-<time>)")
    p.add_argument("--model", choices=tuple(DEMO_MODELS), default="mlp",
                   help="mlp (LeNet-300-100, default), or lstm / transformer: 'eie lstm' / 'eie decoder' with these "
                        "flags")
    p.set_defaults(func=demo_command)
