"""The ways of shrinking a network that `eie compare` sets against the project's iterative magnitude pruning:
one-shot magnitude pruning, Optimal Brain Damage (LeCun et al. 1990), low-rank truncated SVD (Denton et al.
2014), uniform low-bit weights with quantization-aware training, and the pruning methods made for large
models: Wanda (Sun et al. 2023: |W| x the input's L2 norm, per output row, no retraining) and N:M structured
sparsity (N of every M consecutive inputs of a row, e.g. 2:4). Each works in place on a fully connected
`nn.Sequential` and leaves a model of the requested size; training is the caller's (`eie.sw.pipeline.Training`).
Wanda and N:M are also `eie prune --method`'s (`parse_method`).
"""

import math

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils import prune as torch_prune

from eie.errors import EieError
from eie.sw import prune

__all__ = ["prunable_weights", "kept_weights", "scaled_quality", "prune_to_quality", "iterative_to_budget",
           "hessian_diagonal",
           "obd_prune", "obd_schedule", "svd_factors", "svd_ranks", "low_rank", "UniformQuant", "quantize_weights",
           "fix_quantized", "PRUNE_METHODS", "WANDA_CALIBRATION", "parse_method", "method_name", "wanda_prune",
           "wanda_mask", "check_nm", "check_sparsity", "check_network", "nm_prune", "calibration_images",
           "check_calibration", "sparsegpt_mask", "sparsegpt_prune", "SPARSEGPT_BLOCK", "SPARSEGPT_DAMP"]


def prunable_weights(model):
    """Weights of the prunable layers (Linear/Conv2d), dense count: what a kept-parameter fraction refers to."""
    return sum(layer.weight.numel() for _, layer in prune.layers(model))


def kept_weights(model):
    return sum(kept for kept, _ in prune.kept(model).values())


# -- magnitude pruning at a budget --------------------------------------------------------------------------

def _kept_at(model, quality, stds):
    return sum(int((layer.weight.detach().abs() >= quality[n] * stds[n]).sum()) for n, layer in prune.layers(model))


def scaled_quality(model, base_quality, budget, stds=None):
    """Per-layer quality parameters `s * base_quality` (the project's per-layer ratios, so every magnitude
    method spreads its budget over the layers alike), with the common factor s found by bisection so that
    at most `budget` of the weights survive, as close to it as the weights allow; a layer whose threshold
    would pass its largest weight keeps that one. Thresholds are quality x `stds` (default: the std of each
    layer's current weights)."""
    stds = stds or prune.dense_stds(model)
    target = budget * prunable_weights(model)
    # the quality that leaves a layer only its largest weight
    top = {n: layer.weight.detach().abs().max().item() / stds[n] * (1 - 1e-9) for n, layer in prune.layers(model)}
    at = lambda s: {n: min(s * q, top[n]) for n, q in base_quality.items()}
    lo, hi = 0.0, max(top[n] / q for n, q in base_quality.items())
    if _kept_at(model, at(hi), stds) > target:
        raise EieError(f"budget {budget} is below what one weight per layer needs; give a larger budget")
    for _ in range(60):
        mid = (lo + hi) / 2
        if _kept_at(model, at(mid), stds) > target:
            lo = mid
        else:
            hi = mid
    return at(hi)


def prune_to_quality(model, quality, stds=None):
    """Magnitude pruning on top of existing masks: every layer below quality x `stds` (default: the std of its
    current weights)."""
    stds = stds or prune.dense_stds(model)
    for name, layer in prune.layers(model):
        prune.prune_by_std(layer, quality[name], stds[name], name)


def iterative_to_budget(model, data, base_quality, budget, iterations, step, final_epochs, log=None):
    """The project's iterative pruning at a kept fraction. Quality parameters come from `scaled_quality` on the
    dense weights; `eie.sw.pipeline.prune_schedule` runs the first iterations - 1 steps (thresholds quality x
    k / iterations, each followed by `step` retraining); the last step cuts to exactly `budget` (the threshold
    the schedule would use moves with the retrained weights: L2 shrinks them, growth lifts some) and retrains
    the same way; `final_epochs` of retraining close. Returns the quality parameters."""
    from eie.sw.pipeline import prune_schedule
    stds = prune.dense_stds(model)
    quality = scaled_quality(model, base_quality, budget, stds)
    if iterations > 1:
        ramp = {n: q * (iterations - 1) / iterations for n, q in quality.items()}
        prune_schedule(model, data, ramp, iterations - 1, step, 0, **({"log": log} if log else {}))
    if kept_weights(model) > budget * prunable_weights(model):
        prune_to_quality(model, scaled_quality(model, base_quality, budget, stds), stds)
    step.fit(model, data, f"retrain {iterations}/{iterations}", seed_offset=iterations)
    if final_epochs:
        type(step)(**{**step.__dict__, "epochs": final_epochs}).fit(model, data, "final retrain",
                                                                    seed_offset=iterations + 1)
    return quality


