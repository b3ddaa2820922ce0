"""`eie compare`: does pruning pay off? The run folder's dense baseline shrunk by every method at matched
budgets (kept fractions of the weights), each point measured the same way: test accuracy, parameters, storage
bytes by one rule, CPU wall-clock per inference, and for the forms the chip runs, its cycles and energy.

Methods (each point gets the same retraining budget, `epochs`):
  iterative             the project's own: `eie.sw.pipeline.prune_schedule`, L2, the threshold ramped over steps
  oneshot-l2/-l1        one magnitude prune, then retraining with L2 / L1 regularization
  oneshot-l2/-l1-noretrain  the same prunes before retraining (with the next four: Fig. 5 of Han et al. 2015)
  obd                   Optimal Brain Damage: saliency h_ii w_i^2 / 2, iterative schedule's steps and epochs
  wanda                 Wanda: |W| x input L2 norm on calibration images, each row to the budget, no retraining
  sparsegpt             SparseGPT: one-shot OBS updates from the calibration images' X^T X, each row to the budget
  2:4, 2:4-noretrain    2:4 structured sparsity (half the weights, one point each), retrained or not
  svd                   each Linear layer as a truncated-SVD pair at the budget's parameter count, fine-tuned
  int8, int4            uniform per-row weights, quantization-aware fine-tuning, no pruning (one point each)
  deep-compression      the iterative model weight-shared (16-entry codebooks) and in the chip's fixed point
The L1 family starts from the baseline fine-tuned `epochs` epochs with L1 (the paper's L1-trained network);
every other method starts from the baseline, which was trained with L2.

Storage rule, for every form: every stored number at its width. Dense matrices (the baseline, SVD factors,
low-bit integers) need no indices; float32 values, biases, factors and per-row scales take 32 bits. Sparse
matrices are stored in the chip's relative-index encoding (`eie.sw.encode`, 1 PE, 4-bit z, units ordered
densest first as `eie compress` does): each entry its value and index, padding entries, pointers, biases, and
for weight-shared models the codebooks, as `eie.sw.storage.storage` counts them (which it computes for
Deep Compression); pruned float models store 32-bit values and biases in the same encoding. Deep Compression's
points also give "bytes_huffman": the same model with its entries Huffman-coded for off-chip storage (its third
stage, `eie.sw.storage`); the other forms store no codebook indices to code, and the verdict and plots use the
fixed-width bytes every form has.
"""

import math
import sys
import time

import numpy as np

from eie.config import ChipConfig
from eie.errors import EieError

__all__ = ["METHODS", "DEFAULT_BUDGETS", "OUTPUTS", "L1_STRENGTH", "parse_budgets", "parse_methods",
           "sparse_bytes", "dense_bytes", "low_bit_bytes", "chip_config", "chip_figures", "pareto_front", "compare",
           "markdown"]

METHODS = ("iterative", "oneshot-l2", "oneshot-l1", "oneshot-l2-noretrain", "oneshot-l1-noretrain", "obd", "wanda",
           "sparsegpt", "svd", "int8", "int4", "2:4-noretrain", "2:4", "deep-compression")
PROJECT_METHODS = ("iterative", "deep-compression")
NM_METHODS = ("2:4-noretrain", "2:4")
FIG5 = (("oneshot-l1-noretrain", "L1, no retraining"), ("oneshot-l2-noretrain", "L2, no retraining"),
        ("oneshot-l1", "L1, retrained"), ("oneshot-l2", "L2, retrained"), ("iterative", "L2, iterative prune+retrain"))
DEFAULT_BUDGETS = (0.25, 0.10, 0.08, 0.05)
OUTPUTS = ("compare.json", "compare.md", "compare_bytes.png", "compare_cpu.png", "compare_chip.png", "compare_fig5.png")
L1_STRENGTH = 1e-4      # added to each weight's gradient as L1 * sign(w); chosen before any run, not tuned
STORAGE_CHIP = ChipConfig(pes=1, index_bits=4)   # the storage rule's encoding: one PE, EIE's 4-bit relative indices
BATCHES = (1, 64)


def _log(message):
    print(message, file=sys.stderr, flush=True)


def parse_budgets(budgets):
    """Kept fractions, each in (0, 1), largest first; from a sequence or 'F,F,...'."""
    if isinstance(budgets, str):
        try:
            budgets = [float(b) for b in budgets.split(",")]
        except ValueError:
            raise EieError(f"budgets {budgets!r}: give kept fractions separated by commas, like 0.25,0.1,0.05") from None
    values = sorted({float(b) for b in budgets}, reverse=True)
    bad = [b for b in values if not (math.isfinite(b) and 0 < b < 1)]
    if not values or bad:
        raise EieError(f"budget {bad[0] if bad else '(none)'} is out of range: every kept fraction must lie "
                       "strictly between 0 and 1, like 0.25,0.1,0.05")
    return tuple(values)


def parse_methods(methods):
    """Method names in `METHODS` order; from a sequence or 'a,b,...'."""
    names = [m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods) if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        what = f"unknown method {unknown[0]!r}" if unknown else "no method given"
        raise EieError(f"{what}: choose from {', '.join(METHODS)}")
    return tuple(m for m in METHODS if m in names)


