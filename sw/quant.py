"""Fixed point: turn a weight-shared float layer into the integers the chip computes with.

A value x with ``frac`` fraction bits is stored as ``floor(x * 2**frac + 1/2)`` saturated to the width
(round half-up, like the chip's output rounding). A layer maps activations with ``in_frac`` to outputs with
``out_frac`` through codebook values with ``w_frac``: ``shift = in_frac + w_frac - out_frac``.
"""

from dataclasses import dataclass

import numpy as np

from eie.errors import EieError
from eie.sw.encode import INDEX_DTYPE, check_index_matrix

__all__ = ["QuantLayer", "to_fixed", "from_fixed", "frac_for", "quantize_layer", "quantize_network",
           "linear_codebook", "layer_from_matrix"]


def to_fixed(x, frac, bits):
    """Round half-up to `frac` fraction bits and saturate to signed `bits`."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return np.clip(np.floor(np.asarray(x, np.float64) * 2.0 ** frac + 0.5), lo, hi).astype(np.int64)


def from_fixed(q, frac):
    return np.asarray(q, np.float64) / 2.0 ** frac


def frac_for(max_abs, bits, max_frac=None):
    """Most fraction bits (at most `max_frac`, default 2 * bits) that keep `max_abs` inside signed `bits`."""
    max_frac = 2 * bits if max_frac is None else max_frac
    if not np.isfinite(max_abs):
        raise EieError(f"cannot choose a fixed-point scale for a non-finite value ({max_abs})")
    if max_abs <= 0:
        return max_frac
    top = (1 << (bits - 1)) - 1
    fits = lambda f: np.floor(max_abs * 2.0 ** f + 0.5) <= top
    frac = min(max_frac, bits - 1 - int(np.ceil(np.log2(max_abs))))
    while frac < max_frac and fits(frac + 1):
        frac += 1
    while not fits(frac):
        frac -= 1
    return frac


@dataclass
class QuantLayer:
    """One fully connected layer as the chip runs it: y = ReLU?(sat(round(((bias << shift) + W a) >> shift)))."""
    w_index: np.ndarray   # rows x cols codebook indices, 0 = pruned
    codebook: np.ndarray  # codebook_size signed values, entry 0 == 0
    bias: np.ndarray      # rows, activation format at the output scale
    shift: int
    relu: bool
    in_frac: int = 0
    w_frac: int = 0
    out_frac: int = 0

    @property
    def rows(self):
        return self.w_index.shape[0]

    @property
    def cols(self):
        return self.w_index.shape[1]

    def check(self, config, what="layer"):
        """Raise EieError unless this layer fits `config`'s arithmetic and dimensions."""
        self.w_index = check_index_matrix(self.w_index, config, what, layout=False)
        cb = np.asarray(self.codebook)
        if cb.shape != (config.codebook_size,) or not np.issubdtype(cb.dtype, np.integer):
            raise EieError(f"{what}: codebook must be {config.codebook_size} integers, got {cb.dtype} {cb.shape}")
        if cb[0] != 0:
            raise EieError(f"{what}: codebook entry 0 is reserved for zero, got {cb[0]}")
        wlo, whi = -(1 << (config.weight_bits - 1)), (1 << (config.weight_bits - 1)) - 1
        if cb.min() < wlo or cb.max() > whi:
            raise EieError(f"{what}: codebook values exceed {config.weight_bits}-bit range {wlo}..{whi}")
        b = np.asarray(self.bias)
        if b.shape != (self.rows,) or not np.issubdtype(b.dtype, np.integer):
            raise EieError(f"{what}: bias must be {self.rows} integers, got {b.dtype} {b.shape}")
        if b.size and (b.min() < config.act_min or b.max() > config.act_max):
            raise EieError(f"{what}: bias exceeds the {config.act_bits}-bit activation range")
        if not isinstance(self.shift, (int, np.integer)) or not 0 <= self.shift < config.acc_bits - config.act_bits:
            raise EieError(f"{what}: shift must be an integer in 0..{config.acc_bits - config.act_bits - 1}, "
                           f"got {self.shift}")
        self.codebook, self.bias, self.shift = cb.astype(np.int64), b.astype(np.int64), int(self.shift)
        self.relu = bool(self.relu)
        return self


def quantize_layer(w_index, centroids, bias, relu, in_frac, out_frac, config):
    """Fixed-point layer from a float codebook (`centroids`, entry 0 must be 0) and float bias."""
    centroids = np.asarray(centroids, np.float64)
    if len(centroids) != config.codebook_size:
        raise EieError(f"need {config.codebook_size} centroids for weight_index_bits={config.weight_index_bits}, "
                       f"got {len(centroids)}")
    w_frac = frac_for(np.abs(centroids).max(), config.weight_bits)
    # A negative shift would need a left shift the chip does not have: give up weight precision instead.
    w_frac = max(w_frac, out_frac - in_frac)
    shift = in_frac + w_frac - out_frac
    limit = config.acc_bits - config.act_bits - 1
    if shift > limit:
        w_frac -= shift - limit
        shift = limit
    codebook = to_fixed(centroids, w_frac, config.weight_bits)
    codebook[0] = 0
    return QuantLayer(np.asarray(w_index), codebook, to_fixed(bias, out_frac, config.act_bits),
                      shift, relu, in_frac, w_frac, out_frac)


