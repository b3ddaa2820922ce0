"""`eie sweep RUN`: a compressed model over a grid of chip parameters. The performance model estimates every
design point in seconds; the chosen points are then simulated (one Verilator build and run per point, spread
over simulator processes or a Dask cluster) and checked bit-exact. A table, the JSON and plots of cycles,
utilization, energy and SRAM against the PE count land in the run folder.
"""

from itertools import product
import json
from pathlib import Path
import sys
import time

import numpy as np

from eie.errors import EieError

__all__ = ["SWEPT", "grid", "sweep", "register"]

# The chip parameters a sweep may vary, with the values tried when none are given.
SWEPT = {"pes": (1, 2, 4, 8, 16), "queue_depth": (8,), "index_bits": (4,), "entries_per_word": (8,),
         "acts_per_cycle": (1,), "outputs_per_cycle": (1,)}


def grid(**values):
    """Design points {field: value} from value lists per field (the cartesian product), in a stable order."""
    unknown = sorted(set(values) - set(SWEPT))
    if unknown:
        raise EieError(f"a sweep varies {', '.join(SWEPT)}, not {', '.join(unknown)}")
    fields = {f: tuple(values.get(f) or SWEPT[f]) for f in SWEPT}
    return [dict(zip(fields, combo)) for combo in product(*fields.values())]


def sweep(cm, x, points, simulate="all", model_samples=20, jobs=1, scheduler=None, log=None):
    """Estimate `cm` on every chip of `points` (relayouts of its own chip) for images `x`, then simulate the
    points `simulate` names ("all", "none", or the N with the fewest estimated cycles). Returns one row per
    point: the estimate, for simulated points the RTL's cycles and the mismatch count, and the time per image
    (the RTL's cycles where simulated, else the model's) at the point's own measured Fmax where one is stored
    and at EIE's 800 MHz (`eie.cosim.timing`)."""
    from eie.cosim import timing
    from eie.cosim.campaign import check_jobs, run_tasks
    from eie.cosim.sim import simulate_task
    check_jobs(jobs)
    if not points:
        raise EieError("the sweep has no design points")
    x_int = cm.inputs(x)
    reference = cm.image.unpermute(cm.reference(x_int)[-1])   # the model's row order: each point places its own
    models, rows = [], []
    t0 = time.perf_counter()
    for point in points:
        m = cm.relayout(**point)
        est = m.estimate(x, model_samples)
        sram = m.storage(per_pe=True)
        rows.append({**point, "estimated_cycles_per_image": est["cycles_per_image"],
                     "utilization": round(float(np.mean([l["utilization"] for l in est["layers"]])), 3),
                     "energy_nj_per_image": round(est["energy_pj_per_image"]["total"] / 1e3, 2),
                     "storage_bytes": round(est["storage"]["total"]),
                     "busiest_pe_bytes": round(max(pe["total"] for pe in sram)),
                     "chip": m.config.to_dict()})
        models.append(m)
    if log:
        log(f"estimated {len(points)} design points in {time.perf_counter() - t0:.1f} s")
    if simulate == "all":
        chosen = list(range(len(points)))
    elif simulate == "none":
        chosen = []
    else:
        try:
            count = int(simulate)
        except ValueError:
            raise EieError(f"--simulate takes all, none or a number of points, not {simulate!r}") from None
        if count < 0:
            raise EieError(f"--simulate takes a number of points >= 0, not {count}")
        chosen = sorted(range(len(points)), key=lambda k: rows[k]["estimated_cycles_per_image"])[:count]
    if chosen:
        t0 = time.perf_counter()
        tasks = [(models[k].image, x_int) for k in chosen]
        if jobs == 1 and not scheduler:
            results, failed = [simulate_task(t) for t in tasks], {}
        else:
            results, failed = run_tasks(simulate_task, tasks, jobs, scheduler)
        for k, result, n in zip(chosen, results, range(len(chosen))):
            if n in failed:
                rows[k]["failed"] = failed[n]
                continue
            outputs = result.outputs
            per_image = result.layer_cycles.sum(axis=1)
            rows[k]["cycles_per_image"] = round(float(per_image.mean()), 1)
            # the estimate is the model's mean over the first model_samples images: compare on those
            rows[k]["model_error_pct"] = round(100 * abs(rows[k]["estimated_cycles_per_image"]
                                                         / float(per_image[:model_samples].mean()) - 1), 2)
            rows[k]["mismatches"] = int((models[k].image.unpermute(outputs) != reference).any(axis=1).sum())
        if log:
            log(f"simulated {len(chosen)} design points in {time.perf_counter() - t0:.1f} s"
                + (f"; {len(failed)} failed" if failed else ""))
    for m, row in zip(models, rows):
        rtl = "cycles_per_image" in row
        row["time"] = timing.entry(m.config, row["cycles_per_image" if rtl else "estimated_cycles_per_image"],
                                   cycles_from="rtl" if rtl else "model")
    return rows