# -- storage, one rule ----------------------------------------------------------------------------------------

def _pattern_layers(matrices, relus=None):
    """QuantLayers whose index matrices are non-zero where `matrices` store a weight: what the encoder, the
    storage accounting and the performance model need of a sparse matrix (values do not matter to them)."""
    from eie.sw.quant import QuantLayer
    relus = relus or [False] * len(matrices)
    return [QuantLayer((np.asarray(m) != 0).astype(np.int64), np.array([0, 1] + [0] * 14), np.zeros(len(m), np.int64),
                       0, r) for m, r in zip(matrices, relus)]


def sparse_bytes(matrices, value_bits=32, bias_bits=32, codebook_bits=0):
    """Bytes of sparse matrices (each rows x cols, zeros pruned) in the chip's relative-index encoding on one PE:
    every entry (padding included) a `value_bits` value and an index, the pointers, a bias per row and
    `codebook_bits` per layer. Entry counts and pointer widths are `eie.sw.storage.storage`'s, which with 4-bit
    values, 16-bit biases and a 16 x 16-bit codebook gives the same total (the test checks it)."""
    from eie.sw.storage import storage_bits_by_part
    config = STORAGE_CHIP
    layers = _pattern_layers(matrices)
    parts = storage_bits_by_part(layers, config)
    real = parts["weights"] // config.weight_index_bits
    padding = parts["padding"] // config.entry_bits
    rows = sum(q.rows for q in layers)
    bits = (real + padding) * (value_bits + config.index_bits) + parts["pointers"] + rows * bias_bits \
        + len(layers) * codebook_bits
    return bits / 8


def dense_bytes(model):
    """A plain model's parameters at 32 bits (the baseline, SVD factors)."""
    return 4 * sum(p.numel() for p in model.parameters())


def low_bit_bytes(model, bits):
    """`bits` per weight, a 32-bit scale per output row and 32-bit biases."""
    from eie.sw import prune
    total = 0
    for _, layer in prune.layers(model):
        total += layer.weight.numel() * bits + 32 * layer.out_features + 32 * (layer.bias.numel() if layer.bias is not None else 0)
    return total / 8


# -- chip -----------------------------------------------------------------------------------------------------

def chip_config(matrices, pes=16, fixed=None):
    """The `pes`-PE chip fitted to a network (`matrices`: one per layer, non-zero where a weight is stored), as
    `chip_figures` runs it. `fixed`: chip fields held as given instead of fitted (the memories of a chip that
    was synthesized, so that its measured Fmax applies); a network they cannot hold gets a fitted chip."""
    from eie.sw.image import fit_config
    layers = _pattern_layers(matrices)
    if fixed:
        try:
            return fit_config(layers, ChipConfig(pes=pes).replace(**fixed), keep=tuple(fixed))
        except EieError:
            pass
    return fit_config(layers, ChipConfig(pes=pes))


def chip_figures(matrices, inputs, relus=None, pes=16, samples=20, fixed=None):
    """Cycles per image (the performance model on the first `samples` images: it steps every cycle in Python)
    and energy per image (all of `inputs`) of a network on a `pes`-PE chip fitted to it, as `eie compress`
    fits one. `matrices`: one per layer, non-zero where a weight is stored; `inputs`: each layer's input
    activations (samples x cols; only which are non-zero matters). `fixed`: see `chip_config`."""
    from eie.sw.encode import encode_layer
    from eie.sw.perf import layer_perf, network_figures
    layers = _pattern_layers(matrices, relus)
    config = chip_config(matrices, pes, fixed)
    from eie.sw.placement import placement_load
    perfs = [layer_perf(encode_layer(q.w_index, config), np.asarray(x), config, model_samples=samples,
                        last=l == len(layers) - 1) for l, (q, x) in enumerate(zip(layers, inputs))]
    summary = _chip_summary(network_figures(perfs, config), config, min(samples, len(inputs[0])), len(inputs[0]))
    summary["load"] = placement_load(layers, inputs, config, samples, interleaved=perfs)   # N:M vs placement
    return summary


def _chip_summary(figures, config, cycle_samples, energy_samples):
    return {"pes": config.pes, "cycle_samples": cycle_samples, "energy_samples": energy_samples,
            "cycles_per_image": figures["cycles_per_image"],
            "energy_nj_per_image": round(figures["energy_pj_per_image"]["total"] / 1e3, 3),
            "dense_dram_energy_nj_per_image": round(figures["dense_dram_energy_pj_per_image"] / 1e3, 3),
            "config": config.to_dict()}


# -- measuring a point ------------------------------------------------------------------------------------------

def _layers(model):
    """[(W, bias, relu)] of the fully connected layers as float32 arrays (zero bias where there is none)."""
    from eie.sw import models
    out = []
    for _, layer, relu in models.fully_connected(model):
        w = layer.weight.detach().numpy().astype(np.float32)
        b = layer.bias.detach().numpy().astype(np.float32) if layer.bias is not None else np.zeros(len(w), np.float32)
        out.append((w, b, relu))
    return out