# -- Optimal Brain Damage -------------------------------------------------------------------------------------

def hessian_diagonal(model, x, y, batch_size=500):
    """{layer: (diagonal for the weight, diagonal for the bias)} of the Hessian of the mean cross-entropy over
    (x, y) with respect to every Linear layer's (effective, masked) weights.

    Computed as the diagonal of the Gauss-Newton matrix, J^T H_out J with H_out = diag(p) - p p^T the softmax's
    Hessian, factored as sum_k a_k a_k^T with a_k = sqrt(p_k) (e_k - p): one backward pass per class, and per
    layer the per-sample squares (delta^2)^T (h^2) of the outer-product gradients. For a ReLU network this is
    the exact Hessian diagonal: each output is piecewise linear in any single weight, so the curvature term
    the Gauss-Newton matrix leaves out is zero on the diagonal."""
    linears = [(n, m) for n, m in model.named_children() if isinstance(m, nn.Linear)]
    if not linears or any(not isinstance(m, (nn.Linear, nn.ReLU, nn.Flatten, nn.Dropout))
                          for _, m in model.named_children()):
        raise EieError("the Hessian diagonal is computed for networks of Linear/ReLU/Flatten/Dropout layers only")
    seen = {}

    def hook(name):
        def keep(module, inputs, output):
            seen[name] = (inputs[0].detach(), output)
        return keep
    handles = [m.register_forward_hook(hook(n)) for n, m in linears]
    diag = {n: (torch.zeros_like(m.weight, dtype=torch.float64), torch.zeros(m.out_features, dtype=torch.float64))
            for n, m in linears}
    model.eval()
    try:
        for start in range(0, len(x), batch_size):
            logits = model(x[start:start + batch_size])
            p = torch.softmax(logits.detach().double(), 1)
            outputs = [seen[n][1] for n, _ in linears]
            for k in range(p.shape[1]):
                a = -p * p[:, k:k + 1].sqrt()
                a[:, k] += p[:, k].sqrt()
                deltas = torch.autograd.grad(logits, outputs, grad_outputs=a.to(logits.dtype), retain_graph=True)
                for (name, _), delta in zip(linears, deltas):
                    d2, h2 = delta.double() ** 2, seen[name][0].double() ** 2
                    diag[name][0].add_(d2.T @ h2)
                    diag[name][1].add_(d2.sum(0))
    finally:
        for h in handles:
            h.remove()
    return {n: (w / len(x), b / len(x)) for n, (w, b) in diag.items()}


def obd_prune(model, keep, x, y):
    """Prune, on top of existing masks, all but the `keep` weights of highest OBD saliency h_ii w_i^2 / 2,
    ranked over all layers together (LeCun et al.'s rule); the Hessian diagonal is measured on (x, y)."""
    diag = hessian_diagonal(model, x, y)
    named = prune.layers(model)
    saliency = [(diag[n][0] * layer.weight.detach().double() ** 2 / 2).flatten() for n, layer in named]
    flat = torch.cat(saliency)
    # pruned weights stay pruned, whatever their (zero) saliency ties with
    flat = torch.where(torch.cat([(layer.weight.detach() != 0).flatten() for _, layer in named]), flat,
                       torch.tensor(-1.0, dtype=flat.dtype))
    order = flat.argsort(descending=True, stable=True)
    mask = torch.zeros(len(flat), dtype=torch.bool)
    mask[order[:keep]] = True
    start = 0
    for (name, layer), s in zip(named, saliency):
        torch_prune.custom_from_mask(layer, "weight", mask[start:start + len(s)].view_as(layer.weight))
        start += len(s)


