"""The flows behind `eie sensitivity`, `eie prune` and `eie compress`: each reads what earlier steps left in a
run folder, does its work with progress on stderr, and merges its figures into the folder's report.

Files in a run folder: baseline.pt (the dense network, trained once and reused), sensitivity.json and .png,
pruned.pt, weights.png, compressed.pt (weight-shared float network), image.npz (the chip image), host.npz
(a convolutional front's fixed-point layers, which the host runs before the chip) and report.json / report.md.
"""

import copy
from dataclasses import dataclass
import math
import sys
import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from eie.config import ChipConfig
from eie.errors import EieError
from eie.sw import compress, models, prune, report, train
from eie.sw.data import load_dataset
from eie.sw.host import QuantConv, save_front
from eie.sw.runs import atomic_write

__all__ = ["Training", "DEFAULT_QUALITY", "SENSITIVITY_FRACTIONS", "load_data", "dense_network", "baseline",
           "parse_quality", "sensitivity", "suggest_quality", "run_sensitivity", "prune_schedule", "run_prune",
           "layer_figures", "share", "to_chip", "chip_accuracy", "storage", "run_compress"]

# Quality parameters per layer. LeNet-300-100's were tuned on Fashion-MNIST with the default schedule
# (14x, -0.14 points); LeNet-5's aim at the paper's Table 3 fractions. Other networks get one value for all.
DEFAULT_QUALITY = {
    "lenet-300-100": {"fc1": 1.75, "fc2": 1.3, "fc3": 0.9},
    "lenet-5": {"conv1": 0.5, "conv2": 1.6, "fc1": 1.8, "fc2": 1.3},
}
OTHER_QUALITY = 1.0
SENSITIVITY_FRACTIONS = (0.25, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.99)


def _log(message):
    print(message, file=sys.stderr, flush=True)