def _float_inputs(layers, x):
    """Each layer's input activations for images `x` (the float forward pass)."""
    h = x.reshape(len(x), -1).numpy().astype(np.float32)
    inputs = []
    for w, b, relu in layers:
        inputs.append(h)
        h = h @ w.T + b
        if relu:
            h = np.maximum(h, 0)
    return inputs


class _Measure:
    """Measures points the same way for every method (the settings `compare` was given)."""

    def __init__(self, data, dense_weights, threads, pes, chip_samples, min_run_time, fixed):
        self.data, self.dense_weights, self.threads = data, dense_weights, threads
        self.pes, self.chip_samples, self.min_run_time, self.fixed = pes, chip_samples, min_run_time, fixed

    def cpu(self, layers, sparse):
        from eie.sw.cputime import KERNELS, time_network
        kernels = KERNELS if sparse else KERNELS[:1]
        timed = time_network(layers, BATCHES, kernels, self.threads, self.min_run_time)
        return {str(b): t for b, t in timed.items()}

    def point(self, method, budget, model, form, accuracy, epochs, started, **extra):
        """One row of the table for `model` in `form` (dense, sparse, lowrank, lowbit or shared)."""
        from eie.sw import models, prune, train
        if accuracy is None:
            accuracy = train.evaluate(model, self.data.x_test, self.data.y_test)
        if form == "sparse":
            model = models.clone(model)
            prune.sort_units(model)       # as `eie compress` orders units; the function is unchanged
        layers = _layers(model)
        weights = sum(int(np.count_nonzero(w)) if form in ("sparse", "shared") else w.size for w, _, _ in layers)
        biases = sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias"))
        if form == "sparse":
            size = sparse_bytes([w for w, _, _ in layers])
        elif form == "lowbit":
            size = low_bit_bytes(model, extra["bits"])
        elif form == "shared":
            size = extra.pop("bytes")
            extra["bytes_huffman"] = round(extra["bytes_huffman"], 1)
        else:
            size = dense_bytes(model)
        row = {"method": method, "budget": budget, "form": form, "accuracy": round(accuracy, 2),
               "weights": weights, "parameters": weights + biases,
               "kept_fraction": round(weights / self.dense_weights, 5), "bytes": round(size, 1),
               "bytes_huffman": None, "train_epochs": epochs}
        sparse = form in ("sparse", "shared")
        row["cpu"] = self.cpu(layers, sparse)
        if form == "shared":
            row["chip"] = extra.pop("chip")
        elif form in ("sparse", "dense"):
            matrices = [w if form == "sparse" else np.ones(w.shape) for w, _, _ in layers]
            row["chip"] = chip_figures(matrices, _float_inputs(layers, self.data.x_test), [r for _, _, r in layers],
                                       self.pes, self.chip_samples, self.fixed)
        else:
            row["chip"] = None
        row.update(extra)
        row["seconds"] = round(time.perf_counter() - started, 1)
        label = f"{method}" + (f" @ {budget:g}" if budget is not None else "")
        cpu = row["cpu"]["1"]
        huffman = f" ({row['bytes_huffman']:.0f} Huffman-coded)" if row["bytes_huffman"] else ""
        _log(f"{label}: accuracy {row['accuracy']:.2f}%, {weights} weights ({100 * row['kept_fraction']:.1f}%), "
             f"{row['bytes']:.0f} bytes{huffman}, {1e6 * cpu['seconds']:.0f} us/image at batch 1 ({cpu['best']}), "
             f"{row['seconds']} s")
        return row


# -- the comparison ------------------------------------------------------------------------------------------

def _check_run(run):
    if not run.path.is_dir():
        raise EieError(f"{run.path} is not a run folder: make one with 'eie prune {run.path}'")
    if not run.has("baseline.pt"):
        raise EieError(f"no baseline.pt in {run.path}: train one with 'eie prune {run.path}' (or only the baseline: "
                       f"'eie prune {run.path} --iterations 1 --retrain-epochs 0 --final-epochs 0')")


def _baseline(run, data):
    from eie.sw import models
    model, masks, meta = models.load_checkpoint(run / "baseline.pt")
    if masks:
        raise EieError(f"{run / 'baseline.pt'} is pruned; eie compare needs the dense network")
    models.check_input(model, data)
    if models.front(model):
        raise EieError("eie compare handles fully connected networks (Linear/ReLU/Dropout after a Flatten); "
                       "this baseline has convolutions")
    models.fully_connected(model)
    return model, meta


def _fit_nm(model, methods, explicit):
    """`methods` for `model`: 2:4 needs 4 to divide every layer's inputs. Where it does not, the 2:4 methods are
    dropped with a log line when they came with the default list, and refused when asked for by name."""
    from eie.sw import prune
    nm = [m for m in methods if m in NM_METHODS]
    odd = [f"{name} {layer.weight[0].numel()}" for name, layer in prune.layers(model) if layer.weight[0].numel() % 4]
    if not nm or not odd:
        return methods
    why = f"2:4 sparsity needs 4 to divide every layer's inputs, but this baseline has {', '.join(odd)}"
    if explicit:
        raise EieError(f"{why}: drop {', '.join(nm)} from --methods")
    _log(f"skipping {', '.join(nm)}: {why}")
    return tuple(m for m in methods if m not in NM_METHODS)


