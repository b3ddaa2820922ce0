"""An LSTM on the simulated chip, step by step (issue 22), and `eie lstm`: the whole flow as a command.

The chip runs one mat-vec per time step, so the loop is closed on the host: for step t every sequence's
[x_t, h_{t-1}] goes through the Verilator chip in one simulator start, the host's fixed-point cell
(`eie.sw.reference.lstm_cell`, the reference's own) turns the chip's gate pre-activations into h_t, and h_t is
the chip's input at step t + 1. The reference runs beside it (`eie.sw.reference.lstm_steps`) and every step's
chip output is compared with it; then h_T goes through the head's image on the chip. A host program is
recorded before the simulator plays it (`eie.cosim.player`), which is why a step cannot start before the
previous step's outputs are back: one start per step (about 0.7 s each), every sequence in it.
"""

from dataclasses import dataclass
import json
import sys
import time
from pathlib import Path

import numpy as np

from eie.errors import EieError

__all__ = ["LSTMRun", "simulate_lstm", "lstm_flow", "register"]


def _log(message):
    print(message, file=sys.stderr, flush=True)


@dataclass(repr=False)
class LSTMRun:
    """What `simulate_lstm` returns: the head's outputs from the chip and from the reference, which (sample, step)
    pairs had any gate output differ, and the figures."""
    outputs: np.ndarray      # (samples, classes) the chip's head outputs on the chip's own h_T
    reference: np.ndarray    # the same from the reference
    step_mismatch: np.ndarray  # (samples, steps) True where the chip's gates differed from the reference's
    figures: dict

    def __repr__(self):
        return (f"LSTMRun({len(self.outputs)} sequences, {self.figures['mismatched_steps']} mismatched steps, "
                f"{self.figures['cycles_per_sequence']} cycles per sequence)")

    @property
    def mismatches(self):
        """Sequences with any step or head output unlike the reference's."""
        return np.flatnonzero(self.step_mismatch.any(axis=1) | (self.outputs != self.reference).any(axis=1))

    @property
    def predictions(self):
        return self.outputs.argmax(axis=1)


def _energy(perf, config):
    """pJ per sample of one step (the performance model's parts, summed), averaged over the samples."""
    return float(sum(np.mean(pj) for pj in perf.energy_pj(config).values()))


