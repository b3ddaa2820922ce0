"""Simulation campaigns on Dask: tasks spread over a local cluster come back in order and equal to a serial
run, a worker that dies has its task re-run, a failing task is reported, an unreachable scheduler is one line;
`CompressedModel.simulate(jobs=2)` and `eie sweep` give what one process gives."""

import json
import os
import subprocess
import sys
import textwrap

import cloudpickle
import numpy as np
import pytest

import eie
from conftest import cli
from eie.cosim import campaign
from eie.cosim.campaign import run_tasks
from eie.cosim.sweep import grid, sweep
from timing_helpers import SOURCE, hinted_config, private_fmax, record_fmax

cloudpickle.register_pickle_by_value(sys.modules[__name__])   # workers cannot import a test module


def _square_or_fail(task):
    n, marker = task
    if n == 3 and not os.path.exists(marker):     # the first try kills its worker outright
        open(marker, "w").close()
        os._exit(1)
    if n == 5:
        raise ValueError("task five is broken")
    return n * n


def test_tasks_survive_a_dead_worker_and_failures_are_reported(tmp_path):
    tasks = [(n, str(tmp_path / "died")) for n in range(8)]
    results, failed = run_tasks(_square_or_fail, tasks, workers=2)
    assert (tmp_path / "died").exists(), "a worker was killed"
    assert results == [0, 1, 4, 9, 16, None, 36, 49]
    assert list(failed) == [5] and "task five is broken" in failed[5]


def _ignores_ctrl_c(_):
    import signal
    return signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def test_workers_leave_ctrl_c_to_the_parent():
    """Ctrl-C once printed every worker's KeyboardInterrupt traceback; now the parent alone stops and closes the
    cluster, and its own handler is back."""
    import signal
    before = signal.getsignal(signal.SIGINT)     # the default, or SIG_IGN when the tests run in the background
    results, failed = run_tasks(_ignores_ctrl_c, [0, 1], workers=2)
    assert results == [True, True] and not failed
    assert signal.getsignal(signal.SIGINT) is before


