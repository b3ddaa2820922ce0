"""The fast subset of the formal proofs (`eie.cosim.formal`, issue 23): each must PASS with SymbiYosys from the
wheels of the ``dev`` extra. `make formal` runs every proof (deeper and slower ones included)."""

from functools import partial

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
    from eie.cosim.formal_props import accumulator, chip_control, chip_flow, chip_miter, detector, span_unit
    for harness in (detector, span_unit, accumulator, chip_control, chip_flow, chip_miter):
        with pytest.raises(ValueError, match="check must be"):
            harness(check="nonsense")


def _harness_of(proof):
    """A proof's harness function and the chip it is given (a `partial`'s positional arguments)."""
    h = proof.harness
    return (h.func, h.args) if isinstance(h, partial) else (h, ())


def test_every_property_has_a_cover():
    """Each harness that a bmc or k-induction proof checks, on its chip, has a cover proof of its own: no
    property is proven of a harness that could never reach what it asserts about."""
    covered = {_harness_of(p) for p in PROOFS if p.mode == "cover"}
    bare = [p.name for p in PROOFS if p.mode != "cover" and _harness_of(p) not in covered]
    assert not bare, f"proofs whose harness has no cover: {bare}"


@pytest.mark.parametrize("proof", FAST, ids=[f"{p.mode}-{p.block}-{p.prop}"[:60] for p in FAST])
def test_fast_proof(proof, tmp_path):
    r = formal.run_proof(proof, tmp_path, timeout=120)
    assert r.status == "PASS", f"{proof.name} ({proof.mode}): {r.status} {r.detail} {r.trace}"


def _counter(limit):
    """A harness whose 2-bit counter reaches 3 at step 3: ``count < limit`` fails for limit <= 3."""
    from amaranth import Signal
    from amaranth.hdl import Assert
    from eie.cosim.formal_props import _module
    m = _module()
    count = Signal(2, name="count")
    m.d.sync += count.eq(count + (count != 3))
    m.d.comb += Assert(count < limit)
    return m


def test_counterexample_is_saved_and_replays(tmp_path):
    """A property that fails: FAIL, its VCD and a case folder that --replay re-runs to the same failure; the same
    property with a bound it keeps PASSes and leaves no case."""
    bad = formal.Proof("counter", "stays below 3", lambda: _counter(3), mode="bmc", depth=6)
    r = formal.run_proof(bad, tmp_path, timeout=60)
    assert r.status == "FAIL" and r.trace.endswith(".vcd") and r.case
    failed, text = formal.replay(r.case)
    assert failed and "Assert failed" in text
    assert formal.main(["--replay", r.case]) == 1
    good = formal.Proof("counter", "stays below 4", lambda: _counter(4), mode="bmc", depth=6)
    r = formal.run_proof(good, tmp_path, timeout=60)
    assert r.status == "PASS" and not r.case