def _figure(rows):
    """Cycles, utilization, energy and SRAM per PE against the PE count, one line per other setting."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(11, 7.5))
    axes = fig.subplots(2, 2)
    others = [f for f in SWEPT if f != "pes"]
    series = {}
    for r in rows:
        series.setdefault(tuple(r[f] for f in others), []).append(r)
    plots = [("estimated_cycles_per_image", "cycles per image (model)"), ("utilization", "utilization"),
             ("energy_nj_per_image", "energy per image (nJ)"), ("busiest_pe_bytes", "busiest PE's storage (bytes)")]
    for ax, (key, label) in zip(axes.flat, plots):
        for setting, points in series.items():
            points = sorted(points, key=lambda r: r["pes"])
            ax.plot([r["pes"] for r in points], [r[key] for r in points], marker="o",
                    label=", ".join(f"{f} {v}" for f, v in zip(others, setting)))
            if key == "estimated_cycles_per_image":
                sim = [r for r in points if "cycles_per_image" in r]
                ax.plot([r["pes"] for r in sim], [r["cycles_per_image"] for r in sim], "kx", label=None)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("PEs")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Design points (x: simulated cycles)")
    fig.tight_layout()
    return fig


def _us(row, key):
    from eie.cosim import timing
    us = timing.us(row.get("time"), key)
    return "not measured" if us is None else f"{us:.3f}"


def _clocks(rows):
    """Under the table: what the times are, and per point its Fmax's source or the command that measures it."""
    from eie.cosim import timing
    out = ["Time per image: from the RTL's cycles where the point was simulated, else the model's; at the point's "
           "own ECP5 Fmax where `eie synth --ecp5` measured one for that chip and the current RTL, and at EIE's "
           "800 MHz (for reference, not these chips' clock). Fmax per point:", ""]
    for r in rows:
        t = r.get("time", {})
        label = ", ".join(f"{f} {r[f]}" for f in SWEPT)
        measured = t.get("clocks", {}).get(timing.FMAX)
        out.append(f"- {label}: " + (f"{measured['mhz']:g} MHz, {measured['source']}" if measured
                                     else t.get("fmax_hint", "not measured")))
    return out


def _markdown(rows, samples):
    from eie.cosim import timing
    head = [*SWEPT, "cycles/image (model)", "cycles/image (RTL)", "model err %", "us/image (Fmax)",
            "us/image (EIE 800 MHz)", "utilization", "energy nJ/image", "storage B", "busiest PE B", "mismatches"]
    lines = [f"# Design-point sweep ({samples} test images)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(str(v) for v in [
            *(r[f] for f in SWEPT), r["estimated_cycles_per_image"], r.get("cycles_per_image", r.get("failed", "-")),
            r.get("model_error_pct", "-"), _us(r, timing.FMAX), _us(r, timing.REFERENCE), r["utilization"],
            r["energy_nj_per_image"], r["storage_bytes"], r["busiest_pe_bytes"], r.get("mismatches", "-")]) + " |")
    return "\n".join(lines + [""] + _clocks(rows)) + "\n\n![sweep](sweep.png)\n"


def _values(text, name):
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise EieError(f"--{name} {text!r}: give integers separated by commas, like 1,2,4") from None
    return values


def sweep_command(args):
    from eie.cosim.commands import input_range
    from eie.sw.flow import load
    from eie.sw.runs import RunFolder
    if args.samples < 1:
        raise EieError(f"--samples must be at least 1, not {args.samples}")
    run = RunFolder(args.run, ["sweep.json", "sweep.md", "sweep.png"], args.force)
    cm = load(args.run)
    points = grid(**{f: _values(getattr(args, f), f.replace("_", "-")) for f in SWEPT
                     if getattr(args, f) is not None})
    for p in points:        # refuse a bad value before anything runs
        cm.config.replace(**p)
    x = cm.dataset().x_test[:args.samples]
    log = lambda s: print(s, file=sys.stderr, flush=True)
    with input_range(args.allow_out_of_range):
        rows = sweep(cm, x, points, args.simulate, args.model_samples, args.jobs, args.scheduler, log)
    run.write_json("sweep.json", {"samples": len(x), "points": rows})
    run.write_text("sweep.md", _markdown(rows, len(x)))
    run.save_figure("sweep.png", _figure(rows))
    if args.json:
        print(json.dumps(rows))
    else:
        print(_markdown(rows, len(x)).split("\n\n![")[0])
    bad = [r for r in rows if r.get("mismatches") or "failed" in r]
    return 1 if bad else 0


def register(sub):
    from eie.cosim.campaign import cores
    from eie.cosim.commands import add_range_arg
    p = sub.add_parser("sweep", help="a compressed model over a grid of chip parameters: model, then simulation",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, metavar="RUN_DIR", help="run folder with a compressed model (image.npz)")
    for field, default in SWEPT.items():
        p.add_argument(f"--{field.replace('_', '-')}", metavar="N,N,...",
                       help=f"values to try (default {','.join(map(str, default))})")
    p.add_argument("--samples", type=int, default=200, help="test images per point (default 200)")
    p.add_argument("--model-samples", type=int, default=20,
                   help="images the cycle model steps through per point (default 20)")
    p.add_argument("--simulate", default="all", metavar="all|none|N",
                   help="points to simulate: all (default), none, or the N with the fewest estimated cycles")
    p.add_argument("--jobs", type=int, default=cores(), help=f"simulator processes (default: the cores, {cores()})")
    p.add_argument("--scheduler", metavar="ADDRESS", help="a Dask scheduler to run the simulations on instead")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--force", action="store_true", help="replace an earlier sweep's files")
    add_range_arg(p)
    p.set_defaults(func=sweep_command)
