"""`eie verify`: random cases are reproducible from (seed, case), draw their chip from a pool, cover what they
are steered to, run bit-exact (some starts with random host timing), and a mismatch is found, shrunk and saved
for replay."""

import json
import os
import re
import secrets

import numpy as np
import pytest

from eie.cli import build_parser, main
from eie.cosim import verify as campaign
from eie.errors import EieError
from eie.sw import reference
from eie.sw.image import load_image
from test_fast_chip import FAST          # 2 PEs, 2-bit indices: built once for the fast tests too

# Small chips for Amaranth's simulator: 2 PEs (a pair) and 3 (no power of two, the last PE unpaired), the
# narrowest and a wide relative index, 4- and 8-entry codebooks, 8 and 2 entries per matrix word.
POOL = campaign.config_pool(FAST, pes=(2, 3), index_bits=(2, 6), weight_index_bits=(2, 3), entries_per_word=(8, 2))
# What `make test` runs on Verilator: 1 PE, 3 PEs (no power of two) and 16 PEs, relative indices of 2 and 8 bits,
# an 8-entry codebook (Amaranth runs the other widths above): six builds of 30-40 s, small memories.
VERILATOR_POOL = ["--pes", "1,3,16", "--index-bits", "2,8", "--weight-index-bits", "3", "--act-depth", "32",
                  "--matrix-words", "256", "--ptr-words", "64", "--count-bits", "8"]


def same_case(a, b):
    (ca, ka, la, xa), (cb, kb, lb, xb) = a, b
    eq = np.array_equal
    return ca == cb and ka == kb and eq(xa, xb) and len(la) == len(lb) and all(
        eq(p.w_index, q.w_index) and eq(p.codebook, q.codebook) and eq(p.bias, q.bias)
        and p.shift == q.shift and p.relu == q.relu for p, q in zip(la, lb))


def test_cases_are_reproducible_from_seed_and_number():
    draw = campaign.random_case
    assert same_case(draw(5, 17, POOL), draw(5, 17, POOL))
    assert not same_case(draw(5, 17, POOL), draw(5, 18, POOL))
    assert not same_case(draw(5, 17, POOL), draw(6, 17, POOL))
    assert all(draw(5, n, POOL)[0] == POOL[campaign.case_chip(5, n, POOL)] for n in range(20))


def test_a_pool_is_every_combination_and_every_chip_is_drawn():
    assert len(POOL) == 16 and len(set(POOL)) == 16
    assert {(c.pes, c.index_bits, c.weight_index_bits, c.entries_per_word) for c in POOL} == {
        (p, z, v, e) for p in (2, 3) for z in (2, 6) for v in (2, 3) for e in (8, 2)}
    assert all(c.replace(pes=2, index_bits=2, weight_index_bits=4, entries_per_word=8) == FAST for c in POOL)
    assert {campaign.case_chip(1, n, POOL) for n in range(200)} == set(range(16))
    with pytest.raises(EieError):
        campaign.config_pool(FAST, pes=(1, 65))
    with pytest.raises(EieError):
        campaign.config_pool(FAST, act_depth=(8, 16))


def test_a_plan_runs_every_case_once_one_chip_per_start_and_times_some_starts_at_random():
    starts = campaign.plan(POOL, 7, 100, 1000, 40)
    numbers = sorted(n for _, nums, _ in starts for n in nums)
    assert numbers == list(range(100, 1100))
    assert all(campaign.case_chip(7, n, POOL) == k for k, nums, _ in starts for n in nums)
    assert all(len(nums) <= 40 for _, nums, _ in starts)
    timed = [gaps for _, _, gaps in starts if gaps is not None]
    assert 0.4 < len(timed) / len(starts) < 0.6 and len({tuple(g) for g in timed}) == len(timed)
    assert [k for k, _, _ in starts[:16]] == list(range(16)), "the first starts build different chips"
    # one start per chip: half of the chips still get random timing
    assert sum(gaps is not None for _, _, gaps in campaign.plan(POOL, 7, 0, 1000, 1000)) == 8


def test_a_campaign_over_a_pool_in_amaranth_is_bit_exact_and_covers_its_chips_and_kinds(monkeypatch):
    from eie.cosim import hostport
    starts, real = [], hostport.simulate_in_amaranth

    def recording(jobs, gaps=None):
        starts.append(({image.config for image, _ in jobs}, gaps))
        return real(jobs, gaps=gaps)
    monkeypatch.setattr(hostport, "simulate_in_amaranth", recording)
    r = campaign.verify(POOL, 80, seed=3, engine="amaranth", batch=6)
    assert r.mismatched_cases == [] and r.cases + r.skipped == 80 and r.skipped <= 4
    assert set(r.kinds) == set(campaign.KINDS)
    assert r.saturated_cases >= 6 and r.padded_cases >= 4 and r.negative_cases >= 25
    assert 10 <= r.paired_cases <= r.cases - 10, "paired PEs in some cases, not all"
    assert r.zero_output_vectors < r.samples / 4
    assert list(r.chips) == [campaign.chip_label(c) for c in POOL] and all(n["cases"] for n in r.chips.values())
    assert sum(n["cases"] for n in r.chips.values()) == r.cases
    assert all(len(chips) == 1 for chips, _ in starts), "one chip per simulator start"
    assert {gaps is None for _, gaps in starts} == {True, False}, "random host timing in some starts"
    assert 0 < r.timed_cases == sum(n["timed"] for n in r.chips.values()) < r.cases


