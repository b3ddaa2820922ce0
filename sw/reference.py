"""The chip's arithmetic in numpy: the definition of bit-exact (contract in `eie.config`)."""

import numpy as np

from eie.errors import EieError

__all__ = ["wrap", "requantize", "weight_matrix", "layer_forward", "forward", "check_activations"]


def wrap(x, bits):
    """Two's complement wrap of int64 values to `bits`."""
    if bits >= 64:
        return x
    half = 1 << (bits - 1)
    return ((x + half) & ((1 << bits) - 1)) - half


def requantize(acc, shift, relu, config):
    """Accumulator -> activation: round half-up by `shift`, saturate, optional ReLU."""
    y = (acc + (1 << (shift - 1))) >> shift if shift else acc
    y = np.clip(y, config.act_min, config.act_max)
    return np.maximum(y, 0) if relu else y


def check_activations(x, cols, config, what="input"):
    """Integer activations of the right length and range, as a (batch, cols) int64 array."""
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.integer):
        raise EieError(f"{what}: activations must be integers (quantize them first), got dtype {a.dtype}")
    a = a.reshape(1, -1) if a.ndim == 1 else a
    if a.ndim != 2 or a.shape[1] != cols:
        raise EieError(f"{what}: expected {cols} activations per sample, got shape {np.asarray(x).shape}")
    if a.size and (a.min() < config.act_min or a.max() > config.act_max):
        raise EieError(f"{what}: activations exceed the {config.act_bits}-bit range "
                       f"{config.act_min}..{config.act_max}")
    return a.astype(np.int64)


def weight_matrix(layer):
    """The layer's codebook values as a sparse (CSR) int64 matrix: memory follows the weights kept."""
    from scipy.sparse import csr_array
    row, col = (a.astype(np.int32) for a in np.nonzero(layer.w_index))   # by row, then column: CSR order
    data = np.asarray(layer.codebook, np.int64)[layer.w_index[row, col]]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=layer.rows))]).astype(np.int64)
    return csr_array((data, col, indptr), shape=(layer.rows, layer.cols))


def layer_forward(layer, a, config):
    """(batch, cols) int activations -> (batch, rows) int outputs of one QuantLayer.

    Integer sparse products are exact; int64 wraps modulo 2**64 like the `acc_bits` <= 64 accumulator."""
    acc = (layer.bias.astype(np.int64) << layer.shift)[None, :] + (weight_matrix(layer) @ a.T).T
    return requantize(wrap(acc, config.acc_bits), layer.shift, layer.relu, config)


def forward(layers, x, config):
    """Outputs of every layer for int inputs `x` ((batch, cols) or (cols,)); returns a list."""
    a = check_activations(x, layers[0].cols, config)
    outs = []
    for layer in layers:
        a = layer_forward(layer, a, config)
        outs.append(a)
    return outs
