"""The fast subset of the formal proofs (`eie.cosim.formal`, issue 23): each must PASS with SymbiYosys from the
wheels of the ``dev`` extra. `make formal` runs every proof (deeper and slower ones included)."""

import pytest

from eie.cosim import formal
from eie.cosim.formal_props import PROOFS

FAST = [p for p in PROOFS if p.fast]


def test_fast_subset_covers_several_blocks():
    assert len({p.block for p in FAST}) >= 3 and any(p.mode == "cover" for p in FAST)


def test_bad_mode_is_refused(tmp_path):
    bad = formal.Proof("x", "y", lambda: None, mode="sim")
    with pytest.raises(ValueError, match="bmc, prove or cover"):
        formal.run_proof(bad, tmp_path, env={})


def test_harness_check_names_are_checked():
    from eie.cosim.formal_props import accumulator, chip_control, detector, span_unit
    for harness in (detector, span_unit, accumulator, chip_control):
        with pytest.raises(ValueError, match="check must be"):
            harness(check="nonsense")


@pytest.mark.parametrize("proof", FAST, ids=[f"{p.mode}-{p.block}-{p.prop}"[:60] for p in FAST])
def test_fast_proof(proof, tmp_path):
    r = formal.run_proof(proof, tmp_path, timeout=120)
    assert r.status == "PASS", f"{proof.name} ({proof.mode}): {r.status} {r.detail} {r.trace}"