def test_an_unreachable_scheduler_is_one_line():
    with pytest.raises(eie.EieError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        run_tasks(abs, [1], scheduler="tcp://127.0.0.1:9")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    data = eie.load_data("digits")
    model = eie.build_model("40", data)     # seeded: the same network every run
    eie.train(model, data, eie.Training(epochs=4, lr=0.05))
    eie.prune(model, data, quality=0.8, iterations=1, retraining=eie.Training(epochs=1, lr=0.02),
              final_epochs=0, log=lambda s: None)
    cm = eie.compress(model, data, eie.ChipConfig(pes=2), finetuning=eie.Training(epochs=0, lr=1e-4),
                      calibration=200, log=lambda s: None)
    run = tmp_path_factory.mktemp("run")
    cm.save(run)
    return data, cm, run


def test_parallel_simulation_equals_one_process(small, monkeypatch):
    data, cm, _ = small
    x = data.x_test[:240]
    monkeypatch.setattr(campaign, "MIN_CHUNK", 100)     # two processes for these few samples
    one, two = cm.simulate(x, jobs=1), cm.simulate(x, jobs=2)
    assert np.array_equal(one.outputs, two.outputs) and len(two.mismatches) == 0
    assert one.figures["cycles_per_image"] == two.figures["cycles_per_image"]
    assert [l["cycles"] for l in one.figures["layers"]] == [l["cycles"] for l in two.figures["layers"]]
    with pytest.raises(eie.EieError, match=r"simulator processes \(jobs\) must be at least 1, not 0"):
        cm.simulate(x, jobs=0)


def test_small_runs_stay_in_one_process(small):
    """A process's start costs more than a few hundred images take: `jobs` is an upper bound."""
    data, cm, _ = small
    said = []
    run = cm.simulate(data.x_test[:300], jobs=2, log=said.append)
    assert len(run.mismatches) == 0 and not [m for m in said if "processes" in m], said


def _script(tmp_path, body):
    """Run `body` as a plain script (no `if __name__ == "__main__":`), as a notebook user writes one."""
    script = tmp_path / "flow.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)


def test_a_script_without_a_main_guard_runs_a_local_cluster(tmp_path):
    """Spawned workers must not re-run the script (each would start a cluster of its own: 'Nanny failed')."""
    done = _script(tmp_path, """
        import math
        from eie.cosim.campaign import run_tasks
        print("script started", flush=True)
        print(run_tasks(math.sqrt, [1.0, 4.0, 9.0], workers=2))
    """)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["script started", "([1.0, 2.0, 3.0], {})"]


def test_the_readme_flow_with_jobs_2_as_a_plain_script(tmp_path):
    done = _script(tmp_path, """
        import eie
        from eie.cosim import campaign
        data = eie.load_data("digits")
        model = eie.build_model("40", data)
        eie.train(model, data, eie.Training(epochs=2, lr=0.05))
        cm = eie.compress(model, data, eie.ChipConfig(pes=2), finetuning=eie.Training(epochs=0, lr=1e-4),
                          calibration=100, log=lambda s: None)
        campaign.MIN_CHUNK = 20            # two processes for these few samples
        said = []
        run = cm.simulate(data.x_test[:60], jobs=2, log=said.append)
        print(len(run.mismatches), any("2 processes" in m for m in said))
    """)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "0 True"


def test_sweep_on_a_local_cluster_equals_serial(small):
    data, cm, run = small
    points = grid(pes=(1, 2))
    serial = sweep(cm, data.x_test[:30], points, model_samples=5, jobs=1)
    parallel = sweep(cm, data.x_test[:30], points, model_samples=5, jobs=2)
    assert serial == parallel
    assert [r["pes"] for r in serial] == [1, 2] and all(r["mismatches"] == 0 for r in serial)
    assert serial[0]["estimated_cycles_per_image"] > serial[1]["estimated_cycles_per_image"]
    assert all(r["model_error_pct"] <= 2 for r in serial)


def test_sweep_command_writes_its_files(small, capsys):
    _, _, run = small
    assert cli("sweep", run, "--pes", "1,2", "--samples", "20", "--model-samples", "3", "--simulate", "1",
               "--jobs", "1", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert sum("cycles_per_image" in r for r in rows) == 1      # only the fastest point was simulated
    assert min(rows, key=lambda r: r["estimated_cycles_per_image"]).get("mismatches") == 0
    for name in ("sweep.json", "sweep.md", "sweep.png"):
        assert (run / name).exists()
    with pytest.raises(eie.EieError, match="a sweep varies"):
        grid(act_depth=(1,))
    with pytest.raises(eie.EieError, match="pes must be in 1..64, not 0"):
        cli("sweep", run, "--pes", "0,2", "--force")
    with pytest.raises(eie.EieError, match="already has sweep.json"):
        cli("sweep", run, "--pes", "2")


def test_sweep_states_time_at_each_points_own_measured_fmax(small, tmp_path, monkeypatch, capsys):
    """Each design point's time per image at its own chip's measured Fmax where one is stored (else 'not
    measured' and how to measure it) and at EIE's 800 MHz, in sweep.json, sweep.md and --json."""
    _, cm, _ = small
    private_fmax(monkeypatch, tmp_path)
    run = tmp_path / "run"
    cm.save(run)
    one, two = (cm.relayout(**point).config for point in grid(pes=(1, 2)))
    record_fmax(two, 50.0)
    assert cli("sweep", run, "--pes", "1,2", "--samples", "10", "--model-samples", "3", "--simulate", "none",
               "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == json.loads((run / "sweep.json").read_text())["points"]
    for r in rows:
        t, cycles = r["time"], r["estimated_cycles_per_image"]
        assert t["cycles_from"] == "model" and t["cycles_per_image"] == cycles
        assert t["clocks"]["eie_800mhz"]["us_per_image"] == pytest.approx(cycles / 800, abs=1e-4)
    slow, fast = rows
    assert "fmax" not in slow["time"]["clocks"] and hinted_config(slow["time"]["fmax_hint"]) == one
    f = fast["time"]["clocks"]["fmax"]
    assert f["mhz"] == 50 and f["source"].startswith(SOURCE) and "fmax_hint" not in fast["time"]
    assert f["us_per_image"] == pytest.approx(fast["estimated_cycles_per_image"] / 50, abs=1e-4)
    md = (run / "sweep.md").read_text()
    table = {int(line.split("|")[1]): [c.strip() for c in line.split("|")[1:-1]]
             for line in md.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()}
    head = [c.strip() for c in md.splitlines()[2].split("|")[1:-1]]
    at_fmax, at_800 = head.index("us/image (Fmax)"), head.index("us/image (EIE 800 MHz)")
    assert table[1][at_fmax] == "not measured"
    assert table[1][at_800] == f"{slow['estimated_cycles_per_image'] / 800:.3f}"
    assert table[2][at_fmax] == f"{fast['estimated_cycles_per_image'] / 50:.3f}"
    assert table[2][at_800] == f"{fast['estimated_cycles_per_image'] / 800:.3f}"
    assert f"- pes 2, queue_depth 8, index_bits 4, entries_per_word 8, acts_per_cycle 1, outputs_per_cycle 1: " \
           f"50 MHz, {SOURCE}" in md
    assert f"- pes 1, queue_depth 8, index_bits 4, entries_per_word 8, acts_per_cycle 1, outputs_per_cycle 1: " \
           f"{slow['time']['fmax_hint']}" in md
