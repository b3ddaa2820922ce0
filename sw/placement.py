"""Row placement: which PE holds which row of a layer.

EIE interleaves (row ``i`` -> PE ``i % pes``). Any permutation of the rows computes the same layer, because the
permutation folds into the next layer's columns and the host un-permutes only the last layer's outputs. A
placement is an `order`: position ``p`` of the layer on the chip (PE ``p % pes``, local row ``p // pes``) holds
the original row ``order[p]``, so the PEs keep interleaving's row counts (and output pass).

`balanced_order` balances each PE's expected work: the entries it reads per input, padding included, each
weighted by how likely its column's input is non-zero. Knowing only the matrix, every column counts the same;
with calibration inputs (`column_weights`) a column counts by how often its input was non-zero. Padding depends
on which rows land together, so each PE's work is evaluated on its real encoding, not estimated per row.
"""

import numpy as np

from eie.errors import EieError
from eie.sw.encode import encode_layer

__all__ = ["PLACEMENTS", "column_weights", "balanced_order", "expected_work", "is_identity", "place_layers"]

PLACEMENTS = ("interleaved", "balanced")


def column_weights(inputs, cols, what="calibration"):
    """Fraction of samples in which each input is non-zero, from (samples, cols) activations."""
    a = np.asarray(inputs)
    a = a.reshape(1, -1) if a.ndim == 1 else a
    if a.ndim != 2 or a.shape[1] != cols or not len(a):
        raise EieError(f"{what}: expected samples x {cols} inputs, got shape {np.asarray(inputs).shape}")
    return (a != 0).mean(axis=0)


def expected_work(w_index, order, config, weights=None):
    """(pes,) expected entries each PE reads per input (padding included) with rows placed by `order`,
    from the real encoding; `weights`: per column, the chance its input is non-zero (default 1)."""
    w = np.asarray(w_index)
    counts = encode_layer(w if order is None else w[order], config).counts
    return counts @ (np.ones(w.shape[1]) if weights is None else np.asarray(weights, np.float64))


def is_identity(order):
    return order is None or bool((np.asarray(order) == np.arange(len(order))).all())


