"""The chip's arithmetic in numpy: the definition of bit-exact (contract in `eie.config`)."""

import numpy as np

from eie.errors import EieError

__all__ = ["wrap", "requantize", "weight_matrix", "layer_forward", "forward", "check_activations", "LUT_STEP_BITS",
           "LUT_RANGE", "ACTIVATIONS", "state_frac", "activation_table", "pwl", "lstm_cell", "lstm_steps",
           "lstm_forward"]


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


# -- the host's share of an LSTM (EIE's NT-LSTM layer): the chip computes each step's gate pre-activations as one
# sparse mat-vec of [W_x W_h] over [x_t, h_{t-1}]; sigmoid, tanh and the cell update below run on the host in
# the same fixed point (16-bit values, rounding half-up, saturation), once for the reference and the chip driver.

LUT_STEP_BITS = 4     # the tables' knots lie every 2**-4 = 1/16 ...
LUT_RANGE = 8         # ... over [-8, 8]; beyond, the end knots hold (both functions are flat there to 3e-4)
ACTIVATIONS = {"sigmoid": lambda x: 0.5 + 0.5 * np.tanh(0.5 * x), "tanh": np.tanh}   # no overflow in exp


def state_frac(config):
    """Fraction bits of every value in [-1, 1] the host keeps (gates, h, and the pixels fed with h): 1.0 fits."""
    return config.act_bits - 2


def activation_table(name, config):
    """The knots of `name` ("sigmoid" or "tanh") at `state_frac`: 2 * LUT_RANGE * 2**LUT_STEP_BITS + 1 values,
    knot j at x = -LUT_RANGE + j / 2**LUT_STEP_BITS. A host's small ROM, as ESE's piecewise-linear units."""
    if name not in ACTIVATIONS:
        raise EieError(f"no activation table {name!r}: the host has {', '.join(ACTIVATIONS)}")
    x = np.arange(-LUT_RANGE << LUT_STEP_BITS, (LUT_RANGE << LUT_STEP_BITS) + 1) / 2.0 ** LUT_STEP_BITS
    frac = state_frac(config)
    return np.clip(np.floor(ACTIVATIONS[name](x) * 2.0 ** frac + 0.5), config.act_min, config.act_max).astype(np.int64)


def pwl(x, frac, table, config):
    """Piecewise-linear interpolation of `table` (knots as `activation_table` gives them) at integers `x` with
    `frac` fraction bits, in integers: knot index by an arithmetic shift, the remainder's share of the step to
    the next knot rounded half-up; saturated at the end knots."""
    x = np.asarray(x, np.int64)
    d = frac - LUT_STEP_BITS      # bits of x below one step
    if d > 0:
        seg, rem = x >> d, x & ((1 << d) - 1)
    else:
        seg, rem, d = x << -d, np.zeros_like(x), 0
    j = seg + (LUT_RANGE << LUT_STEP_BITS)
    last = len(table) - 1
    inside = (j >= 0) & (j < last)
    jc = np.clip(j, 0, last - 1)
    step = table[jc + 1] - table[jc]
    y = table[jc] + (((step * rem + (1 << (d - 1))) >> d) if d else 0)
    y = np.where(inside, y, np.where(j < 0, table[0], table[last]))
    return np.clip(y, config.act_min, config.act_max)


def lstm_cell(z, c, z_frac, c_frac, config, tables=None):
    """One LSTM step on the host from the gate pre-activations `z` ((batch, 4H) ints at `z_frac`, gates in
    nn.LSTM's order i, f, g, o) and the cell `c` ((batch, H) at `c_frac`): returns (h, c), h at `state_frac`.

    i, f, o = sigmoid, g = tanh (tables at `state_frac` S); c' = f c + i g as one sum at 2S fraction bits,
    rounded half-up to `c_frac` and saturated to 16 bits (one rounding); h = o tanh(c') rounded to S.
    `tables`: {"sigmoid": knots, "tanh": knots}, default `activation_table`'s."""
    tables = tables or {n: activation_table(n, config) for n in ACTIVATIONS}
    s = state_frac(config)
    if not 0 <= c_frac <= s:
        raise EieError(f"the cell's fraction bits must lie in 0..{s}, not {c_frac}")
    z = np.asarray(z, np.int64)
    i, f, g, o = np.split(z, 4, axis=1)
    sig = lambda v: pwl(v, z_frac, tables["sigmoid"], config)
    i, f, o, g = sig(i), sig(f), sig(o), pwl(g, z_frac, tables["tanh"], config)
    acc = ((f * np.asarray(c, np.int64)) << (s - c_frac)) + i * g             # at 2S fraction bits
    c = requantize(acc, 2 * s - c_frac, False, config)
    h = requantize(o * pwl(c, c_frac, tables["tanh"], config), s, False, config)
    return h, c


def lstm_steps(gates, x, c_frac, config, tables=None):
    """The recurrence, one step at a time: yields (z_t, h_t) for `x` ((batch, steps, F) ints at `state_frac`),
    z_t = the chip's output [W_x W_h] [x_t, h_{t-1}] + b (`gates`: the QuantLayer of 4H rows in the model's row
    order, F + H columns), h_t = `lstm_cell`'s. A generator, so a long run keeps one step in memory."""
    x = np.asarray(x, np.int64)
    n, steps, _ = x.shape
    hidden = gates.rows // 4
    h, c = np.zeros((n, hidden), np.int64), np.zeros((n, hidden), np.int64)
    tables = tables or {name: activation_table(name, config) for name in ACTIVATIONS}
    for t in range(steps):
        z = layer_forward(gates, np.concatenate([x[:, t], h], axis=1), config)
        h, c = lstm_cell(z, c, gates.out_frac, c_frac, config, tables)
        yield z, h


def lstm_forward(gates, head, x, c_frac, config, keep=False):
    """The LSTM classifier as chip and host compute it: the head's outputs (batch, classes) on h_T (`head`: a
    QuantLayer at input scale `state_frac`); with `keep`, also every step's z (batch, steps, 4H) and h."""
    zs, hs, h = [], [], None
    for z, h in lstm_steps(gates, x, c_frac, config):
        if keep:
            zs.append(z)
            hs.append(h)
    logits = layer_forward(head, h, config)
    return (logits, np.stack(zs, 1), np.stack(hs, 1)) if keep else logits
