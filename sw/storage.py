"""Storage accounting, in one place: what a compressed model costs in bytes.

Two views of the same encoding (`eie.sw.encode.storage_bits`):

* `storage`: the model's bytes by part (weights, indices, padding, pointers, codebooks, biases, and the host's
  convolutions when it has any) on the smallest chip of a given PE count and index width; per PE with
  ``per_pe=True``. This is what compression ratios are computed from.
* `storage` also gives what the same entries cost Huffman-coded (Deep Compression's third stage) for off-chip
  storage and transfer: part "huffman_entries" in place of weights, indices and padding, and "total_huffman".
* `sram`: what one PE's SRAM holds when a `ChipImage` is loaded (whole memory words, every layer's codebook,
  the PE's biases at the chip's activation depth), against the chip's memories and EIE's 162 KB per PE.
"""

import heapq

import numpy as np

from eie.errors import EieError
from eie.sw.encode import encode_layer, storage_bits
from eie.sw.host import QuantConv
from eie.sw.image import fit_config

__all__ = ["EIE_SRAM_BYTES_PER_PE", "STORAGE_PES", "STORAGE_INDEX_BITS", "NOT_IN_TOTAL", "storage", "storage_bits_by_part", "Storage",
           "PEStorage", "storage_table",
           "sram", "HUFFMAN_WIDTH_BITS", "huffman_lengths", "huffman_codes", "huffman_table_bits", "huffman_encode",
           "huffman_decode", "huffman_bits", "huffman_entry_bits"]

# EIE's SRAM per PE: 128 KB sparse matrix + 32 KB pointers + 2 KB activations.
EIE_SRAM_BYTES_PER_PE = 162 * 1024
# The chips every compressed model's storage is reported for.
STORAGE_PES = (1, 16, 64)
STORAGE_INDEX_BITS = (4, 5)
# Parts that are not summed into "total": EIE's pointers (for comparison; in "total_eie") and the Huffman-coded
# alternative (in "total_huffman").
NOT_IN_TOTAL = ("eie_pointers", "huffman_entries", "total_huffman", "total_eie")


def storage(layers, config, host_ops=(), per_pe=False, placement="interleaved") -> "Storage | PEStorage":
    """Whole bytes by part for QuantLayers `layers` on the smallest chip with `config`'s PE count and widths
    (each part's bits rounded up to a byte). `host_ops`' convolutions count as dense fixed-point weights and
    biases (part "host_convs"). Every part lies inside a total: "total" sums the chip's parts; "eie_pointers"
    (EIE's 16-bit pointer per column and PE, for comparison) is inside "total_eie", the same model with EIE's
    pointers in place of this chip's; "huffman_entries" (the entries, weights, indices and padding,
    Huffman-coded with their tables, `huffman_entry_bits`) is inside "total_huffman", the model as stored or
    sent off-chip. With `per_pe`, a list with the parts each PE's SRAM holds (weights, indices, padding,
    pointers; "total" and "total_eie" of its own). `placement` places the rows as the chip would (it moves
    padding). Both print as a table in a notebook."""
    chip, encoded = _encoded(layers, config, placement)
    if per_pe:
        bits = [dict.fromkeys(("weights", "indices", "padding", "pointers", "eie_pointers"), 0)
                for _ in range(chip.pes)]
        for enc in encoded:
            for pe, parts in zip(bits, storage_bits(enc, chip, per_pe=True)):
                for part, n in parts.items():
                    pe[part] += n
        return PEStorage(_totals({part: _bytes(n) for part, n in pe.items()}) for pe in bits)
    bits = _part_bits(chip, encoded)
    bits["huffman_entries"] = sum(huffman_entry_bits(enc, chip) for enc in encoded)
    convs = [op for op in host_ops if isinstance(op, QuantConv)]
    if convs:
        bits["host_convs"] = sum(op.weight.size * config.weight_bits + op.bias.size * config.act_bits for op in convs)
    parts = _totals({part: _bytes(n) for part, n in bits.items()})
    parts["total_huffman"] = parts["total"] - parts["weights"] - parts["indices"] - parts["padding"] \
        + parts["huffman_entries"]
    return parts