def compare(run_dir, budgets=DEFAULT_BUDGETS, methods=None, *, epochs=8, iterations=3, lr=0.02, l2=5e-4,
            l1=L1_STRENGTH, finetune_epochs=2, threads=1, pes=16, chip_samples=20, hessian_images=2000,
            min_run_time=0.2, seed=0, force=False, data=None, data_dir=None, chip_time=None, chip=None):
    """Compare every method in `methods` at every kept fraction in `budgets` on the baseline of the run folder
    `run_dir`; write compare.json, compare.md and the plots there and return the results dict. `methods` None:
    every method in `METHODS`, less 2:4 (said in a log line) where 4 does not divide a layer's inputs; 2:4
    named in `methods` on such a baseline is refused.

    Every point gets `epochs` epochs of SGD (learning rate `lr`, cosine-decayed; L2 weight decay `l2`, or L1
    `l1` for the L1 family): the iterative methods as `iterations` steps of epochs // (iterations + 1) and the
    rest as a final retraining; Deep Compression adds `finetune_epochs` of centroid fine-tuning as `eie
    compress` does. Training and CPU timing run torch at `threads` threads; CPU times are per inference at
    batches 1 and 64 (`min_run_time` seconds of repeated calls per figure); chip figures are on a
    `pes`-PE chip, cycles predicted on the first `chip_samples` test images; its memories fitted to each point,
    except the fields named in `chip` (e.g. {"matrix_words": 2048, "ptr_words": 512}: a synthesized chip's,
    whose measured Fmax then applies), held wherever the point fits them.

    `chip_time(config, cycles_per_image) -> dict` states a point's chip cycles as time (its "time" entry, beside
    the CPU's times in compare.md): the command passes `eie.cosim.timing.entry` (the chip's measured Fmax where
    one is stored, and EIE's 800 MHz); without it no times are stated."""
    import torch
    from eie.sw import models, pipeline, prune, train
    from eie.sw import methods as shrink
    from eie.sw.runs import RunFolder
    started = time.perf_counter()
    explicit = methods is not None
    budgets, methods = parse_budgets(budgets), parse_methods(METHODS if methods is None else methods)
    for name, value, low in (("epochs", epochs, iterations + 1), ("iterations", iterations, 1),
                             ("threads", threads, 1), ("chip_samples", chip_samples, 1)):
        if not isinstance(value, int) or value < low:
            raise EieError(f"{name.replace('_', '-')} must be an integer of at least {low}, not {value}"
                           + (" (each iterative step needs an epoch, and so does the final retraining)"
                              if name == "epochs" else ""))
    chip = dict(chip or {})
    ChipConfig.for_user(pes=pes, **chip)    # a bad PE count or chip field is refused before any work
    run = RunFolder(run_dir, OUTPUTS, force)
    _check_run(run)
    torch.set_num_threads(threads)
    data = run.data_set(data, data_dir, _log)
    base, meta = _baseline(run, data)
    methods = _fit_nm(base, methods, explicit)
    arch = meta.get("arch") or run.report().get("model")
    names = [n for n, _ in prune.layers(base)]
    base_quality = pipeline.resolve_quality(None, names, arch)
    dense_weights = shrink.prunable_weights(base)
    step_epochs = epochs // (iterations + 1)
    final_epochs = epochs - iterations * step_epochs
    retrain = pipeline.Training(epochs=epochs, lr=lr, l2=l2, seed=seed)
    retrain_l1 = pipeline.Training(epochs=epochs, lr=lr, l2=0.0, l1=l1, seed=seed)
    step = pipeline.Training(epochs=step_epochs, lr=lr, l2=l2, seed=seed)
    measure = _Measure(data, dense_weights, threads, pes, chip_samples, min_run_time, chip)
    base_accuracy = train.evaluate(base, data.x_test, data.y_test)
    points = [measure.point("dense", None, base, "dense", base_accuracy, 0, time.perf_counter())]

    def timed(label):
        _log(f"-- {label}")
        return time.perf_counter()

    l1_base = None
    if {"oneshot-l1", "oneshot-l1-noretrain"} & set(methods):
        t = timed(f"L1-regularized dense network: the baseline fine-tuned {epochs} epochs with L1 {l1}")
        l1_base = models.clone(base)
        retrain_l1.fit(l1_base, data, "L1 dense")
        _log(f"L1 dense network {train.evaluate(l1_base, data.x_test, data.y_test):.2f}% "
             f"({time.perf_counter() - t:.0f} s)")
    for budget in budgets:
        iterative = None
        if {"iterative", "deep-compression"} & set(methods):
            t = timed(f"iterative magnitude pruning to {budget:g}")
            iterative = models.clone(base)
            quality = shrink.iterative_to_budget(iterative, data, base_quality, budget, iterations, step, final_epochs)
            if "iterative" in methods:
                points.append(measure.point("iterative", budget, iterative, "sparse", None, epochs, t,
                                            quality={n: round(q, 4) for n, q in quality.items()}))
        for reg, start, training in (("l2", base, retrain), ("l1", l1_base, retrain_l1)):
            wanted = [m for m in (f"oneshot-{reg}-noretrain", f"oneshot-{reg}") if m in methods]
            if not wanted:
                continue
            t = timed(f"one-shot magnitude pruning ({reg.upper()}) to {budget:g}")
            model = models.clone(start)
            quality = shrink.scaled_quality(model, base_quality, budget)
            shrink.prune_to_quality(model, quality)
            if f"oneshot-{reg}-noretrain" in methods:
                points.append(measure.point(f"oneshot-{reg}-noretrain", budget, model, "sparse", None, 0, t))
                t = time.perf_counter()
            if f"oneshot-{reg}" in methods:
                training.fit(model, data, f"one-shot {reg.upper()} retrain")
                points.append(measure.point(f"oneshot-{reg}", budget, model, "sparse", None, epochs, t))
        if "obd" in methods:
            t = timed(f"OBD to {budget:g}")
            model = models.clone(base)
            shrink.obd_schedule(model, data, budget, iterations, step, final_epochs, hessian_images)
            points.append(measure.point("obd", budget, model, "sparse", None, epochs, t))
        if "wanda" in methods:
            t = timed(f"Wanda to {budget:g}")
            model = models.clone(base)
            shrink.wanda_prune(model, shrink.calibration_images(data, seed=seed), 1 - budget)
            points.append(measure.point("wanda", budget, model, "sparse", None, 0, t))
        if "sparsegpt" in methods:
            t = timed(f"SparseGPT to {budget:g}")
            model = models.clone(base)
            shrink.sparsegpt_prune(model, shrink.calibration_images(data, seed=seed), 1 - budget)
            points.append(measure.point("sparsegpt", budget, model, "sparse", None, 0, t))
        if "svd" in methods:
            t = timed(f"truncated SVD to {budget:g}")
            model = shrink.low_rank(base, budget)
            retrain.fit(model, data, "SVD fine-tune")
            ranks = {n[:-2]: l.out_features for n, l in model.named_children() if n.endswith("_a")}
            points.append(measure.point("svd", budget, model, "lowrank", None, epochs, t, ranks=ranks))
        if "deep-compression" in methods:
            t = timed(f"Deep Compression (iterative pruning, weight sharing, fixed point) at {budget:g}")
            points.append(_deep_compression(iterative, data, measure, pes, finetune_epochs, seed, budget, epochs, t,
                                            threads))
    for bits in (8, 4):
        if f"int{bits}" in methods:
            t = timed(f"uniform {bits}-bit weights, quantization-aware fine-tuning")
            model = shrink.quantize_weights(models.clone(base), bits)
            retrain.fit(model, data, f"{bits}-bit QAT")
            shrink.fix_quantized(model)
            points.append(measure.point(f"int{bits}", None, model, "lowbit", None, epochs, t, bits=bits))
    if {"2:4", "2:4-noretrain"} & set(methods):
        t = timed("2:4 structured sparsity")
        model = models.clone(base)
        shrink.nm_prune(model, 2, 4)
        if "2:4-noretrain" in methods:
            points.append(measure.point("2:4-noretrain", None, model, "sparse", None, 0, t))
            t = time.perf_counter()
        if "2:4" in methods:
            retrain.fit(model, data, "2:4 retrain")
            points.append(measure.point("2:4", None, model, "sparse", None, epochs, t))
    results = {
        "model": arch, "data": data.name, "baseline_accuracy": round(base_accuracy, 2),
        "dense_weights": dense_weights, "budgets": list(budgets), "methods": list(methods),
        "training": {"baseline": meta.get("training"), "epochs_per_point": epochs, "iterations": iterations,
                     "epochs_per_step": step_epochs, "final_epochs": final_epochs, "lr": lr, "l2": l2, "l1": l1,
                     "l1_dense_epochs": epochs if l1_base is not None else 0,
                     "centroid_finetune_epochs": finetune_epochs, "hessian_images": hessian_images,
                     "wanda_calibration_images": shrink.WANDA_CALIBRATION,
                     "quality_ratios": base_quality},
        "cpu": {"threads": threads, "batches": list(BATCHES), "min_run_time_s": min_run_time,
                "torch": torch.__version__},
        "chip": {"pes": pes, "cycle_samples": chip_samples, "fixed": chip},
        "storage_chip": {"pes": STORAGE_CHIP.pes, "index_bits": STORAGE_CHIP.index_bits},
        "points": points,
    }
    if chip_time is not None:
        for p in points:
            if p["chip"]:
                p["chip"]["time"] = chip_time(ChipConfig.from_dict(p["chip"]["config"]), p["chip"]["cycles_per_image"])
    results["verdict"] = verdict(points)
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    run.write_json("compare.json", results)
    run.write_text("compare.md", markdown(results))
    for name, figure in figures(results).items():
        run.save_figure(name, figure)
    _log(f"compare: {len(points)} points in {results['wall_seconds']:.0f} s; see {run / 'compare.md'}")
    return results