def simulate_lstm(cl, x_int, model_samples=20, log=None, images=None, tables=None):
    """Run integer sequences `x_int` ((samples, steps, features) at `state_frac`) of the `CompressedLSTM` `cl`
    through the Verilator chip, closed loop, and compare every step's gates and the head's outputs with the
    reference. `images`: (gates, head) chip images to run instead of `cl`'s (a test's perturbed copy; the
    reference stays `cl`'s); `tables`: the host's activation tables instead of the reference's (likewise).
    The performance model predicts the first `model_samples` sequences' cycles, every step, beside the RTL's."""
    from eie.cosim.build import build
    from eie.cosim.sim import simulate
    from eie.sw.lstm import check_fits
    from eie.sw.perf import layer_perf
    from eie.sw.reference import layer_forward, lstm_cell, lstm_steps
    log = log or _log
    config = cl.config
    x_int = np.asarray(x_int, np.int64)
    if x_int.ndim != 3 or x_int.shape[2] != cl.features or not len(x_int) or not x_int.shape[1]:
        raise EieError(f"sequences must be (samples, steps, {cl.features}) integers, not shape {x_int.shape}")
    check_fits(cl.features, cl.hidden, config)
    gates_image, head_image = images or (cl.gates, cl.head)
    for image in (gates_image, head_image):
        if image.config != config:
            raise EieError("the gates' and the head's images must be for the model's chip")
    gates, head = cl.layers
    n, steps, _ = x_int.shape
    m = min(model_samples, n)
    build(config, log=log)                  # outside the timing: once per configuration, said when it runs
    t0 = time.perf_counter()
    expected = lstm_steps(gates, x_int, cl.c_frac, config)
    gates_enc, head_enc = gates_image.encoded_layers()[0], head_image.encoded_layers()[0]
    h = np.zeros((n, cl.hidden), np.int64)
    c = np.zeros_like(h)
    mismatch = np.zeros((n, steps), bool)
    rtl = np.zeros((n, steps + 1), np.int64)
    model = np.zeros((m, steps + 1), np.int64)
    energy, first, sim_s, sim_cycles = 0.0, None, 0.0, 0
    for t in range(steps):
        a = np.concatenate([x_int[:, t], h], axis=1)
        run = simulate(gates_image, a, layer_cycles=True, log=log)
        z = gates_image.unpermute(run.outputs)
        z_ref, h_ref = next(expected)
        differ = z != z_ref
        mismatch[:, t] = differ.any(axis=1)
        if first is None and mismatch[:, t].any():
            s = int(np.flatnonzero(mismatch[:, t])[0])
            row = int(np.flatnonzero(differ[s])[0])
            first = {"sample": s, "step": t, "row": row, "chip": int(z[s, row]), "reference": int(z_ref[s, row])}
        rtl[:, t] = run.layer_cycles[:, 0]
        perf = layer_perf(gates_enc, a, config, m)
        model[:, t] = perf.model_cycles
        energy += _energy(perf, config)
        sim_s, sim_cycles = sim_s + run.sim_seconds, sim_cycles + run.sim_cycles
        h, c = lstm_cell(z, c, gates.out_frac, cl.c_frac, config, tables)     # the chip's h, closed loop
        log(f"step {t + 1}/{steps}: {int(mismatch[:, t].sum())} of {n} sequences differ; {rtl[:, t].mean():.1f} "
            f"cycles; on the first {m}: RTL {rtl[:m, t].mean():.1f}, model {model[:, t].mean():.1f}")
    run = simulate(head_image, h, layer_cycles=True, log=log)
    logits = head_image.unpermute(run.outputs)
    logits_ref = layer_forward(head, h_ref, config)
    rtl[:, steps] = run.layer_cycles[:, 0]
    perf = layer_perf(head_enc, h, config, m)
    model[:, steps] = perf.model_cycles
    energy += _energy(perf, config)
    sim_s, sim_cycles = sim_s + run.sim_seconds, sim_cycles + run.sim_cycles
    wall = time.perf_counter() - t0
    per_sequence = rtl.sum(axis=1)
    figures = {
        "samples": n, "steps": steps, "chip": config.to_dict(),
        "steps_compared": n * steps, "outputs_compared": n * steps * 4 * cl.hidden + logits.size,
        "mismatched_steps": int(mismatch.sum()), "mismatched_sequences": int(mismatch.any(axis=1).sum()),
        "head_mismatches": int((logits != logits_ref).any(axis=1).sum()),
        "cycles_per_sequence": round(float(per_sequence.mean()), 1),
        "cycles_per_step": round(float(rtl[:, :steps].mean()), 1), "head_cycles": round(float(rtl[:, steps].mean()), 1),
        "model_samples": m, "model_cycles_per_sequence": round(float(model.sum(axis=1).mean()), 1) if m else None,
        "rtl_cycles_per_sequence_on_model_samples": round(float(per_sequence[:m].mean()), 1) if m else None,
        "model_equals_rtl": bool((model == rtl[:m]).all()),
        "model_max_abs_error_cycles": int(np.abs(model - rtl[:m]).max(initial=0)),
        "energy_pj_per_sequence": round(energy, 1),
        "sim_seconds": round(sim_s, 1), "sim_cycles_per_s": round(sim_cycles / sim_s) if sim_s else None,
        "sim_wall_seconds": round(wall, 1), "sequences_per_s": round(n / wall, 2),
    }
    if first is not None:
        figures["first_mismatch"] = first
    return LSTMRun(logits, logits_ref, mismatch, figures)


