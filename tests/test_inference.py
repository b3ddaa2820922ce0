"""`eie run` end to end on a tiny pruned and compressed model (digits), and its refusals."""

import json
from pathlib import Path
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import chip_flags, test_chip
from eie.cli import main
import eie
from timing_helpers import SOURCE, hinted_config, private_fmax, record_fmax


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "digits"
    assert main(["prune", str(run), "--data", "digits", "--epochs", "8", "--quality", "1.0", "--iterations", "1",
                 "--retrain-epochs", "1", "--final-epochs", "1"]) == 0
    assert main(["compress", str(run), "--finetune-epochs", "0", "--calibration", "300", "--pes", "4"]) == 0
    return run


def test_run_is_bit_exact_and_reports(run_dir, capsys, tmp_path):
    code = main(["run", str(run_dir), "--samples", "40", "--json", "--waves", str(tmp_path / "s3.vcd"),
                 "--waves-sample", "3", "--verilog", str(tmp_path / "chip.v"), *chip_flags(test_chip(4))])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["mismatches"] == 0 and out["samples"] == 40
    assert out["chip_accuracy"] == out["reference_accuracy"]
    assert abs(out["chip_accuracy"] - out["float_accuracy"]) <= 5
    assert len(out["layers"]) == 3 and all(l["cycles"] >= l["bound_cycles"] for l in out["layers"])
    assert 0 < out["energy_pj_per_image"]["total"] < out["dense_dram_energy_pj_per_image"]
    assert out["sram"]["fits_chip"] and out["chip"]["pes"] == 4
    assert (tmp_path / "s3.vcd").stat().st_size > 0 and "module eie_chip" in (tmp_path / "chip.v").read_text()


