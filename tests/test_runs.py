"""Run folders (`eie.sw.runs`): one process writes a folder at a time, whichever command or API call it is."""

import fcntl
import gc

import pytest

from eie.cli import main
from eie.sw.runs import RunFolder

# Every command that writes into an existing run folder, with arguments that would otherwise start its work.
WRITERS = [
    ["sensitivity", "{run}", "--data", "digits", "--epochs", "1", "--fractions", "0.5"],
    ["prune", "{run}", "--data", "digits", "--epochs", "1", "--iterations", "1", "--retrain-epochs", "1"],
    ["compress", "{run}", "--data", "digits"],
    ["sweep", "{run}", "--pes", "1", "--simulate", "none"],
    ["compare", "{run}", "--methods", "iterative", "--budgets", "0.5"],
    ["lstm", "--quick", "--run-dir", "{run}"],
    ["decoder", "--quick", "--run-dir", "{run}"],
]


def _held_elsewhere(folder):
    """The folder's lock taken on a file of our own, as another process's command would hold it."""
    held = open(folder / ".eie.lock", "w")
    fcntl.flock(held, fcntl.LOCK_EX)
    return held


@pytest.mark.parametrize("argv", WRITERS, ids=[a[0] for a in WRITERS])
def test_every_command_that_writes_a_run_folder_is_refused_while_another_holds_it(argv, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "earlier.txt").write_text("an earlier command's work\n")
    with _held_elsewhere(run):
        assert main([a.format(run=run) for a in argv]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"run folder {run} is in use by another eie command" in errors[0], errors
    assert sorted(p.name for p in run.iterdir()) == [".eie.lock", "earlier.txt"]


def test_one_process_shares_its_hold_and_lets_go_when_done(tmp_path):
    """Two RunFolders of one process (a command and the API call it makes) write the same folder; once neither
    is left, another process may take it. A folder that does not exist yet is held from its first write."""
    run = tmp_path / "run"
    first = RunFolder(run, ["a.txt"])
    assert not run.exists()                        # nothing written, nothing held, nothing left behind
    first.write_text("a.txt", "a")
    second = RunFolder(run, ["b.txt"])             # the folder exists: held from here on
    second.write_text("b.txt", "b")
    with open(run / ".eie.lock") as other, pytest.raises(BlockingIOError):
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    del first, second
    gc.collect()
    with open(run / ".eie.lock") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_ctrl_c_just_after_the_rename_leaves_the_whole_file_and_stays_a_ctrl_c(tmp_path, monkeypatch):
    """atomic_write cleans up its temporary file on any exception, but one landing after the rename finds none:
    the interrupt comes through as itself (the command says 'interrupted'), not as a FileNotFoundError."""
    import os
    from eie.sw.runs import atomic_write
    real = os.replace

    def replace_then_interrupt(src, dst):
        real(src, dst)
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "report.md", lambda f: f.write("whole\n"), binary=False)
    assert (tmp_path / "report.md").read_text() == "whole\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]