# The flow's settings: `quick` runs in seconds on scikit-learn's digits (8 steps of 8 pixels) for `make test`;
# the full run is Fashion-MNIST read row by row (28 steps of 28 pixels), hidden 128, on the 16-PE chip.
SETTINGS = {
    False: {"data": "fashion-mnist", "hidden": 128, "pes": 16, "epochs": 10, "lr": 0.1, "iterations": 3,
            "retrain_epochs": 2, "final_epochs": 3, "finetune_epochs": 1, "calibration": 1000, "samples": None},
    True: {"data": "digits", "hidden": 16, "pes": 2, "epochs": 15, "lr": 0.2, "iterations": 2,
           "retrain_epochs": 3, "final_epochs": 3, "finetune_epochs": 2, "calibration": 200, "samples": 40},
}


def lstm_flow(run_dir, quick=False, hidden=None, samples=None, config=None, keep=(), seed=0, quality=None,
              model_samples=20, force=False, log=_log, method="magnitude", sparsity=None, final_epochs=None):
    """The whole LSTM flow into `run_dir`: train the dense LSTM, prune it (`method`, `sparsity`: Han et al. by
    default, or Wanda or N:M as `eie.sw.lstm.prune_lstm` does; `final_epochs` of retraining after it, default the
    settings' for magnitude and none for the others), compress it, then run
    `samples` test sequences (default: all; 40 with `quick`) on the simulated chip `config` (default the standard
    chip of `SETTINGS`' PEs; memory fields in `keep` as given), every step checked. Writes lstm.json and lstm.md;
    returns (the figures, the `CompressedLSTM`). Bad settings, and a folder holding an earlier lstm.json (unless
    `force`), are refused before any training."""
    from eie.config import ChipConfig
    from eie.sw import train
    from eie.sw.data import load_dataset
    from eie.sw.lstm import build_lstm, check_fits, compress_lstm, prune_lstm
    from eie.sw.pipeline import Training
    from eie.sw.runs import RunFolder
    s = dict(SETTINGS[bool(quick)])
    hidden = s["hidden"] if hidden is None else hidden
    config = config or ChipConfig(pes=s["pes"])
    folder = RunFolder(run_dir, ["lstm.json", "lstm.md"], force)        # refused before any work
    started = time.perf_counter()
    timings = {}
    data = load_dataset(s["data"])
    features = data.input_shape[-1]
    from eie.sw.lstm import LSTMClassifier
    probe = LSTMClassifier(features, hidden, data.classes)     # a bad hidden size is refused here
    from eie.sw.methods import check_network, check_sparsity
    from eie.sw.pipeline import check_method
    if sparsity is not None:
        check_sparsity(sparsity)
    check_network(probe, check_method(method, None, None if method == "magnitude" else sparsity))
    if final_epochs is None:
        final_epochs = s["final_epochs"] if method == "magnitude" else 0
    if not isinstance(final_epochs, int) or final_epochs < 0:
        raise EieError(f"final epochs must be an integer >= 0, not {final_epochs!r}")
    if "act_depth" in keep:
        check_fits(features, hidden, config)
    n = s["samples"] if samples is None else samples
    n = len(data.x_test) if n is None else n
    if not 1 <= n <= len(data.x_test):
        raise EieError(f"samples must be 1..{len(data.x_test)} (the test set), not {n}")
    with train.torch_threads(1):
        t = time.perf_counter()
        model = build_lstm(data, hidden, seed)
        log(f"== train an LSTM ({features} features x {data.input_shape[-2]} steps, {hidden} hidden) on {data.name}")
        Training(epochs=s["epochs"], lr=s["lr"], l2=0.0, seed=seed).fit(model, data, "train", log=log)
        dense = train.evaluate(model, data.x_test, data.y_test)
        log(f"dense float accuracy {dense:.2f}%")
        timings["train"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        log(f"== prune the gates ({'Han et al. 2015' if method == 'magnitude' else method})")
        pruning = prune_lstm(model, data, quality, s["iterations"],
                             Training(epochs=s["retrain_epochs"], lr=s["lr"] / 4, l2=0.0, seed=seed),
                             final_epochs, log, method, sparsity)
        timings["prune"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        log("== compress (Deep Compression)")
        cl = compress_lstm(model, data, config, finetuning=Training(epochs=s["finetune_epochs"], lr=1e-3, l2=0.0,
                                                                      seed=seed),
                           calibration=s["calibration"], keep=keep, log=log)
        timings["compress"] = round(time.perf_counter() - t, 1)
    x, y = data.x_test[:n], data.y_test[:n].numpy()
    t = time.perf_counter()
    log(f"== {n} test sequences on the {cl.config.pes}-PE chip, step by step")
    run = cl.simulate(x, model_samples, log)
    timings["chip"] = round(time.perf_counter() - t, 1)
    storage = cl.storage()
    dense_bytes = 4 * sum(p.numel() for p in model.parameters())
    results = {
        "data": data.identity(), "features": features, "steps": int(x[0].numel() // features), "hidden": hidden,
        "dense_float_accuracy": round(dense, 2), **{k: v for k, v in pruning.items() if k != "prune"},
        "prune": pruning["prune"], "compress": cl.figures,
        "weights_kept_fraction": round(pruning["kept_weights"] / pruning["dense_weights"], 4),
        "storage_bytes": storage, "dense_bytes": dense_bytes,
        "storage_ratio": round(dense_bytes / storage["total"], 2),
        "storage_ratio_huffman": round(dense_bytes / storage["total_huffman"], 2),
        "chip_accuracy": round(100 * float((run.predictions == y).mean()), 2),
        "reference_accuracy": round(100 * float((run.reference.argmax(1) == y).mean()), 2),
        "float_accuracy_on_samples": round(train.evaluate(cl.network, x, data.y_test[:n]), 2),
        "run": run.figures, "timings": {**timings, "total": round(time.perf_counter() - started, 1)},
    }
    folder.write_json("lstm.json", results)
    folder.write_text("lstm.md", summary(results) + "\n")
    return results, cl


def summary(r):
    """The flow's figures as a few lines of text (what `eie lstm` prints and lstm.md holds)."""
    f, c = r["run"], r["run"]["chip"]
    lines = [
        f"LSTM {r['features']}x{r['steps']} -> {r['hidden']} hidden on {r['data']['name']}; "
        f"{f['samples']} test sequences on a {c['pes']}-PE chip",
        f"  accuracy: dense float {r['dense_float_accuracy']}% (whole test set), pruned {r['pruned_accuracy']}%, "
        f"fixed point {r['compress']['fixed_point_accuracy']}%; on these sequences chip {r['chip_accuracy']}% = "
        f"reference {r['reference_accuracy']}% (float {r['float_accuracy_on_samples']}%)",
        f"  bit-exact: {f['steps_compared']} steps ({f['outputs_compared']} outputs) compared, "
        f"{f['mismatched_steps']} steps and {f['head_mismatches']} head outputs differ",
        f"  weights kept {r['kept_weights']} of {r['dense_weights']} ({100 * r['weights_kept_fraction']:.1f}%, "
        f"{r['pruning_ratio']}x fewer; {r['prune']['method']}, {r['prune']['final_epochs']} final epochs of "
        f"retraining); storage {r['dense_bytes']} -> {r['storage_bytes']['total']:.0f} bytes "
        f"({r['storage_ratio']}x; {r['storage_ratio_huffman']}x with the entries Huffman-coded)",
        f"  cycles per sequence {f['cycles_per_sequence']} ({f['cycles_per_step']} per step, head {f['head_cycles']}); "
        f"model {f['model_cycles_per_sequence']} vs RTL {f['rtl_cycles_per_sequence_on_model_samples']} on "
        f"{f['model_samples']} sequences, every step {'equal' if f['model_equals_rtl'] else 'NOT equal'}",
        f"  energy {f['energy_pj_per_sequence'] / 1e3:.1f} nJ per sequence (model); "
        f"simulation {f['sim_wall_seconds']} s "
        f"({f['sim_cycles_per_s']} cycles/s); times {r['timings']}",
    ]
    if "first_mismatch" in f:
        lines.append(f"  FIRST MISMATCH: {f['first_mismatch']}")
    return "\n".join(lines)


def lstm_command(args):
    from eie.sw.lstm import check_variant
    check_variant(args.cell, args.layers, args.bidirectional)
    from eie.cosim.commands import stamped_run, standard_chip
    config, keep = standard_chip(args, SETTINGS[args.quick]["pes"])
    run = stamped_run(args, "lstm")
    results, _ = lstm_flow(run, args.quick, args.hidden, args.samples, config, keep, args.seed, force=args.force,
                           method=args.method, sparsity=args.sparsity, final_epochs=args.final_epochs)
    print(json.dumps(results) if args.json else summary(results) + f"\neverything is in {run} (lstm.json)")
    return 0 if not results["run"]["mismatched_steps"] and not results["run"]["head_mismatches"] else 1


def register(sub):
    p = sub.add_parser("lstm", help="an LSTM classifier on the chip, one sparse mat-vec per step, checked bit-exact",
                       description="Train an LSTM on Fashion-MNIST read row by row (28 steps of 28 pixels), prune its "
                                   "gates (Han et al., or --method wanda or 2:4), compress it and run the test set on the simulated chip: per "
                                   "step the chip computes the gates as one sparse mat-vec of [W_x W_h] over "
                                   "[x_t, h_{t-1}], the host the cell in the same fixed point; every step is compared "
                                   "with the reference. --quick: digits (8 steps of 8 pixels), 16 hidden, 2 PEs, 40 "
                                   "sequences. Exit status 1 on any mismatch.")
    p.add_argument("--quick", action="store_true", help="digits, 16 hidden units, a 2-PE chip, 40 test sequences")
    p.add_argument("--hidden", type=int, help="hidden units (default 128; 16 with --quick)")
    p.add_argument("--samples", type=int, metavar="K", help="test sequences on the chip (default all; 40 with --quick)")
    p.add_argument("--method", default="magnitude", metavar="magnitude|wanda|N:M",
                   help="pruning method: magnitude (Han et al., iterative with retraining; default), wanda (|W| x "
                        "the stacked input's L2 norm per row over every step of 512 training images, no retraining) "
                        "or N:M such as 2:4 (the N largest of every M inputs of a row), as eie prune's")
    p.add_argument("--sparsity", type=float, metavar="F",
                   help="pruned fraction of every row (wanda; default 0.5) or of each matrix (magnitude; default "
                        "90%% of the gates and 50%% of the head); not for N:M")
    p.add_argument("--final-epochs", type=int, metavar="E",
                   help="retraining epochs after pruning (default 3 for magnitude, after its steps; 0 for wanda "
                        "and N:M)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialization and shuffling (default 0)")
    p.add_argument("--run-dir", type=Path, metavar="DIR", help="run folder (default runs/lstm-<time>)")
    p.add_argument("--force", action="store_true", help="replace the lstm.json and lstm.md an earlier run left there")
    p.add_argument("--cell", default="lstm", help="recurrent cell: only lstm runs (named to say so)")
    p.add_argument("--layers", type=int, default=1, help="recurrent layers: only 1 runs")
    p.add_argument("--bidirectional", action="store_true", help="refused: the chip runs a unidirectional LSTM")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    p.add_argument("--pes", type=int, help="processing elements of the standard chip (default 16; 2 with --quick)")
    p.add_argument("--index-bits", type=int, default=4, help="relative row index bits (default 4)")
    p.add_argument("--act-depth", type=int, help="activations per PE and bank (default: the standard chip's); "
                                                 "a step that does not fit is refused before any training")
    p.set_defaults(func=lstm_command)
