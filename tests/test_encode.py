import numpy as np
import pytest

from eie import ChipConfig, EieError
from eie.sw.encode import decode_layer, encode_layer, storage_bits

# EIE paper, Fig. 3: the rows of PE0 (of 4) in a 16x8 matrix.
FIG3_PE0 = {0: [0, 8, 12], 1: [4], 2: [0, 12], 4: [0, 4], 5: [0, 12], 6: [0], 7: [8, 12]}


def fig3_matrix(rng):
    w = np.zeros((16, 8), np.int64)
    for col, rows in FIG3_PE0.items():
        for r in rows:
            w[r, col] = rng.integers(1, 16)
    other = [r for r in range(16) if r % 4]       # rows of PEs 1..3: anything
    w[other] = rng.integers(1, 16, (len(other), 8)) * (rng.random((len(other), 8)) < 0.4)
    return w


def test_fig3_pe0_matches_the_paper(rng):
    w = fig3_matrix(rng)
    pe0 = encode_layer(w, ChipConfig(pes=4)).pes[0]
    order = [(r, c) for c in range(8) for r in FIG3_PE0.get(c, [])]
    assert list(pe0.v) == [w[r, c] for r, c in order]
    assert list(pe0.z) == [0, 1, 0, 1, 0, 2, 0, 0, 0, 2, 0, 2, 0]
    assert list(pe0.pointers) == [0, 3, 4, 6, 6, 8, 10, 11, 13]


@pytest.mark.parametrize("index_bits", [4, 5])
def test_decode_inverts_encode(rng, index_bits):
    for _ in range(40):
        rows, cols = rng.integers(1, 300), rng.integers(1, 60)
        config = ChipConfig(pes=int(rng.integers(1, 9)), index_bits=index_bits, act_depth=512, count_bits=10)
        w = rng.integers(1, 16, (rows, cols)) * (rng.random((rows, cols)) < rng.random() ** 2)
        enc = encode_layer(w, config)
        assert (decode_layer(enc, config) == w).all()
        # every z fits its field, and padding appears only where a zero run does not
        assert all(0 <= pe.z.min(initial=0) and pe.z.max(initial=0) <= config.max_zero_run for pe in enc.pes)
        assert all((pe.z[pe.v == 0] == config.max_zero_run).all() for pe in enc.pes)


def test_long_zero_runs_get_padding():
    config = ChipConfig(pes=1, index_bits=4, act_depth=64)
    w = np.zeros((64, 1), np.int64)
    w[40, 0] = 3                         # 40 zeros: two padding entries (16 each), then z = 8
    pe = encode_layer(w, config).pes[0]
    assert list(pe.v) == [0, 0, 3] and list(pe.z) == [15, 15, 8]
    assert pe.n_padding == 2
    w5 = encode_layer(w, ChipConfig(pes=1, index_bits=5, act_depth=64)).pes[0]
    assert list(w5.v) == [0, 3] and list(w5.z) == [31, 8]


def test_storage_bits_by_part():
    config = ChipConfig(pes=2, act_depth=64)
    w = np.zeros((4, 3), np.int64)
    w[0, 0], w[2, 0], w[3, 2] = 1, 2, 3
    bits = storage_bits(encode_layer(w, config), config)
    assert bits["weights"] == 3 * 4 and bits["indices"] == 3 * 4 and bits["padding"] == 0
    assert bits["pointers"] == 2 * 1 * config.ptr_word_bits
    assert bits["codebook"] == 16 * 16 and bits["bias"] == 4 * 16
    per_pe = storage_bits(encode_layer(w, config), config, per_pe=True)
    assert [p["weights"] for p in per_pe] == [2 * 4, 1 * 4]      # PE0 holds rows 0 and 2, PE1 row 3
    assert sum(p["pointers"] for p in per_pe) == bits["pointers"]


def test_bad_matrices_are_refused():
    config = ChipConfig(pes=2, act_depth=8)
    with pytest.raises(EieError, match="2-D"):
        encode_layer(np.zeros(5, np.int64), config)
    with pytest.raises(EieError, match="integer"):
        encode_layer(np.zeros((2, 2)), config)
    with pytest.raises(EieError, match="0..15"):
        encode_layer(np.full((2, 2), 16), config)
    with pytest.raises(EieError, match="exceeds this chip's 16 rows"):
        encode_layer(np.ones((17, 2), np.int64), config)
    with pytest.raises(EieError, match="count_bits=2"):
        encode_layer(np.ones((8, 2), np.int64), ChipConfig(pes=1, count_bits=2, act_depth=8))


def test_paired_layers_split_every_column_within_each_pair(rng):
    """A paired layer: decoding gives the matrix back; each column's entries of a pair's rows are split as
    evenly as they can be between its two PEs, the extra entry of odd columns going to the two by turns, so the
    two PEs' totals differ by at most one; each PE holds its own row s at accumulator 2s, its partner's at 2s+1.
    At 4 PEs, PEs 0 and 2 share the even rows, 1 and 3 the odd ones."""
    config = ChipConfig(pes=4, index_bits=5, act_depth=32, count_bits=10)
    for _ in range(20):
        rows, cols = int(rng.integers(1, 65)), int(rng.integers(1, 50))
        w = rng.integers(1, 16, (rows, cols)) * (rng.random((rows, cols)) < rng.random())
        enc = encode_layer(w, config, paired=True)
        assert enc.paired and (decode_layer(enc, config) == w).all()
        counts = enc.counts          # no padding: 2 x 16 local rows fit a 5-bit index
        assert not any(pe.n_padding for pe in enc.pes)
        for g in range(2):
            assert (counts[g] + counts[g + 2] == (w[g::2] != 0).sum(0)).all()
        assert (np.abs(counts[:2] - counts[2:]) <= 1).all()
        assert (np.abs(counts[:2].sum(1) - counts[2:].sum(1)) <= 1).all()
    # Rows 0 and 4 (PE 0's local rows 0 and 1) in one column: PE 0 keeps row 0 in accumulator 0, and its partner,
    # PE 2, row 4 in accumulator 3 (its partial sum of PE 0's row 1)
    w = np.zeros((8, 1), np.int64)
    w[0, 0], w[4, 0] = 5, 7
    enc = encode_layer(w, config, paired=True)
    assert list(enc.pes[0].v) == [5] and list(enc.pes[0].z) == [0]
    assert list(enc.pes[2].v) == [7] and list(enc.pes[2].z) == [3]
    assert not enc.pes[1].n_entries and not enc.pes[3].n_entries


def test_pairing_is_refused_where_it_cannot_work():
    with pytest.raises(EieError, match="even number of PEs"):
        encode_layer(np.ones((6, 2), np.int64), ChipConfig(pes=3, act_depth=8), paired=True)
    with pytest.raises(EieError, match="need 10 accumulators per PE but the chip has 8"):
        encode_layer(np.ones((10, 2), np.int64), ChipConfig(pes=2, act_depth=8), paired=True)
