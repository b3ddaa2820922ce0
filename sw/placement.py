"""Row placement: which PE holds which row of a layer.

EIE interleaves (row ``i`` -> PE ``i % pes``). Any permutation of the rows computes the same layer, because the
permutation folds into the next layer's columns and the host un-permutes only the last layer's outputs. A
placement is an `order`: position ``p`` of the layer on the chip (PE ``p % pes``, local row ``p // pes``) holds
the original row ``order[p]``, so the PEs keep interleaving's row counts (and output pass).

`balanced_order` balances the PEs' work: the entries each reads per input, padding included, each weighted by
how likely its column's input is non-zero. Knowing only the matrix, every column counts the same; with
calibration inputs (`column_weights`) a column counts by how often its input was non-zero. Equal expected totals
are not enough: an input has its own subset of non-zero columns, and a PE's work for it is the sum of its entries
in those columns, so PEs holding uneven shares of the columns drift apart input by input (with random rows the
busiest of 64 PEs sits about two standard deviations, 2-4%, above the mean). Rows are therefore dealt to even
out every column over the PEs as well as the totals. Padding depends on which rows land together and in which
order, so each PE's local rows are ordered to need less of it, and the totals are evened out on the real
encodings, not estimated per row.

A row is the smallest unit a placement moves, and with few rows per PE (1,000 rows on 64 PEs: 15 or 16 each)
dealing cannot even out thousands of columns: the busiest PE stays about 3% above the mean input by input.
Pairs go below a row: where `can_pair` allows, rows are dealt to pairs of PEs and the encoder splits each of a
pair's columns between its two PEs (`eie.sw.encode`), so a pair's work for any input splits evenly.
"""

import numpy as np

from eie.errors import EieError
from eie.sw.encode import check_paired, encode_layer, fits_pairs, paired_rows

__all__ = ["PLACEMENTS", "column_weights", "balanced_order", "can_pair", "expected_work", "is_identity",
           "place_layers", "placement_load"]

PLACEMENTS = ("interleaved", "balanced")


def column_weights(inputs, cols, what="calibration"):
    """Fraction of samples in which each input is non-zero, from (samples, cols) activations."""
    a = np.asarray(inputs)
    a = a.reshape(1, -1) if a.ndim == 1 else a
    if a.ndim != 2 or a.shape[1] != cols or not len(a):
        raise EieError(f"{what}: expected samples x {cols} inputs, got shape {np.asarray(inputs).shape}")
    return (a != 0).mean(axis=0)


