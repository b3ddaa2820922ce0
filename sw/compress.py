"""Weight sharing as in Deep Compression (Han et al. 2016): per layer, k-means over the surviving weights gives
a codebook; each weight becomes a codebook index and the centroids are fine-tuned with the gradients of
their weights summed (autograd does exactly that through the index lookup).

Codebook entry 0 is fixed at zero and means "pruned", as on the chip, so a `codebook_size` of 16 leaves 15
shared values. Like `torch.nn.utils.prune`, sharing re-parametrizes a layer: ``weight_centroids``
(trainable) and ``weight_index`` (a buffer) replace ``weight``, recomputed before every forward pass.
"""

import torch
from torch import nn

from eie.errors import EieError

__all__ = ["INITS", "kmeans", "share_weights", "is_shared", "codebook", "indices", "remove"]

INITS = ("linear", "density", "random")


def _initial_centroids(values, clusters, init, generator):
    """Linear spaces centroids over [min, max] (the paper's best: keeps the rare large weights), density
    spaces them by the weights' distribution, random picks weights."""
    if init == "linear":
        return torch.linspace(values.min().item(), values.max().item(), clusters, dtype=torch.float64)
    if init == "density":
        return torch.quantile(values, torch.linspace(0, 1, clusters + 2, dtype=torch.float64)[1:-1])
    if init == "random":
        return values[torch.randperm(len(values), generator=generator)[:clusters]].sort().values
    raise EieError(f"unknown centroid initialization {init!r}: choose one of {', '.join(INITS)}")


def kmeans(values, clusters, init="linear", iterations=100, seed=0):
    """1-D k-means (Lloyd) of `values` into at most `clusters` centroids; returns (sorted centroids, the
    index of each value's centroid). In 1-D the nearest centroid is found by bisection over midpoints."""
    values = values.detach().flatten().to(torch.float64)
    if len(values) == 0:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.long)
    clusters = min(clusters, len(values))
    centroids = _initial_centroids(values, clusters, init, torch.Generator().manual_seed(seed))
    for _ in range(iterations):
        assign = torch.bucketize(values, (centroids[1:] + centroids[:-1]) / 2)
        sums = torch.zeros_like(centroids).index_add_(0, assign, values)
        counts = torch.zeros_like(centroids).index_add_(0, assign, torch.ones_like(values))
        moved = torch.where(counts > 0, sums / counts.clamp(min=1), centroids).sort().values
        if torch.equal(moved, centroids):
            break
        centroids = moved
    return centroids, torch.bucketize(values, (centroids[1:] + centroids[:-1]) / 2)


class _Sharing:
    """Forward pre-hook that rebuilds ``weight`` from the codebook: [0, centroids...][index]."""

    def __init__(self, name):
        self.name = name

    def __call__(self, module, inputs):
        setattr(module, self.name, self.compute(module))

    def compute(self, module):
        centroids = getattr(module, f"{self.name}_centroids")
        table = torch.cat([centroids.new_zeros(1), centroids])
        return table[getattr(module, f"{self.name}_index")]


def share_weights(module, codebook_size=16, init="linear", iterations=100, seed=0, name="weight"):
    """Replace `module.<name>` by `codebook_size - 1` shared values plus the fixed zero. Zero weights (pruned)
    get index 0; the rest are clustered. Returns the module."""
    if codebook_size < 2:
        raise EieError(f"a codebook needs at least 2 entries (zero and one value), not {codebook_size}")
    if is_shared(module, name):
        raise EieError(f"{name} of this layer is already shared; call remove() first")
    weight = getattr(module, name).detach()
    nonzero = weight != 0
    centroids, assign = kmeans(weight[nonzero], codebook_size - 1, init, iterations, seed)
    index = torch.zeros(weight.shape, dtype=torch.long)
    index[nonzero] = assign + 1
    del module._parameters[name]
    module.register_parameter(f"{name}_centroids", nn.Parameter(centroids.to(weight.dtype)))
    module.register_buffer(f"{name}_index", index)
    hook = _Sharing(name)
    setattr(module, name, hook.compute(module))
    module.register_forward_pre_hook(hook)
    return module


def is_shared(module, name="weight"):
    return hasattr(module, f"{name}_centroids")


def codebook(module, name="weight"):
    """The full codebook, entry 0 = 0, as a float tensor of codebook_size entries (fewer only if the layer
    had fewer distinct survivors than shared values)."""
    centroids = getattr(module, f"{name}_centroids").detach()
    return torch.cat([centroids.new_zeros(1), centroids])


def indices(module, name="weight"):
    return getattr(module, f"{name}_index")


def remove(module, name="weight"):
    """Make sharing permanent: a plain `weight` parameter holding the shared values."""
    # Found by type in the module's own hooks, as torch's pruning does: a deep copy's hook handle would
    # still point at the original module.
    key, hook = next((k, h) for k, h in module._forward_pre_hooks.items()
                     if isinstance(h, _Sharing) and h.name == name)
    weight = hook.compute(module).detach()
    del module._forward_pre_hooks[key]
    delattr(module, name)
    del module._parameters[f"{name}_centroids"]
    del module._buffers[f"{name}_index"]
    module.register_parameter(name, nn.Parameter(weight))
    return module
