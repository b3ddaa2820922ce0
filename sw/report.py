"""What a run folder shows: `report.md` rendered from `report.json`, and the PNG plots (weight histograms before
and after pruning, per-layer sensitivity curves)."""

from matplotlib.figure import Figure
import numpy as np

__all__ = ["histogram_figure", "sensitivity_figure", "markdown"]

STORAGE_PARTS = ("weights", "indices", "padding", "pointers", "codebook", "bias")


def histogram_figure(before, after):
    """Per layer, the distribution of weights before pruning and of the non-zero weights after retraining
    (the paper's Figure 7: a bell becomes two lobes with the middle cut out)."""
    names = list(before)
    fig = Figure(figsize=(4 * len(names), 3.2))   # no pyplot: the user's matplotlib backend stays as it is
    axes = fig.subplots(1, len(names), squeeze=False)
    for ax, name in zip(axes[0], names):
        b, a = before[name], after[name][after[name] != 0]
        edges = np.linspace(min(b.min(), a.min(initial=0)), max(b.max(), a.max(initial=0)), 121)
        ax.hist(b, bins=edges, alpha=0.5, label="before pruning")
        ax.hist(a, bins=edges, alpha=0.7, label="after (non-zero)")
        ax.set_title(f"{name}: {len(a)} of {len(b)} kept")
        ax.set_xlabel("weight")
        ax.set_yscale("log")
    axes[0][0].set_ylabel("count")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def sensitivity_figure(rows, baseline_accuracy):
    """Accuracy versus the fraction of one layer pruned (others dense, no retraining)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for name in dict.fromkeys(r["layer"] for r in rows):
        points = [(r["fraction"], r["accuracy"]) for r in rows if r["layer"] == name]
        ax.plot(*zip(*points), marker="o", label=name)
    ax.axhline(baseline_accuracy, color="gray", linestyle="--", linewidth=1, label="dense")
    ax.set_xlabel("fraction of the layer's weights pruned")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Sensitivity: one layer pruned at a time, no retraining")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _pct(value):
    return "-" if value is None else f"{value:.2f}"


def markdown(report):
    """The run's report.md: whatever steps the run has done so far, in pipeline order."""
    data = report.get("data", {}).get("name", "?")
    out = [f"# {report.get('model') or 'network'} on {data}", ""]
    summary = [("baseline accuracy (%)", report.get("baseline_accuracy")),
               ("pruned accuracy (%)", report.get("pruned_accuracy")),
               ("compressed accuracy, fixed point as the chip computes (%)", report.get("compressed_accuracy")),
               ("pruning ratio (dense / kept weights)", report.get("pruning_ratio")),
               ("storage ratio (32-bit dense / compressed bytes, 1 PE)", report.get("storage_ratio")),
               ("storage ratio with Huffman-coded entries (off-chip, 1 PE)", report.get("storage_ratio_huffman")),
               ("wall time (s)", report.get("wall_seconds"))]
    out += [_table(["", "value"], [(k, v) for k, v in summary if v is not None]), ""]
    timings = report.get("timings", {})
    if timings:
        out += ["Time by step: " + ", ".join(f"{k} {v} s" for k, v in timings.items()) + ".", ""]

    sens = report.get("sensitivity")
    if sens:
        fractions = sorted({r["fraction"] for r in sens["rows"]})
        names = list(dict.fromkeys(r["layer"] for r in sens["rows"]))
        acc = {(r["layer"], r["fraction"]): r["accuracy"] for r in sens["rows"]}
        out += ["## Sensitivity (one layer pruned, no retraining; test accuracy %)", "",
                _table(["layer"] + [f"{f:.0%}" for f in fractions] + ["suggested quality"],
                       [[n] + [acc.get((n, f), "") for f in fractions] + [sens["suggested_quality"].get(n)]
                        for n in names]),
                "", f"Suggested quality: the largest pruned fraction costing at most {sens['tolerance']} points "
                "before retraining (`eie prune --quality sensitivity` uses it).", "",
                "![sensitivity](sensitivity.png)", ""]

    layers = report.get("layers", {})
    if report.get("prune"):
        out += ["## Pruning (as Table 2 of Han et al. 2015)", "",
                "Act %: non-zero output activations on the test set; FLOP %: weights kept times the non-zero "
                "fraction of the layer's input (the image counts as dense, as in the paper).", ""]
        rows = [(n, f["weights"], _pct(f["kept_percent"]), _pct(f["activation_percent"]), _pct(f["flop_percent"]),
                 f"{f.get('dead_no_inputs', '-')} / {f.get('dead_no_outputs', '-')} / {f.get('dead_removed', '-')}")
                for n, f in layers.items() if "weights" in f]
        total, kept = report["dense_weights"], report["kept_weights"]
        rows.append(("total", total, _pct(100 * kept / total), "", "", ""))
        out += [_table(["layer", "weights", "weights kept %", "act %", "FLOP %",
                        "dead: no inputs / no outputs / removed"], rows), ""]
        p = report["prune"]
        if p.get("method", "magnitude") == "magnitude":
            out += _schedule_markdown(p)
        else:
            out += [_one_shot_text(p), "", "![weights before and after pruning](weights.png)", ""]

    comp = report.get("compress")
    if comp:
        out += ["## Weight sharing and fixed point", "",
                f"{comp['codebook_size'] - 1} shared values plus zero per layer, {comp['init']} initialization; "
                f"centroids fine-tuned {comp['finetuning']['epochs']} epochs at lr {comp['finetuning']['lr']}. "
                f"Accuracy: pruned {comp['pruned_accuracy']}%, shared {comp['shared_accuracy']}%, fine-tuned "
                f"{comp['finetuned_accuracy']}%, fixed point {comp['fixed_point_accuracy']}% "
                f"(scales calibrated on {comp['calibration_images']} training images).", "",
                _table(["layer", "codebook values", "in frac", "weight frac", "out frac", "shift"],
                       [(n, f["codebook_values"], f["in_frac"], f["w_frac"], f["out_frac"], f["shift"])
                        for n, f in layers.items() if "shift" in f]), ""]
        if comp.get("host"):
            out += [f"The convolutions ({', '.join(comp['host']['convs'])}) and their pooling run on the host in "
                    f"the chip's fixed-point arithmetic ({comp['host']['file']}; pruned, not weight-shared, stored "
                    "as dense 16-bit weights: part host_convs below); the chip runs the fully connected layers.", ""]
        out += _storage_markdown(report)
    if report.get("run"):
        out += _run_markdown(report["run"])
    return "\n".join(out).rstrip() + "\n"