def _deep_compression(pruned, data, measure, pes, finetune_epochs, seed, budget, epochs, started, threads=1):
    """Deep Compression of an iteratively pruned model as `eie compress` does it (`eie.sw.flow.compress`: weight
    sharing, centroid fine-tuning, the chip's fixed point): accuracy as the chip computes, bytes by
    `eie.sw.storage.storage` on the storage rule's chip, cycles and energy from the model's own estimate."""
    from eie.sw.flow import compress
    from eie.sw.pipeline import Training
    from eie.sw.storage import storage
    cm = compress(pruned, data, ChipConfig(pes=pes), "linear", Training(epochs=finetune_epochs, lr=1e-4, l2=0.0,
                                                                        seed=seed), 2000, log=lambda m: None,
                  threads=threads)
    if measure.fixed:        # on the given chip's memories where they hold the model (`chip_config`)
        try:
            cm = cm.relayout(**measure.fixed)
        except EieError:
            pass
    estimate = cm.estimate(data.x_test, model_samples=measure.chip_samples)
    chip = _chip_summary(estimate, cm.config, estimate["model_samples"], estimate["samples"])
    parts = storage(cm.layers, STORAGE_CHIP)
    return measure.point("deep-compression", budget, cm.network, "shared", cm.accuracy(data.x_test, data.y_test),
                         epochs + finetune_epochs, started, bytes=parts["total"], bytes_huffman=parts["total_huffman"],
                         chip=chip)