def quantize_network(layers, calib_x, config, in_frac=None, headroom=1.0):
    """Quantize a chain of weight-shared layers.

    `layers`: sequence of (w_index, centroids, bias, relu) in float; `calib_x`: (n, cols) float inputs used to
    pick each layer's output scale from its largest observed activation (times `headroom`).
    """
    x = np.asarray(calib_x, np.float64)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise EieError("calibration inputs must be a finite 2-D array (samples x features)")
    frac = frac_for(np.abs(x).max(), config.act_bits) if in_frac is None else in_frac
    out = []
    for n, (w_index, centroids, bias, relu) in enumerate(layers):
        w = np.asarray(centroids, np.float64)[np.asarray(w_index)]
        x = x @ w.T + np.asarray(bias, np.float64)
        if relu:
            x = np.maximum(x, 0)
        out_frac = frac_for(np.abs(x).max() * headroom, config.act_bits)
        q = quantize_layer(w_index, centroids, bias, relu, frac, out_frac, config)
        out.append(q.check(config, f"layer {n}"))
        frac = out_frac
    return out


def _nearest_levels(values, codebook_size):
    """(index 1.., levels) for non-zero float `values`: the nearest of codebook_size - 1 levels spread
    linearly over their range, the first such level on a tie (as an argmin over every level picks)."""
    values = np.asarray(values, np.float64)
    if not values.size:
        return np.zeros(0, np.int64), np.zeros(codebook_size - 1)
    levels = np.linspace(values.min(), values.max(), codebook_size - 1)
    # Levels spaced by less than an ulp repeat but never skip a value, so a tie is only ever between the
    # last level below and the first one at or above: no argmin over every level is needed.
    hi = np.minimum(np.searchsorted(levels, values), len(levels) - 1).astype(np.uint8)   # first level >= value
    lo = np.maximum(hi, 1) - 1
    take_lo = np.abs(values - levels[lo]) <= np.abs(values - levels[hi])
    return np.where(take_lo, lo, hi) + 1, levels


def _dense_index(shape, row, col, index):
    w_index = np.zeros(shape, INDEX_DTYPE)
    w_index[row, col] = index
    return w_index


def linear_codebook(w, codebook_size):
    """(w_index, centroids): zeros stay zero; other weights go to the nearest of codebook_size - 1 levels
    spread linearly over their range (Deep Compression's linear initialization, without k-means)."""
    w = np.asarray(w)
    row, col = np.nonzero(w)
    index, levels = _nearest_levels(w[row, col], codebook_size)
    return _dense_index(w.shape, row, col, index), np.concatenate([[0.0], levels])


def layer_from_matrix(w, x, config, relu=False):
    """A QuantLayer and int input for a user's matrix and vector, with no bias.

    Integer weights with at most codebook_size - 1 distinct non-zero values become the codebook exactly;
    other weights share a linear codebook. Integer inputs are used as they are; float inputs get the
    fixed-point scale that fits their largest magnitude. The output scale fits the largest exact output.
    Only the non-zero weights are ever copied, so a large sparse matrix costs little more than itself.
    """
    w, x = np.asarray(w), np.asarray(x)
    row, col = (a.astype(np.int32) for a in np.nonzero(w))   # int32: half of numpy's index memory
    nz = w[row, col]
    values = np.unique(nz)
    if np.issubdtype(w.dtype, np.integer) and len(values) < config.codebook_size:
        centroids = np.concatenate([[0], values, np.zeros(config.codebook_size - 1 - len(values))])
        index = np.searchsorted(values, nz) + 1
    else:
        index, levels = _nearest_levels(nz, config.codebook_size)
        centroids = np.concatenate([[0.0], levels])
    del nz
    w_index = _dense_index(w.shape, row, col, index)
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < config.act_min or x.max() > config.act_max):
            raise EieError(f"integer input exceeds the {config.act_bits}-bit range {config.act_min}..{config.act_max}")
        in_frac, x_int = 0, x.astype(np.int64)
    else:
        in_frac = frac_for(np.abs(x).max(initial=0), config.act_bits)
        x_int = to_fixed(x, in_frac, config.act_bits)
    products = np.asarray(centroids, np.float64)[index] * from_fixed(x_int, in_frac)[col]
    y = np.bincount(row, weights=products, minlength=len(w))
    y = np.maximum(y, 0) if relu else y
    out_frac = min(frac_for(np.abs(y).max(initial=0), config.act_bits), in_frac + 2 * config.weight_bits)
    layer = quantize_layer(w_index, centroids, np.zeros(len(w)), relu, in_frac, out_frac, config)
    return layer.check(config), x_int