def obd_schedule(model, data, budget, iterations, retraining, final_epochs, hessian_images=2000):
    """OBD pruned and retrained on the iterative schedule's steps: at step k of `iterations` the kept fraction
    is 1 - (1 - budget) k / iterations, each step retrains with `retraining`, a final retraining follows.
    The Hessian diagonal is measured afresh at every step on `hessian_images` training images."""
    total = prunable_weights(model)
    pick = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(retraining.seed))[:hessian_images]
    x, y = data.x_train[pick], data.y_train[pick]
    for k in range(1, iterations + 1):
        keep = int(math.floor(total * (1 - (1 - budget) * k / iterations)))
        obd_prune(model, keep, x, y)
        retraining.fit(model, data, f"OBD retrain {k}/{iterations}", seed_offset=k)
    if final_epochs:
        type(retraining)(**{**retraining.__dict__, "epochs": final_epochs}).fit(
            model, data, "OBD final retrain", seed_offset=iterations + 1)


# -- low rank -------------------------------------------------------------------------------------------------

def svd_factors(weight, rank):
    """(A, B) with B @ A the best rank-`rank` approximation of `weight` (out x in): A is rank x in, B out x rank,
    the singular values split evenly between them (sqrt into each), which keeps both factors' scales alike
    for fine-tuning."""
    u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (root[:, None] * vh[:rank]).to(weight.dtype), (u[:, :rank] * root).to(weight.dtype)


def svd_ranks(spectra, budget):
    """{layer: rank, or None where the layer stays dense} for {layer: (out, in, singular values)} such that the
    layers hold at most `budget` of the dense weights. Greedy on energy per parameter: every layer starts at
    rank 1, then the step that adds the largest share of its layer's squared Frobenius norm per added
    parameter is taken while it fits. A layer whose factors would not be smaller than itself stays dense."""
    def cost(n, r):
        o, i, _ = spectra[n]
        return min(r * (o + i), o * i)
    share = {n: (s.double() ** 2 / (s.double() ** 2).sum().clamp(min=1e-30)).tolist() for n, (_, _, s) in spectra.items()}
    ranks = dict.fromkeys(spectra, 1)
    room = budget * sum(o * i for o, i, _ in spectra.values()) - sum(cost(n, 1) for n in ranks)
    if room < 0:
        raise EieError(f"budget {budget} is below what rank-1 factors of every layer need; give a larger budget")
    while True:
        steps = [(share[n][r] / max(cost(n, r + 1) - cost(n, r), 1e-9), n) for n, r in ranks.items()
                 if r < len(share[n]) and cost(n, r + 1) - cost(n, r) <= room]
        if not steps:
            break
        _, n = max(steps)
        room -= cost(n, ranks[n] + 1) - cost(n, ranks[n])
        ranks[n] += 1
    return {n: (r if cost(n, r) < spectra[n][0] * spectra[n][1] else None) for n, r in ranks.items()}


@torch.no_grad()
def low_rank(model, budget):
    """A new flat `nn.Sequential` in which each Linear layer `fc` becomes `fc_a` (in -> r, no bias) and `fc_b`
    (r -> out) from its truncated SVD, ranks from `svd_ranks` (a layer cheaper dense stays as it is, copied, so that
    fine-tuning the new model leaves `model` as it was); the layers without parameters are shared with `model`."""
    from collections import OrderedDict
    linears = {n: m for n, m in model.named_children() if isinstance(m, nn.Linear)}
    ranks = svd_ranks({n: (*m.weight.shape, torch.linalg.svdvals(m.weight.detach().double()))
                       for n, m in linears.items()}, budget)
    out = []
    for name, child in model.named_children():
        rank = ranks.get(name)
        if rank is None:
            if isinstance(child, nn.Linear):
                twin = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
                twin.load_state_dict(child.state_dict())
                child = twin
            out.append((name, child))
            continue
        a, b = svd_factors(child.weight, rank)
        first, second = nn.Linear(child.in_features, rank, bias=False), nn.Linear(rank, child.out_features,
                                                                                  bias=child.bias is not None)
        first.weight.copy_(a)
        second.weight.copy_(b)
        if child.bias is not None:
            second.bias.copy_(child.bias)
        out += [(f"{name}_a", first), (f"{name}_b", second)]
    return nn.Sequential(OrderedDict(out))


# -- low-bit weights ------------------------------------------------------------------------------------------

class UniformQuant(nn.Module):
    """Fake quantization of a weight matrix to symmetric uniform `bits`-bit integers with one scale per output
    row (max |w| of the row over 2^(bits-1) - 1). The straight-through estimator passes the gradient to the
    float weights, which keep training (quantization-aware training)."""

    def __init__(self, bits):
        super().__init__()
        self.levels = (1 << (bits - 1)) - 1

    def scales(self, w):
        return w.detach().abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / self.levels

    def forward(self, w):
        scale = self.scales(w)
        q = torch.clamp(torch.round(w / scale), -self.levels, self.levels) * scale
        return w + (q - w).detach()