# -- verdict, tables, plots ----------------------------------------------------------------------------------

def pareto_front(points):
    """Points no other point beats in both bytes and accuracy (fewer or equal bytes and higher accuracy, or
    fewer bytes and equal accuracy), in increasing bytes."""
    ordered = sorted(points, key=lambda p: (p["bytes"], -p["accuracy"]))
    front, best = [], -math.inf
    for p in ordered:
        if p["accuracy"] > best:
            front.append(p)
            best = p["accuracy"]
    return front


def _label(p):
    return p["method"] + ("" if p["budget"] is None else f" @ {p['budget']:g}")


def verdict(points):
    """Accuracy per byte (accuracy points per kilobyte) of every point, the best method by it, the Pareto
    front, and for each point of the project's methods the best other point that dominates it, if any."""
    per_kb = {_label(p): p["accuracy"] / (p["bytes"] / 1e3) for p in points}
    best = max(points, key=lambda p: per_kb[_label(p)])
    own = [p for p in points if p["method"] in PROJECT_METHODS]
    best_own = max(own, key=lambda p: per_kb[_label(p)]) if own else None
    dominated = {}
    for p in own:
        better = [q for q in points if q["method"] not in PROJECT_METHODS and q["bytes"] <= p["bytes"]
                  and q["accuracy"] >= p["accuracy"] and (q["bytes"], q["accuracy"]) != (p["bytes"], p["accuracy"])]
        if better:
            q = max(better, key=lambda q: (q["accuracy"], -q["bytes"]))
            dominated[_label(p)] = {"by": _label(q), "accuracy_points": round(q["accuracy"] - p["accuracy"], 2),
                                    "bytes_ratio": round(p["bytes"] / q["bytes"], 3)}
    out = {"accuracy_per_kb": {k: round(v, 3) for k, v in per_kb.items()},
           "best_accuracy_per_kb": {"point": _label(best), "value": round(per_kb[_label(best)], 3)},
           "pareto_front": [_label(p) for p in pareto_front(points)],
           "project_dominated": dominated}
    if best_own is not None:
        out["best_project_point"] = {"point": _label(best_own), "value": round(per_kb[_label(best_own)], 3)}
        out["project_is_best"] = best["method"] in PROJECT_METHODS
        if not out["project_is_best"]:
            out["beaten_by_factor"] = round(per_kb[_label(best)] / per_kb[_label(best_own)], 3)
    return out


def _us(seconds):
    return "-" if seconds is None else f"{1e6 * seconds:.1f}"


