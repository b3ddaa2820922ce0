"""An LSTM classifier on the chip: EIE's NT-LSTM layer (issue 22).

Per time step the chip computes the four gates' pre-activations as ONE sparse mat-vec of the stacked
``[W_x W_h]`` (4H rows, F + H columns) over ``[x_t, h_{t-1}]``; sigmoid, tanh and the cell update run on the
host in the chip's fixed point (`eie.sw.reference.lstm_cell`) and h_t is the chip's next input. So in torch
the gates are one `nn.Linear` over the concatenation, and everything the flow does to a Linear layer applies
unchanged: Han et al.'s iterative magnitude pruning (`eie.sw.pipeline.prune_schedule`), weight sharing with
fine-tuned centroids (`eie.sw.compress`), the chip's fixed point (`eie.sw.quant`), encoding and image
(`eie.sw.image`). The classifier's head (H -> classes) is a second, one-layer chip image run on h_T.

Values in [-1, 1] (pixels, gates, h) are held at `state_frac` fraction bits, so [x_t, h_{t-1}] is one input
vector at one scale; the cell state's scale comes from calibration.
"""

from dataclasses import dataclass, field
import sys

import numpy as np
import torch
from torch import nn

from eie.config import ChipConfig
from eie.errors import EieError

__all__ = ["SUPPORTED", "check_variant", "check_fits", "LSTMClassifier", "from_torch", "build_lstm",
           "prune_lstm", "compress_lstm", "CompressedLSTM", "DEFAULT_KEPT"]

SUPPORTED = ("a single-layer, unidirectional LSTM without projections (nn.LSTM with num_layers=1, "
             "bidirectional=False, proj_size=0) read one input row per step")
# The fractions of the gates' and the head's weights the default schedule keeps (ESE pruned its LSTM to about
# 10%); Han et al.'s quality parameters (threshold = quality x std of the dense weights) are set from them on
# the trained dense weights (`prune.quality_for_fraction`), as a sensitivity analysis would pick them.
DEFAULT_KEPT = {"gates": 0.10, "head": 0.5}


def _log(message):
    print(message, file=sys.stderr, flush=True)


def check_variant(cell="lstm", layers=1, bidirectional=False, proj_size=0):
    """Refuse, in one line naming what is supported, a recurrent network the chip's flow does not run."""
    problems = []
    if str(cell).lower() != "lstm":
        problems.append(f"a {cell} cell")
    if layers != 1:
        problems.append(f"{layers} layers")
    if bidirectional:
        problems.append("a bidirectional one")
    if proj_size:
        problems.append(f"projections (proj_size={proj_size})")
    if problems:
        raise EieError(f"unsupported recurrent network ({', '.join(problems)}): the chip runs {SUPPORTED}")


def check_fits(features, hidden, config):
    """Refuse, before anything is simulated or trained, a step the chip's activation register files cannot hold:
    the stacked input [x_t, h_{t-1}] (F + H values) and the gates (4H rows). The sequence itself never sits on
    the chip (the host feeds it a step at a time), so its length is not bounded by the chip."""
    need = max(features + hidden, 4 * hidden)
    if need > config.max_dim:
        raise EieError(f"an LSTM step of {features} inputs and {hidden} hidden units needs {features + hidden} "
                       f"stacked inputs [x_t, h] and {4 * hidden} gate rows in the activation register files, but "
                       f"this chip holds {config.max_dim} (act_depth {config.act_depth} x {config.pes} PEs): use "
                       f"act_depth >= {-(-need // config.pes)}, more PEs, or fewer hidden units")