def expected_work(w_index, order, config, weights=None, paired=False):
    """(pes,) expected entries each PE reads per input (padding included) with rows placed by `order`,
    from the real encoding; `weights`: per column, the chance its input is non-zero (default 1)."""
    w = np.asarray(w_index)
    counts = encode_layer(w if order is None else w[order], config, paired=paired).counts
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

    def entries(self, rows):
        """(local row, column) of the entries of one PE holding `rows` as its local rows 0, 1, ..., row by row."""
        rows = np.asarray(rows, np.int64)   # a PE may hold no rows
        lens = self.rowptr[rows + 1] - self.rowptr[rows]
        starts = np.repeat(self.rowptr[rows] - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
        return np.repeat(np.arange(len(rows)), lens), self.col[starts + np.arange(lens.sum())]

    def __call__(self, rows):
        """Expected work of one PE holding `rows` as its local rows 0, 1, ..."""
        local, col = self.entries(rows)
        # gathered row by row, so a stable sort by column keeps local rows ascending (radix sort on 16 bits)
        order = np.argsort(col.astype(np.uint16) if self.cols <= 1 << 16 else col, kind="stable")
        col, local = col[order], local[order]
        prev = np.full_like(local, -1)
        prev[1:] = np.where(col[1:] == col[:-1], local[:-1], -1)
        width = (local - prev - 1) // self.span + 1       # one entry plus its padding
        return float((self.weights[col] * width).sum())


def balanced_order(w_index, config, weights=None, max_swaps=None, tolerance=1e-3, paired=False):
    """An `order` (see the module) that balances the PEs' work per column and in total; interleaving's own order
    (the identity) when balancing finds nothing better, so the busiest PE never does more than interleaving's.

    Rows are dealt by `_deal`, each PE's local rows ordered by `_local_order`; then, while it helps, a row of
    the busiest PE is swapped with one of a lighter PE, each swap judged on the two PEs' real encodings, until
    the busiest PE is within `tolerance` of the mean (below the noise of any one input) or `max_swaps`
    (default 4 per PE) are spent. `paired` (see `can_pair`): the rows are dealt in the same way to the pairs of
    PEs, which hold the rows interleaving would give one PE of pes/2 (`eie.sw.encode`)."""
    w = np.asarray(w_index)
    rows, pes = w.shape[0], config.pes
    weights = np.ones(w.shape[1]) if weights is None else np.asarray(weights, np.float64)
    loads = _Loads(w, config, weights)
    identity = np.arange(rows)
    base = max(loads(identity[k::pes]) for k in range(pes))
    # PE (or pair) k holds len(range(k, rows, n)) rows, as interleaving's positions give it
    n = pes // 2 if paired else pes
    need = np.array([len(range(k, rows, n)) for k in range(n)])
    held = [_local_order(h, loads) for h in _deal(loads, need)]
    work = np.array([loads(h) for h in held])
    for _ in range(4 * n if max_swaps is None else max_swaps):
        a = int(np.argmax(work))
        if work[a] <= work.mean() * (1 + tolerance) or not _improve(a, held, work, loads):
            break
    order = np.empty(rows, np.int64)
    for k, h in enumerate(held):
        order[k::n] = h
    busiest = expected_work(w, order, config, weights, True).max() if paired else work.max()
    return order if busiest < base else identity


def can_pair(rows, config):
    """Whether a layer of `rows` rows is placed paired (`eie.sw.encode`): its PEs' local rows, their partners'
    included, fit the accumulators and span no more than one relative index reaches, so pairing can add no
    padding while it splits every column's work evenly within each pair."""
    return fits_pairs(rows, config) and paired_rows(rows, config) <= config.max_zero_run + 1


def _deal(loads, need):
    """Rows for each PE (PE k gets need[k]), dealt heaviest first, each to the PE with room that holds the
    least (weighted) of the row's columns so far: every column ends spread evenly over the PEs, so their work
    for any subset of non-zero inputs stays close, not only on average. A second term steers rows away from PEs
    whose projected total (held so far plus their free rows at the mean weight still to deal) is above the
    mean; divided by the (weighted) number of columns, it is on the scale the first term gives a PE's total."""
    pes, weights, rw = len(need), loads.weights, loads.row_weight
    columns = float(weights.sum()) or 1.0
    count = np.zeros((loads.cols, pes))   # entries of each column dealt to each PE
    total = np.zeros(pes)
    free = need.astype(np.float64)
    held = [[] for _ in range(pes)]
    left, left_rows = float(rw.sum()), len(rw)
    for r in np.argsort(-rw, kind="stable"):
        c = loads.col[loads.rowptr[r]:loads.rowptr[r + 1]]
        projected = total + free * (left / left_rows)
        cost = weights[c] @ count[c] + rw[r] * (projected - projected.mean()) / columns
        cost[free == 0] = np.inf
        k = int(np.argmin(cost))
        held[k].append(r)
        count[c, k] += 1
        total[k] += rw[r]
        free[k] -= 1
        left -= rw[r]
        left_rows -= 1
    return [np.asarray(h, np.int64) for h in held]


def _local_order(rows, loads, urgency=1.3):
    """One PE's `rows` in a local order that needs less padding. A column needs a padding entry once `span`
    local rows pass without one of its entries, so rows are taken one at a time, each time the row whose
    entries serve best the columns nearest to that: a column counts (its weight) x urgency ** -(local rows it
    has left). On EIE's layers this cuts the padding of their rows by 3-32% at 4-bit indices, 7-92% at 5-bit
    (most where a PE holds many rows per column); 2^-s or 1/(1+s) leave within 0.4% as many entries.

    How near a column is depends only on its phase (local row of its latest entry, mod `span`), so each row
    keeps its columns' weight per phase and a step costs the entries of the columns just served."""
    n, span = len(rows), loads.span
    if n < 2:
        return rows
    local, col = loads.entries(rows)
    cols, col = np.unique(col, return_inverse=True)      # the PE's own columns, renumbered
    weight = loads.weights[cols][col]
    by_row = np.searchsorted(local, np.arange(n + 1))
    by_col = np.argsort(col, kind="stable")
    col_ptr = np.searchsorted(col[by_col], np.arange(len(cols) + 1))
    phase = np.full(len(cols), span - 1)                 # no entry yet: as if one at local row -1
    by_phase = np.zeros((n, span))                       # weight of each row's columns by phase
    by_phase[:, span - 1] = np.bincount(local, weights=weight, minlength=n)
    by_slack = urgency ** -np.arange(span, dtype=np.float64)
    taken = np.zeros(n, bool)
    out = np.empty(n, np.int64)
    for t in range(n):
        score = by_phase @ by_slack[(np.arange(span) - t) % span]
        score[taken] = -1
        k = int(np.argmax(score))
        out[t], taken[k] = rows[k], True
        served = col[by_row[k]:by_row[k + 1]]
        lens = col_ptr[served + 1] - col_ptr[served]
        e = by_col[np.repeat(col_ptr[served] - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
                   + np.arange(lens.sum())]                # every entry of the served columns
        np.add.at(by_phase, (local[e], phase[col[e]]), -weight[e])
        np.add.at(by_phase, (local[e], t % span), weight[e])
        phase[served] = t % span
    return out


def _improve(a, held, work, loads, tries=8):
    """Swap one row of PE `a` with one of a lighter PE (each taking the other's local row) so that both end
    below `a`'s work; True if done."""
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
            na, nb = ra.copy(), rb.copy()
            na[i], nb[j] = rb[j], ra[i]
            wa, wb = loads(na), loads(nb)
            if max(wa, wb) < work[a]:
                held[a], held[b], work[a], work[b] = na, nb, wa, wb
                return True
    return False


def place_layers(layers, config, placement="interleaved", calibration=None, pairs=None):
    """(layers as the chip holds them, order per layer or None for interleaving's, paired per layer) for a
    checked chain.

    With "balanced", each layer's rows are placed by `balanced_order`, paired where `can_pair` allows and
    pairing beats interleaving, and the next layer's columns follow that order; `calibration` (int inputs of
    the first layer, samples x cols) weighs each layer's columns by how often its input, as the reference
    computes it, is non-zero. `pairs`: None pairs the layers `can_pair` allows under "balanced" (none under
    "interleaved"), True pairs every layer, False none; or one of these per layer."""
    from dataclasses import replace
    from eie.sw.reference import check_activations, forward
    if placement not in PLACEMENTS:
        raise EieError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
    if calibration is not None and placement != "balanced":
        raise EieError("calibration inputs only guide placement='balanced'; drop them or ask for 'balanced'")
    asked = [pairs] * len(layers) if pairs is None or isinstance(pairs, bool) else list(pairs)
    if len(asked) != len(layers):
        raise EieError(f"pairs: one per layer ({len(layers)}), not {len(asked)}")
    for l, (layer, paired) in enumerate(zip(layers, asked)):
        if paired:
            check_paired(layer.rows, config, f"layer {l}")
    if placement == "interleaved":
        return list(layers), [None] * len(layers), [bool(paired) for paired in asked]
    inputs = None
    if calibration is not None:
        x = check_activations(calibration, layers[0].cols, config, "calibration inputs")
        inputs = [x] + forward(layers, x, config)[:-1]
    placed, orders, paired_layers, prev = [], [], [], None
    for l, layer in enumerate(layers):
        w = layer.w_index if prev is None else layer.w_index[:, prev]
        weights = None if inputs is None else column_weights(inputs[l], layer.cols)
        if weights is not None and prev is not None:
            weights = weights[prev]
        paired = can_pair(layer.rows, config) if asked[l] is None else asked[l]
        order = balanced_order(w, config, weights, paired=paired)
        if paired and asked[l] is None and is_identity(order):
            paired, order = False, balanced_order(w, config, weights)
        order = None if is_identity(order) else order
        if order is not None:
            layer = replace(layer, w_index=w[order], bias=layer.bias[order])
        elif prev is not None:
            layer = replace(layer, w_index=w)
        placed.append(layer)
        orders.append(order)
        paired_layers.append(paired)
        prev = order
    return placed, orders, paired_layers


def placement_load(layers: list, inputs: list, config, samples: int = 20, images: int = 1000,
                   interleaved: "list | None" = None) -> dict:
    """How evenly a network's work falls on the PEs under each placement: {placement: {"busiest_over_mean": per
    layer, the busiest PE's work over the mean PE's (padding included, averaged over the first `images` inputs),
    "network": the same summed over the layers, "cycles_per_image": the performance model's cycles on the first
    `samples` inputs}} for "interleaved" and "balanced" (rows only: matrix-only `balanced_order`, no pairing, no
    calibration). `layers`: QuantLayers of the chain (only which weights are non-zero matters); `inputs`: each
    layer's input activations in the model's order (samples x cols, only which are non-zero matters);
    `interleaved`: the interleaved layers' `LayerPerf`s on `inputs` where the caller has them (a layer that
    balanced placement leaves as it is reuses them too). This is what says whether a structured pattern such as
    N:M balances the PEs better than placement does."""
    from eie.sw.perf import layer_perf
    n = min(images, len(inputs[0]))
    out = {"images": n}
    for placement in PLACEMENTS:
        placed, orders, _ = place_layers(layers, config, placement, pairs=False)
        busiest, mean, cycles, prev = [], [], 0.0, None
        for l, (q, x) in enumerate(zip(placed, inputs)):
            if interleaved is not None and orders[l] is None and prev is None:
                perf, m = interleaved[l], samples          # the layer as interleaving holds it
            else:
                x = np.asarray(x)[:n]
                perf = layer_perf(encode_layer(q.w_index, config), x if prev is None else x[:, prev], config,
                                  model_samples=samples, last=l == len(placed) - 1)
                m = len(perf.model_cycles)
            busiest.append(float(perf.work[:n].max(axis=1).mean()))
            mean.append(float(perf.work[:n].mean(axis=1).mean()))
            cycles += float(perf.model_cycles[:m].mean())
            prev = orders[l]
        out[placement] = {"busiest_over_mean": [round(b / max(m, 1e-300), 4) for b, m in zip(busiest, mean)],
                          "network": round(sum(busiest) / max(sum(mean), 1e-300), 4),
                          "cycles_per_image": round(cycles, 1)}
    return out