def quantize_weights(model, bits):
    """Put `UniformQuant(bits)` on every Linear layer's weight; `fix_quantized` makes it permanent."""
    if not 2 <= bits <= 16:
        raise EieError(f"weight bits must lie in 2..16, not {bits}")
    for _, layer in prune.layers(model):
        parametrize.register_parametrization(layer, "weight", UniformQuant(bits))
    return model


def fix_quantized(model):
    """Replace the fake quantization by its quantized weights; returns {layer: per-row scales} (what a
    low-bit model stores beside its integers)."""
    scales = {}
    for name, layer in prune.layers(model):
        quant = layer.parametrizations.weight[0]
        scales[name] = quant.scales(layer.parametrizations.weight.original).flatten().numpy().astype(np.float32)
        parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    return scales



# -- Wanda and N:M ----------------------------------------------------------------------------------------

PRUNE_METHODS = ("magnitude", "wanda", "N:M")
WANDA_CALIBRATION = 512     # training images whose activations Wanda weighs the weights by (when none are given)


def parse_method(method: "str | tuple") -> "str | tuple":
    """"magnitude", "wanda", or (n, m) for N:M sparsity, from a name such as "2:4" (or an (n, m) pair)."""
    if method in ("magnitude", "wanda"):
        return method
    try:
        n, m = (int(v) for v in (method.split(":") if isinstance(method, str) else method))
    except (TypeError, ValueError):
        n = m = None
    if n is None or not 0 < n < m:
        raise EieError(f"unknown pruning method {method!r}: choose magnitude, wanda or N:M with 0 < N < M "
                       "(e.g. 2:4)")
    return n, m


def method_name(method: "str | tuple") -> str:
    """The name of a `parse_method` result, as reports and checkpoints record it."""
    return method if isinstance(method, str) else f"{method[0]}:{method[1]}"


def _prunable_linears(model, method):
    """The Linear layers Wanda prunes (it needs each input column's activations); convolutions are refused."""
    convs = [n for n, layer in prune.layers(model) if not isinstance(layer, nn.Linear)]
    if convs:
        raise EieError(f"{method} prunes fully connected (Linear) layers only; this network has convolutions "
                       f"({', '.join(convs)}): use magnitude pruning")
    return prune.layers(model)


def check_sparsity(sparsity) -> None:
    """Refuse in one line a Wanda sparsity (pruned fraction) outside (0, 1)."""
    if not (isinstance(sparsity, (int, float)) and 0 < sparsity < 1):
        raise EieError(f"sparsity {sparsity} is out of range: the pruned fraction of each layer must lie strictly "
                       "between 0 and 1, like 0.5")


def check_network(model: nn.Module, method: "str | tuple") -> None:
    """Refuse in one line a network `method` (as `parse_method` gives it) cannot prune, before any training:
    Wanda's convolutions, an N:M whose M does not divide every layer's inputs."""
    if method == "wanda":
        _prunable_linears(model, "wanda")
    elif isinstance(method, tuple):
        check_nm(model, *method)


def calibration_images(data, count: int = WANDA_CALIBRATION, seed: int = 0) -> torch.Tensor:
    """`count` training images of `data` drawn with `seed`: Wanda's calibration when none are given."""
    if not isinstance(count, int) or count < 1:
        raise EieError(f"wanda calibration needs at least 1 image, not {count}")
    pick = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(seed))[:count]
    return data.x_train[pick]