def test_other_pe_counts_are_laid_out_again(run_dir, capsys):
    assert main(["run", str(run_dir), "--samples", "5", "--json", *chip_flags(test_chip(2, 5))]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mismatches"] == 0 and out["chip"]["pes"] == 2


def test_run_states_time_at_the_measured_fmax_and_at_800_mhz(run_dir, tmp_path, monkeypatch, capsys):
    """Beside its cycles, `eie run` states the time per image and per layer at EIE's 800 MHz, and at the chip's
    measured Fmax once one is stored (else how to measure one), in its table, report.json/.md and --json."""
    from eie.cosim.inference import print_summary
    private_fmax(monkeypatch, tmp_path)
    chip = test_chip(4)
    argv = ["run", str(run_dir), "--samples", "3", *chip_flags(chip)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    r = json.loads((run_dir / "report.json").read_text())["run"]
    assert r["chip"] == chip.to_dict()
    t, cycles = r["time"], r["cycles_per_image"]
    assert list(t["clocks"]) == ["eie_800mhz"] and t["cycles_per_image"] == cycles and t["cycles_from"] == "rtl"
    assert t["clocks"]["eie_800mhz"]["mhz"] == 800
    assert t["clocks"]["eie_800mhz"]["us_per_image"] == pytest.approx(cycles / 800, abs=1e-4)
    assert t["clocks"]["eie_800mhz"]["us_per_layer"] == pytest.approx([l["cycles"] / 800 for l in r["layers"]],
                                                                       abs=1e-4)
    assert f"time: {cycles / 800:.3f} us per image at EIE's 800 MHz (for reference" in text
    assert hinted_config(t["fmax_hint"]) == chip             # the hint's command measures this very chip
    assert f"time: {t['fmax_hint']}" in text and "no Fmax measured" in text
    md = (run_dir / "report.md").read_text()
    assert f"{cycles / 800:.3f} us at EIE's 800 MHz" in md and "No Fmax measured for this chip" in md

    record_fmax(chip, 61.25)
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    t, cycles = out["time"], out["cycles_per_image"]
    assert list(t["clocks"]) == ["fmax", "eie_800mhz"] and "fmax_hint" not in t
    f = t["clocks"]["fmax"]
    assert f["mhz"] == 61.25 and f["source"].startswith(SOURCE)
    assert f["us_per_image"] == pytest.approx(cycles / 61.25, abs=1e-4)
    assert f["us_per_layer"] == pytest.approx([l["cycles"] / 61.25 for l in out["layers"]], abs=1e-4)
    assert t["clocks"]["eie_800mhz"]["us_per_image"] == pytest.approx(cycles / 800, abs=1e-4)
    assert json.loads((run_dir / "report.json").read_text())["run"]["time"] == t
    md = (run_dir / "report.md").read_text()
    assert f"{cycles / 61.25:.3f} us at the measured Fmax, 61.25 MHz ({SOURCE}" in md and "No Fmax" not in md
    assert "us at Fmax 61.25 MHz | us at EIE 800 MHz |" in md
    print_summary(out)
    text = capsys.readouterr().out
    assert f"time: {cycles / 61.25:.3f} us per image at the measured Fmax, 61.25 MHz ({SOURCE}" in text
    assert f"time: {cycles / 800:.3f} us per image at EIE's 800 MHz" in text and "no Fmax" not in text
    row = next(line for line in text.splitlines() if line.strip().startswith("1 "))   # layer 1's row
    assert row.split()[-2:] == [f"{out['layers'][1]['cycles'] / 61.25:.3f}", f"{out['layers'][1]['cycles'] / 800:.3f}"]


def test_a_mismatch_is_traced_to_layer_and_row(run_dir, tmp_path):
    cm = eie.load(run_dir)
    x_int = cm.inputs(cm.dataset().x_test[:2])
    refs = cm.reference(x_int)
    refs[1] = refs[1].copy()
    refs[1][1, 5] += 1                          # pretend the chip got layer 1, row 5 of sample 1 wrong
    found = cm.trace_mismatch(x_int, refs, 1, tmp_path / "bad.vcd")
    assert (found["layer"], found["row"]) == (1, 5)
    assert (tmp_path / "bad.vcd").exists()


def test_refusals_before_any_simulation(run_dir, tmp_path, capsys):
    assert main(["run", str(tmp_path)]) == 2
    assert "no compressed model" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    data = (run_dir / "image.npz").read_bytes()
    (broken / "image.npz").write_bytes(data[:-100])
    assert main(["run", str(broken)]) == 2
    assert "not a readable chip image" in capsys.readouterr().err
    assert main(["run", str(run_dir), "--weight-index-bits", "5"]) == 2
    assert "4-bit weight indices" in capsys.readouterr().err
    assert main(["run", str(run_dir), "--pes", "1", "--matrix-words", "2"]) == 2
    assert "sparse-matrix words per PE" in capsys.readouterr().err


def test_quick_demo_runs_the_whole_flow_into_a_readable_log(tmp_path):
    """As `make demo > log 2>&1` runs it: no terminal, so no progress-bar redraws, one line per epoch."""
    out = subprocess.run([sys.executable, "-m", "eie", "demo", "--quick", "--pes", "4", "--samples", "20",
                          "--run-dir", str(tmp_path / "demo")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "mismatches 0" in out.stdout and "demo finished" in out.stdout
    assert "\r" not in out.stderr and "epoch 20/20" in out.stderr
    for name in ("eie_chip.v", "image.npz", "predictions.csv", "report.md", "baseline.pt", "pruned.pt"):
        assert (tmp_path / "demo" / name).exists(), name     # the two networks: `eie compare` can use the folder
    assert "On the chip" in (tmp_path / "demo" / "report.md").read_text()


def test_demo_refuses_more_samples_than_the_test_set_before_training(tmp_path, monkeypatch, capsys):
    from eie.sw import flow
    monkeypatch.setattr(flow, "train", lambda *a, **k: pytest.fail("trained anyway"))
    assert main(["demo", "--quick", "--samples", "100000", "--run-dir", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert "--samples 100000: the test set has 360 images; give at most that many" in err


def test_compress_records_data_and_chip_so_run_needs_neither(run_dir, tmp_path, capsys):
    """`eie compress NEW --data digits --checkpoint F --index-bits 5`, then a bare `eie run NEW`: the data set,
    the 5-bit indices and the PE count come from the run folder; results land in report.json and the CSV."""
    new = tmp_path / "new"
    assert main(["compress", str(new), "--data", "digits", "--checkpoint", str(run_dir / "pruned.pt"),
                 "--finetune-epochs", "0", "--calibration", "200", "--pes", "2", "--index-bits", "5"]) == 0
    capsys.readouterr()
    assert main(["run", str(new), "--samples", "12", "--json", "--predictions", str(new / "p.csv")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["chip"]["index_bits"] == 5 and out["chip"]["pes"] == 2 and out["mismatches"] == 0
    report = json.loads((new / "report.json").read_text())
    assert report["data"]["name"] == "digits" and report["run"]["chip_accuracy"] == out["chip_accuracy"]
    assert "On the chip" in (new / "report.md").read_text()
    rows = (new / "p.csv").read_text().splitlines()
    assert len(rows) == 13 and rows[0].startswith("sample,label,chip_class,reference_class,out0")
    assert main(["run", str(new), "--samples", "0"]) == 2
    assert main(["run", str(new), "--pes", "0"]) == 2      # refused, never replaced by a default
    assert "pes must be in 1..64, not 0" in capsys.readouterr().err


def test_inputs_outside_the_calibrated_range_are_refused_unless_allowed(run_dir, tmp_path, capsys):
    """The CLI refuses (the API warns) when more than 1% of the inputs lie outside the range the model was
    calibrated on, saying how much; --allow-out-of-range runs them with a one-line warning."""
    import shutil
    narrow = tmp_path / "narrow"
    shutil.copytree(run_dir, narrow)
    report = json.loads((narrow / "report.json").read_text())
    assert report["compress"]["input"] == {"dtype": "float32", "min": 0.0, "max": 1.0}
    report["compress"]["input"]["max"] = 0.5          # as if calibrated on darker images than the test set's
    (narrow / "report.json").write_text(json.dumps(report))
    assert main(["run", str(narrow), "--samples", "10"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "% of the input values lie outside [0, 0.5]" in err and "--allow-out-of-range" in err
    assert main(["run", str(narrow), "--samples", "10", "--allow-out-of-range", "--json"]) == 0
    assert "warning: " in capsys.readouterr().err


def test_sweep_and_compare_refuse_inputs_outside_the_calibrated_range_unless_allowed(run_dir, tmp_path, capsys,
                                                                                     monkeypatch):
    """As `eie run` does (one shared implementation): refused in one line naming the flag; allowed, a warning."""
    import shutil
    import warnings
    from eie.cosim import compare as compare_command
    from eie.errors import InputRangeWarning
    narrow = tmp_path / "narrow"
    shutil.copytree(run_dir, narrow)
    report = json.loads((narrow / "report.json").read_text())
    report["compress"]["input"]["max"] = 0.5
    (narrow / "report.json").write_text(json.dumps(report))
    sweep = ["sweep", str(narrow), "--pes", "1", "--samples", "10", "--simulate", "none", "--json"]

    def compare(*args, **kwargs):      # a comparison whose model meets images outside its range
        warnings.warn("12.5% of the input values lie outside [0, 0.5], the range the model was calibrated on",
                      InputRangeWarning)
        return {"points": [], "wall_seconds": 0, "verdict": {"best_accuracy_per_kb": {"point": "-"}}}
    monkeypatch.setattr(compare_command, "compare", compare)
    for argv in (sweep, ["compare", str(narrow)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1, err
        assert "of the input values lie outside [0, 0.5]" in err and err.endswith("--allow-out-of-range runs them anyway\n")
        assert main([*argv, "--allow-out-of-range", "--force"]) == 0
        assert "warning: " in capsys.readouterr().err


def test_your_own_arrays_through_the_api_and_eie_run(run_dir, tmp_path, capsys):
    """Images and labels of one's own, as numpy arrays: checked in one line each (shape, dtype, count, classes),
    predicted and simulated through the API, and run by `eie run --inputs [--labels]`."""
    import shutil
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    cm = eie.load(run)
    data = cm.dataset()
    x, y = data.x_test[:12].numpy().reshape(12, -1), data.y_test[:12].numpy()
    assert (cm.predict(x) == cm.predict(data.x_test[:12])).all()          # flat or in the data set's shape
    assert cm.accuracy(x, y) == cm.accuracy(data.x_test[:12], data.y_test[:12])
    for bad_x, bad_y, words in ((x[:, :63], y, "the chip's first layer takes 64 inputs but these images give 63"),
                                ((x * 16).astype(np.uint8), y, "inputs are uint8"),
                                (x, y[:11], "labels of shape (11,) do not fit 12 images"),
                                (x, y + 0.5, "float targets are a regressor's, 10 per image for this model's outputs, not "
                                 "shape (12,): class labels are integers"),
                                (x, y + 10, "labels must be classes 0..9 (the model's outputs), not ")):
        with pytest.raises(eie.EieError, match=re.escape(words)):
            cm.accuracy(bad_x, bad_y)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    assert main(["run", str(run), "--inputs", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"),
                 "--jobs", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["samples"] == 12 and r["inputs"] == str(tmp_path / "x.npy") and r["mismatches"] == 0
    assert r["chip_accuracy"] == r["reference_accuracy"] == cm.accuracy(x, y)
    assert main(["run", str(run), "--inputs", str(tmp_path / "x.npy"), "--samples", "5", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "5 images (" + str(tmp_path / "x.npy") + ")" in out and "not measured (no labels: --labels)" in out
    np.save(tmp_path / "narrow.npy", x[:, :63])
    np.save(tmp_path / "short.npy", y[:11])
    (tmp_path / "x.csv").write_text("1,2,3\n")
    for argv, words in (
            (["--inputs", tmp_path / "narrow.npy"], f"--inputs {tmp_path / 'narrow.npy'}: the chip's first layer "
                                                    "takes 64 inputs but these images give 63"),
            (["--inputs", tmp_path / "x.npy", "--labels", tmp_path / "short.npy"],
             f"--labels {tmp_path / 'short.npy'}: labels of shape (11,) do not fit 12 images"),
            (["--inputs", tmp_path / "x.csv"], f"--inputs {tmp_path / 'x.csv'}: not a .npy array"),
            (["--inputs", tmp_path / "none.npy"], f"--inputs {tmp_path / 'none.npy'}: no such file"),
            (["--labels", tmp_path / "y.npy"], "--labels goes with --inputs"),
            (["--inputs", tmp_path / "x.npy", "--data", "digits"], "leave out --data and --data-dir, or --inputs"),
            (["--inputs", tmp_path / "x.npy", "--samples", "13"], "has 12 images; give at most that many")):
        assert main(["run", str(run), *map(str, argv)]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and words in err, err


def test_run_refuses_before_the_simulation_rather_than_lose_its_results(run_dir, tmp_path, monkeypatch, capsys):
    """A folder it cannot write, a folder another command holds, a waveform sample or sample count beyond the
    test set, a predictions file that exists: each refused in one line before any simulation."""
    import fcntl
    import shutil
    import tempfile
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    monkeypatch.setattr(eie.CompressedModel, "simulate", lambda *a, **k: pytest.fail("simulated anyway"))

    def refused(*argv):
        assert main(["run", str(run), *map(str, argv)]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1, err
        return err

    assert "--waves-sample must be one of the 10 samples run, 0..9, not 5000" in refused(
        "--samples", "10", "--waves", tmp_path / "w.vcd", "--waves-sample", "5000")
    assert "--samples 100000: the test set has 360 images" in refused("--samples", "100000")
    (tmp_path / "p.csv").write_text("earlier work\n")
    assert "--predictions " + str(tmp_path / "p.csv") + " exists; pass --force" in refused(
        "--samples", "5", "--predictions", tmp_path / "p.csv")
    assert (tmp_path / "p.csv").read_text() == "earlier work\n"
    with open(run / ".eie.lock", "w") as held:          # another `eie run` on the folder
        fcntl.flock(held, fcntl.LOCK_EX)
        assert "is in use by another eie command" in refused("--samples", "5")
    real = tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):           # root writes anywhere: stand in for a read-only folder
        if dir is not None and Path(dir) == run:
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)
    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    err = refused("--samples", "5")
    assert f"cannot write {run}" in err and "Permission denied" in err


def test_run_refuses_output_files_in_folders_it_cannot_write_before_simulating(run_dir, tmp_path, monkeypatch,
                                                                               capsys):
    """--predictions / --verilog in a missing or unwritable folder: refused in one line before the simulation,
    not after it (atomic_write would fail there, losing the results)."""
    from eie.cosim import inference
    monkeypatch.setattr(eie.CompressedModel, "simulate", lambda *a, **k: pytest.fail("simulated anyway"))

    def refused(*argv):
        assert main(["run", str(run_dir), "--samples", "5", *map(str, argv)]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1, err
        return err

    missing = tmp_path / "missing"
    for flag in ("--predictions", "--verilog"):
        err = refused(flag, missing / "out.txt")
        assert f"{flag} {missing / 'out.txt'}: folder {missing} does not exist; create it" in err
    (tmp_path / "file").write_text("")
    assert f"folder {tmp_path / 'file'} is not a folder" in refused("--verilog", tmp_path / "file" / "chip.v")
    monkeypatch.setattr(inference, "_writable", lambda folder: folder != tmp_path)   # root writes anywhere
    err = refused("--predictions", tmp_path / "p.csv")
    assert f"folder {tmp_path} is not writable; name a file in a folder you can write to" in err


def test_run_takes_the_data_set_where_the_folder_records_none(run_dir, tmp_path, capsys):
    import shutil
    bare = tmp_path / "bare"
    shutil.copytree(run_dir, bare)
    (bare / "report.json").unlink()
    assert main(["run", str(bare), "--samples", "5"]) == 2
    assert "does not record its data set (no report.json): pass --data NAME" in capsys.readouterr().err
    assert main(["run", str(bare), "--samples", "5", "--data", "digits", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mismatches"] == 0