def markdown(results):
    """compare.md: the settings, the table of points, CPU kernels, and the verdict."""
    t, c = results["training"], results["cpu"]
    lines = [f"# eie compare: {results['model']} on {results['data']}", "",
             f"Baseline {results['baseline_accuracy']:.2f}% with {results['dense_weights']} weights; budgets "
             f"(kept fractions of the weights) {', '.join(f'{b:g}' for b in results['budgets'])}.", "",
             f"Training per point: {t['epochs_per_point']} epochs of SGD (lr {t['lr']}, cosine), L2 {t['l2']} "
             f"(L1 family: L1 {t['l1']}, no L2, from a dense network fine-tuned {t['l1_dense_epochs']} epochs with "
             f"L1); iterative pruning and OBD: {t['iterations']} steps of {t['epochs_per_step']} epochs, then "
             f"{t['final_epochs']}; Deep Compression adds {t['centroid_finetune_epochs']} epochs of centroid "
             f"fine-tuning. OBD's Hessian diagonal on {t['hessian_images']} training images per step. "
             + (f"Wanda and SparseGPT: {t['wanda_calibration_images']} calibration images, no retraining; 2:4: half "
                "of every row's weights, retrained as the one-shot methods or not. "
                if "wanda_calibration_images" in t else "")
             + f"Baseline training: {t['baseline']}.", "",
             f"CPU: per inference, the fastest block of torch.utils.benchmark blocked_autorange ({c['min_run_time_s']} s "
             f"of calls per figure), {c['threads']} thread(s), torch {c['torch']}. Chip: {results['chip']['pes']} PEs, "
             f"cycles from the performance model on {results['chip']['cycle_samples']} test images, energy on all "
             f"of them. Total wall time {results.get('wall_seconds', '?')} s.", "",
             "Bytes: fixed-width, as the chip holds the model (the verdict and plots use these); bytes Huffman: "
             "Deep Compression's entries Huffman-coded for off-chip storage, code tables included.", "",
             "| method | budget | kept % | parameters | bytes | bytes Huffman | accuracy % | CPU b=1 (us) "
             "| CPU b=64 (us/image) | chip cycles/image | chip energy (nJ/image) |", "|" + "---|" * 11]
    for p in results["points"]:
        b1, b64 = p["cpu"]["1"], p["cpu"]["64"]
        chip = p["chip"]
        lines.append(f"| {p['method']} | {'-' if p['budget'] is None else p['budget']} | "
                     f"{100 * p['kept_fraction']:.2f} | {p['parameters']} | {p['bytes']:.0f} | "
                     f"{'-' if p.get('bytes_huffman') is None else round(p['bytes_huffman'])} | {p['accuracy']:.2f} | "
                     f"{_us(b1['seconds'])} ({b1['best']}) | {_us(b64['seconds'])} ({b64['best']}) | "
                     f"{chip['cycles_per_image'] if chip else '-'} | {chip['energy_nj_per_image'] if chip else '-'} |")
    lines += ["", "## CPU kernels (us per inference)", "",
              "| method | budget | b=1 torch dense | b=1 torch CSR | b=1 scipy CSR | b=64 torch dense | b=64 torch CSR "
              "| b=64 scipy CSR |", "|" + "---|" * 8]
    for p in results["points"]:
        k1, k64 = p["cpu"]["1"]["kernels"], p["cpu"]["64"]["kernels"]
        cells = [_us(k.get(name)) for k in (k1, k64) for name in ("torch-dense", "torch-csr", "scipy-csr")]
        lines.append(f"| {p['method']} | {'-' if p['budget'] is None else p['budget']} | " + " | ".join(cells) + " |")
    lines += _wall_clock(results["points"])
    lines += _load_table(results["points"])
    v = results["verdict"]
    lines += ["", "## Verdict", "",
              f"Best accuracy per byte: **{v['best_accuracy_per_kb']['point']}**, "
              f"{v['best_accuracy_per_kb']['value']} accuracy points per kB."]
    if "best_project_point" in v:
        lines.append(f"The project's best: {v['best_project_point']['point']}, {v['best_project_point']['value']} "
                     "points per kB" + ("." if v["project_is_best"] else
                                         f", beaten by a factor {v['beaten_by_factor']}."))
    lines.append(f"Pareto front (accuracy versus bytes): {', '.join(v['pareto_front'])}.")
    for own, d in v["project_dominated"].items():
        lines.append(f"- {own} is dominated by {d['by']}: {d['accuracy_points']:+.2f} points at "
                     f"{d['bytes_ratio']}x fewer bytes.")
    if not v["project_dominated"]:
        lines.append("No point of the project's methods is dominated by another method's.")
    return "\n".join(lines) + "\n"