def check_calibration(x: torch.Tensor, input_shape: tuple) -> torch.Tensor:
    """Calibration images `x` as a float tensor, refused in one line unless shaped (samples, *input_shape)."""
    x = torch.as_tensor(x)
    if x.ndim != len(input_shape) + 1 or tuple(x.shape[1:]) != tuple(input_shape) or len(x) == 0:
        expected = ", ".join(str(d) for d in ("N", *input_shape))
        raise EieError(f"wanda calibration: expected images of shape ({expected}) as the data set's, "
                       f"got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise EieError(f"wanda calibration: images must be floats as the data set's, not {x.dtype}")
    return x.float()


def _row_mask(score, keep):
    """Mask keeping the `keep` highest scores of each row (ties: the earlier column)."""
    order = score.argsort(dim=1, descending=True, stable=True)
    mask = torch.zeros_like(score, dtype=torch.bool)
    mask.scatter_(1, order[:, :keep], True)
    return mask


@torch.no_grad()
def wanda_prune(model: nn.Module, x: torch.Tensor, sparsity: float, layers: "list | None" = None) -> dict:
    """Wanda: remove at least the `sparsity` fraction of every Linear layer's weights (whole weights), row by row
    (each output keeps the same count, at least one), lowest |W_ij| x ||X_j||_2 first, X_j being input j of the
    layer over the calibration inputs `x` (every call of the layer in `model(x)`: an LSTM's gates see each time
    step, a decoder's layers each position). The layers are pruned in order, each seeing the activations of the
    ones pruned before it, as Wanda does. `layers`: [(name, nn.Linear)] to prune, in that order (default the
    Sequential's prunable layers; a model whose Linear layers are not its children, such as the decoder, names
    them). No retraining; masks as `torch.nn.utils.prune` leaves them. Returns {layer: input norms}."""
    check_sparsity(sparsity)
    norms = {}
    for name, layer in (_prunable_linears(model, "wanda") if layers is None else _linears(layers, "wanda")):
        norms[name] = wanda_mask(layer, _layer_inputs(model, name, layer, x, "wanda"), sparsity)
    return norms


@torch.no_grad()
def _layer_inputs(model, name, layer, x, method):
    """(calls x inputs) of `layer` in `model(x)`, every call's inputs stacked (an LSTM's gates are called once
    per step): a one-shot method's calibration activations of that layer."""
    seen = []
    model.eval()
    handle = layer.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    try:
        model(x)
    finally:
        handle.remove()
    if not seen:
        raise EieError(f"{method}: layer {name} was not used by the model's forward pass on the calibration inputs")
    return torch.cat([v.reshape(-1, layer.in_features) for v in seen])


def _linears(layers, method):
    """`layers` ([(name, module)]) checked to be Linear layers, which `method` prunes."""
    layers = list(layers)
    other = [n for n, layer in layers if not isinstance(layer, nn.Linear)]
    if other:
        raise EieError(f"{method} prunes fully connected (Linear) layers only, not {', '.join(other)}")
    return layers


@torch.no_grad()
def wanda_mask(layer: nn.Linear, inputs: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Wanda's cut of one Linear layer from its calibration `inputs` (any shape ending in its input count): each
    row keeps its (1 - `sparsity`) x inputs highest |W_ij| x ||X_j||_2 (at least one), on top of any mask.
    Returns the input norms. One rule for `wanda_prune` and for layers outside a Sequential (the decoder's)."""
    norms = inputs.reshape(-1, layer.in_features).double().norm(dim=0)
    score = layer.weight.detach().abs().double() * norms[None, :]
    keep = max(1, math.floor((1 - sparsity) * layer.in_features + 1e-9))
    torch_prune.custom_from_mask(layer, "weight", _row_mask(score, keep) & (layer.weight.detach() != 0))
    return norms


def check_nm(model: nn.Module, n: int, m: int, layers: "list | None" = None) -> None:
    """Refuse in one line an N:M pattern whose M does not divide every prunable layer's inputs (`layers`:
    [(name, layer)] instead of the Sequential's prunable layers)."""
    named = prune.layers(model) if layers is None else list(layers)
    widths = {name: layer.weight[0].numel() for name, layer in named}
    if any(w % m for w in widths.values()):
        raise EieError(f"{n}:{m} sparsity needs M={m} to divide every layer's inputs, but the layers have "
                       + ", ".join(f"{k} {w}" for k, w in widths.items())
                       + ": choose an M that divides them all (2:4 does for LeNet-300-100)")


@torch.no_grad()
def nm_prune(model: nn.Module, n: int, m: int, layers: "list | None" = None) -> None:
    """N:M structured sparsity: in every group of `m` consecutive inputs of every row (a convolution's row being
    its flattened kernel), keep the `n` weights of largest magnitude (ties: the earlier input). Every row
    then holds exactly n/m of its weights. `m` must divide every layer's input count. `layers`:
    [(name, layer)] to prune (default the Sequential's prunable layers; an LSTM's gates and head are its own,
    the decoder names its Linear layers)."""
    named = prune.layers(model) if layers is None else list(layers)
    check_nm(model, n, m, named)
    for name, layer in named:
        w = layer.weight.detach()
        groups = w.abs().reshape(-1, m)
        mask = _row_mask(groups, n).reshape(w.shape)
        torch_prune.custom_from_mask(layer, "weight", mask & (w != 0))


# -- SparseGPT ------------------------------------------------------------------------------------------------

SPARSEGPT_BLOCK = 128       # columns whose mask is chosen together (the paper's adaptive mask selection)
SPARSEGPT_DAMP = 0.01       # the Hessian's diagonal damping, a fraction of its mean diagonal (the paper's)


@torch.no_grad()
def sparsegpt_mask(layer: nn.Linear, inputs: torch.Tensor, sparsity: "float | None" = None,
                   nm: "tuple | None" = None, block: int = SPARSEGPT_BLOCK) -> None:
    """SparseGPT (Frantar & Alistarh 2023) on one Linear layer from its calibration `inputs` (any shape ending in
    its input count): one-shot pruning with the Optimal Brain Surgeon update. With H = X^T X (damped by
    `SPARSEGPT_DAMP` of its mean diagonal) and the upper Cholesky factor U of H^-1, the columns are taken in
    order; each pruned weight's error, divided by U's diagonal, is spread over the row's later columns through
    U's row, so the surviving weights absorb what the pruned ones did on these inputs. The mask is chosen
    `block` columns at a time on w^2 / U_jj^2 as the updates leave them: per row, the lowest `sparsity` of the
    block's columns (rounded so that each row keeps floor((1 - sparsity) x inputs) in all, at least one), or
    with `nm` = (n, m) the m - n lowest of every m consecutive inputs. Updated weights and mask are left as
    `torch.nn.utils.prune` leaves a mask, on top of any mask the layer had."""
    if nm is None:
        check_sparsity(sparsity)
    elif layer.in_features % nm[1] or block % nm[1]:
        raise EieError(f"{nm[0]}:{nm[1]} sparsity needs M={nm[1]} to divide the layer's {layer.in_features} inputs")
    x = inputs.reshape(-1, layer.in_features).double()
    old = layer.weight_mask.detach().bool() if torch_prune.is_pruned(layer) else None
    w = layer.weight.detach().double().clone()
    cols = w.shape[1]
    h = x.T @ x / max(len(x), 1)
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    h += SPARSEGPT_DAMP * torch.diag(h).mean() * torch.eye(cols, dtype=h.dtype)
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    keep_upto = (lambda c: max(1, math.floor((1 - sparsity) * cols + 1e-9)) * c // cols) if nm is None else None
    mask = torch.ones_like(w, dtype=torch.bool)
    for start in range(0, cols, block):
        end = min(start + block, cols)
        w1, u1 = w[:, start:end].clone(), u[start:end, start:end]
        score = w1 ** 2 / torch.diag(u1)[None, :] ** 2
        if old is not None:
            score[~old[:, start:end]] = -1.0        # pruned weights stay pruned
        if nm is None:
            keep1 = _row_mask(score, keep_upto(end) - keep_upto(start)) if keep_upto(end) > keep_upto(start) \
                else torch.zeros_like(score, dtype=torch.bool)
        else:
            keep1 = _row_mask(score.reshape(-1, nm[1]), nm[0]).reshape(score.shape)
        err = torch.zeros_like(w1)
        for i in range(end - start):
            q = torch.where(keep1[:, i], w1[:, i], torch.zeros_like(w1[:, i]))
            e = (w1[:, i] - q) / u1[i, i]
            w1[:, i:] -= e[:, None] * u1[i, i:][None, :]
            w1[:, i] = q
            err[:, i] = e
        w[:, start:end] = w1
        w[:, end:] -= err @ u[start:end, end:]
        mask[:, start:end] = keep1
    mask &= w != 0
    if old is not None:
        mask &= old
        torch_prune.remove(layer, "weight")
    layer.weight.copy_(w.to(layer.weight.dtype))
    torch_prune.custom_from_mask(layer, "weight", mask)


@torch.no_grad()
def sparsegpt_prune(model: nn.Module, x: torch.Tensor, sparsity: "float | None" = None, nm: "tuple | None" = None,
                    layers: "list | None" = None) -> None:
    """SparseGPT (`sparsegpt_mask`) on every Linear layer in order, each on its inputs over the calibration
    inputs `x` after the layers before it were pruned and updated (as the paper prunes a model layer by layer):
    `sparsity` of every row, or N:M with `nm` = (n, m). `layers`: as `wanda_prune`'s. No retraining."""
    if nm is not None:
        check_nm(model, *nm, layers)
    named = _prunable_linears(model, "sparsegpt") if layers is None else _linears(layers, "sparsegpt")
    for name, layer in named:
        sparsegpt_mask(layer, _layer_inputs(model, name, layer, x, "sparsegpt"), sparsity, nm)