class LSTMClassifier(nn.Module):
    """LSTM over the rows of an image (F features per step), then a Linear head on the last h. `gates` is the
    stacked [W_x W_h] (nn.LSTM's weight_ih and weight_hh side by side, gates in its order i, f, g, o) with
    b_ih + b_hh as its bias: exactly the matrix the chip holds."""

    def __init__(self, features, hidden, classes):
        super().__init__()
        for name, value in (("features", features), ("hidden", hidden), ("classes", classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise EieError(f"LSTM {name} must be a positive integer, not {value!r}")
        self.features, self.hidden = features, hidden
        self.gates = nn.Linear(features + hidden, 4 * hidden)
        self.head = nn.Linear(hidden, classes)

    def sequences(self, x):
        """Images or sequences (samples first) as (samples, steps, features): an image's rows are its steps."""
        if x.ndim < 2 or x[0].numel() % self.features:
            raise EieError(f"inputs of shape {tuple(x.shape)} are not sequences of {self.features} features per "
                           "step: give (samples, steps, features) or images whose rows have that many pixels")
        return x.reshape(len(x), -1, self.features)

    def forward(self, x, trace=None):
        seq = self.sequences(x)
        h = seq.new_zeros(len(seq), self.hidden)
        c = seq.new_zeros(len(seq), self.hidden)
        for t in range(seq.shape[1]):
            a = torch.cat([seq[:, t], h], 1)
            i, f, g, o = self.gates(a).chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            if trace is not None:
                trace.append((a, c, h))
        return self.head(h)


def from_torch(lstm, head):
    """An `LSTMClassifier` from a trained `nn.LSTM` (batch-first or not: it only gives the weights) and the
    `nn.Linear` on its last hidden state. GRUs, plain RNNs, stacked, bidirectional or projected LSTMs are
    refused in one line."""
    if not isinstance(lstm, nn.LSTM):
        check_variant(type(lstm).__name__)
    check_variant("lstm", lstm.num_layers, lstm.bidirectional, lstm.proj_size)
    if not isinstance(head, nn.Linear) or head.in_features != lstm.hidden_size:
        raise EieError(f"the head must be an nn.Linear of {lstm.hidden_size} inputs (the LSTM's hidden size), "
                       f"not {head}")
    model = LSTMClassifier(lstm.input_size, lstm.hidden_size, head.out_features)
    with torch.no_grad():
        model.gates.weight.copy_(torch.cat([lstm.weight_ih_l0, lstm.weight_hh_l0], 1))
        bias = (lstm.bias_ih_l0 + lstm.bias_hh_l0) if lstm.bias else torch.zeros(4 * lstm.hidden_size)
        model.gates.bias.copy_(bias)
        model.head.load_state_dict(head.state_dict())
    return model


def build_lstm(data, hidden=128, seed=0):
    """A fresh `LSTMClassifier` reading `data`'s images row by row, initialized from `seed`; the forget gates'
    bias starts at 1 (Jozefowicz et al. 2015), so the cell remembers from the start."""
    from eie.sw import train
    train.seed_everything(seed)
    model = LSTMClassifier(data.input_shape[-1], hidden, data.classes)
    with torch.no_grad():
        model.gates.bias[hidden:2 * hidden] = 1.0
    return model


def _kept(model):
    from eie.sw import prune
    return {n: {"kept": k, "weights": w, "kept_percent": round(100 * k / w, 2)}
            for n, (k, w) in prune.kept(model).items()}


def prune_lstm(model, data, quality=None, iterations=3, retraining=None, final_epochs=2, log=_log,
               method="magnitude", sparsity=None, calibration=None):
    """Prune the gates and the head in place by `method` (`eie.sw.methods.parse_method`: "magnitude", "wanda" or
    N:M such as "2:4"). "magnitude": Han et al. 2015: `iterations` steps of magnitude pruning at a ramped
    quality x the dense weights' std, each followed by retraining, then `final_epochs` more (the flow's
    `prune_schedule`); `quality`: {"gates": q, "head": q} (a matrix not named: 1.0), one number for both, or
    None: the qualities that keep `DEFAULT_KEPT`, or, with `sparsity`, that prune that fraction of each matrix.
    "wanda" (`sparsity` of every row of both matrices, default 0.5, weighed by the stacked inputs [x_t, h_{t-1}]
    of every step of `calibration` training images, default `methods.WANDA_CALIBRATION`) and N:M (the N largest
    of every M consecutive inputs of each row) are the MLP's (`eie.sw.pipeline`), then `final_epochs` of
    retraining (0: none). Returns the figures: accuracies, weights kept per matrix, the method's record."""
    from eie.sw import methods, pipeline, prune, train
    from eie.sw.pipeline import Training
    if method == "magnitude" and sparsity is not None:
        methods.check_sparsity(sparsity)
        if quality is not None:
            raise EieError("give magnitude pruning quality parameters or a sparsity, not both")
        stds = prune.dense_stds(model)
        quality = {n: round(prune.quality_for_fraction(layer, sparsity, stds[n]), 4)
                   for n, layer in prune.layers(model)}
        sparsity = None
    method = pipeline.check_method(method, quality, sparsity, calibration)
    methods.check_network(model, method)
    if final_epochs < 0:
        raise EieError(f"final epochs must be >= 0, not {final_epochs}")
    retraining = retraining or Training(epochs=1, lr=0.05, l2=0.0)
    base = train.evaluate(model, data.x_test, data.y_test)
    if method == "magnitude":
        if quality is None:
            stds = prune.dense_stds(model)
            quality = {n: round(prune.quality_for_fraction(layer, 1 - DEFAULT_KEPT[n], stds[n]), 4)
                       for n, layer in prune.layers(model)}
        else:
            quality = pipeline.resolve_quality(quality, list(DEFAULT_KEPT))
        steps = pipeline.prune_schedule(model, data, quality, iterations, retraining, final_epochs, log)
        record = {"method": "magnitude", "quality": quality, "iterations": iterations,
                  "retraining": retraining.__dict__, "final_epochs": final_epochs, "steps": steps}
    else:
        record = pipeline._one_shot(model, data, method, sparsity,
                                    methods.WANDA_CALIBRATION if calibration is None else calibration,
                                    retraining, final_epochs, log)
    accuracy = train.evaluate(model, data.x_test, data.y_test)
    kept = _kept(model)
    dense = sum(k["weights"] for k in kept.values())
    total = sum(k["kept"] for k in kept.values())
    log(f"pruned: {dense} -> {total} weights ({dense / total:.1f}x), accuracy {base:.2f}% -> {accuracy:.2f}%")
    return {"baseline_accuracy": round(base, 2), "pruned_accuracy": round(accuracy, 2), "dense_weights": dense,
            "kept_weights": total, "pruning_ratio": round(dense / total, 2), "layers": kept, "prune": record}


def _copy(model):
    """A plain copy of `model` (pruning masks folded into zero weights: deepcopy fails on torch's pruning)."""
    from eie.sw.models import _state
    state, _ = _state(model)
    twin = LSTMClassifier(model.features, model.hidden, model.head.out_features)
    twin.load_state_dict(state)
    return twin


@torch.no_grad()
def _calibration(model, x):
    """(stacked inputs [x_t, h_{t-1}] of every step, largest |c|, last h) of the float model on images `x`."""
    trace = []
    model.eval()
    model(x, trace)
    stacked = torch.cat([a for a, _, _ in trace]).numpy()
    return stacked, max(float(c.abs().max()) for _, c, _ in trace), trace[-1][2].numpy()


def compress_lstm(model, data, config=None, init="linear", finetuning=None, calibration=1000, placement="balanced",
                  keep=(), log=_log):
    """Deep Compression of a (pruned) `LSTMClassifier` for the chip `config` (default `ChipConfig()`'s PE count and
    widths on the standard chip; memory fields named in `keep` as `config` has them): weight sharing
    (2^weight_index_bits-entry codebook per matrix, entry 0 the pruned zero), centroid fine-tuning, the chip's
    fixed point calibrated on `calibration` training images, the gates' and the head's chip images. `model`
    itself is left as it is. Returns a `CompressedLSTM`."""
    from eie.sw import compress, pipeline, prune, train
    from eie.sw.image import chip_image
    from eie.sw.pipeline import Training
    from eie.sw.quant import frac_for, quantize_network
    from eie.sw.reference import state_frac
    from eie.sw.host import input_record
    config = config or ChipConfig()
    if not isinstance(model, LSTMClassifier):
        raise EieError(f"compress_lstm takes an LSTMClassifier (eie.sw.lstm.from_torch converts an nn.LSTM), "
                       f"not {type(model).__name__}")
    if "act_depth" in keep:       # otherwise the register files are the standard chip's, or fitted to the model
        check_fits(model.features, model.hidden, config)
    if calibration < 1:
        raise EieError(f"calibration needs at least 1 image, not {calibration}")
    finetuning = finetuning or Training(epochs=1, lr=1e-3, l2=0.0)
    model = _copy(model)
    pruned_accuracy = train.evaluate(model, data.x_test, data.y_test)
    prune.remove(model)
    for _, layer in prune.layers(model):
        compress.share_weights(layer, config.codebook_size, init, seed=finetuning.seed)
    shared_accuracy = train.evaluate(model, data.x_test, data.y_test)
    log(f"weight sharing ({config.codebook_size - 1} values + zero per matrix, {init} init): "
        f"{pruned_accuracy:.2f}% -> {shared_accuracy:.2f}%")
    if finetuning.epochs:
        finetuning.fit(model, data, "fine-tune centroids", log=log)
    tuned_accuracy = train.evaluate(model, data.x_test, data.y_test)
    log(f"fine-tuned {tuned_accuracy:.2f}%")
    pick = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(finetuning.seed))[:calibration]
    x_cal = data.x_train[pick]
    stacked, c_max, h_last = _calibration(model, x_cal)
    s = state_frac(config)
    gates_float, head_float = pipeline._chip_layers(model, config.codebook_size)
    gates = quantize_network([gates_float], stacked, config, in_frac=s)[0]
    head = quantize_network([head_float], h_last, config, in_frac=s)[0]
    c_frac = min(s, frac_for(c_max * 1.25, config.act_bits))
    images = [chip_image([q], config, keep, placement)[0] for q in (gates, head)]
    figures = {"init": init, "codebook_size": config.codebook_size, "finetuning": finetuning.__dict__,
               "pruned_accuracy": round(pruned_accuracy, 2), "shared_accuracy": round(shared_accuracy, 2),
               "finetuned_accuracy": round(tuned_accuracy, 2), "calibration_images": calibration,
               "input": input_record(x_cal.numpy()), "placement": placement,
               "fracs": {"state": s, "cell": c_frac, "gates_out": gates.out_frac, "gates_w": gates.w_frac,
                         "head_out": head.out_frac, "head_w": head.w_frac}}
    cl = CompressedLSTM(*images, c_frac, model.features, model, data.identity(), figures)
    cl.figures["fixed_point_accuracy"] = cl.accuracy(data.x_test, data.y_test)
    log(f"fixed point (as chip and host compute) {cl.figures['fixed_point_accuracy']:.2f}%")
    return cl


@dataclass(repr=False)
class CompressedLSTM:
    """A compressed LSTM classifier as chip and host run it: the gates' chip image ([W_x W_h], one layer), the
    head's (one layer), the cell's fraction bits, the weight-shared float network (for its float accuracy),
    the data set and the compression figures. The reference runs on the layers decoded from the images."""
    gates: object
    head: object
    c_frac: int
    features: int
    network: object = None
    data: dict = None
    figures: dict = field(default_factory=dict)

    def __repr__(self):
        g = self.layers[0]
        return (f"CompressedLSTM({self.features} features, {g.rows // 4} hidden, {self.layers[1].rows} classes on a "
                f"{self.config.pes}-PE chip, fixed-point accuracy {self.figures.get('fixed_point_accuracy')}%)")

    @property
    def config(self):
        return self.gates.config

    @property
    def hidden(self):
        return self.gates.layers[0].rows // 4

    @property
    def layers(self):
        """(gates, head) QuantLayers in the model's row order, decoded from what the chip holds."""
        if getattr(self, "_layers", None) is None:
            self._layers = (self.gates.model_layers()[0], self.head.model_layers()[0])
        return self._layers

    def inputs(self, x):
        """Float images or sequences (samples first) -> (samples, steps, features) ints at `state_frac`; integers
        are refused where the model was calibrated on floats, out-of-range values warned about (as
        `CompressedModel.inputs`)."""
        from eie.sw.host import as_images, check_range
        from eie.sw.quant import to_fixed
        from eie.sw.reference import state_frac
        record = self.figures.get("input")
        x = as_images(x, record)
        check_range(x, record)
        if not np.isfinite(x).all():
            raise EieError("inputs contain NaN or infinite values")
        if x[0].size % self.features:
            raise EieError(f"inputs of shape {x.shape} are not sequences of {self.features} features per step: give "
                           "(samples, steps, features) or images whose rows have that many pixels")
        return to_fixed(x.reshape(len(x), -1, self.features), state_frac(self.config), self.config.act_bits)

    def reference(self, x_int, keep=False):
        """The bit-exact reference (`eie.sw.reference.lstm_forward`) on integer sequences."""
        from eie.sw.reference import lstm_forward
        return lstm_forward(*self.layers, x_int, self.c_frac, self.config, keep)

    def predict(self, x):
        """The classifier's outputs (floats at the head's scale) for images `x`, as chip and host compute them."""
        from eie.sw.quant import from_fixed
        return from_fixed(self.reference(self.inputs(x)), self.layers[1].out_frac)

    def accuracy(self, x, y):
        y = y.numpy() if hasattr(y, "numpy") else np.asarray(y)
        return round(100.0 * float((self.predict(x).argmax(1) == y).mean()), 2)

    def relayout(self, **changes):
        """This model on a chip like its own with `changes` (memory fields named are kept as given); a step that
        does not fit the new chip's activation register files is refused."""
        from eie.sw.image import SIZED_FIELDS, chip_image
        if changes.get("weight_index_bits", self.config.weight_index_bits) != self.config.weight_index_bits:
            raise EieError("the model's codebooks fix weight_index_bits: compress it again for that chip")
        config = self.config.replace(**changes)
        keep = [f for f in SIZED_FIELDS if f in changes]
        if "act_depth" in keep:
            check_fits(self.features, self.hidden, config)
        placement = self.figures.get("placement", "balanced")
        images = [chip_image([q], config, keep, placement)[0] for q in self.layers]
        return CompressedLSTM(*images, self.c_frac, self.features, self.network, self.data, self.figures)

    def estimate(self, x, model_samples=20):
        """Cycles per sequence from the performance model alone (no simulator), on the first `model_samples`
        sequences of images `x`: every step's chip input as the reference computes it, then the head's."""
        from eie.sw.perf import layer_perf
        x_int = self.inputs(x)[:model_samples]
        _, _, h = self.reference(x_int, keep=True)
        h_prev = np.concatenate([np.zeros_like(h[:, :1]), h[:, :-1]], axis=1)
        gates, head = self.gates.encoded_layers()[0], self.head.encoded_layers()[0]
        steps = np.stack([layer_perf(gates, np.concatenate([x_int[:, t], h_prev[:, t]], 1), self.config).model_cycles
                          for t in range(x_int.shape[1])], axis=1)
        head_cycles = layer_perf(head, h[:, -1], self.config).model_cycles
        return {"samples": len(x_int), "steps": x_int.shape[1], "cycles_from": "model",
                "cycles_per_sequence": round(float((steps.sum(axis=1) + head_cycles).mean()), 1),
                "cycles_per_step": round(float(steps.mean()), 1), "head_cycles": round(float(head_cycles.mean()), 1)}

    def storage(self):
        """Bytes by part of both matrices (`eie.sw.storage.storage`, summed), on the chip's PE count and widths."""
        from eie.sw.storage import storage
        parts = {}
        for q in self.layers:
            for part, n in storage([q], self.config, placement=self.figures.get("placement", "balanced")).items():
                parts[part] = parts.get(part, 0) + n
        return parts

    def simulate(self, x, model_samples=20, log=None, images=None, tables=None):
        """Run images `x` through the simulated chip step by step, the host's cell between steps, every step's
        chip output compared with the reference's (`eie.cosim.lstm.simulate_lstm`)."""
        from eie.cosim.lstm import simulate_lstm
        return simulate_lstm(self, self.inputs(x), model_samples, log, images, tables)
