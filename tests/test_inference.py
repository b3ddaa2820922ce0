"""`eie run` end to end on a tiny pruned and compressed model (digits), and its refusals."""

import json

import pytest

from conftest import chip_flags, test_chip
from eie.cli import main
import eie


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


def test_quick_demo_runs_the_whole_flow(tmp_path, capsys):
    assert main(["demo", "--quick", "--pes", "4", "--samples", "20", "--run-dir", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "mismatches 0" in out and "demo finished" in out
    assert (tmp_path / "demo" / "eie_chip.v").exists() and (tmp_path / "demo" / "image.npz").exists()
