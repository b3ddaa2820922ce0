"""Run folders: every command writes its files into one folder, atomically, and never replaces a file that an
earlier command left there unless asked to (--force). `report.json` is shared: each command merges its own
keys into it, and `report.md` is rebuilt from the merged result."""

import fcntl
import json
import os
from pathlib import Path
import tempfile
import weakref

from eie.errors import EieError

__all__ = ["atomic_write", "RunFolder", "hold_until_exit"]


def atomic_write(path, write, binary=True):
    """Call `write(file)` on a temporary file beside `path`, then rename it over `path`: readers see the old
    file or the new one, never half of one."""
    path = Path(path)
    if not path.parent.is_dir():
        raise EieError(f"cannot write {path}: folder {path.parent} does not exist; create it or choose another")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise EieError(f"cannot write {path}: {e.strerror or e}; choose a folder you can write to") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())   # mkstemp makes 0600; a file the user writes gets their umask
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):     # not when a Ctrl-C lands just after the rename: the file is whole
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise EieError(f"cannot write {path}: {e.strerror or e}") from None
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


class _Hold:
    """This process's hold on a run folder: an advisory lock on its `.eie.lock`, released (the file closed)
    when no `RunFolder` of this process uses it any more, or when the process ends."""

    def __init__(self, path):
        try:
            fd = os.open(path / ".eie.lock", os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise EieError(f"cannot write into run folder {path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EieError(f"run folder {path} is in use by another eie command; wait for it to finish or use "
                           "another folder") from None
        weakref.finalize(self, os.close, fd)


# The run folders this process holds, by resolved path: the RunFolders of one command (and the API calls it
# makes) share one hold; another process asking for the folder is refused.
_HELD = weakref.WeakValueDictionary()
# Holds kept until the process ends (`hold_until_exit`), else None.
_KEPT = None


def hold_until_exit() -> None:
    """Keep every run folder this process holds from now on until it ends, for a process that is one command
    (`eie`): the holds go with the process, not with a Python callback as the command's last objects are
    freed, where a Ctrl-C would be reported as an ignored exception."""
    global _KEPT
    _KEPT = []


class RunFolder:
    """The folder a command writes into. `outputs` are the file names this command creates; if any is
    already there the command refuses to start, unless `force`, which replaces only those files (the refusal
    says `how_to_force`: the flag for a command, the argument for the API). The folder
    itself appears with the first file written, so a command refused for bad input leaves nothing behind.

    A RunFolder that writes holds the folder for its process while it lives (from its creation where it is
    given `outputs` and the folder exists, else from its first write): every command and API call that writes
    a run folder does so through this class, so a second process writing the same folder is refused in one line
    rather than silently overwriting the first one's results."""

    REPORT = "report.json"

    def __init__(self, path, outputs=(), force=False, how_to_force="pass --force"):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise EieError(f"{self.path} exists and is not a folder; choose another run folder")
        clash = [name for name in outputs if (self.path / name).exists()]
        if clash and not force:
            raise EieError(f"run folder {self.path} already has {', '.join(clash)}; "
                           f"pick a new folder or {how_to_force} to replace those files")
        self._hold = None
        if outputs and self.path.is_dir():
            self._take_hold()

    def _take_hold(self):
        if self._hold is None:
            key = self.path.resolve()
            self._hold = _HELD.get(key)
            if self._hold is None:
                self._hold = _HELD[key] = _Hold(key)
                if _KEPT is not None:
                    _KEPT.append(self._hold)

    def __truediv__(self, name):
        return self.path / name

    def output(self, name):
        """Path to write `name` to, creating the folder if needed."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise EieError(f"cannot create run folder {self.path}: {e.strerror}") from None
        self._take_hold()
        return self.path / name

    def has(self, name):
        return (self.path / name).is_file()

    def check_writable(self):
        """Refuse a folder this command could not write its results into, before the work that makes them."""
        probe = self.output(".eie-write-probe")
        atomic_write(probe, lambda f: None)
        probe.unlink()

    def write_text(self, name, text):
        atomic_write(self.output(name), lambda f: f.write(text), binary=False)

    def write_json(self, name, data):
        self.write_text(name, json.dumps(data, indent=2, sort_keys=False) + "\n")

    def read_json(self, name):
        try:
            return json.loads((self / name).read_text())
        except FileNotFoundError:
            raise EieError(f"{self / name} is missing; run the command that makes it first") from None
        except (OSError, ValueError) as e:
            raise EieError(f"cannot read {self / name}: {e}") from None

    def save_figure(self, name, figure):
        atomic_write(self.output(name), lambda f: figure.savefig(f, format="png", dpi=110, bbox_inches="tight"))

    def report(self):
        return self.read_json(self.REPORT) if self.has(self.REPORT) else {}

    def data_set(self, name=None, data_dir=None, log=None):
        """The data set `name` (with `data_dir`), else the one this folder's report records (default
        fashion-mnist); a name other than the recorded one is refused. `log` gets one line saying what was read."""
        from eie.sw.data import load_dataset
        recorded = self.report().get("data", {})
        if name is None:
            name, data_dir = recorded.get("name", "fashion-mnist"), data_dir or recorded.get("data_dir")
        elif recorded and recorded.get("name") != name:
            raise EieError(f"run folder {self.path} was made with data set {recorded['name']}, not {name}; "
                           "use a new run folder")
        data = load_dataset(name, None if data_dir is None else Path(data_dir))
        if log:
            log(f"data: {data.name} from {data.location}: {len(data.x_train)} training, {len(data.x_test)} test "
                "images")
        return data

    def update_report(self, **entries):
        """Merge `entries` into report.json (the per-layer dicts and timings merge one level down) and
        rebuild report.md from the result."""
        from eie.sw.report import markdown
        report = self.report()
        for key, value in entries.items():
            if key in ("layers", "timings") and isinstance(report.get(key), dict):
                merged = report[key]
                for name, figures in value.items():
                    if isinstance(figures, dict) and isinstance(merged.get(name), dict):
                        merged[name].update(figures)
                    else:
                        merged[name] = figures
            else:
                report[key] = value
        report["wall_seconds"] = round(sum(report.get("timings", {}).values()), 1)
        self.write_json(self.REPORT, report)
        self.write_text("report.md", markdown(report))
        return report