@dataclass
class Training:
    """SGD settings for one phase (baseline training, retraining, centroid fine-tuning)."""
    epochs: int
    lr: float
    l2: float = 1e-4
    l1: float = 0.0
    momentum: float = 0.9
    batch_size: int = 128
    seed: int = 0

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < (0 if name == "epochs" else 1):
                raise EieError(f"{name.replace('_', '-')} must be {'>= 0' if name == 'epochs' else '>= 1'}, "
                               f"not {getattr(self, name)}")
        for name in ("lr", "l2", "l1", "momentum"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise EieError(f"{name} must be a non-negative number, not {value}")

    def fit(self, model, data, desc, parameters=None, seed_offset=0):
        return train.fit(model, data.x_train, data.y_train, epochs=self.epochs, lr=self.lr, l2=self.l2,
                         l1=self.l1, momentum=self.momentum, batch_size=self.batch_size,
                         seed=self.seed + seed_offset, parameters=parameters, desc=desc)


def load_data(run, name=None, data_dir=None):
    """The data set named on the command line, else the one recorded in the run folder's report."""
    recorded = run.report().get("data", {})
    if name is None:
        name, data_dir = recorded.get("name", "fashion-mnist"), data_dir or recorded.get("data_dir")
    elif recorded and recorded.get("name") != name:
        raise EieError(f"run folder {run.path} was made with data set {recorded['name']}, not {name}; "
                       "use a new run folder")
    data = load_dataset(name, data_dir)
    _log(f"data: {data.name} from {data.location}: {len(data.x_train)} training, {len(data.x_test)} test images")
    return data


def dense_network(run, data, model_name, checkpoint, seed):
    """The dense network of this run: a given checkpoint, else the run folder's baseline.pt, else a new,
    untrained one initialized from `seed`. Returns (model, architecture or None, the file it came from or None)."""
    expect = models.spec(models.build(model_name, data.input_shape, data.classes)) if model_name else None
    if checkpoint is not None and run.has("baseline.pt"):
        raise EieError(f"run folder {run.path} already has a baseline.pt; drop --checkpoint to reuse it "
                       "or pick a new folder")
    source = checkpoint or (run / "baseline.pt" if run.has("baseline.pt") else None)
    if source is None:
        arch = model_name or "lenet-300-100"
        train.seed_everything(seed)
        return models.build(arch, data.input_shape, data.classes), arch, None
    model, masks, meta = models.load_checkpoint(source, expect)
    if masks:
        raise EieError(f"{source} is already pruned; give the dense network as the baseline")
    models.check_input(model, data.input_shape, data.classes)
    return model, model_name or meta.get("arch"), source


def baseline(run, data, model, arch, source, training):
    """Train `model` unless it came from a file, keep it as the run's baseline.pt, return its accuracy %."""
    if source is None:
        training.fit(model, data, f"train {arch}")
    else:
        _log(f"baseline: {source}")
    if not run.has("baseline.pt"):
        models.save_checkpoint(run.output("baseline.pt"), model, arch=arch, data=data.name,
                               training=training.__dict__)
    accuracy = train.evaluate(model, data.x_test, data.y_test)
    _log(f"baseline accuracy {accuracy:.2f}%")
    return accuracy


def parse_quality(text, layer_names, arch=None):
    """{layer: quality} from 'Q' (every layer), 'fc1=Q1,fc2=Q2' (the rest keep their defaults) or None."""
    default = DEFAULT_QUALITY.get(arch, {})
    quality = {n: default.get(n, OTHER_QUALITY) for n in layer_names}
    if not text:
        return quality
    def number(s, what):
        try:
            value = float(s)
        except ValueError:
            raise EieError(f"quality parameter {what}{s!r} is not a number") from None
        if not (math.isfinite(value) and value > 0):
            raise EieError(f"quality parameter {what}{s} is out of range: it must be a positive number")
        return value
    if "=" not in text:
        value = number(text, "")
        return {n: value for n in layer_names}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in layer_names:
            raise EieError(f"--quality item {part!r} names no layer; layers are {', '.join(layer_names)} "
                           "(write fc1=1.5,fc2=1.2 or one number for all)")
        quality[name] = number(value.strip(), f"for {name} ")
    return quality


# -- sensitivity ------------------------------------------------------------------------------------------

def sensitivity(model, data, fractions=SENSITIVITY_FRACTIONS):
    """Prune one layer at a time to each fraction (no retraining) and measure test accuracy.
    Returns rows {layer, fraction, quality, accuracy}."""
    stds = prune.dense_stds(model)
    names = [n for n, _ in prune.layers(model)]
    rows = []
    with tqdm(total=len(names) * len(fractions), desc="sensitivity", file=sys.stderr, leave=False) as bar:
        for name in names:
            for fraction in fractions:
                trial = copy.deepcopy(model)
                layer = dict(prune.layers(trial))[name]
                quality = prune.quality_for_fraction(layer, fraction, stds[name])
                prune.prune_by_std(layer, quality, stds[name], name)
                rows.append({"layer": name, "fraction": fraction, "quality": round(quality, 4),
                             "accuracy": round(train.evaluate(trial, data.x_test, data.y_test), 2)})
                bar.update()
    return rows


def suggest_quality(rows, baseline_accuracy, tolerance):
    """Per layer, the quality parameter of the largest fraction that costs at most `tolerance` points before
    retraining: the most sensitive layer ends up with the smallest threshold, as the paper prescribes."""
    chosen = {}
    for row in rows:
        if baseline_accuracy - row["accuracy"] <= tolerance:
            best = chosen.get(row["layer"])
            if best is None or row["fraction"] > best["fraction"]:
                chosen[row["layer"]] = row
    layers = dict.fromkeys(r["layer"] for r in rows)
    return {name: (chosen[name]["quality"] if name in chosen else None) for name in layers}


def run_sensitivity(run, data, model_name, checkpoint, training, fractions, tolerance, started=None):
    started = started or time.perf_counter()
    model, arch, source = dense_network(run, data, model_name, checkpoint, training.seed)
    base = baseline(run, data, model, arch, source, training)
    rows = sensitivity(model, data, fractions)
    suggested = suggest_quality(rows, base, tolerance)
    run.write_json("sensitivity.json", {"baseline_accuracy": round(base, 2), "tolerance": tolerance,
                                        "suggested_quality": suggested, "rows": rows})
    run.save_figure("sensitivity.png", report.sensitivity_figure(rows, base))
    return run.update_report(
        **_run_identity(arch, data), baseline_accuracy=round(base, 2),
        sensitivity={"tolerance": tolerance, "suggested_quality": suggested, "rows": rows},
        timings={"sensitivity": round(time.perf_counter() - started, 1)})


def _run_identity(arch, data):
    return {"model": arch, "data": {"name": data.name, "data_dir": data.location if data.name != "digits" else None}}


# -- pruning ------------------------------------------------------------------------------------------------

def prune_schedule(model, data, quality, iterations, retraining, final_epochs):
    """Iterative pruning: at step k of `iterations` every layer is pruned at quality * k / iterations (of its
    dense weights' standard deviation), then the survivors retrain; a final retraining follows. Dropout is
    rescaled to the remaining connections before each retraining. Returns one row per step."""
    stds = prune.dense_stds(model)
    dropout = {n: m.p for n, m in model.named_children() if isinstance(m, nn.Dropout)}
    steps = []
    for k in range(1, iterations + 1):
        for name, layer in prune.layers(model):
            prune.prune_by_std(layer, quality[name] * k / iterations, stds[name], name)
        before = train.evaluate(model, data.x_test, data.y_test)
        rescaled = prune.adjust_dropout(model, dropout)
        retraining.fit(model, data, f"retrain {k}/{iterations}", seed_offset=k)
        counts = prune.kept(model)
        steps.append({"step": k, "quality": {n: round(quality[n] * k / iterations, 4) for n in quality},
                      "kept_percent": {n: round(100 * a / b, 2) for n, (a, b) in counts.items()},
                      "accuracy_pruned": round(before, 2),
                      "accuracy_retrained": round(train.evaluate(model, data.x_test, data.y_test), 2),
                      "dropout": {n: round(p, 4) for n, p in rescaled.items()}})
        _log(f"step {k}/{iterations}: kept {_kept_text(counts)}; accuracy {before:.2f}% pruned, "
             f"{steps[-1]['accuracy_retrained']:.2f}% retrained")
    if final_epochs:
        final = Training(**{**retraining.__dict__, "epochs": final_epochs})
        final.fit(model, data, "final retrain", seed_offset=iterations + 1)
    return steps


def _kept_text(counts):
    return ", ".join(f"{n} {100 * a / b:.1f}%" for n, (a, b) in counts.items())


@torch.no_grad()
def layer_figures(model, x, dense_counts=None):
    """Table 2 of Han et al. 2015 per prunable layer: weights (dense), weights kept %, non-zero output
    activations % (after the ReLU that follows, measured on `x`), and FLOP %: weights kept times the
    non-zero fraction of the layer's input (the previous layer's activations; the image counts as dense,
    as in the paper). `dense_counts` gives the unpruned sizes when dead neurons were removed."""
    names = dict(prune.layers(model))
    children = list(model.named_children())
    nonzero = {}
    h = x
    for i, (name, child) in enumerate(children):
        h = child(h)
        if name in names:
            after = next((c for _, c in children[i + 1:] if not isinstance(c, nn.Dropout)), None)
            out = torch.relu(h) if isinstance(after, nn.ReLU) else h
            nonzero[name] = (out != 0).float().mean().item()
    figures, input_nonzero = {}, 1.0
    for name, (kept, total) in prune.kept(model).items():
        dense = (dense_counts or {}).get(name, total)
        figures[name] = {"weights": dense, "kept": kept, "kept_percent": round(100 * kept / dense, 2),
                         "activation_percent": round(100 * nonzero[name], 2),
                         "flop_percent": round(100 * kept / dense * input_nonzero, 2)}
        input_nonzero = nonzero[name]
    return figures


def _weights_by_layer(model):
    return {n: l.weight.detach().flatten().numpy().copy() for n, l in prune.layers(model)}


def run_prune(run, data, model_name, checkpoint, training, quality_text, iterations, retraining,
              final_epochs, remove_dead, started=None):
    started = started or time.perf_counter()
    model, arch, source = dense_network(run, data, model_name, checkpoint, training.seed)
    names = [n for n, _ in prune.layers(model)]
    if quality_text == "sensitivity":
        suggested = run.report().get("sensitivity", {}).get("suggested_quality")
        if not suggested:
            raise EieError(f"no sensitivity analysis in {run.path}: run 'eie sensitivity {run.path}' first")
        missing = [n for n in names if suggested.get(n) is None]
        if missing:
            raise EieError(f"the sensitivity analysis found no safe threshold for {', '.join(missing)}; "
                           "raise --tolerance there or give --quality by hand")
        quality = {n: suggested[n] for n in names}
    else:
        quality = parse_quality(quality_text, names, arch)
    base = baseline(run, data, model, arch, source, training)
    dense_counts = {n: w for n, (_, w) in prune.kept(model).items()}
    dense_parameters = sum(p.numel() for p in model.parameters())
    before = _weights_by_layer(model)
    steps = prune_schedule(model, data, quality, iterations, retraining, final_epochs)
    accuracy = train.evaluate(model, data.x_test, data.y_test)
    dead = prune.dead_neurons(model)
    removed = prune.remove_dead_neurons(model) if remove_dead else {}
    if removed:
        after_removal = train.evaluate(model, data.x_test, data.y_test)
        _log(f"removed dead neurons {removed}; accuracy {accuracy:.2f}% -> {after_removal:.2f}%")
        accuracy = after_removal
    run.save_figure("weights.png", report.histogram_figure(before, _weights_by_layer(model)))
    models.save_checkpoint(run.output("pruned.pt"), model, arch=arch, data=data.name, quality=quality)
    layers = layer_figures(model, data.x_test, dense_counts)
    for name, found in dead.items():
        layers[name]["dead_no_inputs"] = len(found["no_inputs"])
        layers[name]["dead_no_outputs"] = len(found["no_outputs"])
        layers[name]["dead_removed"] = removed.get(name, 0)
    kept = sum(f["kept"] for f in layers.values())
    dense = sum(dense_counts.values())
    _log(f"pruned: {dense} -> {kept} weights ({dense / kept:.1f}x), accuracy {base:.2f}% -> {accuracy:.2f}%")
    return run.update_report(
        **_run_identity(arch, data), baseline_accuracy=round(base, 2), pruned_accuracy=round(accuracy, 2),
        pruning_ratio=round(dense / kept, 2), dense_weights=dense, kept_weights=kept,
        dense_parameters=dense_parameters, layers=layers,
        prune={"quality": quality, "iterations": iterations, "retraining": retraining.__dict__,
               "final_epochs": final_epochs, "baseline_training": training.__dict__, "steps": steps,
               "dead_neurons": dead, "dead_removed": removed},
        timings={"prune": round(time.perf_counter() - started, 1)})


# -- compression --------------------------------------------------------------------------------------------

def share(model, codebook_size, init, seed):
    """Make pruning permanent, order hidden units densest first (less padding, same function) and share
    every Linear layer's weights (k-means, `codebook_size` entries). Convolutions keep their own weights
    (the host stores them in 16 bits), frozen so that fine-tuning cannot regrow pruned ones."""
    prune.remove(model)
    prune.sort_units(model)
    for name, layer, _ in models.fully_connected(model):
        compress.share_weights(layer, codebook_size, init, seed=seed)
    for _, layer in models.front(model):
        if isinstance(layer, nn.Conv2d):
            layer.weight.requires_grad_(False)
    return model


def _chip_layers(model, codebook_size):
    """(w_index, centroids, bias, relu) per Linear layer of a weight-shared model, in floats."""
    out = []
    for name, layer, relu in models.fully_connected(model):
        table = np.zeros(codebook_size)
        values = compress.codebook(layer).numpy()
        table[:len(values)] = values
        bias = layer.bias.detach().numpy() if layer.bias is not None else np.zeros(layer.out_features)
        out.append((compress.indices(layer).numpy(), table, bias, relu))
    return out


@torch.no_grad()
def to_chip(model, calibration, config):
    """(host ops, image scale, QuantLayers): the weight-shared model in the chip's arithmetic, its front (if
    convolutional) as host ops (`eie.sw.host`, [] otherwise). Activation scales come from the largest
    activations seen on `calibration` images; the chip's first layer takes the front's output scale."""
    from eie.sw.host import quantize_front
    from eie.sw.quant import quantize_network
    front = [m for _, m in models.front(model.eval())]
    ops, in_frac, features_frac, x = [], None, None, calibration
    if front:
        ops, in_frac, features_frac = quantize_front(front, calibration.numpy(), config)
        for m in front:
            x = m(x)
    layers = quantize_network(_chip_layers(model, config.codebook_size), x.flatten(1).numpy(), config,
                              in_frac=features_frac)
    return ops, layers[0].in_frac if in_frac is None else in_frac, layers


def chip_accuracy(ops, in_frac, quant_layers, x, y, config):
    """Test accuracy of the fixed-point model as `eie run` computes it: images at `in_frac`, the host ops,
    then the chip's layers (bit-exact reference)."""
    from eie.sw.host import front_forward
    from eie.sw.quant import to_fixed
    from eie.sw.reference import forward
    features = front_forward(ops, to_fixed(x.numpy(), in_frac, config.act_bits), config)
    logits = forward(quant_layers, features, config)[-1]
    return 100.0 * float((logits.argmax(1) == y.numpy()).mean())


def _storage_config(quant_layers, pes, index_bits, base):
    """The smallest chip of `pes` PEs that holds the model: just enough activation depth, count bits and
    sparse-matrix words, so the pointer widths are the model's own and not a given chip's."""
    from eie.sw.encode import encode_layer
    dim = max(max(q.rows, q.cols) for q in quant_layers)
    wide = ChipConfig(**{**base.to_dict(), "pes": pes, "index_bits": index_bits, "act_depth": -(-dim // pes),
                         "count_bits": 16, "matrix_words": 1 << 20})
    encoded = [encode_layer(q.w_index, wide) for q in quant_layers]
    most = max(int(e.counts.max()) for e in encoded)
    words = sum(max(-(-pe.n_entries // wide.entries_per_word) for pe in e.pes) for e in encoded)
    return ChipConfig(**{**wide.to_dict(), "count_bits": max(1, most.bit_length()), "matrix_words": max(1, words)})


def storage(quant_layers, pes, index_bits, base=ChipConfig(), host_ops=()):
    """Bytes by part for the whole model on `pes` PEs with `index_bits`-bit relative indices; `host_ops`'
    convolutions count as dense fixed-point weights and biases (part "host_convs")."""
    from eie.sw.encode import encode_layer, storage_bits
    config = _storage_config(quant_layers, pes, index_bits, base)
    parts = {}
    for q in quant_layers:
        for part, bits in storage_bits(encode_layer(q.w_index, config), config).items():
            parts[part] = parts.get(part, 0) + bits
    in_bytes = {part: bits / 8 for part, bits in parts.items()}
    convs = [op for op in host_ops if isinstance(op, QuantConv)]
    if convs:
        in_bytes["host_convs"] = sum(op.weight.size * base.weight_bits + op.bias.size * base.act_bits
                                     for op in convs) / 8
    in_bytes["total"] = sum(v for k, v in in_bytes.items() if k != "eie_pointers")
    return in_bytes


def run_compress(run, data, checkpoint, init, finetuning, config, calibration_size, started=None):
    """`started`: when the command began (perf_counter), so the report's time includes loading the data."""
    started = started or time.perf_counter()
    if checkpoint is None and not run.has("pruned.pt"):
        raise EieError(f"no pruned network in {run.path}: run 'eie prune {run.path}' first")
    source = checkpoint or run / "pruned.pt"
    model, masks, meta = models.load_checkpoint(source)
    models.fully_connected(model)
    models.check_input(model, data.input_shape, data.classes)
    prune.apply_masks(model, masks)
    dense_parameters = run.report().get("dense_parameters") or sum(p.numel() for p in model.parameters())
    pruned_accuracy = train.evaluate(model, data.x_test, data.y_test)
    share(model, config.codebook_size, init, finetuning.seed)
    shared_accuracy = train.evaluate(model, data.x_test, data.y_test)
    _log(f"weight sharing ({config.codebook_size - 1} values + zero, {init} init): "
         f"{pruned_accuracy:.2f}% -> {shared_accuracy:.2f}%")
    if finetuning.epochs:
        finetuning.fit(model, data, "fine-tune centroids")
    tuned_accuracy = train.evaluate(model, data.x_test, data.y_test)
    codebooks = {n: compress.codebook(l).tolist() for n, l, _ in models.fully_connected(model)}
    models.save_checkpoint(run.output("compressed.pt"), model, arch=meta.get("arch"),
                           data=data.name, codebooks=codebooks)
    calibration = data.x_train[torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(
        finetuning.seed))[:calibration_size]]
    ops, in_frac, quant_layers = to_chip(model, calibration, config)
    fixed_accuracy = chip_accuracy(ops, in_frac, quant_layers, data.x_test, data.y_test, config)
    _log(f"fine-tuned {tuned_accuracy:.2f}%, fixed point (as the chip computes) {fixed_accuracy:.2f}%")
    from eie.sw.image import fit_image
    image = fit_image(quant_layers, config)  # memory depths sized to the model
    image.save(run.output("image.npz"))
    if ops:
        atomic_write(run.output("host.npz"), lambda f: f.write(save_front(ops, in_frac)))
    elif run.has("host.npz"):  # left by an earlier, convolutional compress (--force): `eie run` would use it
        (run / "host.npz").unlink()
    dense_bytes = 4 * dense_parameters
    tables = {f"{bits}-bit": {str(pes): storage(quant_layers, pes, bits, config, ops) for pes in (1, 16, 64)}
              for bits in (4, 5)}
    own = tables[f"{config.index_bits}-bit"] if config.index_bits in (4, 5) else \
        {str(p): storage(quant_layers, p, config.index_bits, config, ops) for p in (1, 16, 64)}
    convs = [n for n, m in models.front(model) if isinstance(m, nn.Conv2d)]
    layers = {}
    for (name, layer, _), q in zip(models.fully_connected(model), quant_layers):
        layers[name] = {"codebook_values": int(np.count_nonzero(q.codebook)), "shift": q.shift,
                        "in_frac": q.in_frac, "w_frac": q.w_frac, "out_frac": q.out_frac}
    ratio = {p: round(dense_bytes / s["total"], 2) for p, s in own.items()}
    _log(f"storage: {dense_bytes} dense bytes -> {own['1']['total']:.0f} bytes ({ratio['1']}x, 1 PE)")
    return run.update_report(
        compressed_accuracy=round(fixed_accuracy, 2), storage_ratio=ratio["1"], storage_ratio_by_pes=ratio,
        dense_bytes=dense_bytes, layers=layers,
        compress={"init": init, "codebook_size": config.codebook_size, "finetuning": finetuning.__dict__,
                  "pruned_accuracy": round(pruned_accuracy, 2), "shared_accuracy": round(shared_accuracy, 2),
                  "finetuned_accuracy": round(tuned_accuracy, 2), "fixed_point_accuracy": round(fixed_accuracy, 2),
                  "calibration_images": len(calibration), "chip": image.config.to_dict(), "image": "image.npz",
                  "input_frac": in_frac, "storage_bytes": tables,
                  **({"host": {"file": "host.npz", "convs": convs}} if ops else {})},
        timings={"compress": round(time.perf_counter() - started, 1)})
