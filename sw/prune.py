"""Magnitude pruning as in Han et al. 2015, on top of `torch.nn.utils.prune`'s masks.

Each layer's threshold is a quality parameter times the standard deviation of its weights. The standard
deviation is that of the dense weights, measured once before the first cut (`dense_stds`), so a quality
parameter means the same pruned fraction in the sensitivity analysis and in every iteration of a schedule.
Masks are torch's re-parametrization (``weight = weight_orig * weight_mask``): pruned weights stay zero and
get no gradient while the survivors retrain from their current values.
"""

import math

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from eie.errors import EieError

__all__ = ["layers", "dense_stds", "prune_by_std", "quality_for_fraction", "apply_masks", "masks",
           "remove", "kept", "adjust_dropout", "dead_neurons", "remove_dead_neurons", "sort_units"]


def layers(model):
    """The prunable layers (Linear, Conv2d) of a Sequential, as [(name, layer)] in order."""
    return [(name, layer) for name, layer in model.named_children() if isinstance(layer, (nn.Linear, nn.Conv2d))]


def dense_stds(model):
    """{layer: standard deviation of its current weights}: the scale every later threshold refers to."""
    return {name: layer.weight.detach().std().item() for name, layer in layers(model)}


def prune_by_std(layer, quality, std, name="layer"):
    """Prune weights with magnitude below `quality * std`, on top of any existing mask.

    A quality parameter must be positive and leave at least one weight: its largest allowed value is the
    layer's largest magnitude over `std`."""
    weight = layer.weight.detach()
    top = weight.abs().max().item() / std
    if not (isinstance(quality, (int, float)) and math.isfinite(quality) and 0 < quality < top):
        raise EieError(f"quality parameter {quality} for {name} is out of range: it must be in (0, {top:.2f}) "
                       "to leave that layer any weights")
    torch_prune.custom_from_mask(layer, "weight", weight.abs() >= quality * std)


def quality_for_fraction(layer, fraction, std):
    """The quality parameter that prunes `fraction` of this layer's weights (sensitivity analysis works in
    fractions, the schedule in quality parameters)."""
    magnitudes = layer.weight.detach().abs().flatten().sort().values
    index = min(int(round(fraction * len(magnitudes))), len(magnitudes) - 1)
    return magnitudes[index].item() / std


def apply_masks(model, layer_masks):
    """Attach saved masks ({layer: bool tensor}) so retraining keeps those weights at zero."""
    named = dict(layers(model))
    for name, mask in layer_masks.items():
        if name not in named or named[name].weight.shape != mask.shape:
            raise EieError(f"mask for {name} does not fit the network; the checkpoint is inconsistent")
        torch_prune.custom_from_mask(named[name], "weight", mask.bool())


def masks(model):
    """{layer: bool mask} of the pruned layers."""
    return {name: layer.weight_mask.bool() for name, layer in layers(model) if hasattr(layer, "weight_mask")}


def remove(model):
    """Make pruning permanent: plain weights with zeros, no masks (before weight sharing)."""
    for _, layer in layers(model):
        if torch_prune.is_pruned(layer):
            torch_prune.remove(layer, "weight")


def kept(model):
    """{layer: (non-zero weights, all weights)}."""
    return {name: (int(layer.weight.count_nonzero()), layer.weight.numel()) for name, layer in layers(model)}


def adjust_dropout(model, original):
    """Scale each Dropout by D_r = D_o * sqrt(C_ir / C_io) (Han et al. 2015, eq. 2), where C is the connection
    count of the layer the dropout feeds: a pruned layer has less capacity to over-fit, so it needs less
    dropout. `original` is {dropout name: D_o}, taken before pruning; returns {name: D_r}."""
    counts = kept(model)
    children = list(model.named_children())
    adjusted = {}
    for i, (name, layer) in enumerate(children):
        if isinstance(layer, nn.Dropout):
            fed = next((n for n, c in children[i + 1:] if n in counts), None)
            if fed is not None:
                nonzero, total = counts[fed]
                layer.p = original[name] * math.sqrt(nonzero / total)
                adjusted[name] = layer.p
    return adjusted


