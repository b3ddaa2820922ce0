"""Performance model: the work each PE does for an input, and the cycles the chip takes.

Work is counted as the paper does: entries touched (padding included) for non-zero activations only. The
ideal is that work spread evenly over the PEs; the bound is the busiest PE, the floor for a fixed row
placement. `predict_cycles` steps the chip's pipeline cycle by cycle (non-zero detector, activation queues,
pointer stage, jobs FIFO, matrix read, arithmetic tail, output pass) so imbalance between PEs and queue
stalls show up as they do in the RTL.
"""

from collections import deque
from dataclasses import dataclass

import numpy as np


from eie.config import JOBS_SLACK, OUTPUT_LATENCY, PREFIX_STAGES, QUEUE_SLACK, WORD_FIFO_DEPTH

__all__ = ["LayerPerf", "layer_perf", "network_figures", "predict_cycles", "broadcasts", "output_cycles",
           "pipeline_fill",
           "real_counts", "words_touched", "layer_events", "energy_pj", "dense_energy_pj", "ENERGY_PJ"]


@dataclass
class LayerPerf:
    """One layer's work for a batch of inputs (samples on axis 0): the single source of the per-layer
    figures that `eie spmv`, `eie run`, `CompressedModel.estimate` and the benchmarks report."""
    rows: int
    cols: int
    weights: int          # real (non-padding) entries of the layer
    work: np.ndarray      # (samples, pes) entries read per PE, padding included
    macs: np.ndarray      # (samples, pes) useful multiplies per PE (real entries of non-zero activations)
    nonzero: np.ndarray   # (samples,) non-zero input activations
    events: dict          # `layer_events`, for the energy estimate
    model_cycles: np.ndarray  # (m,) predicted cycles of the first m samples, output pass included

    @property
    def ideal_cycles(self):
        """(samples,) the work spread evenly over the PEs, rounded up."""
        return -(-self.work.sum(axis=1) // self.work.shape[1])

    @property
    def bound_cycles(self):
        """(samples,) the busiest PE's work: the floor for a fixed row placement."""
        return self.work.max(axis=1)

    @property
    def imbalance(self):
        """(samples,) busiest PE's work over the mean; 1.0 (balanced) where there is no work at all."""
        mean = self.work.mean(axis=1)
        return np.where(mean > 0, self.work.max(axis=1) / np.maximum(mean, 1e-300), 1.0)

    def utilization(self, cycles):
        """Useful MACs / (PEs x cycles) of the first len(cycles) samples; 0 where no cycle ran."""
        cycles = np.asarray(cycles, np.float64)
        macs = self.macs[:len(cycles)].sum(axis=1)
        return np.where(cycles > 0, macs / (self.work.shape[1] * np.maximum(cycles, 1)), 0.0)

    def energy_pj(self, config):
        """Energy by part, pJ per sample."""
        return energy_pj(self.events, config)

    def figures(self, cycles=None):
        """Means over the samples, as reports show them. `cycles` (samples,) are measured (the RTL's); without
        them the model's predictions stand in, over the samples it predicted."""
        measured = cycles is not None
        cycles = np.asarray(cycles if measured else self.model_cycles, np.float64)
        n = len(cycles)
        m = min(len(self.model_cycles), n)
        out = {
            "rows": self.rows, "cols": self.cols, "weights": self.weights,
            "nonzero_inputs_pct": round(100 * float(self.nonzero.mean()) / self.cols, 1) if len(self.nonzero) else 0.0,
            "cycles": round(float(cycles.mean()), 1) if n else None,
            "ideal_cycles": round(float(self.ideal_cycles.mean()), 1),
            "bound_cycles": round(float(self.bound_cycles.mean()), 1),
            "utilization": round(float(self.utilization(cycles).mean()), 3) if n else None,
            "load_imbalance": round(float(self.imbalance.mean()), 3),
            "dense_dram_energy_pj": dense_energy_pj(self.rows, self.cols),
        }
        if measured:
            out["model_cycles_error_pct"] = (round(100 * float(np.abs(self.model_cycles[:m] / np.maximum(cycles[:m], 1)
                                                                       - 1).max()), 2) if m else None)
        return out


def layer_perf(enc, x, config, model_samples=None, last=True):
    """Work, events and predicted cycles of one encoded layer for int inputs `x` ((samples, cols) or (cols,)).
    The cycle model steps every cycle in Python, so only the first `model_samples` (default: all) are predicted.
    `last`: the run's last layer (see `predict_cycles`); a layer run alone is."""
    x = np.asarray(x)
    x = x.reshape(1, -1) if x.ndim == 1 else x
    nonzero = x != 0
    cols = [np.flatnonzero(row) for row in nonzero]
    starts = [broadcasts(c, config) for c in cols]
    events = layer_events(enc, nonzero, np.array([len(s) for s in starts]), config)
    m = len(x) if model_samples is None else min(model_samples, len(x))
    words = -(-enc.cols // config.pes)

    def predict(c, s):
        counts = np.add.reduceat(enc.counts[:, c], s, axis=1) if len(c) else enc.counts[:, :0]
        return predict_cycles(counts, np.bincount(c[s] // config.pes, minlength=words), enc.rows, config, last)
    model = np.array([predict(c, s) for c, s in zip(cols[:m], starts[:m])], np.int64)
    real = int(sum(pe.n_entries - pe.n_padding for pe in enc.pes))
    return LayerPerf(enc.rows, enc.cols, real, events["work"].astype(np.int64), events["macs"].astype(np.int64),
                     nonzero.sum(axis=1), events, model)


def network_figures(perfs, config, cycles=None):
    """Whole-network figures from one `LayerPerf` per layer: per-layer figures, cycles per image and energy by
    part per image beside the dense model fetched from DRAM. `cycles`: measured (samples, layers), or None for
    the model's prediction."""
    layers = [p.figures(None if cycles is None else cycles[:, l]) for l, p in enumerate(perfs)]
    energy = {}
    for p in perfs:
        for part, pj in p.energy_pj(config).items():
            energy[part] = energy.get(part, 0.0) + float(pj.mean())
    if cycles is None:
        m = min(len(p.model_cycles) for p in perfs)
        per_image = float(np.sum([p.model_cycles[:m] for p in perfs], axis=0).mean()) if m else None
    else:
        per_image = float(np.asarray(cycles).sum(axis=1).mean())
    return {
        "cycles_per_image": None if per_image is None else round(per_image, 1),
        "cycles_from": "model" if cycles is None else "rtl",
        "layers": layers,
        "energy_pj_per_image": {k: round(v, 1) for k, v in {**energy, "total": sum(energy.values())}.items()},
        "dense_dram_energy_pj_per_image": sum(l["dense_dram_energy_pj"] for l in layers),
    }


def broadcasts(cols, config):
    """Where each broadcast starts in `cols` (a layer's non-zero input columns, ascending), as the detector
    groups them: one column per broadcast, or with ``acts_per_cycle=2`` the next column of the same source
    word (`pes` columns) and pointer word (``cols_per_ptr_word`` columns) along with it."""
    cols = np.asarray(cols, np.int64)
    if config.acts_per_cycle == 1 or len(cols) < 2:
        return np.arange(len(cols))
    key = (cols // config.pes) * (config.max_dim + 1) + cols // config.cols_per_ptr_word
    run_start = np.r_[True, key[1:] != key[:-1]]
    pos = np.arange(len(cols)) - np.maximum.accumulate(np.where(run_start, np.arange(len(cols)), 0))
    return np.flatnonzero(pos % 2 == 0)      # runs of one pointer word pair up from their first column


def predict_cycles(act_counts, word_fill, rows, config, last=True):
    """Cycles of one layer, stepped cycle by cycle as the RTL's registers step (`eie.hw.pe`, `eie.hw.scanner`).

    `act_counts`: (pes, n) entries of each broadcast's columns in each PE, in broadcast order;
    `word_fill`: broadcasts from each source word the detector scans (one word per `pes` columns);
    `last`: the run's last layer, which waits for its output pass to reach the register file (the others let
    the next layer start once their first output word is written).
    A broadcast of two columns is one queue slot and one job whose spans S reads back to back, so it times
    as one column with both columns' entries.
    """
    n_pe = config.pes
    room_limit = config.queue_depth + QUEUE_SLACK - 1          # the most a queue may hold for a broadcast
    jobs_limit = config.jobs_depth + JOBS_SLACK
    queue = [deque() for _ in range(n_pe)]
    jobs = [deque() for _ in range(n_pe)]
    p_stages = [[None] * (1 + PREFIX_STAGES) for _ in range(n_pe)]   # P1..P4: a span's entries, or None
    left = [0] * n_pe             # entries still to read of the current span (S)
    reading_hist = [[False] * 2 for _ in range(n_pe)]         # S read in the last two cycles (D0, D1)
    words = deque(int(w) for w in word_fill)                   # broadcasts of each word not yet fetched
    n_words = len(words)
    fifo, r1, r2 = deque(), None, None                         # the detector's word FIFO and reads in flight
    pending = None                                             # broadcasts left of the FIFO's head word
    running = n_words > 0
    level_hist = deque([[0] * n_pe, [0] * n_pe], maxlen=2)     # queue levels two and one cycles ago
    quiet_hist = deque([False, False], maxlen=2)               # all PEs quiet two and one cycles ago
    sent = deque([False] * QUEUE_SLACK, maxlen=QUEUE_SLACK)    # broadcasts of the last three cycles
    act = 0
    cycle = 0
    while True:
        # -- the FSM: in RUN (cycle >= 1), the output pass starts after a cycle that sees everything settled
        if cycle >= 1 and not running and not any(sent) and quiet_hist[0]:
            break
        # -- detector: fetch (issued at start, then whenever the FIFO will have room), emit from the FIFO
        fetched = words.popleft() if words and (cycle == 0 or len(fifo) + (r1 is not None) + (r2 is not None)
                                                 < WORD_FIFO_DEPTH) else None
        push, r2, r1 = r2, r1, fetched
        levels = [len(q) for q in queue]
        emit = None
        if fifo:
            if pending is None:
                pending = fifo[0]
            if pending == 0:
                fifo.popleft()
                pending = None
            elif all(level <= room_limit - sum(sent) for level in level_hist[0]):
                emit = act
                act += 1
                pending -= 1
                if pending == 0:
                    fifo.popleft()
                    pending = None
            if pending is None and not fifo and not words and r1 is None and r2 is None and push is None:
                running = False
        if push is not None:
            fifo.append(push)
        quiet = True
        for k in range(n_pe):
            in_flight = sum(x is not None for x in p_stages[k])
            last_p = p_stages[k][-1]
            room = len(jobs[k]) + in_flight < jobs_limit
            arriving = int(act_counts[k][act - 1 - (emit is not None)]) if sent[-1] else None   # the broadcast
            bypass = room and not queue[k] and arriving is not None     # past an empty queue straight into P0
            take = room and bool(queue[k])
            reading = left[k] > 0
            quiet = quiet and not (queue[k] or in_flight or jobs[k] or reading or any(reading_hist[k]))
            if reading:
                left[k] -= 1
            if left[k] == 0 and jobs[k]:
                left[k] = jobs[k].popleft()
            if last_p:
                jobs[k].append(last_p)
            p_stages[k] = [arriving if bypass else queue[k].popleft() if take else None] + p_stages[k][:-1]
            reading_hist[k] = [reading] + reading_hist[k][:-1]
            if arriving is not None and not bypass:
                queue[k].append(arriving)
        level_hist.append(levels)
        quiet_hist.append(quiet)
        sent.append(emit is not None)
        cycle += 1
    out = output_cycles(rows, config)
    # the layer's first cycle (SETUP, or the last of the output pass before), RUN, then the output pass: the
    # last layer's until its last word is written, another's until the next layer's first cycle, which waits
    # for its first word to be written
    return cycle + 1 + (out + OUTPUT_LATENCY if last else max(out - 1, OUTPUT_LATENCY + 1))


def pipeline_fill(rows, config, last=True):
    """Cycles a layer of `rows` takes beyond its work and its output pass when it has almost none (one entry in
    one PE): the pipeline's fixed fill and drain, from the detector's first read to the last write."""
    counts = np.zeros((config.pes, 1), np.int64)
    counts[0, 0] = 1
    return predict_cycles(counts, [1], rows, config, last) - 1 - output_cycles(rows, config)


def output_cycles(rows, config):
    """Cycles of a layer's output pass: each PE puts out ``outputs_per_cycle`` of its local rows per cycle."""
    return -(-(-(-rows // config.pes)) // config.outputs_per_cycle)


def real_counts(enc):
    """(pes, cols) real (non-padding) entries per column per PE."""
    return np.stack([np.bincount(np.repeat(np.arange(enc.cols), pe.counts)[pe.v != 0], minlength=enc.cols)
                     for pe in enc.pes])


def words_touched(enc, config):
    """(pes, cols) sparse-matrix SRAM words a column's entries span in each PE (layers start on a word)."""
    e = config.entries_per_word
    out = np.zeros((len(enc.pes), enc.cols), np.int64)
    for k, pe in enumerate(enc.pes):
        start, count = pe.pointers[:-1], pe.counts
        out[k] = np.where(count > 0, (start + count - 1) // e - start // e + 1, 0)
    return out


# -- energy ------------------------------------------------------------------------------------------------

# 45 nm energy per operation, Han et al. 2015 (Table 1), in pJ.
ENERGY_PJ = {"dram_32b": 640.0, "sram_32b": 5.0, "register_file": 1.0, "int_multiply": 3.1, "int_add": 0.1,
             "float_multiply": 3.7, "float_add": 0.9}


def layer_events(enc, nonzero, n_broadcasts, config):
    """Counted events of one layer for each input; `nonzero` is (samples, cols) bool, `n_broadcasts` the
    detector's broadcasts for each (`broadcasts`), one pointer read in every PE each.

    Returns per-sample arrays: work and macs per PE, and the chip-wide counts the energy estimate uses.
    """
    m = np.asarray(nonzero, np.float64)
    real = real_counts(enc)
    return {
        "work": m @ enc.counts.T, "macs": m @ real.T,
        "matrix_words": m @ words_touched(enc, config).sum(axis=0),
        "pointer_words": config.pes * np.asarray(n_broadcasts, np.float64),
        "activation_reads": np.full(len(m), enc.cols, np.float64),
        "outputs": np.full(len(m), enc.rows, np.float64),
    }


def energy_pj(events, config):
    """Energy by part (pJ, per sample) from `layer_events`: SRAM words cost 5 pJ per 32 bits, register files
    1 pJ per access, a multiply 3.1 pJ and an add 0.1 pJ (32-bit integer figures, so an upper bound for 16 bits)."""
    e = ENERGY_PJ
    sram = lambda bits: e["sram_32b"] * -(-bits // 32)
    macs = events["macs"].sum(axis=1)
    return {
        "matrix_sram": events["matrix_words"] * sram(config.matrix_word_bits),
        "pointer_sram": events["pointer_words"] * sram(config.ptr_word_bits),
        # codebook lookup, accumulator read and write per MAC
        "register_files": 3 * e["register_file"] * macs
        + e["register_file"] * (events["activation_reads"] + events["outputs"]),
        "bias_sram": events["outputs"] * sram(config.act_bits),
        "arithmetic": (e["int_multiply"] + e["int_add"]) * macs,
    }


def dense_energy_pj(rows, cols):
    """The dense float layer with its 32-bit weights fetched from DRAM: the paper's point of comparison."""
    e = ENERGY_PJ
    return rows * cols * (e["dram_32b"] + e["float_multiply"] + e["float_add"])
