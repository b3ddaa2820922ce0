"""The clocks cycles are turned into time at: measured ECP5 Fmax per chip, and EIE's own clock for reference.

`eie synth --ecp5` records what it measured (`record`) in ``$EIE_CACHE/fmax/<key>-s<speed>.json`` (default
``~/.cache/eie/fmax``), where the key joins the chip configuration's key and a hash of the gateware (the
contents of ``hw/*.py``): the same RTL finds its figure again (`lookup`), changed RTL misses it. One record per
speed grade, so that a run at a faster grade does not replace the standard one; times are stated at the
slowest grade recorded (speed 6 where measured: the part a board most likely carries). `time_us` is the one
place where cycles become microseconds.
"""

import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import eie.hw
from eie.cosim.cache import cache_dir

__all__ = ["Clock", "EIE_REFERENCE", "GATEWARE", "gateware_hash", "key", "record", "lookup", "time_us",
           "store_dir"]

GATEWARE = Path(eie.hw.__file__).parent     # hw/: the RTL whose Fmax is measured


@dataclass(frozen=True)
class Clock:
    """A clock to state times at: its frequency and where the figure comes from."""
    mhz: float
    source: str


EIE_REFERENCE = Clock(800.0, "EIE's 800 MHz (45 nm, ISCA 2016), for reference")


def store_dir() -> Path:
    return cache_dir() / "fmax"


def gateware_hash() -> str:
    """SHA-256 over the names and contents of the gateware sources (``hw/*.py``)."""
    h = hashlib.sha256()
    for f in sorted(GATEWARE.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def key(config, gateware: str | None = None) -> str:
    """`config`'s key and the gateware's hash (default: of the sources now): what a measured Fmax holds for."""
    return f"{config.key()}-{(gateware or gateware_hash())[:12]}"


def _short(version: str) -> str:
    """'Yosys 0.70 (git sha1 28ba3cb92)' -> '0.70', 'nextpnr-0.11.1' -> '0.11.1'."""
    found = re.search(r"\d+\.\d+(?:\.\d+)*", version or "")
    return found.group(0) if found else str(version)


def record(config, result: dict) -> Path:
    """Store the ECP5 Fmax of `result` (an `eie.cosim.synth.synthesize` result with ``ecp5``) for `config`'s
    chip and the gateware it was made from (``result["gateware_sha256"]``, default: the sources now); returns
    the file written (atomically: a temporary file beside it, renamed over it)."""
    e, tools = result["ecp5"], result["tools"]
    gateware = result.get("gateware_sha256") or gateware_hash()
    date = time.strftime("%Y-%m-%d")
    source = (f"ECP5 {e['device']} speed {e['speed']} Fmax, measured {date} "
              f"(yosys {_short(tools.get('yosys'))}, nextpnr {_short(tools.get('nextpnr-ecp5'))})")
    entry = {"key": key(config, gateware), "config": config.to_dict(), "gateware_sha256": gateware,
             "fmax_mhz": e["fmax_mhz"], "source": source, "device": e["device"], "speed": e["speed"],
             "seeds": e["seeds"], "fmax_spread": e.get("fmax_spread"), "target_mhz": e.get("target_mhz"),
             "tools": tools, "date": date, "critical_path": e.get("critical_path")}
    folder = store_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{entry['key']}-s{e['speed']}.json"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(entry, indent=1) + "\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def lookup(config) -> Clock | None:
    """The recorded ECP5 Fmax of `config`'s chip built from the current gateware at the slowest speed grade
    measured, or None."""
    found = []
    k = key(config)      # records written before they were kept per speed grade are named <key>.json
    for path in [*store_dir().glob(f"{k}-s*.json"), store_dir() / f"{k}.json"]:
        try:
            entry = json.loads(path.read_text())
            found.append((int(entry["speed"]), Clock(float(entry["fmax_mhz"]), str(entry["source"]))))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return min(found, key=lambda f: f[0])[1] if found else None


def time_us(cycles: float, clock: Clock | float) -> float:
    """Microseconds that `cycles` take at `clock` (a Clock or MHz)."""
    mhz = clock.mhz if isinstance(clock, Clock) else float(clock)
    return cycles / mhz
