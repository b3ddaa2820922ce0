"""EIE's interleaved CSC encoding of one layer, and what it costs in bits.

Row ``i`` belongs to PE ``i % pes`` (local row ``i // pes``); another placement permutes the rows before they
get here (`eie.sw.placement`). In a *paired* layer, PEs ``g`` and ``g + pes/2`` share their rows, which are
then the rows interleaving would give one PE of ``pes/2`` (row ``i`` -> pair ``i % (pes/2)``, its ``t``-th row
``t = i // (pes/2)``, owned by PE ``g`` for even ``t`` and ``g + pes/2`` for odd, as its local row ``t // 2``).
Each column's entries of a pair's rows are dealt alternately to its two PEs, so a column's work splits evenly
between them whatever the input. A PE keeps its own local row ``s`` in accumulator ``2s`` and its partial sum
of its partner's row ``s`` in accumulator ``2s + 1`` (the pair's row ``t`` is accumulator ``t`` of PE ``g`` and
``t ^ 1`` of PE ``g + pes/2``); the output pass adds the partner's to its own (`eie.hw.pe`).
Each PE stores its local rows column by column
as entries ``(v, z)``: ``v`` indexes the layer's codebook (0 is reserved for zero / padding) and ``z`` counts
the zeros skipped since the previous entry of the column. A run of more than ``max_zero_run`` zeros needs a
padding entry ``(0, max_zero_run)``, which stands for one more zero itself. ``counts[j]`` is the number of
entries (padding included) of column ``j``; EIE's pointers are their prefix sums.
"""

from dataclasses import dataclass

import numpy as np

from eie.config import ChipConfig
from eie.errors import EieError

__all__ = ["PeSlice", "EncodedLayer", "encode_layer", "decode_layer", "entry_positions", "storage_bits",
           "check_index_matrix", "check_paired", "fits_pairs", "paired_rows",
           "INDEX_DTYPE"]


@dataclass(frozen=True)
class PeSlice:
    """One PE's share of a layer."""
    v: np.ndarray        # weight index per entry, 0 = padding
    z: np.ndarray        # zeros skipped before each entry
    counts: np.ndarray   # entries per column, padding included

    @property
    def pointers(self):
        """EIE's column pointers p_0..p_cols (column j spans entries p_j..p_{j+1}-1)."""
        return np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)

    @property
    def n_entries(self):
        return len(self.v)

    @property
    def n_padding(self):
        return int(np.count_nonzero(self.v == 0))


@dataclass(frozen=True)
class EncodedLayer:
    rows: int
    cols: int
    pes: tuple  # of PeSlice, one per PE
    paired: bool = False   # PEs g and g + pes/2 share their rows (see the module)

    @property
    def counts(self):
        """(pes, cols) entries per column per PE."""
        return np.stack([pe.counts for pe in self.pes])


# weight_index_bits <= 8 (ChipConfig's range): a codebook index fits a byte, so a dense index matrix costs a
# quarter of the float32 matrix it came from instead of twice it.
INDEX_DTYPE = np.uint8


def check_index_matrix(w_index, config, what="layer", layout=True):
    """A 2-D integer matrix of codebook indices that fits the chip's index width (and, with `layout`, its
    activation register files), as `INDEX_DTYPE` (no copy when it already is)."""
    w = np.asarray(w_index)
    if w.ndim != 2:
        raise EieError(f"{what}: weight-index matrix must be 2-D (rows x cols), got shape {w.shape}")
    if not np.issubdtype(w.dtype, np.integer):
        raise EieError(f"{what}: weight-index matrix must be integer codebook indices, got dtype {w.dtype}")
    if w.size and (w.min() < 0 or w.max() >= config.codebook_size):
        raise EieError(f"{what}: codebook indices must lie in 0..{config.codebook_size - 1} "
                       f"(weight_index_bits={config.weight_index_bits}), got {w.min()}..{w.max()}")
    rows, cols = w.shape
    if rows == 0 or cols == 0:
        raise EieError(f"{what}: empty matrix {w.shape}")
    if layout and (rows > config.max_dim or cols > config.max_dim):
        raise EieError(f"{what}: {rows}x{cols} exceeds this chip's {config.max_dim} rows/columns "
                       f"(act_depth {config.act_depth} x {config.pes} PEs): use more PEs or a larger act_depth")
    return w.astype(INDEX_DTYPE, copy=False)