def _schedule_markdown(p):
    """Magnitude pruning's schedule: its settings and a row per prune/retrain step."""
    return [f"Schedule: {p['iterations']} prune/retrain steps, quality parameters "
            + ", ".join(f"{n} {q}" for n, q in p["quality"].items())
            + f" (threshold = quality x std of the dense weights, ramped linearly over the steps); "
            f"retraining {p['retraining']['epochs']} epochs per step at lr {p['retraining']['lr']}, "
            f"L2 {p['retraining']['l2']}, L1 {p['retraining']['l1']}; final retraining {p['final_epochs']} epochs.",
            "", _table(["step", "kept %", "accuracy pruned", "accuracy retrained"],
                       [(s["step"], ", ".join(f"{n} {v}" for n, v in s["kept_percent"].items()),
                         s["accuracy_pruned"], s["accuracy_retrained"]) for s in p["steps"]]),
            "", "![weights before and after pruning](weights.png)", ""]


def _one_shot_text(p):
    """Wanda's or N:M's settings in one line: what was removed, and the retraining after it."""
    if p["method"] == "wanda":
        what = (f"Wanda (Sun et al. 2023): {p['sparsity']:g} of each layer's weights removed per output row, "
                f"lowest |W| x the input's L2 norm over {p['calibration_images']} calibration images first")
    else:
        n, m = p["method"].split(":")
        what = f"{p['method']} structured sparsity: the {n} largest weights of every {m} consecutive inputs of a row kept"
    retrain = p.get("retraining")
    return what + (f"; then {p['final_epochs']} epochs of retraining at lr {retrain['lr']}, L2 {retrain['l2']}."
                   if p["final_epochs"] else "; no retraining.")


