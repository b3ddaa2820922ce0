"""The `eie` command as a user meets it: help, doctor, verilog, spmv, and one-line errors for bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import chip_flags, test_chip
from eie.cli import main


def eie(*args):
    return subprocess.run([sys.executable, "-m", "eie", *map(str, args)], capture_output=True, text=True)


def test_help_lists_the_subcommands():
    out = eie("--help")
    assert out.returncode == 0
    for name in ("doctor", "verilog", "spmv", "prune", "compress", "sensitivity"):
        assert name in out.stdout


def test_doctor_reports_versions():
    out = eie("doctor")
    for name in ("python", "torch", "amaranth", "yosys backend", "cocotb", "verilator", "data: digits"):
        assert name in out.stdout
    assert out.returncode == (1 if "MISSING" in out.stdout else 0)


def test_verilog_is_written_and_lints_clean(tmp_path):
    out = eie("verilog", "--pes", 2, "--act-depth", 8, "--matrix-words", 64, "--ptr-words", 16,
              "-o", tmp_path / "chip.v", "--lint")
    assert out.returncode == 0, out.stderr
    assert "lint-only" in out.stdout and "clean" in out.stdout
    text = (tmp_path / "chip.v").read_text()
    assert "module eie_chip" in text and "initial begin" not in text


def test_spmv_random_layer_json(capsys):
    assert main(["spmv", "--rows", "48", "--cols", "40", "--density", "0.2", "--json", *chip_flags(test_chip(4))]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["mismatches"] == 0 and report["rtl_entries_match_model"]
    for key in ("cycles", "ideal_cycles", "bound_cycles", "utilization", "model_cycles", "sim_cycles_per_s"):
        assert key in report
    assert report["bound_cycles"] >= report["ideal_cycles"]


@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_spmv_user_arrays(tmp_path, capsys, dtype):
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((30, 20)) * 4 * (rng.random((30, 20)) < 0.3)).astype(dtype)
    x = (rng.uniform(-50, 50, 20) * (rng.random(20) < 0.5)).astype(dtype)
    np.save(tmp_path / "w.npy", w)
    np.save(tmp_path / "x.npy", x)
    assert main(["spmv", "--matrix", str(tmp_path / "w.npy"), "--input", str(tmp_path / "x.npy"),
                 "--relu", "--json", *chip_flags(test_chip(4))]) == 0
    assert json.loads(capsys.readouterr().out)["mismatches"] == 0


def test_bad_input_is_one_line(tmp_path):
    w = np.ones((4, 3))
    w[1, 1] = np.nan
    np.save(tmp_path / "nan.npy", w)
    np.save(tmp_path / "w.npy", np.ones((4, 3)))
    np.save(tmp_path / "x.npy", np.ones(5))
    cases = [
        (["spmv", "--matrix", tmp_path / "nan.npy", "--input", tmp_path / "x.npy"], "NaN"),
        (["spmv", "--matrix", tmp_path / "w.npy", "--input", tmp_path / "x.npy"], "vector of 3 values"),
        (["spmv", "--matrix", tmp_path / "w.npy"], "go together"),
        (["spmv", "--pes", 65], "pes must be in 1..64"),
        (["spmv", "--density", 1.5], "--density must be in 0..1"),
        (["spmv", "--rows", 64, "--cols", 64, "--pes", 2, "--matrix-words", 2], "sparse-matrix words per PE"),
        (["verilog", "-o", tmp_path / "no" / "chip.v"], "does not exist"),
        (["prune", tmp_path / "r", "--seed", "-1"], "-1 is negative; seeds are integers >= 0"),
        (["spmv", "--seed", "-1"], "--seed must be a non-negative integer"),
        (["spmv", "--act-depth", "0"], "act_depth must be in 1..65536, not 0"),   # refused, not defaulted
        (["run", tmp_path, "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ]
    for args, message in cases:
        out = eie(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "Traceback" not in out.stderr


def test_version_and_doctor_checks_the_compiler_and_cache():
    import eie as package
    assert eie("--version").stdout.strip() == f"eie {package.__version__}"
    out = eie("doctor").stdout
    assert "C++ compiler" in out and "build cache" in out


def test_spmv_places_rows_as_compress_does(capsys):
    """`eie spmv` balances the rows by default, as `eie compress` does; --placement interleaved is EIE's."""
    flags = ["spmv", "--rows", "48", "--cols", "40", "--density", "0.2", "--json", *chip_flags(test_chip(4))]
    assert main(flags) == 0
    balanced = json.loads(capsys.readouterr().out)
    assert main([*flags, "--placement", "interleaved"]) == 0
    interleaved = json.loads(capsys.readouterr().out)
    assert balanced["placement"].startswith("balanced") and interleaved["placement"] == "interleaved"
    assert balanced["mismatches"] == interleaved["mismatches"] == 0


def _as_the_program(setup, tmp_path):
    """`eie cache` run as the program (`main()` on sys.argv) in a fresh interpreter whose Ctrl-C is a terminal's,
    after `setup` (Python source)."""
    import os
    code = ("import signal, sys\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            + setup + "from eie.cli import main\nsys.exit(main())\n")
    return subprocess.run([sys.executable, "-c", code, "cache"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "EIE_CACHE": str(tmp_path)})


def test_a_ctrl_c_once_the_command_is_done_ends_it_without_a_traceback(tmp_path):
    """A Ctrl-C in the interpreter's teardown (here an exit callback that takes a while and is interrupted) used
    to print 'Exception ignored in atexit callback' with a KeyboardInterrupt and exit 0; now the process ends as
    the system ends it on SIGINT, everything the command printed already out."""
    import signal
    out = _as_the_program("import atexit, os, time\n"
                          "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(2)))\n", tmp_path)
    assert "Traceback" not in out.stderr and "Exception ignored" not in out.stderr, out.stderr
    assert out.returncode == -signal.SIGINT
    assert out.stdout.strip(), "the command's output is flushed before the interrupt"


def test_a_ctrl_c_that_lands_in_a_callback_ends_the_command_as_interrupted(tmp_path):
    """A KeyboardInterrupt inside a callback Python cannot raise from (here a weakref.finalize's, as a Ctrl-C
    landing while an object is freed) used to be printed as 'Exception ignored' while the command went on to
    exit 0; the command still goes on (Python cannot raise there), then ends as interrupted, exit 130."""
    out = _as_the_program("import time, weakref\n"
                          "from eie.cosim import cache\n"
                          "def command(args):\n"
                          "    class Freed: pass\n"
                          "    def ctrl_c(): raise KeyboardInterrupt\n"
                          "    freed = Freed()\n"
                          "    weakref.finalize(freed, ctrl_c)\n"
                          "    del freed\n"
                          "    time.sleep(0.1)\n"
                          "    print('went on')\n"
                          "cache.cache_command = command\n", tmp_path)
    assert out.returncode == 130 and "went on" in out.stdout
    assert out.stderr == "eie cache: interrupted\n", out.stderr
