"""The build cache survives a killed build and repairs a broken entry; entries hold only what the simulator
needs; the size cap evicts the least recently used entries; `eie cache` lists and clears."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from eie import ChipConfig
from eie.cli import main
from eie.cosim import cache
from eie.cosim.build import BINARY, RAW_BINARY, build
from eie.cosim.sim import simulate
from eie.errors import EieError
from eie.sw import reference
from eie.sw.image import build_image
from eie.sw.quant import QuantLayer
from test_small_chips import TINY    # the chip with the quickest build



def start_build(config, env):
    """`build(config)` in a process of its own process group (so that one signal reaches g++ too)."""
    code = f"from eie import ChipConfig; from eie.cosim.build import build; build(ChipConfig(**{config.to_dict()!r}))"
    return subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(predicate, proc, timeout=300):
    t0 = time.time()
    while not predicate():
        assert proc.poll() is None, "the build ended before it could be killed"
        assert time.time() - t0 < timeout, "the build never reached the C++ compile"
        time.sleep(0.05)


def test_a_killed_build_leaves_no_entry_and_a_broken_entry_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("EIE_CACHE", str(tmp_path))
    sim = tmp_path / "sim"
    proc = start_build(TINY, {**os.environ, "EIE_CACHE": str(tmp_path)})
    try:
        wait_for(lambda: any(sim.glob(".*.tmp-*/obj/Vtop.mk")), proc)    # Verilator done, make/g++ running
        time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert cache.entries() == [], "a killed build must not leave an entry"
    partial = next(sim.glob(".*.tmp-*"))
    # What the cache looked like before temporary folders: the half-built folder under the entry's name.
    key = partial.name[1:].split(".tmp-")[0]
    os.rename(partial, sim / key)
    assert "incomplete" in cache.entry_problem(sim / key, key)

    notes = []
    entry = build(TINY, log=notes.append)
    assert entry == sim / key
    assert any("incomplete" in n and "rebuilding" in n for n in notes), notes
    assert cache.entry_problem(entry, key) is None
    assert not list(sim.glob(".*.tmp-*")), "temporary folders of the killed build are removed"
    files = sorted(f.relative_to(entry).as_posix() for f in entry.rglob("*") if f.is_file())
    assert files == sorted(["build.log", cache.MANIFEST, BINARY, RAW_BINARY]), files
    size = sum((entry / f).stat().st_size for f in files)
    assert size <= 10e6, f"entry of {size / 1e6:.1f} MB"

    layer = QuantLayer(np.array([[1]]), np.array([0, 900, -700, 300]), np.array([5]), 3, False)
    x = np.array([[7], [-300], [0]])
    image = build_image([layer], TINY)
    notes.clear()
    result = simulate(image, x, log=notes.append)
    assert notes == [], "a complete entry is reused without a build"
    assert (result.outputs == reference.forward([layer], x, TINY)[-1]).all()

    binary = entry / RAW_BINARY
    binary.write_bytes(binary.read_bytes()[:1000])
    assert "altered" in cache.entry_problem(entry, key)
    (entry / cache.MANIFEST).write_text("{")
    assert "incomplete" in cache.entry_problem(entry, key)


def fake_entry(key, mb, age, manifest=True):
    entry = cache.sim_dir() / key
    (entry / "obj").mkdir(parents=True)
    (entry / "obj/eie_chip").write_bytes(b"x" * int(mb * 1e6))
    stamp = entry / cache.MANIFEST
    if manifest:
        cache.write_manifest(entry, key, ChipConfig(pes=2), 1.0, ["obj/eie_chip"])
    else:
        stamp = entry
    os.utime(stamp, (time.time() - age, time.time() - age))
    return entry


def test_the_size_cap_evicts_least_recently_used_entries(tmp_path, monkeypatch):
    monkeypatch.setenv("EIE_CACHE", str(tmp_path))
    for key, age in (("a", 40), ("b", 30), ("c", 20), ("d", 10)):
        fake_entry(key, 1.0, age)
    fake_entry("old-format", 1.0, 5, manifest=False)     # the most recently used, but broken: it goes first
    assert [e["key"] for e in cache.entries()] == ["a", "b", "c", "d", "old-format"]
    assert cache.entry_problem(cache.sim_dir() / "a", "a") is None
    with cache.key_lock("a"):   # a build holds "a": it stays
        removed = cache.evict(cap=3.5e6, keep={"b"})
    assert removed == ["old-format", "c"]
    assert sorted(e["key"] for e in cache.entries()) == ["a", "b", "d"]
    assert cache.evict(cap=10e6) == []
    monkeypatch.setenv("EIE_CACHE_MAX_MB", "1.5")
    assert cache.evict() == ["a", "b"]


def test_eie_cache_lists_and_clears(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EIE_CACHE", str(tmp_path))
    fake_entry("2pe-1234", 1.2, 7200)
    fake_entry("2pe-old", 0.5, 60, manifest=False)
    (cache.sim_dir() / ".3pe-dead.tmp-99").mkdir()     # left by a killed build
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert "2pe-1234" in out and "2 PEs" in out and "2 h" in out and "1.2" in out
    assert "2pe-old" in out and "incomplete" in out
    assert main(["cache", "clear"]) == 0
    assert "removed 3 entries" in capsys.readouterr().out
    assert not [p for p in cache.sim_dir().iterdir() if not p.name.endswith(".lock")]
    assert main(["cache", "list"]) == 0
    assert "empty" in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["0", "-5", "lots"])
def test_a_bad_size_cap_is_one_line(bad, monkeypatch):
    monkeypatch.setenv("EIE_CACHE_MAX_MB", bad)
    with pytest.raises(EieError, match="EIE_CACHE_MAX_MB must be a positive number"):
        cache.max_bytes()