def _storage_markdown(report):
    dense = report["dense_bytes"]
    tables = report["compress"]["storage_bytes"]
    columns = list(tables)
    huffman = "total_huffman" in tables[columns[0]]["1"]   # reports written before it have no Huffman figures
    out = ["## Storage", "",
           f"Dense: {dense} bytes (32-bit weights and biases). Compressed, one PE (the model's own storage), "
           "by part in bytes, as the chip holds it (fixed-width entries). Pointers are the chip's format (a base "
           "per word of columns plus a per-column count); EIE's 16-bit pointer per column is shown for comparison."
           + (" With Huffman: for off-chip storage and transfer, each layer's entries (weights, indices, padding) "
              "Huffman-coded, code tables included (Deep Compression's third stage, `eie.sw.storage`), the rest as "
              "stored; the chip is loaded with the fixed-width entries they decode to." if huffman else ""), ""]
    rows = []
    for part in [p for p in STORAGE_PARTS + ("host_convs", "total") if p in tables[columns[0]]["1"]]:
        rows.append([part] + [f"{tables[c]['1'][part]:.0f}" for c in columns])
    rows.append(["index overhead (indices + padding) %"]
                + [f"{100 * (tables[c]['1']['indices'] + tables[c]['1']['padding']) / tables[c]['1']['total']:.1f}"
                   for c in columns])
    rows.append(["ratio (dense / total)"] + [f"{dense / tables[c]['1']['total']:.1f}x" for c in columns])
    eie_total = {c: tables[c]["1"]["total"] - tables[c]["1"]["pointers"] + tables[c]["1"]["eie_pointers"]
                 for c in columns}
    rows.append(["with EIE 16-bit pointers"] + [f"{dense / eie_total[c]:.1f}x" for c in columns])
    if huffman:
        rows.append(["entries Huffman-coded (weights + indices + padding)"]
                    + [f"{tables[c]['1']['huffman_entries']:.0f}" for c in columns])
        rows.append(["total with Huffman"] + [f"{tables[c]['1']['total_huffman']:.0f}" for c in columns])
        rows.append(["ratio with Huffman"] + [f"{dense / tables[c]['1']['total_huffman']:.1f}x" for c in columns])
    out += [_table(["part (bytes)"] + [f"{c} indices" for c in columns], rows), ""]
    pes = list(tables[columns[0]])
    rows = [[c] + [f"{dense / tables[c][p]['total']:.1f}x" for p in pes] for c in columns]
    if huffman:
        rows += [[f"{c}, Huffman"] + [f"{dense / tables[c][p]['total_huffman']:.1f}x" for p in pes] for c in columns]
    out += ["Storage ratio by number of PEs (pointers repeat per PE):", "",
            _table(["indices"] + [f"{p} PE" for p in pes], rows), ""]
    return out


def _clock_words(key, clock):
    """Which clock a "time" entry's clock is (key "fmax": the chip's measured Fmax; else EIE's, for reference)."""
    if key == "fmax":
        return f"the measured Fmax, {clock['mhz']:g} MHz ({clock['source']})"
    return f"EIE's {clock['mhz']:g} MHz (for reference, not this chip's clock)"


def _run_markdown(r):
    """The last `eie run`: accuracy, cycles, time and energy on the chip it ran on."""
    c = r["chip"]
    clocks = r.get("time", {}).get("clocks", {})
    out = ["## On the chip (`eie run`)", "",
           f"{r['samples']} test images on a {c['pes']}-PE chip ({c['index_bits']}-bit indices, "
           f"{c['weight_index_bits']}-bit weight indices): chip {r['chip_accuracy']}%, reference "
           f"{r['reference_accuracy']}%, float {r['float_accuracy']}%, {r['mismatches']} mismatches; "
           f"{r['cycles_per_image']} cycles per image; {r['energy_pj_per_image']['total'] / 1e3:.1f} nJ per image "
           f"on chip against {r['dense_dram_energy_pj_per_image'] / 1e3:.0f} nJ for the dense model from DRAM.", ""]
    if clocks:
        out += ["Time per image: " + "; ".join(f"{t['us_per_image']:.3f} us at {_clock_words(k, t)}"
                                                for k, t in clocks.items()) + "."]
        if "fmax_hint" in r["time"]:
            out += ["", r["time"]["fmax_hint"][0].upper() + r["time"]["fmax_hint"][1:] + "."]
        out += [""]
    heads = [f"us at {'Fmax' if k == 'fmax' else 'EIE'} {t['mhz']:g} MHz" for k, t in clocks.items()]
    out += [_table(["layer", "size", "weights", "non-zero inputs %", "cycles", "busiest PE", "ideal", "utilization",
                    "imbalance", "model error %"] + heads,
                   [(n, f"{l['rows']}x{l['cols']}", l["weights"], l["nonzero_inputs_pct"], l["cycles"],
                     l["bound_cycles"], l["ideal_cycles"], l["utilization"], l["load_imbalance"],
                     l.get("model_cycles_error_pct"), *(f"{t['us_per_layer'][n]:.3f}" for t in clocks.values()))
                    for n, l in enumerate(r["layers"])]), ""]
    return out
