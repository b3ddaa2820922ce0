"""Storage accounting, in one place: what a compressed model costs in bytes.

Two views of the same encoding (`eie.sw.encode.storage_bits`):

* `storage`: the model's bytes by part (weights, indices, padding, pointers, codebooks, biases, and the host's
  convolutions when it has any) on the smallest chip of a given PE count and index width; per PE with
  ``per_pe=True``. This is what compression ratios are computed from.
* `sram`: what one PE's SRAM holds when a `ChipImage` is loaded (whole memory words, every layer's codebook,
  the PE's biases at the chip's activation depth), against the chip's memories and EIE's 162 KB per PE.
"""

from eie.sw.encode import encode_layer, storage_bits
from eie.sw.host import QuantConv
from eie.sw.image import fit_config

__all__ = ["EIE_SRAM_BYTES_PER_PE", "STORAGE_PES", "STORAGE_INDEX_BITS", "storage", "storage_table", "sram"]

# EIE's SRAM per PE: 128 KB sparse matrix + 32 KB pointers + 2 KB activations.
EIE_SRAM_BYTES_PER_PE = 162 * 1024
# The chips every compressed model's storage is reported for.
STORAGE_PES = (1, 16, 64)
STORAGE_INDEX_BITS = (4, 5)


def storage(layers, config, host_ops=(), per_pe=False, placement="interleaved"):
    """Bytes by part for QuantLayers `layers` on the smallest chip with `config`'s PE count and widths.
    `host_ops`' convolutions count as dense fixed-point weights and biases (part "host_convs").
    "eie_pointers" (EIE's 16-bit pointer per column and PE) is for comparison and not in "total".
    With `per_pe`, a list with the parts each PE's SRAM holds (weights, indices, padding, pointers).
    `placement` places the rows as the chip would (it moves padding)."""
    from eie.sw.placement import place_layers
    chip = fit_config(layers, config, exact=True, placement=placement)
    placed, _, pairs = place_layers(layers, chip, placement)
    encoded = [encode_layer(q.w_index, chip, paired=paired) for q, paired in zip(placed, pairs)]
    if per_pe:
        out = [dict.fromkeys(("weights", "indices", "padding", "pointers", "eie_pointers"), 0.0)
               for _ in range(chip.pes)]
        for enc in encoded:
            for pe, parts in zip(out, storage_bits(enc, chip, per_pe=True)):
                for part, bits in parts.items():
                    pe[part] += bits / 8
        for pe in out:
            pe["total"] = sum(v for k, v in pe.items() if k != "eie_pointers")
        return out
    parts = {}
    for enc in encoded:
        for part, bits in storage_bits(enc, chip).items():
            parts[part] = parts.get(part, 0) + bits / 8
    convs = [op for op in host_ops if isinstance(op, QuantConv)]
    if convs:
        parts["host_convs"] = sum(op.weight.size * config.weight_bits + op.bias.size * config.act_bits
                                  for op in convs) / 8
    parts["total"] = sum(v for k, v in parts.items() if k != "eie_pointers")
    return parts


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