def test_two_simulator_processes_give_the_serial_results():
    """The campaign's chunks on a Dask local cluster of 2 workers: the same report as one process."""
    pool = POOL[:2]
    serial = campaign.verify(pool, 12, seed=4, engine="amaranth", batch=4)
    lines = []
    spread = campaign.verify(pool, 12, seed=4, engine="amaranth", batch=4, jobs=2, log=lines.append)
    assert spread.failed_chunks == {}
    assert "12 of 12 cases run" in lines[-2], "progress as the chunks finish"
    for name in ("cases", "samples", "outputs", "skipped", "kinds", "chips", "timed_cases", "saturated_cases",
                 "negative_cases", "zero_output_vectors", "padded_cases", "paired_cases", "mismatched_cases"):
        assert getattr(spread, name) == getattr(serial, name), name


def test_a_mismatch_is_found_shrunk_and_saved(tmp_path, monkeypatch):
    def truncating(acc, shift, relu, config):          # the reference without its rounding
        y = np.clip(acc >> shift, config.act_min, config.act_max)
        return np.maximum(y, 0) if relu else y

    def differs(n):
        config, _, layers, x = campaign.random_case(3, n, POOL)
        right = reference.forward(layers, x, config)[-1]
        with monkeypatch.context() as m:
            m.setattr(reference, "requantize", truncating)
            return (reference.forward(layers, x, config)[-1] != right).any()
    n = next(n for n in range(50) if differs(n) and len(campaign.random_case(3, n, POOL)[3]) > 1)
    config = campaign.random_case(3, n, POOL)[0]
    monkeypatch.setattr(reference, "requantize", truncating)
    r = campaign.verify(POOL, 1, seed=3, first=n, engine="amaranth", out=tmp_path)
    assert r.mismatched_cases == [n], "rounding dropped in the reference must show"
    note = json.loads(r.saved[0].read_text())
    assert (note["seed"], note["case"], note["config"]) == (3, n, config.to_dict())
    assert f"--seed 3 --case {n}" in note["replay"]
    argv = note["replay"].split()
    assert argv[:2] == ["eie", "verify"] and campaign.pool_of(build_parser().parse_args(argv[1:])) == POOL, \
        "the replay command names the pool, so the case draws its chip again"
    image = load_image(tmp_path / note["image"], config)
    x = np.load(tmp_path / note["inputs"])
    assert len(x) == 1, "shrunk to one sample"
    got, expect = campaign.run_cases([(image.quant_layers(), x)], config, "amaranth")[0]
    assert (got != expect).any(), "the saved case still fails"


def test_eie_verify_runs_a_thousand_fresh_cases_on_verilator(capsys, tmp_path):
    """1,000 cases of a fresh seed each run (EIE_VERIFY_SEED repeats one) over six small chips (cached builds),
    half of the simulator starts with random host timing; the seed is printed so that a failure can be
    replayed."""
    seed = int(os.environ.get("EIE_VERIFY_SEED", secrets.randbelow(1 << 31)))
    with capsys.disabled():
        print(f"\n[eie verify seed {seed}]", end=" ")
    code = main(["verify", "--cases", "1000", "--batch", "100", "--jobs", "2", "--seed", str(seed), "--out",
                 str(tmp_path), *VERILATOR_POOL])
    out = capsys.readouterr().out
    assert code == 0 and "0 mismatching cases" in out, f"seed {seed}:\n{out[-2000:]}"
    cases = int(re.search(rf"seed {seed}: (\d+) cases", out).group(1))
    skipped = int(re.search(r"(\d+) drawn cases did not fit", out).group(1))
    assert cases + skipped == 1000 and skipped < 20, out[-1500:]
    chips = re.findall(r"^  (\d+) PEs?, z(\d) v(\d), 8 entries/word: (\d+) cases \((\d+) with random host timing\)",
                       out, re.M)
    assert {(int(p), int(z), int(v)) for p, z, v, _, _ in chips} == {(p, z, 3) for p in (1, 3, 16) for z in (2, 8)}, \
        out[-1500:]
    assert all(int(n) >= 100 for *_, n, _ in chips) and sum(int(n) for *_, n, _ in chips) == cases
    timed = sum(int(t) for *_, t in chips)
    assert 0.25 * cases < timed < 0.75 * cases, "random host timing in about half of the cases"


@pytest.mark.parametrize("kw", [dict(cases=0), dict(seed=-1), dict(first=-2), dict(batch=0), dict(engine="icarus"),
                                dict(jobs=0), dict(pool=[]), dict(pool=[FAST, "2 PEs"])])
def test_bad_campaign_arguments_are_one_line(kw):
    with pytest.raises(EieError):
        campaign.verify(**{"pool": FAST, "cases": 1, **kw})


@pytest.mark.parametrize("flags, message", [(["--pes", "1,x"], "integers separated by commas"),
                                            (["--index-bits", "2,9"], "index_bits must be in 2..8"),
                                            (["--entries-per-word", "3"], "power of two")])
def test_a_bad_pool_on_the_command_line_is_one_line(flags, message, capsys):
    try:
        code = main(["verify", "--cases", "1", "--engine", "amaranth", *flags])
    except SystemExit as e:      # refused by argparse
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