def _chip_table(points, key, title, columns):
    """(the points whose chip figures have `key`, compare.md's section `title` with a table head of `columns`)."""
    return ([p for p in points if p["chip"] and key in p["chip"]],
            ["", f"## {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)])


def _load_table(points):
    """compare.md's load balance per point: the busiest PE's work over the mean PE's and the model's cycles under
    EIE's interleaving and under balanced row placement (`eie.sw.placement.placement_load`): does a structured
    pattern (2:4) balance the PEs better than placing unstructured sparsity of the same density?"""
    loaded, out = _chip_table(points, "load", "Load balance on the chip: busiest PE over the mean",
                              ["method", "budget", "kept %", "interleaved: busiest/mean per layer", "network",
                               "cycles/image", "balanced: busiest/mean per layer", "network", "cycles/image"])
    if not loaded:
        return []
    for p in loaded:
        load = p["chip"]["load"]
        cells = [f"{', '.join(f'{r:.4f}' for r in load[k]['busiest_over_mean'])} | {load[k]['network']:.4f} | "
                 f"{load[k]['cycles_per_image']}" for k in ("interleaved", "balanced")]
        out.append(f"| {p['method']} | {'-' if p['budget'] is None else p['budget']} | "
                   f"{100 * p['kept_fraction']:.2f} | {cells[0]} | {cells[1]} |")
    out += ["", f"Work per PE (entries read, padding included) on the first {loaded[0]['chip']['load']['images']} "
            "test images, cycles from the performance model on the chip's cycle samples; balanced: rows placed "
            "knowing only the matrix, no pairing. Compare 2:4 with the unstructured points of the same kept "
            "fraction (--budgets 0.5)."]
    return out


def _wall_clock(points):
    """compare.md's answer to 'how long does an image take?': for the forms the chip runs, the CPU's time at
    batch 1 and 64 beside the chip's at its measured Fmax (where one is stored) and at EIE's 800 MHz; the clocks'
    sources, and for the chips without a measured Fmax the command that measures one. Empty without times."""
    timed, out = _chip_table(points, "time", "Wall-clock per image: CPU against the chip",
                             ["method", "budget", "CPU b=1 (us)", "CPU b=64 (us/image)", "chip cycles/image",
                              "chip us at its measured Fmax", "chip us at EIE's 800 MHz"])
    if not timed:
        return []
    sources, hints = {}, {}
    for p in timed:
        t = p["chip"]["time"]
        clocks = t["clocks"]
        measured = clocks.get("fmax")
        reference = next(c for k, c in clocks.items() if k != "fmax")
        if measured:
            sources.setdefault(f"{measured['mhz']:g} MHz: {measured['source']}", []).append(_label(p))
        else:
            hints.setdefault(t.get("fmax_hint", "not measured"), []).append(_label(p))
        out.append(f"| {p['method']} | {'-' if p['budget'] is None else p['budget']} | "
                   f"{_us(p['cpu']['1']['seconds'])} | {_us(p['cpu']['64']['seconds'])} | "
                   f"{p['chip']['cycles_per_image']} | "
                   + (f"{measured['us_per_image']:.3f} ({measured['mhz']:g} MHz)" if measured else "not measured")
                   + f" | {reference['us_per_image']:.3f} |")
    out += ["", "CPU: the fastest kernel. Chip: the performance model's cycles on the chip each point runs on "
            f"({timed[0]['chip']['pes']} PEs; memories fitted to the point, or for Deep Compression the chip "
            "`eie compress` chose), at that chip's ECP5 Fmax where `eie synth --ecp5` measured one for it and the "
            "current RTL, and at EIE's 800 MHz (45 nm ASIC, for reference: not a clock this chip has been shown "
            "to reach).", ""]
    for source, labels in sources.items():
        out.append(f"- Fmax {source} ({', '.join(labels)})")
    for hint, labels in hints.items():
        out.append(f"- {', '.join(labels)}: {hint}")
    return out


def _scatter(ax, points, x, y, lines=True):
    """One series per method, in the same colour in every plot (the dense baseline in black); `lines` joins a
    method's points in budget order (where the x axis follows the budget)."""
    from matplotlib import colormaps
    colours = {"dense": "black", **{m: colormaps["tab20"](i) for i, m in enumerate(METHODS)}}
    for method in dict.fromkeys(p["method"] for p in points):
        mine = [p for p in points if p["method"] == method]
        ax.plot([x(p) for p in mine], [y(p) for p in mine], marker="o", linestyle="-" if lines and len(mine) > 1 else "",
                color=colours[method], label=method)


def figures(results):
    """{file name: matplotlib Figure} of the comparison."""
    from matplotlib.figure import Figure
    points = results["points"]
    cpu1 = lambda p: 1e6 * p["cpu"]["1"]["seconds"]
    out = {}

    fig = Figure(figsize=(7.5, 5))
    ax = fig.subplots()
    _scatter(ax, points, lambda p: p["bytes"], lambda p: p["accuracy"])
    front = pareto_front(points)
    ax.step([p["bytes"] for p in front], [p["accuracy"] for p in front], where="post", color="black",
            linewidth=1, alpha=0.6, label="Pareto front")
    ax.set(xscale="log", xlabel="storage (bytes, one rule for all)", ylabel="test accuracy (%)",
           title=f"{results['model']} on {results['data']}: accuracy versus bytes")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    out["compare_bytes.png"] = fig

    fig = Figure(figsize=(11, 4.5))
    axes = fig.subplots(1, 2)
    for ax, batch in zip(axes, ("1", "64")):
        _scatter(ax, points, lambda p: 1e6 * p["cpu"][batch]["seconds"], lambda p: p["accuracy"], lines=False)
        ax.set(xscale="log", xlabel=f"CPU time per image at batch {batch} (us, fastest kernel)",
               ylabel="test accuracy (%)", title=f"batch {batch}, {results['cpu']['threads']} thread(s)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    out["compare_cpu.png"] = fig

    fig = Figure(figsize=(11, 4.5))
    axes = fig.subplots(1, 2)
    chip = [p for p in points if p["chip"]]
    _scatter(axes[0], chip, cpu1, lambda p: p["chip"]["cycles_per_image"], lines=False)
    _scatter(axes[1], chip, cpu1, lambda p: p["chip"]["energy_nj_per_image"], lines=False)
    for ax, what in zip(axes, (f"chip cycles per image ({results['chip']['pes']} PEs)", "chip energy per image (nJ)")):
        ax.set(xscale="log", yscale="log", xlabel="CPU time per image at batch 1 (us)", ylabel=what)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    out["compare_chip.png"] = fig

    fig = Figure(figsize=(7, 5))
    ax = fig.subplots()
    base = results["baseline_accuracy"]
    for method, label in FIG5:
        mine = sorted((p for p in points if p["method"] == method), key=lambda p: p["kept_fraction"], reverse=True)
        if mine:
            ax.plot([100 * (1 - p["kept_fraction"]) for p in mine], [p["accuracy"] - base for p in mine],
                    marker="o", label=label)
    ax.axhline(0, color="gray", linewidth=1)
    ax.set(xlabel="parameters pruned away (%)", ylabel="accuracy change (points)",
           title="Fig. 5 of Han et al. 2015 on this network and data")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    out["compare_fig5.png"] = fig
    return out
