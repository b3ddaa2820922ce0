"""The steps of Han et al. 2015 and Deep Compression on a network in memory: sensitivity, iterative pruning
with retraining, weight sharing with fine-tuning, and the chip's fixed point. No files: `eie.sw.flow` wraps these
(the API's functions) and `eie.cli.pruning` for the run folders of `eie sensitivity`, `eie prune` and `eie compress`.
"""

import copy
from dataclasses import dataclass
import math
import sys

import numpy as np
import torch
from torch import nn

from eie.errors import EieError
from eie.sw import compress, models, prune, train

__all__ = ["Training", "DEFAULT_QUALITY", "SENSITIVITY_FRACTIONS", "resolve_quality", "sensitivity",
           "suggest_quality", "prune_schedule", "layer_figures", "weights_by_layer", "check_method", "prune_network",
           "share", "to_chip", "compress_network"]

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

    def fit(self, model, data, desc, parameters=None, seed_offset=0, log=None):
        return train.fit(model, data.x_train, data.y_train, epochs=self.epochs, lr=self.lr, l2=self.l2,
                         l1=self.l1, momentum=self.momentum, batch_size=self.batch_size,
                         seed=self.seed + seed_offset, parameters=parameters, desc=desc, log=log)


def resolve_quality(text, layer_names, arch=None):
    """{layer: quality} from None (the defaults of `arch`), a number or 'Q' (every layer), a dict or
    'fc1=Q1,fc2=Q2' (the rest keep their defaults)."""
    default = DEFAULT_QUALITY.get(arch, {})
    quality = {n: default.get(n, OTHER_QUALITY) for n in layer_names}
    if text is None or text == "":
        return quality
    if isinstance(text, (int, float)):
        text = str(text)
    if isinstance(text, dict):
        text = ",".join(f"{k}={v}" for k, v in text.items())
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
    with train.progress(len(names) * len(fractions), "sensitivity", unit="trial") as bar:
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


# -- pruning ------------------------------------------------------------------------------------------------

def prune_schedule(model, data, quality, iterations, retraining, final_epochs, log=_log):
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
        retraining.fit(model, data, f"retrain {k}/{iterations}", seed_offset=k, log=log)
        counts = prune.kept(model)
        steps.append({"step": k, "quality": {n: round(quality[n] * k / iterations, 4) for n in quality},
                      "kept_percent": {n: round(100 * a / b, 2) for n, (a, b) in counts.items()},
                      "accuracy_pruned": round(before, 2),
                      "accuracy_retrained": round(train.evaluate(model, data.x_test, data.y_test), 2),
                      "dropout": {n: round(p, 4) for n, p in rescaled.items()}})
        log(f"step {k}/{iterations}: kept {_kept_text(counts)}; accuracy {before:.2f}% pruned, "
             f"{steps[-1]['accuracy_retrained']:.2f}% retrained")
    if final_epochs:
        final = Training(**{**retraining.__dict__, "epochs": final_epochs})
        final.fit(model, data, "final retrain", seed_offset=iterations + 1, log=log)
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


def weights_by_layer(model):
    """{layer: its weights as a flat numpy array}, for the histograms of `eie prune`."""
    return {n: l.weight.detach().flatten().numpy().copy() for n, l in prune.layers(model)}


def check_method(method, quality=None, sparsity=None, calibration=None):
    """The pruning method (`methods.parse_method`), refused in one line with settings that belong to another
    (before any training is spent)."""
    from eie.sw import methods
    method = methods.parse_method(method)
    name = methods.method_name(method)
    if method == "magnitude" and (sparsity is not None or calibration is not None):
        raise EieError("magnitude pruning takes quality parameters, not a sparsity or calibration images "
                       "(those are wanda's)")
    if method != "magnitude" and quality is not None:
        raise EieError(f"quality parameters are magnitude pruning's; {name} takes "
                       + ("a sparsity" if method == "wanda" else "none"))
    if isinstance(method, tuple) and (sparsity is not None or calibration is not None):
        raise EieError(f"{name} sparsity fixes the pruned fraction ({1 - method[0] / method[1]:g}) and needs no "
                       "calibration images; give neither")
    if method == "wanda" and sparsity is not None:
        methods.check_sparsity(sparsity)
    return method


def _one_shot(model, data, method, sparsity, calibration, retraining, final_epochs, log):
    """Wanda or N:M (`method` as `methods.parse_method` gives it) on `model`, then `final_epochs` of retraining
    (none: the method as published for Wanda, N:M without retraining). Returns the schedule's record."""
    from eie.sw import methods
    record = {"method": methods.method_name(method), "final_epochs": final_epochs}
    if method == "wanda":
        sparsity = 0.5 if sparsity is None else sparsity
        if isinstance(calibration, int):
            calibration = methods.calibration_images(data, calibration, retraining.seed)
        x = methods.check_calibration(calibration, data.input_shape)
        methods.wanda_prune(model, x, sparsity)
        record.update(sparsity=sparsity, calibration_images=len(x))
    else:
        methods.nm_prune(model, *method)
    log(f"{record['method']}: kept {_kept_text(prune.kept(model))}; accuracy "
        f"{train.evaluate(model, data.x_test, data.y_test):.2f}% before retraining")
    if final_epochs:
        Training(**{**retraining.__dict__, "epochs": final_epochs}).fit(model, data, "retrain", log=log)
        record["retraining"] = retraining.__dict__
    return record


