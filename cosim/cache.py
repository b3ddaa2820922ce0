"""The cache of Verilator builds (``$EIE_CACHE/sim``, default ``~/.cache/eie/sim``) and `eie cache`.

An entry is a folder named by its build key holding only what a simulation needs (the simulator binary)
plus ``entry.json`` (configuration, build time, the binary's path, size and SHA-256) and the build log. Builds happen in a temporary folder beside the entries and are renamed in only when complete,
so a killed build leaves at most a temporary folder (removed by the next build of that key) and never a
half-made entry; an entry that fails its check (no manifest, a missing or altered binary, or a folder
from before manifests existed) is rebuilt with a note. One lock file per key serializes the builds of a
configuration across processes; the kernel drops it when a build dies. The cache is kept under a size cap
(``$EIE_CACHE_MAX_MB``, default 2048): after each build, broken entries and then the least recently used go.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from eie.errors import EieError

__all__ = ["cache_dir", "sim_dir", "MANIFEST", "key_lock", "entry_problem", "write_manifest",
           "entries", "evict", "clear", "temp_prefix", "max_bytes", "register"]

MANIFEST = "entry.json"
DEFAULT_MAX_MB = 2048


def cache_dir():
    return Path(os.environ.get("EIE_CACHE", Path.home() / ".cache" / "eie"))


def sim_dir():
    return cache_dir() / "sim"


def max_bytes():
    """The size cap from ``$EIE_CACHE_MAX_MB``."""
    raw = os.environ.get("EIE_CACHE_MAX_MB", str(DEFAULT_MAX_MB))
    try:
        mb = float(raw)
    except ValueError:
        mb = -1
    if not mb > 0:
        raise EieError(f"EIE_CACHE_MAX_MB must be a positive number of megabytes, not {raw!r}")
    return int(mb * 1e6)


def temp_prefix(key):
    """Temporary build folders of `key` start with this (a dot: never taken for an entry)."""
    return f".{key}.tmp-"


@contextlib.contextmanager
def key_lock(key, blocking=True):
    """Exclusive lock on one build key; yields False (without waiting) if `blocking` is off and it is held."""
    sim_dir().mkdir(parents=True, exist_ok=True)
    with open(sim_dir() / f".{key}.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(entry, key, config, build_seconds, binaries):
    """The manifest that makes `entry` complete; `binaries` are the simulators' paths inside it."""
    manifest = {"key": key, "config": config.to_dict(), "built": time.time(),
                "build_seconds": round(build_seconds, 1),
                "binaries": [{"path": b, "size": (entry / b).stat().st_size, "sha256": _sha256(entry / b)}
                             for b in binaries]}
    (entry / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def _read_manifest(entry):
    try:
        return json.loads((entry / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def entry_problem(entry, key=None):
    """None if `entry` is a complete build (of `key`, if given), else what is wrong with it."""
    if not entry.is_dir():
        return "missing"
    manifest = _read_manifest(entry)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("binaries"), list):
        return "incomplete (no readable manifest)"
    if key is not None and manifest.get("key") != key:
        return f"for another build key ({manifest.get('key')!r})"
    for recorded in manifest["binaries"]:
        binary = entry / str(recorded.get("path"))
        if not binary.is_file():
            return f"missing its simulator binary {recorded.get('path')}"
        if binary.stat().st_size != recorded.get("size") or _sha256(binary) != recorded.get("sha256"):
            return f"holding an altered simulator binary {recorded.get('path')}"
    return None


def _size(path):
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def entries():
    """One dict per cache entry (key, path, bytes, manifest or None, problem, last_used), oldest use first."""
    root = sim_dir()
    out = []
    for entry in sorted(root.iterdir()) if root.is_dir() else []:
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        manifest = _read_manifest(entry)
        stamp = entry / MANIFEST if manifest else entry
        out.append({"key": entry.name, "path": entry, "bytes": _size(entry), "manifest": manifest,
                    "problem": entry_problem(entry, entry.name), "last_used": stamp.stat().st_mtime})
    return sorted(out, key=lambda e: e["last_used"])


def _remove(key):
    """Remove an entry and the temporary folders of `key` unless a build holds its lock; True if removed."""
    with key_lock(key, blocking=False) as held:
        if not held:
            return False
        for tmp in sim_dir().glob(temp_prefix(key) + "*"):
            shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(sim_dir() / key, ignore_errors=True)
        return True   # the lock file stays: a process may be waiting on it


def evict(cap=None, keep=()):
    """Remove broken entries (those a build would redo anyway), then the least recently used, until the cache
    is within `cap` bytes (default: `max_bytes()`); entries named in `keep` stay. Returns the keys removed."""
    cap = max_bytes() if cap is None else cap
    listed = sorted(entries(), key=lambda e: e["problem"] is None)   # stable: by last use within each group
    total = sum(e["bytes"] for e in listed)
    removed = []
    for e in listed:
        if total <= cap:
            break
        if e["key"] not in keep and _remove(e["key"]):
            total -= e["bytes"]
            removed.append(e["key"])
    return removed


def clear():
    """Remove every entry and leftover temporary folder not locked by a running build; returns (removed, busy)."""
    root = sim_dir()
    keys = {e["key"] for e in entries()}
    if root.is_dir():
        keys |= {p.name[1:].split(".tmp-")[0] for p in root.glob(".*.tmp-*")}
    removed, busy = [], []
    for key in sorted(keys):
        (removed if _remove(key) else busy).append(key)
    return removed, busy


# -- eie cache ------------------------------------------------------------------------------------------------

def _age(seconds):
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= n:
            return f"{seconds / n:.0f} {unit}"
    return f"{seconds:.0f} s"


def cache_command(args):
    if args.action == "clear":
        removed, busy = clear()
        print(f"removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'} from {sim_dir()}"
              + (f"; {len(busy)} left (a build holds them): {', '.join(busy)}" if busy else ""))
        return 0
    listed = entries()
    if not listed:
        print(f"{sim_dir()}: empty")
        return 0
    from eie.config import ChipConfig
    now = time.time()
    print(f"{'entry':<26} {'MB':>6} {'built':>7} {'used':>7}  chip")
    for e in reversed(listed):
        m = e["manifest"] or {}
        try:
            chip = ChipConfig.from_dict(m["config"]).describe()
        except (KeyError, TypeError, ValueError):
            chip = "?"
        built = _age(now - m["built"]) if isinstance(m.get("built"), (int, float)) else "?"
        status = f"  [{e['problem']}: rebuilt if used, evicted first]" if e["problem"] else ""
        print(f"{e['key']:<26} {e['bytes'] / 1e6:6.1f} {built:>7} {_age(now - e['last_used']):>7}  {chip}{status}")
    total = sum(e["bytes"] for e in listed)
    print(f"{len(listed)} entries, {total / 1e6:.1f} MB of a {max_bytes() / 1e6:.0f} MB cap ($EIE_CACHE_MAX_MB) "
          f"in {sim_dir()}")
    return 0


def register(sub):
    p = sub.add_parser("cache", help="list or clear the cached Verilator builds",
                       description="List the cached Verilator builds (size, chip, age, last use) or clear them. "
                                   "Builds live in $EIE_CACHE/sim (default ~/.cache/eie/sim); after each build the "
                                   "least recently used entries are evicted above $EIE_CACHE_MAX_MB "
                                   f"(default {DEFAULT_MAX_MB}).")
    p.add_argument("action", nargs="?", choices=["list", "clear"], default="list",
                   help="list (default) or clear (entries a running build holds are left)")
    p.set_defaults(func=cache_command)