class _Loads:
    """Expected work of a PE for any set of rows, from its real encoding (local rows in the given order)."""

    def __init__(self, w_index, config, weights):
        row, col = np.nonzero(w_index)
        self.rowptr = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=w_index.shape[0]))])
        self.col = col.astype(np.int32)
        self.cols = w_index.shape[1]
        self.weights = weights
        self.span = config.max_zero_run + 1
        self.row_weight = np.bincount(row, weights=weights[col], minlength=w_index.shape[0])

    def __call__(self, rows):
        """Expected work of one PE holding `rows` as its local rows 0, 1, ..."""
        rows = np.asarray(rows, np.int64)   # a PE may hold no rows
        lens = self.rowptr[rows + 1] - self.rowptr[rows]
        starts = np.repeat(self.rowptr[rows] - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
        col = self.col[starts + np.arange(lens.sum())]
        local = np.repeat(np.arange(len(rows)), lens)
        # gathered row by row, so a stable sort by column keeps local rows ascending (radix sort on 16 bits)
        order = np.argsort(col.astype(np.uint16) if self.cols <= 1 << 16 else col, kind="stable")
        col, local = col[order], local[order]
        prev = np.full_like(local, -1)
        prev[1:] = np.where(col[1:] == col[:-1], local[:-1], -1)
        width = (local - prev - 1) // self.span + 1       # one entry plus its padding
        return float((self.weights[col] * width).sum())


def balanced_order(w_index, config, weights=None, max_swaps=None, tolerance=1e-3):
    """An `order` (see the module) that balances the PEs' expected work; interleaving's own order (the
    identity) when balancing finds nothing better, so the busiest PE never does more than interleaving's.

    Rows are dealt heaviest first, one to each PE per round, the heaviest to the PE with the least work so
    far; then, while it helps, a row of the busiest PE is swapped with one of a lighter PE, each swap judged
    on the two PEs' real encodings, until the busiest PE is within `tolerance` of the mean (below the noise
    of any one input) or `max_swaps` (default 4 per PE) are spent."""
    w = np.asarray(w_index)
    rows, pes = w.shape[0], config.pes
    weights = np.ones(w.shape[1]) if weights is None else np.asarray(weights, np.float64)
    loads = _Loads(w, config, weights)
    identity = np.arange(rows)
    base = max(loads(identity[k::pes]) for k in range(pes))
    # deal: PE k holds len(range(k, rows, pes)) rows, as interleaving's positions give it
    need = np.array([len(range(k, rows, pes)) for k in range(pes)])
    held = [[] for _ in range(pes)]
    est = np.zeros(pes)
    heavy_first = np.argsort(-loads.row_weight, kind="stable")
    for start in range(0, rows, pes):
        batch = heavy_first[start:start + pes]
        open_pes = [k for k in np.argsort(est, kind="stable") if len(held[k]) < need[k]]
        for r, k in zip(batch, open_pes):
            held[k].append(r)
            est[k] += loads.row_weight[r]
    held = [np.sort(np.asarray(h, np.int64)) for h in held]   # local rows in their original order (or none)
    work = np.array([loads(h) for h in held])
    for _ in range(4 * pes if max_swaps is None else max_swaps):
        a = int(np.argmax(work))
        if work[a] <= work.mean() * (1 + tolerance) or not _improve(a, held, work, loads):
            break
    if work.max() >= base:
        return identity
    order = np.empty(rows, np.int64)
    for k, h in enumerate(held):
        order[k::pes] = h
    return order


def _improve(a, held, work, loads, tries=8):
    """Swap one row of PE `a` with one of a lighter PE so that both end below `a`'s work; True if done."""
    rw = loads.row_weight
    for b in np.argsort(work)[:tries]:
        b = int(b)
        gap = (work[a] - work[b]) / 2
        if gap <= 0:
            return False
        ra, rb = held[a], held[b]
        # the pair whose weight difference is nearest half the gap
        diff = rw[ra][:, None] - rw[rb][None, :]
        for flat in np.argsort(np.abs(diff - gap), axis=None)[:3]:
            i, j = np.unravel_index(flat, diff.shape)
            if diff[i, j] <= 0:
                continue
            na = np.sort(np.concatenate([np.delete(ra, i), [rb[j]]]))
            nb = np.sort(np.concatenate([np.delete(rb, j), [ra[i]]]))
            wa, wb = loads(na), loads(nb)
            if max(wa, wb) < work[a]:
                held[a], held[b], work[a], work[b] = na, nb, wa, wb
                return True
    return False


def place_layers(layers, config, placement="interleaved", calibration=None):
    """(layers as the chip holds them, order per layer or None for interleaving's) for a checked chain.

    With "balanced", each layer's rows are placed by `balanced_order` and the next layer's columns follow
    that order; `calibration` (int inputs of the first layer, samples x cols) weighs each layer's columns by
    how often its input, as the reference computes it, is non-zero."""
    from dataclasses import replace
    from eie.sw.reference import check_activations, forward
    if placement not in PLACEMENTS:
        raise EieError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
    if calibration is not None and placement != "balanced":
        raise EieError("calibration inputs only guide placement='balanced'; drop them or ask for 'balanced'")
    if placement == "interleaved":
        return list(layers), [None] * len(layers)
    inputs = None
    if calibration is not None:
        x = check_activations(calibration, layers[0].cols, config, "calibration inputs")
        inputs = [x] + forward(layers, x, config)[:-1]
    placed, orders, prev = [], [], None
    for l, layer in enumerate(layers):
        w = layer.w_index if prev is None else layer.w_index[:, prev]
        weights = None if inputs is None else column_weights(inputs[l], layer.cols)
        if weights is not None and prev is not None:
            weights = weights[prev]
        order = balanced_order(w, config, weights)
        order = None if is_identity(order) else order
        if order is not None:
            layer = replace(layer, w_index=w[order], bias=layer.bias[order])
        elif prev is not None:
            layer = replace(layer, w_index=w)
        placed.append(layer)
        orders.append(order)
        prev = order
    return placed, orders