def prune_network(model, data, quality, iterations, retraining, final_epochs=None, remove_dead=True, arch=None,
                  log=_log, method="magnitude", sparsity=None, calibration=None):
    """Prune `model` in place by `method`, then remove dead neurons unless told not to. "magnitude": Han et al.'s
    iterative pruning and retraining (see `prune_schedule`; `final_epochs` default 15); "wanda": Wanda at
    `sparsity` per layer (default 0.5) weighed by the activations of `calibration` (images shaped as the data
    set's, or a count of training images, default `methods.WANDA_CALIBRATION`); "N:M" such as "2:4": N:M
    structured sparsity, whose layout removing dead neurons would break, so none are removed. Wanda and N:M
    retrain `final_epochs` (default 0). Returns the figures: accuracies, weights kept per layer (Table 2 of
    the paper), the schedule or method."""
    from eie.sw import methods
    method = check_method(method, quality, sparsity, calibration)
    if iterations < 1:
        raise EieError(f"iterations must be at least 1, not {iterations}")
    final_epochs = (15 if method == "magnitude" else 0) if final_epochs is None else final_epochs
    if final_epochs < 0:
        raise EieError(f"final epochs must be >= 0, not {final_epochs}")
    names = [n for n, _ in prune.layers(model)]
    base = train.evaluate(model, data.x_test, data.y_test)
    dense_counts = {n: w for n, (_, w) in prune.kept(model).items()}
    dense_parameters = sum(p.numel() for p in model.parameters())
    if method == "magnitude":
        quality = resolve_quality(quality, names, arch)
        steps = prune_schedule(model, data, quality, iterations, retraining, final_epochs, log)
        record = {"method": "magnitude", "quality": quality, "iterations": iterations,
                  "retraining": retraining.__dict__, "final_epochs": final_epochs, "steps": steps}
    else:
        record = {"quality": None, **_one_shot(model, data, method, sparsity,
                                               methods.WANDA_CALIBRATION if calibration is None else calibration,
                                               retraining, final_epochs, log)}
        remove_dead = remove_dead and method == "wanda"
    accuracy = train.evaluate(model, data.x_test, data.y_test)
    dead = prune.dead_neurons(model)
    removed = prune.remove_dead_neurons(model) if remove_dead else {}
    if removed:
        after_removal = train.evaluate(model, data.x_test, data.y_test)
        log(f"removed dead neurons {removed}; accuracy {accuracy:.2f}% -> {after_removal:.2f}%")
        accuracy = after_removal
    layers = layer_figures(model, data.x_test, dense_counts)
    for name, found in dead.items():
        layers[name]["dead_no_inputs"] = len(found["no_inputs"])
        layers[name]["dead_no_outputs"] = len(found["no_outputs"])
        layers[name]["dead_removed"] = removed.get(name, 0)
    kept = sum(f["kept"] for f in layers.values())
    dense = sum(dense_counts.values())
    log(f"pruned: {dense} -> {kept} weights ({dense / kept:.1f}x), accuracy {base:.2f}% -> {accuracy:.2f}%")
    return {"baseline_accuracy": round(base, 2), "pruned_accuracy": round(accuracy, 2),
            "pruning_ratio": round(dense / kept, 2), "dense_weights": dense, "kept_weights": kept,
            "dense_parameters": dense_parameters, "layers": layers,
            "prune": {**record, "dead_neurons": dead, "dead_removed": removed}}


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


def compress_network(model, data, config, init, finetuning, calibration_size, log=_log, placement="interleaved"):
    """Deep Compression of a pruned (or dense) `model`, in place: weight sharing (`share`), centroid fine-tuning
    and the chip's fixed point (`to_chip`). Returns (model, host ops, input scale, QuantLayers, figures)."""
    from eie.sw.compress import INITS
    from eie.sw.host import input_record
    from eie.sw.storage import storage_table
    if init not in INITS:
        raise EieError(f"unknown centroid initialization {init!r}: choose one of {', '.join(INITS)}")
    if calibration_size < 1:
        raise EieError(f"calibration needs at least 1 image, not {calibration_size}")
    models.fully_connected(model)
    models.check_input(model, data)
    dense_parameters = sum(p.numel() for p in model.parameters())   # masked weights count: a dense model's size
    pruned_accuracy = train.evaluate(model, data.x_test, data.y_test)
    share(model, config.codebook_size, init, finetuning.seed)
    shared_accuracy = train.evaluate(model, data.x_test, data.y_test)
    log(f"weight sharing ({config.codebook_size - 1} values + zero, {init} init): "
        f"{pruned_accuracy:.2f}% -> {shared_accuracy:.2f}%")
    if finetuning.epochs:
        finetuning.fit(model, data, "fine-tune centroids", log=log)
    tuned_accuracy = train.evaluate(model, data.x_test, data.y_test)
    calibration = data.x_train[torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(
        finetuning.seed))[:calibration_size]]
    ops, in_frac, quant_layers = to_chip(model, calibration, config)
    log(f"fine-tuned {tuned_accuracy:.2f}%")
    layers = {name: {"codebook_values": int(np.count_nonzero(q.codebook)), "shift": q.shift, "in_frac": q.in_frac,
                     "w_frac": q.w_frac, "out_frac": q.out_frac}
              for (name, _, _), q in zip(models.fully_connected(model), quant_layers)}
    figures = {"init": init, "codebook_size": config.codebook_size, "finetuning": finetuning.__dict__,
               "pruned_accuracy": round(pruned_accuracy, 2), "shared_accuracy": round(shared_accuracy, 2),
               "finetuned_accuracy": round(tuned_accuracy, 2), "calibration_images": len(calibration),
               "input_frac": in_frac, "input": input_record(calibration.numpy()),
               "dense_parameters": dense_parameters, "layers": layers,
               "placement": placement, "storage_bytes": storage_table(quant_layers, config, ops, placement=placement)}
    convs = [n for n, m in models.front(model) if isinstance(m, nn.Conv2d)]
    if convs:
        figures["host"] = {"file": "host.npz", "convs": convs}
    return model, ops, in_frac, quant_layers, figures
