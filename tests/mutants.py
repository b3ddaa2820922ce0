"""Mutation check: apply each known mutant of the RTL, the reference and the encoder to a copy of the tree, run
a test tier on the copy, and print whether the mutant was caught (a test failed) or survived.

    python tests/mutants.py               # the fast tier: no Verilator build (about a minute per mutant)
    python tests/mutants.py --tier full   # `make test`'s selection (Verilator builds per RTL mutant: slow)
    python tests/mutants.py -k bypass     # only mutants whose name contains "bypass"
    python tests/mutants.py --tier formal # the RTL mutants against the formal proofs (python -m
                                          # eie.cosim.formal --mutant-tier: bmc and k-induction, no covers)

Exits 1 if any mutant survived (or the unmutated copy fails). The copy holds the tracked and untracked,
not ignored files of the working tree. The full tier shares the build cache: builds are keyed by the
gateware's contents, so the unmutated copy reuses the tree's builds, and a mutated chip's builds (about a
megabyte each) are new entries that the cache's size cap evicts in time.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The tests that need no Verilator build. The fast tier the mutants must be caught by.
FAST_TESTS = ["tests/test_hw_stages.py", "tests/test_fast_chip.py", "tests/test_hw_blocks.py",
              "tests/test_quant_reference.py", "tests/test_encode.py", "tests/test_image.py", "tests/test_verify.py"]
FAST_DESELECT = "not verilator"        # test_fast_chip's comparison with the Verilator co-simulation

# (name, file, original text, mutated text): each original must occur exactly once.
MUTANTS = [
    ("RTL: accumulator bypass removed", "hw/accumulate.py",
     "total.eq(Mux(a_hit, w_sum, stored) + a_product)", "total.eq(stored + a_product)"),
    ("RTL: bypass hit compares the row in W, not the one in A", "hw/accumulate.py",
     "hit.eq(a_valid & (a_row == entry.row))", "hit.eq(a_valid & (w_sum[:len(a_row)] == entry.row))"),
    ("RTL: bypass hit ignores whether A holds an entry", "hw/accumulate.py",
     "hit.eq(a_valid & (a_row == entry.row))", "hit.eq(a_row == entry.row)"),
    ("RTL: the matrix word's slot taken a cycle early (D0 register skipped)", "hw/entries.py",
     "d_slot.eq(r_slot)", "d_slot.eq(s_slot)"),
    ("RTL: the partner's share handed over untouched (a stale sum of an earlier layer)", "hw/output.py",
     "m.d.comb += lane.share.eq(Mux(share_touched2, odd2, 0))", "m.d.comb += lane.share.eq(odd2)"),
    ("RTL: an untouched accumulator read as its stale value", "hw/accumulate.py",
     "row_touched.eq(touched.bit_select(entry.row, 1))", "row_touched.eq(1)"),
    ("RTL: the accumulate stage adds the even word for odd rows", "hw/accumulate.py",
     "a_use_odd.eq(row_touched & entry.row[0])", "a_use_odd.eq(0)"),
    ("RTL: ReLU of the layer now running, not of the row's layer", "hw/requant.py",
     "self.y.eq(saturate(m, shifted9, at[9].relu, c))", "self.y.eq(saturate(m, shifted9, self.relu, c))"),
    ("RTL: output pass starts while D1 still holds an entry", "hw/entries.py",
     "self.busy.eq(b_valid | s_valid | d0_valid | d1_valid)", "self.busy.eq(b_valid | s_valid | d0_valid)"),
    ("RTL: detector's credit forgets the broadcast register", "hw/scanner.py",
     "in_flight.eq(sum(sent[i] for i in range(QUEUE_SLACK)))", "in_flight.eq(sum(sent[i] for i in range(1, QUEUE_SLACK)))"),
    ("RTL: the output word written a cycle early (write line one stage short)", "hw/chip.py",
     "for k in range(OUTPUT_LATENCY)]", "for k in range(OUTPUT_LATENCY - 1)]"),
    ("RTL: a queue reports room for one more than it has", "hw/spans.py",
     "queue.level <= depth - 1 - j", "queue.level <= depth - j"),
    ("RTL: O3 shifts by the chip's current shift, not the row's", "hw/output.py",
     "rq.shift.eq(o3.shift)", "rq.shift.eq(self.shift)"),
    ("RTL: a span's value not carried through the prefix tree", "hw/spans.py",
     "count_q.eq(count), value_q.eq(value)", "count_q.eq(count), value_q.eq(p2.value)"),
    ("RTL: the detector reads the bank being written", "hw/chip.py",
     "Cat(nzd.addr[:rows], read_src)", "Cat(nzd.addr[:rows], ~read_src)"),
    ("RTL: the statistics of a group's first PE for all four", "hw/chip.py",
     "m.d.sync += q.eq(group[host.raddr[:2]])", "m.d.sync += q.eq(group[0])"),
    ("RTL: the statistics of the first four PEs for every group", "hw/chip.py",
     "read_stats.eq(Array(fours)[raddr_q >> 2])", "read_stats.eq(Array(fours)[0])"),
    ("RTL: the detector starts a layer with the columns of the layer before", "hw/chip.py",
     "nzd.cols.eq(Mux(idle, table[0].cols, desc_next.cols))", "nzd.cols.eq(Mux(idle, table[0].cols, desc.cols))"),
    ("RTL: a run's first layer starts with the columns read ahead in the run before", "hw/chip.py",
     "nzd.cols.eq(Mux(idle, table[0].cols, desc_next.cols))", "nzd.cols.eq(desc_next.cols)"),
    ("RTL: the detector's first word counted from the columns, not the columns past it", "hw/scanner.py",
     "s_left.eq(self.cols - n)", "s_left.eq(self.cols)"),
    ("RTL: a layer's first word read from the layer before's source bank", "hw/chip.py",
     "read_src = Mux(clear, layer_next[0], src)", "read_src = src"),
    ("RTL: rounding wraps at acc_bits", "hw/requant.py",
     "rounded7 = Signal(signed(c.acc_bits + 1), reset_less=True)", "rounded7 = Signal(signed(c.acc_bits), reset_less=True)"),
    ("RTL: saturation at 15 bits", "hw/requant.py",
     "inside.eq((shifted[c.act_bits - 1:] ==", "inside.eq((shifted[c.act_bits - 2:] =="),
    ("RTL: no saturation", "hw/requant.py",
     "y.eq(Mux(inside, shifted[:c.act_bits], Mux(sign, c.act_min, c.act_max)))", "y.eq(shifted[:c.act_bits])"),
    ("RTL: saturation tests one bit too few (values up to twice the range pass as in range)", "hw/requant.py",
     "inside.eq((shifted[c.act_bits - 1:] ==", "inside.eq((shifted[c.act_bits:] =="),
    ("RTL: O8 shifts by the shift of the row in O7, not its own", "hw/requant.py",
     "part8 >> (at[8].shift[low:] << low)", "part8 >> (at[7].shift[low:] << low)"),
    ("RTL: O4 shifts the bias by the shift of the row in O3, not its own", "hw/requant.py",
     "shift_left(bias4, at[4].shift[low:] << low, c.acc_bits)", "shift_left(bias4, self.shift[low:] << low, c.acc_bits)"),
    ("RTL: O8 shifts by the high bits without their weight of 8", "hw/requant.py",
     "part8 >> (at[8].shift[low:] << low)", "part8 >> at[8].shift[low:]"),
    ("RTL: accumulators never cleared", "hw/accumulate.py",
     "with m.If(self.clear):\n            m.d.sync += touched.eq(0)\n        with m.Elif(a_valid):",
     "with m.If(a_valid):"),
    ("RTL: rounding dropped", "hw/requant.py",
     "rounded7.eq(total6 + at[6].rounding)", "rounded7.eq(total6)"),
    ("RTL: the chip hands its PEs no rounding constant", "hw/chip.py",
     "pe.rounding.eq(rnd)", "pe.rounding.eq(0)"),
    ("RTL: loads write every PE, not only the one addressed", "hw/pe.py",
     "q.eq(we & ld.sel) for q, we", "q.eq(we) for q, we"),
    ("RTL: queue bypass past a queue that holds older activations", "hw/spans.py",
     "bypass.eq(self.act.valid & ~filled & (credit != 0))", "bypass.eq(self.act.valid & (credit != 0))"),
    ("RTL: a bypassed activation queued as well", "hw/spans.py",
     "queue.w_en.eq(self.act.valid & ~bypass)", "queue.w_en.eq(self.act.valid)"),
    ("RTL: queue bypass without a jobs credit", "hw/spans.py",
     "bypass.eq(self.act.valid & ~filled & (credit != 0))", "bypass.eq(self.act.valid & ~filled)"),
    ("RTL: the queue's filled register misses a read that empties it", "hw/spans.py",
     "((queue.level == 1) & ~queue.r_en)", "(queue.level == 1)"),
    ("RTL: next layer starts before the first output word is written", "hw/chip.py",
     "more & (out_cycles >= OUTPUT_LATENCY) & done_next", "more & (out_cycles >= OUTPUT_LATENCY - 1) & done_next"),
    ("RTL: the next layer decided before the output pass has asked for its last row", "hw/chip.py",
     "done_next = ~out_en | out_last | next_last", "done_next = ~out_en | out_last | at_most(out_left, 3 * rows_per_word)"),
    ("RTL: a layer's first cycle decided twice in a row", "hw/chip.py",
     "(fsm.ongoing(\"OUTPUT\") & ~clear & more", "(fsm.ongoing(\"OUTPUT\") & more"),
    ("RTL: codebooks written only into the PE addressed", "hw/chip.py",
     "(host.pe == k) | (host.target == Target.CODEBOOK)", "(host.pe == k)"),
    ("RTL: row decoder off by one", "hw/entries.py",
     "row.eq(Mux(e_first, e_z, prev_row + e_z + 1))", "row.eq(Mux(e_first, e_z, prev_row + e_z))"),
    ("RTL: first row of a column off by one", "hw/entries.py",
     "row.eq(Mux(e_first, e_z, prev_row + e_z + 1))", "row.eq(Mux(e_first, e_z + 1, prev_row + e_z + 1))"),
    ("reference: rounding dropped", "sw/reference.py",
     "y = (acc + (1 << (shift - 1))) >> shift if shift else acc", "y = acc >> shift"),
    ("reference: saturation at 15 bits", "sw/reference.py",
     "y = np.clip(y, config.act_min, config.act_max)", "y = np.clip(y, config.act_min >> 1, config.act_max >> 1)"),
    ("reference: no saturation", "sw/reference.py",
     "y = np.clip(y, config.act_min, config.act_max)", "y = y"),
    ("encoder: padding one zero early", "sw/encode.py",
     "out_z = np.full(len(out_v), config.max_zero_run, np.uint8)",
     "out_z = np.full(len(out_v), config.max_zero_run - 1, np.uint8)"),
    ("encoder: zero runs off by one", "sw/encode.py",
     "gap = local - prev - 1", "gap = local - prev"),
    ("RTL: a pair's second span dropped", "hw/entries.py",
     "m.d.sync += [b_valid.eq(self.jobs.valid & (next_job.count_b != 0))", "m.d.sync += [b_valid.eq(0)"),
    ("RTL: detector pairs across pointer words", "hw/scanner.py",
     "pair.eq((others != 0) & ((column(second) >> shift) == (column(first) >> shift)))", "pair.eq(others != 0)"),
    ("model: pairs counted as two broadcasts", "sw/perf.py",
     "if config.acts_per_cycle == 1 or len(cols) < 2:", "if True:"),
    ("RTL: second output row off by one", "hw/chip.py",
     "slot_b = Mux(desc.paired, (row + 1) << 1, row + 1)", "slot_b = Mux(desc.paired, (row + 2) << 1, row + 2)"),
    ("RTL: second output word written over the first", "hw/chip.py",
     "wp_b.addr.eq(Cat((w.row + 1)[:rows], w.bank))", "wp_b.addr.eq(Cat(w.row[:rows], w.bank))"),
    ("RTL: a paired PE ignores its partner's partial sums", "hw/requant.py",
     "sum4.eq(self.acc + self.partner)", "sum4.eq(self.acc)"),
    ("RTL: the partner's share read from the PE's own row", "hw/output.py",
     "lane.share.eq(Mux(share_touched2, odd2, 0))", "lane.share.eq(Mux(share_touched2, even2, 0))"),
    ("RTL: an accumulator written into the other row of its pair", "hw/pe.py",
     "wp.en.eq(wr.en & (wr.addr[0] == parity))", "wp.en.eq(wr.en & (wr.addr[0] != parity))"),
    ("RTL: the output pass reads the pair's even row for odd rows", "hw/output.py",
     "acc2 = Mux(odd_row2, odd2, even2)", "acc2 = even2"),
    ("RTL: the output pass picks the pair's word by the wrong address bit", "hw/output.py",
     "odd_row2.eq(lane.slot[0])", "odd_row2.eq(lane.slot[1])"),
    ("RTL: a PE hands its partner partial sums in unpaired layers", "hw/output.py",
     "share_touched2.eq(self.paired & self.touched.bit_select(lane.slot | 1, 1))",
     "share_touched2.eq(self.touched.bit_select(lane.slot | 1, 1))"),
    ("RTL: paired output rows read unpaired", "hw/chip.py",
     "slot = Mux(desc.paired, row << 1, row)", "slot = row"),
    ("RTL: PEs paired with the wrong partner", "hw/chip.py",
     "partner = pes[(k + n // 2) % n] if n % 2 == 0 else None", "partner = pes[k ^ 1] if n % 2 == 0 else None"),
    ("encoder: a paired column's entries all kept by their owner", "sw/encode.py",
     "second[order] = (rank + np.repeat(turn, lens)) & 1", "second[order] = t[order] & 1"),
    ("encoder: odd columns' extra entry always to the pair's first PE", "sw/encode.py",
     "turn = (before - np.maximum.accumulate(np.where(new_pair, before, 0))) & 1", "turn = 0 * before"),
    ("image: paired biases by local row, not accumulator 2s", "sw/image.py",
     "step = 2 if paired else 1", "step = 1"),
]


def copy_tree(dest):
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_symlink():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.readlink(src), dest / f)
        elif src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)


# The formal tier: the fast subset of `eie.cosim.formal`'s proofs (bmc and k-induction, no covers; the ones
# `make test` runs) and the ones marked for it (write line, banks, the tiny chip end to end with 1 and 2 PEs and
# two output rows a cycle, the detector and entry reader with two activations a cycle, pairing on 4 PEs, the
# statistics on 6), in the list's order, stopping at the first that fails; only mutants of the RTL (hw/) apply.
FORMAL_ARGS = ["--mutant-tier", "--modes", "bmc,prove", "--first-fail", "--budget", "900"]


def run_formal(tree):
    """(0 if every proof passes, 1 if one fails, 2 if the flow could not run; the failing proof or a note;
    seconds; output) for the formal proofs on `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "eie.cosim.formal", *FORMAL_ARGS, "--out", str(tree / "runs/formal")],
                         cwd=tree, env=env, capture_output=True, text=True)
    row = r"^\| ([^|]+) \| ([^|]+) \| \w+ \| [^|]+ \| \d+ \| {} \|"
    failed = re.search(row.format("FAIL"), out.stdout, re.M)
    rc = 1 if failed else (0 if out.returncode == 0 else 2)
    # an ERROR is a harness that no longer fits the mutated RTL (a signal gone): named, not counted as caught
    other = re.search(row.format("(?:ERROR|UNKNOWN)"), out.stdout, re.M)
    note = (f"{failed.group(1)}: {failed.group(2)}" if failed else
            f"{other.group(1)}: {other.group(2)} (ERROR or UNKNOWN)" if other and rc == 2 else
            ((out.stdout + out.stderr).strip().splitlines() or [""])[-1][:200] if rc == 2 else "")
    return rc, note, time.perf_counter() - t0, out.stdout + out.stderr


def run_tests(tree, tier):
    """(pytest exit code, first failing test or '', seconds) for the tests of `tier` on `tree`."""
    if tier == "formal":
        return run_formal(tree)
    if tier == "fast":
        args = [*FAST_TESTS, "-k", FAST_DESELECT]
    else:
        args = []
    env = {**os.environ, "PYTHONPATH": str(tree)}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *args],
                         cwd=tree, env=env, capture_output=True, text=True)
    failed = re.search(r"^FAILED (\S+)", out.stdout, re.M)
    return out.returncode, failed.group(1) if failed else "", time.perf_counter() - t0, out.stdout


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tier", choices=["fast", "full", "formal"], default="fast")
    p.add_argument("-k", dest="only", default="", help="only mutants whose name contains this")
    args = p.parse_args(argv)
    mutants = [m for m in MUTANTS if args.only.lower() in m[0].lower()
               and (args.tier != "formal" or m[1].startswith("hw/"))]
    with tempfile.TemporaryDirectory(prefix="eie-mutants-") as tmp:
        tree = Path(tmp) / "tree"
        tree.mkdir()
        copy_tree(tree)
        rc, failed, secs, log = run_tests(tree, args.tier)
        if rc != 0:
            print(f"the unmutated tree fails the {args.tier} tier ({failed or f'pytest exit {rc}'}):\n{log[-3000:]}")
            return 1
        print(f"unmutated tree: {args.tier} tier passes in {secs:.0f} s\n")
        what = "first failing proof" if args.tier == "formal" else "first failing test"
        print(f"| mutant | file | result | {what} | s |\n| --- | --- | --- | --- | --- |")
        survived = 0
        caught_by = {}
        for name, rel, old, new in mutants:
            path = tree / rel
            original = path.read_text()
            if original.count(old) != 1:
                print(f"| {name} | {rel} | NOT APPLIED (the original text occurs {original.count(old)} times) | | |")
                survived += 1
                continue
            path.write_text(original.replace(old, new))
            try:
                rc, failed, secs, log = run_tests(tree, args.tier)
            finally:
                path.write_text(original)
            result = {0: "SURVIVED", 1: "caught"}.get(rc, f"error (pytest exit {rc})")
            survived += rc != 1
            print(f"| {name} | {rel} | {result} | {failed.split('::')[-1]} | {secs:.0f} |", flush=True)
            if args.tier == "formal" and rc == 1:
                caught_by.setdefault(failed, []).append(name)
        print(f"\n{len(mutants) - survived} of {len(mutants)} mutants caught by the {args.tier} tier")
        for proof, names in caught_by.items():
            print(f"  {proof}: {len(names)}")
        return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
