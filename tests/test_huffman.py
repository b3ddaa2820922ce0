"""Deep Compression's third stage: canonical Huffman codes of the entry streams, their exact bit counts (tables
included) and the storage figures built on them (`eie.sw.storage`)."""

import numpy as np
import pytest

from eie.config import ChipConfig
from eie.errors import EieError
from eie.sw.encode import encode_layer
from eie.sw.quant import QuantLayer
from eie.sw.storage import (HUFFMAN_WIDTH_BITS, huffman_bits, huffman_codes, huffman_decode, huffman_encode,
                            huffman_entry_bits, huffman_lengths, huffman_table_bits, storage)


def test_lengths_and_canonical_codes_by_hand():
    # counts 5, 2, 1, 1: merge 1+1, then 2+2, then 4+5 -> lengths 1, 2, 3, 3; codes 0, 10, 110, 111
    lengths = huffman_lengths([5, 2, 1, 1, 0])
    assert list(lengths) == [1, 2, 3, 3, 0]
    assert list(huffman_codes(lengths)[:4]) == [0b0, 0b10, 0b110, 0b111]
    assert list(huffman_lengths([0, 7, 0])) == [0, 1, 0]          # a lone symbol still costs a bit per entry
    assert list(huffman_lengths([1, 1, 1, 1])) == [2, 2, 2, 2]


def test_bit_count_and_bytes_by_hand():
    symbols = np.array([0, 0, 0, 0, 0, 1, 1, 2, 3])
    lengths = huffman_lengths(np.bincount(symbols, minlength=5))
    data, n = huffman_encode(symbols, lengths)
    assert n == 5 * 1 + 2 * 2 + 3 + 3 == 15
    assert data == bytes([0b00000101, 0b01101110])                 # 00000 10 10 110 111, zero-padded
    # table: the width header, then 5 symbols x 2 bits (the longest code, 3, needs 2)
    assert huffman_table_bits(lengths) == HUFFMAN_WIDTH_BITS + 5 * 2 == 15
    assert huffman_bits(symbols, 5) == 15 + 15


@pytest.mark.parametrize("alphabet, p", [(16, None), (256, "skewed"), (3, "lone")])
def test_round_trip(alphabet, p):
    rng = np.random.default_rng(alphabet)
    if p == "lone":
        symbols = np.full(37, 2)
    else:
        weights = 1.0 / np.arange(1, alphabet + 1) ** (2 if p else 0)
        symbols = rng.choice(alphabet, 5000, p=weights / weights.sum())
    lengths = huffman_lengths(np.bincount(symbols, minlength=alphabet))
    data, n = huffman_encode(symbols, lengths)
    assert n == int(lengths[symbols].sum()) and len(data) == -(-n // 8)
    assert np.array_equal(huffman_decode(data, lengths, len(symbols)), symbols)
    with pytest.raises(EieError, match="holds"):
        huffman_decode(data[:len(data) // 2], lengths, len(symbols))


def test_round_trip_of_a_layers_index_streams():
    """The streams a stored layer is coded from decode to the very entries the chip is loaded with."""
    rng = np.random.default_rng(1)
    config = ChipConfig(pes=4, act_depth=64)
    w = np.where(rng.random((200, 90)) < 0.08, rng.integers(1, 16, (200, 90)), 0)
    enc = encode_layer(w, config)
    for stream, alphabet in (("v", config.codebook_size), ("z", 1 << config.index_bits)):
        symbols = np.concatenate([getattr(pe, stream) for pe in enc.pes]).astype(np.int64)
        lengths = huffman_lengths(np.bincount(symbols, minlength=alphabet))
        data, n = huffman_encode(symbols, lengths)
        back = huffman_decode(data, lengths, len(symbols))
        assert np.array_equal(back, symbols) and n < 4 * len(symbols)      # skewed: fewer than 4 bits each


def test_storage_counts_the_huffman_entries_by_hand():
    # one column, rows 0..3 kept with index 1: entries v = 1,1,1,1 and z = 0,0,0,0 on one PE
    w = np.zeros((8, 1), np.int64)
    w[:4, 0] = 1
    layer = QuantLayer(w, np.arange(16), np.zeros(8, np.int64), 8, True)
    config = ChipConfig(pes=1)
    # apart: two 1-bit codes, each a table of 5 + 16 x 1 bits and 4 coded entries: 2 x 25 bits; the pairs'
    # code would cost 5 + 256 x 1 + 4 = 265; plus the flag bit saying which: 51 bits
    assert huffman_entry_bits(encode_layer(w, config), config) == 51
    parts = storage([layer], config)
    assert parts["huffman_entries"] == 7                            # 51 bits in whole bytes
    assert parts["total_huffman"] == parts["total"] - 4 * 8 // 8 + 7
    assert parts["total"] == sum(parts[p] for p in ("weights", "indices", "padding", "pointers", "codebook", "bias"))


def test_pairs_are_coded_together_where_that_is_smaller():
    """Padding entries are always (0, max run): coding the pairs captures that, coding apart cannot."""
    rng = np.random.default_rng(2)
    config = ChipConfig(pes=1, act_depth=1024, count_bits=8)
    w = np.where(rng.random((1000, 40)) < 0.03, rng.integers(1, 16, (1000, 40)), 0)   # long gaps: much padding
    enc = encode_layer(w, config)
    v = np.concatenate([pe.v for pe in enc.pes]).astype(np.int64)
    z = np.concatenate([pe.z for pe in enc.pes]).astype(np.int64)
    apart = huffman_bits(v, 16) + huffman_bits(z, 16)
    paired = huffman_bits(v * 16 + z, 256)
    assert paired < apart
    assert huffman_entry_bits(enc, config) == 1 + paired < 8 * len(v)
