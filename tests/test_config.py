import pytest

from eie import ChipConfig


def test_defaults_and_derived_widths():
    c = ChipConfig()
    assert c.codebook_size == 16 and c.entry_bits == 8 and c.max_zero_run == 15
    assert c.matrix_word_bits == 64 and c.max_dim == 1024
    assert ChipConfig.from_dict(c.to_dict()) == c and c.key() == ChipConfig().key()
    assert ChipConfig(pes=4).key() != c.key()


@pytest.mark.parametrize("field, value, error", [
    ("pes", 0, ValueError), ("pes", 65, ValueError), ("pes", 2.0, TypeError), ("index_bits", True, TypeError),
    ("entries_per_word", 6, ValueError), ("acc_bits", 20, ValueError),
])
def test_bad_parameters(field, value, error):
    with pytest.raises(error, match=field):
        ChipConfig(**{field: value})


def test_unknown_field():
    with pytest.raises(ValueError, match="unknown ChipConfig field"):
        ChipConfig.from_dict({"pes": 2, "lanes": 3})