def paired_rows(rows, config):
    """Accumulators each PE needs for a paired layer of `rows` rows: its own rows and its partner's."""
    return 2 * -(-rows // config.pes)


def fits_pairs(rows, config):
    """Whether a layer of `rows` rows can be paired on `config`'s chip (`check_paired` says why not)."""
    return config.pes % 2 == 0 and paired_rows(rows, config) <= config.act_depth


def check_paired(rows, config, what="layer"):
    """Raise unless a layer of `rows` rows can be paired on `config`'s chip."""
    if config.pes % 2:
        raise EieError(f"{what}: pairing PEs needs an even number of PEs, not {config.pes}; place it unpaired")
    if not fits_pairs(rows, config):
        raise EieError(f"{what}: paired, {rows} rows need {paired_rows(rows, config)} accumulators per PE but "
                       f"the chip has {config.act_depth}: place it unpaired or use a larger act_depth")


def _pair_split(row, col, n_pes):
    """(PE, accumulator) of each non-zero (row, col) of a paired layer, the columns dealt as the module says: in
    the order of the pair's rows, alternately to its two PEs; the k-th column of a pair with an odd number of
    entries gives its extra one to the pair's first PE for even k, its second for odd."""
    half = n_pes // 2
    pair, t = row % half, row // half
    if not len(row):
        return pair, t
    order = np.lexsort((t, col, pair))
    p, c = pair[order], col[order]
    start = np.flatnonzero(np.r_[True, (p[1:] != p[:-1]) | (c[1:] != c[:-1])])   # each (pair, column) run
    lens = np.diff(np.r_[start, len(order)])
    rank = np.arange(len(order)) - np.repeat(start, lens)
    odd = lens & 1
    before = np.cumsum(odd) - odd                        # odd columns before this one, over all pairs
    new_pair = np.r_[True, p[start][1:] != p[start][:-1]]
    turn = (before - np.maximum.accumulate(np.where(new_pair, before, 0))) & 1
    second = np.empty_like(row)
    second[order] = (rank + np.repeat(turn, lens)) & 1
    return pair + half * second, t ^ second


def encode_layer(w_index, config, what="layer", paired=False):
    """Encode a rows x cols matrix of codebook indices for `config`'s PEs; `paired`: see the module.

    Works on the non-zeros only (one sort by PE and column), so time and memory follow the weights kept,
    not the matrix's area."""
    if not isinstance(config, ChipConfig):
        raise TypeError(f"config must be a ChipConfig, not {type(config).__name__}")
    w = check_index_matrix(w_index, config, what)
    rows, cols = w.shape
    n_pes = config.pes
    if paired:
        check_paired(rows, config, what)
    # int32 positions (a layer has at most 64 x 65536 rows and columns): half the memory of numpy's indices
    row, col = (a.astype(np.int32) for a in np.nonzero(w))   # by row, then column
    v = w[row, col]
    if paired:
        pe, local = _pair_split(row, col, n_pes)
        group = pe * cols + col
        order = np.lexsort((local, group))    # by (PE, column), local rows ascending within
    else:
        group = (row % n_pes) * cols + col   # (PE, column)
        local = row // n_pes
        order = np.argsort(group, kind="stable")  # stable: rows stay ascending within a group
    del col, row
    group, local, v = group[order], local[order], v[order]
    del order
    prev = np.full_like(local, -1)           # previous entry's local row in the same column and PE, else -1
    prev[1:] = np.where(group[1:] != group[:-1], -1, local[:-1])
    gap = local - prev - 1
    del prev, local
    pads = gap // (config.max_zero_run + 1)
    width = pads + 1                         # entries this non-zero costs, padding included
    end = np.cumsum(width, dtype=np.int64)
    out_v = np.zeros(int(end[-1]) if len(end) else 0, INDEX_DTYPE)
    out_z = np.full(len(out_v), config.max_zero_run, np.uint8)   # index_bits <= 8
    out_v[end - 1] = v
    out_z[end - 1] = gap - pads * (config.max_zero_run + 1)
    del gap, pads
    counts = np.bincount(group, weights=width, minlength=n_pes * cols).astype(np.int64).reshape(n_pes, cols)
    bounds = np.concatenate([[0], end])[np.searchsorted(group, np.arange(n_pes + 1) * cols)]
    pes = tuple(PeSlice(out_v[bounds[k]:bounds[k + 1]], out_z[bounds[k]:bounds[k + 1]], counts[k])
                for k in range(n_pes))
    worst = int(counts.max(initial=0))
    if worst > config.max_count:
        k, j = np.unravel_index(int(np.argmax(counts)), counts.shape)
        raise EieError(f"{what}: column {j} holds {worst} entries in PE {k} (padding included) but "
                       f"count_bits={config.count_bits} holds at most {config.max_count}: "
                       f"use more PEs or a larger count_bits")
    return EncodedLayer(rows, cols, pes, paired)


def entry_positions(pe, cols):
    """(local row, column) of every entry of a PeSlice, padding included (a padding entry's row is the zero
    it stands for)."""
    col = np.repeat(np.arange(cols), pe.counts)
    ends = np.cumsum(np.asarray(pe.z, np.int64) + 1)
    before = np.concatenate([[0], ends])[pe.pointers[:-1]]   # rows stepped before each column
    return ends - np.repeat(before, pe.counts) - 1, col


def decode_layer(enc, config):
    """Inverse of `encode_layer`: the rows x cols index matrix."""
    w = np.zeros((enc.rows, enc.cols), INDEX_DTYPE)
    for k, pe in enumerate(enc.pes):
        local, col = entry_positions(pe, enc.cols)
        real = np.asarray(pe.v) != 0
        local, col = local[real], col[real]
        # the pair's row t is accumulator t of its first PE, t ^ 1 of its second
        half = config.pes // 2
        row = (local ^ (k >= half)) * half + k % half if enc.paired else local * config.pes + k
        w[row, col] = pe.v[real]
    return w


def storage_bits(enc, config, per_pe=False):
    """Bits by part for the model as stored on `config`'s chip (codebook and bias once per layer).

    `pointers` is this chip's format (a base plus `count_bits` per column, per PE); `eie_pointers` is EIE's
    16-bit pointer per column and PE, for comparison. With `per_pe`, the parts that live in a PE's SRAM
    (weights, indices, padding, pointers) as one dict per PE instead.
    """
    ptr_words = -(-enc.cols // config.cols_per_ptr_word)

    def parts(pes):
        real = sum(pe.n_entries - pe.n_padding for pe in pes)
        pad = sum(pe.n_padding for pe in pes)
        return {"weights": real * config.weight_index_bits, "indices": real * config.index_bits,
                "padding": pad * config.entry_bits, "pointers": len(pes) * ptr_words * config.ptr_word_bits,
                "eie_pointers": len(pes) * (enc.cols + 1) * 16}
    if per_pe:
        return [parts([pe]) for pe in enc.pes]
    return {**parts(enc.pes), "codebook": config.codebook_size * config.weight_bits, "bias": enc.rows * config.act_bits}