def _linear_pairs(model):
    """(name_a, a, name_b, b) for each Linear a whose output feeds Linear b through ReLU/Dropout only."""
    children = list(model.named_children())
    pairs = []
    for i, (name, layer) in enumerate(children):
        if not isinstance(layer, nn.Linear):
            continue
        for next_name, nxt in children[i + 1:]:
            if isinstance(nxt, nn.Linear):
                pairs.append((name, layer, next_name, nxt))
            if not isinstance(nxt, (nn.ReLU, nn.Dropout)):
                break
    return pairs


def dead_neurons(model):
    """{layer: {"no_inputs": [...], "no_outputs": [...]}} for hidden units of fully connected layers that
    pruning cut off: every incoming weight zero, or every outgoing weight zero."""
    found = {}
    for name, a, _, b in _linear_pairs(model):
        no_inputs = (a.weight.detach() == 0).all(1).nonzero().flatten().tolist()
        no_outputs = (b.weight.detach() == 0).all(0).nonzero().flatten().tolist()
        found[name] = {"no_inputs": no_inputs, "no_outputs": no_outputs}
    return found


def _unmask(*named):
    """Fold the masks of these (name, layer) pairs into their weights; returns the masks to re-apply, so a
    layer can change shape in between."""
    saved = {}
    for name, layer in named:
        if torch_prune.is_pruned(layer):
            saved[name] = layer.weight_mask.bool().clone()
            torch_prune.remove(layer, "weight")
    return saved


def _reapply(named, saved, keep=None):
    """Re-attach masks saved by `_unmask`; `keep` selects surviving units (a's rows, b's columns)."""
    for i, (name, layer) in enumerate(named):
        if name in saved:
            mask = saved[name]
            if keep is not None:
                mask = mask[keep] if i == 0 else mask[:, keep]
            torch_prune.custom_from_mask(layer, "weight", mask)


@torch.no_grad()
def remove_dead_neurons(model):
    """Drop dead hidden units from fully connected layers, in place, without changing the outputs in
    evaluation mode. A unit with no inputs outputs the constant relu(bias) (when a ReLU follows; the
    bias itself otherwise), which moves into the next layer's bias; a unit with no outputs is just gone.
    Returns {layer: units removed}. Masks are kept (restricted to the surviving units)."""
    removed = {}
    children = [n for n, _ in model.named_children()]
    for name, a, next_name, b in _linear_pairs(model):
        named = ((name, a), (next_name, b))
        saved = _unmask(*named)
        no_inputs = (a.weight == 0).all(1)
        no_outputs = (b.weight == 0).all(0)
        keep = ~(no_inputs | no_outputs)
        if not keep.all():
            between = children[children.index(name) + 1:children.index(next_name)]
            relu = any(isinstance(getattr(model, n), nn.ReLU) for n in between)
            constant = a.bias if a.bias is not None else torch.zeros(a.out_features)
            constant = constant.clamp(min=0) if relu else constant
            fold = no_inputs & ~no_outputs
            if fold.any():
                if b.bias is None:
                    b.bias = nn.Parameter(torch.zeros(b.out_features))
                b.bias += b.weight[:, fold] @ constant[fold]
            _select_units(a, b, keep)
            removed[name] = int((~keep).sum())
        _reapply(named, saved, keep)
    return removed


@torch.no_grad()
def sort_units(model):
    """Order each hidden layer's units by how many incoming weights survive, densest first (the next layer's
    columns follow, so the network computes the same function). In a column-wise relative-index encoding
    the long runs of zeros then sit at the ends of columns, where they need no padding entries; on an
    interleaved chip the busy rows are dealt round-robin over the PEs."""
    for name, a, next_name, b in _linear_pairs(model):
        named = ((name, a), (next_name, b))
        saved = _unmask(*named)
        order = (a.weight != 0).sum(1).argsort(descending=True, stable=True)
        _select_units(a, b, order)
        _reapply(named, saved, order)


def _select_units(a, b, index):
    """Keep (and order) hidden units `index` (a bool mask or positions) between Linear a and Linear b."""
    a.weight = nn.Parameter(a.weight[index].clone())
    if a.bias is not None:
        a.bias = nn.Parameter(a.bias[index].clone())
    a.out_features = b.in_features = a.weight.shape[0]
    b.weight = nn.Parameter(b.weight[:, index].clone())