def _encoded(layers, config, placement):
    """The smallest chip of `config`'s PE count and widths for `layers`, and their encodings on it."""
    from eie.sw.placement import place_layers
    chip = fit_config(layers, config, exact=True, placement=placement)
    placed, _, pairs = place_layers(layers, chip, placement)
    return chip, [encode_layer(q.w_index, chip, paired=paired) for q, paired in zip(placed, pairs)]


def _part_bits(chip, encoded) -> dict:
    bits = {}
    for enc in encoded:
        for part, n in storage_bits(enc, chip).items():
            bits[part] = bits.get(part, 0) + n
    return bits


def storage_bits_by_part(layers, config, placement="interleaved") -> dict:
    """The exact bits (not rounded to bytes) of weights, indices, padding, pointers and EIE's pointers that
    `storage` counts, summed over `layers`."""
    return _part_bits(*_encoded(layers, config, placement))


def _bytes(bits) -> int:
    return -(-int(bits) // 8)


def _totals(parts: dict) -> "Storage":
    """`parts` with "total" (the chip's parts) and "total_eie" (EIE's pointers in place of the chip's)."""
    parts = Storage(parts)
    parts["total"] = sum(v for k, v in parts.items() if k not in NOT_IN_TOTAL)
    parts["total_eie"] = parts["total"] - parts["pointers"] + parts["eie_pointers"]
    return parts


def _html_table(head: list, rows: list) -> str:
    cells = lambda tag, values: "".join(f"<{tag}>{v}</{tag}>" for v in values)
    return ("<table><thead><tr>" + cells("th", head) + "</tr></thead><tbody>"
            + "".join("<tr>" + cells("td", row) + "</tr>" for row in rows) + "</tbody></table>")


class Storage(dict):
    """Bytes by part (a dict, as `storage` gives it); a table in a notebook."""

    def _repr_html_(self) -> str:
        return _html_table(["part", "bytes"], [[part, f"{n:,}"] for part, n in self.items()])


class PEStorage(list):
    """Bytes by part per PE (a list of dicts, as `storage(..., per_pe=True)` gives it); a table in a notebook."""

    def _repr_html_(self) -> str:
        head = list(self[0]) if self else []
        return _html_table(["PE", *head], [[pe, *(f"{parts[p]:,}" for p in head)] for pe, parts in enumerate(self)])


def storage_table(layers, config, host_ops=(), pes=STORAGE_PES, index_bits=STORAGE_INDEX_BITS,
                  placement="interleaved"):
    """`storage` for every PE count and index width: {"4-bit": {"1": parts, "16": ...}, "5-bit": ...}; the
    config's own index width is always included."""
    widths = sorted({*index_bits, config.index_bits})
    return {f"{bits}-bit": {str(n): storage(layers, config.replace(pes=n, index_bits=bits), host_ops,
                                            placement=placement) for n in pes} for bits in widths}


def sram(image):
    """The layout view: bytes of SRAM per PE that `image` occupies, and whether that fits."""
    c = image.config
    per_pe = (image.matrix_words_used * c.matrix_word_bits + image.ptr_base.shape[1] * c.ptr_word_bits
              + len(image.layers) * (c.codebook_size * c.weight_bits + c.act_depth * c.act_bits)) / 8
    return {"bytes_per_pe": round(per_pe), "total_bytes": round(per_pe * c.pes),
            "matrix_words_used": image.matrix_words_used, "matrix_words": c.matrix_words,
            "fits_chip": image.matrix_words_used <= c.matrix_words,
            "fits_eie_sram_per_pe": per_pe <= EIE_SRAM_BYTES_PER_PE}


# -- Deep Compression's third stage: Huffman coding of the entries, for off-chip storage and transfer ---------
#
# The chip reads fixed-width entries; a model stored or sent off-chip can carry each layer's entries
# Huffman-coded and be expanded to exactly those entries on loading. Per layer, one canonical code shared by its
# PEs (their entries in PE order), either two codes (weight indices, relative indices) or one over the
# (weight index, relative index) pairs, whichever is smaller, and a flag bit saying which. A code is sent as its
# table: a `HUFFMAN_WIDTH_BITS` header giving the width w of the length fields, then every symbol's code length
# in w bits (0: unused). The number of entries is known from the pointers, so the streams need no length.

HUFFMAN_WIDTH_BITS = 5


def huffman_lengths(counts: np.ndarray) -> np.ndarray:
    """Code length per symbol of a Huffman code for symbol counts `counts` (0 where a symbol never occurs; a
    lone symbol gets 1 bit, as a decoder must read something per entry)."""
    counts = np.asarray(counts, np.int64)
    lengths = np.zeros(len(counts), np.int64)
    used = np.flatnonzero(counts)
    if len(used) == 1:
        lengths[used] = 1
    heap = [(int(counts[s]), int(s), [int(s)]) for s in used]    # ties broken by the smallest symbol
    heapq.heapify(heap)
    while len(heap) > 1:
        (n1, k1, s1), (n2, k2, s2) = heapq.heappop(heap), heapq.heappop(heap)
        lengths[s1 + s2] += 1
        heapq.heappush(heap, (n1 + n2, min(k1, k2), s1 + s2))
    return lengths


def huffman_codes(lengths: np.ndarray) -> np.ndarray:
    """The canonical code of each symbol (its `lengths[s]` low bits, most significant first): symbols in order
    of (length, symbol) take consecutive codes, so the lengths alone define the code."""
    lengths = np.asarray(lengths, np.int64)
    codes = np.zeros(len(lengths), np.int64)
    code, previous = 0, 0
    for s in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[s]) - previous
        codes[s], previous = code, int(lengths[s])
        code += 1
    return codes


