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


# Cycles from reading an entry until it is written back (RTL stages D, A, W).
PIPELINE_TAIL = 3

__all__ = ["LayerPerf", "layer_perf", "predict_cycles"]


@dataclass
class LayerPerf:
    work: np.ndarray      # entries read per PE, padding included
    macs: np.ndarray      # useful multiplies per PE (real entries of non-zero activations)
    nonzero: int          # non-zero input activations
    model_cycles: int     # predicted cycles for the layer, output pass included

    @property
    def ideal_cycles(self):
        return int(-(-self.work.sum() // len(self.work)))

    @property
    def bound_cycles(self):
        return int(self.work.max())

    def utilization(self, cycles):
        """Useful MACs / (PEs x cycles)."""
        return float(self.macs.sum()) / (len(self.macs) * cycles) if cycles else 0.0

    @property
    def imbalance(self):
        """Busiest PE's work over the mean (1.0 = perfectly balanced)."""
        mean = self.work.mean()
        return float(self.work.max() / mean) if mean else 1.0


def predict_cycles(act_counts, word_fill, rows, config):
    """Cycles of one layer.

    `act_counts`: (pes, n) entries of each non-zero activation's column in each PE, in broadcast order;
    `word_fill`: non-zero activations in each source word the detector scans (one word per `pes` columns).
    """
    n_pe, q_depth = config.pes, config.queue_depth
    queue = [deque() for _ in range(n_pe)]
    jobs = [deque() for _ in range(n_pe)]
    p1 = [None] * n_pe            # span being computed (entries), None if idle
    left = [0] * n_pe             # entries still to read of the current column
    tail = [0] * n_pe             # cycles until the last read entry has been written back
    words = deque(int(w) for w in word_fill)
    pending = words.popleft() if words else 0
    running = bool(word_fill is not None and len(word_fill))
    act = 0
    cycles = 0
    while running or any(queue[k] or p1[k] is not None or jobs[k] or left[k] or tail[k] for k in range(n_pe)):
        cycles += 1
        emit = None
        if running:   # non-zero detector: one broadcast per cycle, when every queue has room
            if pending and all(len(q) < q_depth for q in queue):
                emit = act
                act += 1
                pending -= 1
                advance = pending == 0
            else:
                advance = pending == 0
            if advance:
                if words:
                    pending = words.popleft()
                else:
                    running = False
        for k in range(n_pe):
            # matrix read: one entry per cycle; the next column follows without a bubble
            reading = left[k] > 0
            if reading:
                left[k] -= 1
            tail[k] = PIPELINE_TAIL if reading else max(tail[k] - 1, 0)
            if left[k] == 0 and jobs[k]:
                left[k] = jobs[k].popleft()
            # pointer stage: P1 pushes the span it read last cycle, P0 pops the queue if the FIFO has room
            had_p1 = p1[k] is not None
            take = bool(queue[k]) and len(jobs[k]) + had_p1 < config.jobs_depth
            if had_p1 and p1[k]:
                jobs[k].append(p1[k])
            p1[k] = queue[k].popleft() if take else None
            if emit is not None:
                queue[k].append(int(act_counts[k][emit]))
    # SETUP, the steps above, the RUN cycle that finds every PE idle, one output word per cycle, FLUSH
    return 1 + cycles + 1 + -(-rows // n_pe) + 1


def layer_perf(enc, x, config):
    """Work and predicted cycles of one encoded layer for one input vector `x` (ints)."""
    x = np.asarray(x).reshape(-1)
    nz = np.flatnonzero(x)
    counts = enc.counts[:, nz]
    real = np.stack([np.bincount(np.repeat(np.arange(enc.cols), pe.counts)[pe.v != 0], minlength=enc.cols)
                     for pe in enc.pes])[:, nz]
    word_fill = np.bincount(nz // config.pes, minlength=-(-enc.cols // config.pes))
    return LayerPerf(work=counts.sum(axis=1), macs=real.sum(axis=1), nonzero=len(nz),
                     model_cycles=predict_cycles(counts, word_fill, enc.rows, config))