def huffman_table_bits(lengths: np.ndarray) -> int:
    """Bits of a code's table as stored (see above)."""
    return HUFFMAN_WIDTH_BITS + len(lengths) * int(np.max(lengths)).bit_length()


def huffman_encode(symbols: np.ndarray, lengths: np.ndarray) -> tuple:
    """(bytes, bit count) of `symbols` in the canonical code of `lengths`, bits packed most significant first."""
    symbols = np.asarray(symbols, np.int64)
    lengths = np.asarray(lengths, np.int64)
    if np.any(lengths[symbols] == 0):
        raise EieError("huffman_encode: a symbol has no code; build the lengths from these symbols' counts")
    width = int(lengths.max(initial=1))
    n, code = lengths[symbols], huffman_codes(lengths)[symbols]
    shift = n[:, None] - 1 - np.arange(width)               # bit k of each code, most significant first
    bits = (code[:, None] >> np.maximum(shift, 0)) & 1
    stream = bits[shift >= 0].astype(np.uint8)
    return np.packbits(stream).tobytes(), len(stream)


def huffman_decode(data: bytes, lengths: np.ndarray, count: int) -> np.ndarray:
    """The `count` symbols that `huffman_encode` packed into `data` with the code of `lengths`."""
    lengths = np.asarray(lengths, np.int64)
    table = {(int(lengths[s]), int(c)): s for s, c in enumerate(huffman_codes(lengths)) if lengths[s]}
    bits = np.unpackbits(np.frombuffer(data, np.uint8))
    out, code, length, at = np.zeros(count, np.int64), 0, 0, 0
    for bit in bits:
        if at == count:
            break
        code, length = code << 1 | int(bit), length + 1
        if (length, code) in table:
            out[at], code, length, at = table[length, code], 0, 0, at + 1
    if at < count:
        raise EieError(f"huffman_decode: the data holds {at} symbols, not {count}")
    return out


def huffman_bits(symbols: np.ndarray, alphabet: int) -> int:
    """Bits of `symbols` (integers below `alphabet`) Huffman-coded: the table plus the coded stream."""
    counts = np.bincount(np.asarray(symbols, np.int64), minlength=alphabet)
    lengths = huffman_lengths(counts)
    return huffman_table_bits(lengths) + int(counts @ lengths)


def huffman_entry_bits(enc, config) -> int:
    """Bits of a layer's entries (padding included) Huffman-coded as described above."""
    v = np.concatenate([pe.v for pe in enc.pes]).astype(np.int64)
    z = np.concatenate([pe.z for pe in enc.pes]).astype(np.int64)
    span = 1 << config.index_bits
    apart = huffman_bits(v, config.codebook_size) + huffman_bits(z, span)
    paired = huffman_bits(v * span + z, config.codebook_size * span)
    return 1 + min(apart, paired)
