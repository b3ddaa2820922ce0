"""A PE's front end: broadcast activations become column spans (the activation queue, P0..P4 and the jobs FIFO
of `eie.hw.pe`).

    queue   activation queue; an activation that finds it empty goes straight into P0 (EIE's queue bypass)
    P0      pointer-word read (block RAM) of the head's column, if the jobs FIFO has a place for its span
    P1      the pointer word registered (the RAM's output register)
    P2..P4  start = base + the counts of the columns before the lane in the word: an adder tree, one level
            per stage; P4 writes the span into the jobs FIFO (spans without entries here are dropped)

Flow control needs no ready path back to the chip: the queue reports, registered, how many more broadcasts
it has room for (``room``), and the chip's detector counts what it sent since (`eie.hw.scanner`).
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from eie.config import JOBS_SLACK, PREFIX_STAGES, QUEUE_SLACK, ChipConfig
from eie.hw.arith import addr_bits, log2, pow2
from eie.hw.component import ChipComponent

__all__ = ["SpanUnit", "SpanSignature", "broadcast_layout", "span_layout", "job_layout", "ROOM_BITS"]

ROOM_BITS = QUEUE_SLACK + 1


def broadcast_layout(config: ChipConfig) -> data.StructLayout:
    """A broadcast: a non-zero activation's column and value; with ``acts_per_cycle=2`` perhaps a second one of
    the same pointer word (its lane there, and its value; 0: none)."""
    c = config
    dual = {"lane_b": addr_bits(c.cols_per_ptr_word), "value_b": signed(c.act_bits)} if c.acts_per_cycle > 1 else {}
    return data.StructLayout({"col": c.dim_bits, "value": signed(c.act_bits), **dual})


def span_layout(config: ChipConfig) -> data.StructLayout:
    """A column's entries in this PE (first entry address and count) and the activation they multiply."""
    return data.StructLayout({"start": config.entry_addr_bits, "count": config.count_bits,
                              "value": signed(config.act_bits)})


def job_layout(config: ChipConfig) -> data.StructLayout:
    """A job: one span, two with ``acts_per_cycle=2`` (the first never empty; a second of count 0 is none)."""
    span = dict(span_layout(config).members)
    dual = {f"{k}_b": v for k, v in span.items()} if config.acts_per_cycle > 1 else {}
    return data.StructLayout({**span, **dual})


class SpanSignature(wiring.Signature):
    """``act``: broadcasts (always taken: the chip sends one only while ``room`` allowed it, two cycles before);
    ``ptr_base``: the layer's first pointer word; ``room`` (registered): bit j high while the queue has room
    for j + 1 more; ``ptr_rd``: the pointer memory's read port; ``jobs``: the jobs FIFO's head; ``busy``: an
    activation or a span anywhere in the unit."""

    def __init__(self, config: ChipConfig):
        c = config
        super().__init__({
            "act": In(stream.Signature(broadcast_layout(c), always_ready=True)),
            "ptr_base": In(addr_bits(c.ptr_words)),
            "room": Out(ROOM_BITS),
            "ptr_rd": In(memory.ReadPort.Signature(addr_width=addr_bits(c.ptr_words),
                                                   shape=unsigned(c.ptr_word_bits))),
            "jobs": Out(stream.Signature(job_layout(c))),
            "busy": Out(1),
        })


class SpanUnit(ChipComponent):
    """See the module. Parameters: a `ChipConfig`."""

    signature_type = SpanSignature

    def elaborate(self, platform):
        c = self.config
        m = Module()
        K = c.cols_per_ptr_word
        dual = c.acts_per_cycle > 1
        lane_bits = addr_bits(K)
        # a lane travels with its thermometer code (bit i: the lane is past column i of the word), so that P2
        # masks the counts before it without a comparator
        before = max(K - 1, 1)
        # a queued activation: its pointer word's address and its lane's thermometer code, both computed on
        # arrival, so that P0's read address and P1's registers come straight from the queue (or the bypass)
        act_layout = data.StructLayout({"ptr": addr_bits(c.ptr_words), "lane": lane_bits, "before": before,
                                        "value": signed(c.act_bits),
                                        **({"lane_b": lane_bits, "before_b": before, "value_b": signed(c.act_bits)}
                                           if dual else {})})
        lane_layout = data.StructLayout({"lane": lane_bits, "before": before, "value": signed(c.act_bits),
                                         **({"lane_b": lane_bits, "before_b": before, "value_b": signed(c.act_bits)}
                                            if dual else {})})

        # FIFOs are allocated a power of two deep (their pointers then wrap by themselves, in gates and in a
        # simulator); how much of them is used is set by `room` and the jobs credit
        depth = c.queue_depth + QUEUE_SLACK
        m.submodules.queue = queue = fifo.SyncFIFO(width=act_layout.size, depth=pow2(depth))
        act = self.act.payload
        incoming = act_layout(queue.w_data)
        lane = act.col[:log2(K)] if K > 1 else Const(0, 1)
        m.d.comb += [incoming.ptr.eq(self.ptr_base + (act.col >> log2(K))), incoming.lane.eq(lane),
                     incoming.before.eq(Cat(lane > i for i in range(before))), incoming.value.eq(act.value)]
        if dual:
            m.d.comb += [incoming.lane_b.eq(act.lane_b), incoming.value_b.eq(act.value_b),
                         incoming.before_b.eq(Cat(act.lane_b > i for i in range(before)))]
        m.d.sync += self.room.eq(Cat(queue.level <= depth - 1 - j for j in range(ROOM_BITS)))

        jobs_depth = c.jobs_depth + JOBS_SLACK
        m.submodules.jobs = jobs = fifo.SyncFIFO(width=job_layout(c).size, depth=pow2(jobs_depth))
        popped = Signal()
        m.d.comb += [self.jobs.valid.eq(jobs.r_rdy), self.jobs.payload.eq(jobs.r_data),
                     popped.eq(self.jobs.valid & self.jobs.ready), jobs.r_en.eq(popped)]
        # jobs FIFO places not taken by a span in it or in P1..P4: a span leaves the queue only into a free one
        credit = Signal(range(jobs_depth + 1), init=jobs_depth)
        # P0 takes the queue's head, or, past an empty queue, the activation arriving (EIE's queue bypass: a
        # cycle less of fill per layer). `filled` is the queue's `r_rdy` (level != 0) as a register of its own,
        # so that the choice starts at flip-flops
        take, bypass, filled = Signal(), Signal(), Signal()
        head = Signal(act_layout)
        m.d.comb += [bypass.eq(self.act.valid & ~filled & (credit != 0)),
                     take.eq(bypass | (filled & (credit != 0))),
                     queue.w_en.eq(self.act.valid & ~bypass), queue.r_en.eq(take),
                     head.eq(Mux(bypass, queue.w_data, queue.r_data)),
                     self.ptr_rd.addr.eq(head.ptr)]
        m.d.sync += filled.eq(queue.w_en | (queue.level >= 2) | ((queue.level == 1) & ~queue.r_en))

        # P0 -> P1: the lane(s) travel beside the pointer read; P1 registers the word
        p1_valid = Signal()
        p1 = Signal(lane_layout, reset_less=True)
        # Data registers load only when their stage holds a span (here and below): an idle stage then costs a
        # simulator nothing, and a flip-flop's enable costs the FPGA nothing.
        m.d.sync += p1_valid.eq(take)
        with m.If(take):
            m.d.sync += [p1.lane.eq(head.lane), p1.value.eq(head.value), p1.before.eq(head.before)]
            if dual:
                m.d.sync += [p1.lane_b.eq(head.lane_b), p1.value_b.eq(head.value_b), p1.before_b.eq(head.before_b)]
        p2_valid = Signal()
        p2 = Signal(lane_layout, reset_less=True)
        word = Signal(c.ptr_word_bits, reset_less=True)
        m.d.sync += p2_valid.eq(p1_valid)
        with m.If(p1_valid):
            m.d.sync += [p2.eq(p1), word.eq(self.ptr_rd.data)]

        valid, spans = self._prefix_tree(m, p2_valid, p2, word)
        p_valid = [p1_valid, p2_valid, *valid]

        # P4: the span goes into the jobs FIFO; spans without entries here are dropped
        new = job_layout(c)(jobs.w_data)
        last = p_valid[-1]
        (start, count, value), *rest = spans
        if dual:
            start_b, count_b, value_b = rest[0]
            # a first span without entries here gives its place to the second: a job's first span is never empty
            with m.If(count == 0):
                m.d.comb += [new.start.eq(start_b), new.count.eq(count_b), new.value.eq(value_b)]
            with m.Else():
                m.d.comb += [new.start.eq(start), new.count.eq(count), new.value.eq(value),
                             new.start_b.eq(start_b), new.count_b.eq(count_b), new.value_b.eq(value_b)]
            m.d.comb += jobs.w_en.eq(last & ((count != 0) | (count_b != 0)))
        else:
            m.d.comb += [new.start.eq(start), new.count.eq(count), new.value.eq(value),
                         jobs.w_en.eq(last & (count != 0))]
        # a place comes back when S takes a span, or when P4 drops one
        m.d.sync += credit.eq(credit - take + popped + (last & ~jobs.w_en))
        m.d.comb += self.busy.eq(filled | Cat(*p_valid).any() | jobs.r_rdy)
        return m

    def _prefix_tree(self, m, valid, p2, word):
        """P2..P4: each lane's start = base + the counts of the word's columns before it, a tree of adders one
        level per stage; the lane's own count and value travel beside it. Returns (the valid bit of P3, P4),
        [(start, count, value) of each lane at P4]."""
        c = self.config
        K = c.cols_per_ptr_word
        base = word[:c.entry_addr_bits]
        counts = [word[c.entry_addr_bits + i * c.count_bits:][:c.count_bits] for i in range(K)]
        lanes = [("", p2.before, Array(counts)[p2.lane], p2.value)]
        if c.acts_per_cycle > 1:
            lanes.append(("_b", p2.before_b, Mux(p2.value_b != 0, Array(counts)[p2.lane_b], 0), p2.value_b))
        trees = {}
        for name, before_bits, count, value in lanes:
            terms = [base] + [Mux(before_bits[i], n, 0) for i, n in enumerate(counts[:-1])]
            trees[name] = (terms, count, value)
        group = 2
        while group ** PREFIX_STAGES < K:
            group += 1
        valids = []
        for stage in range(PREFIX_STAGES - 1):
            next_valid = Signal(name=f"p{stage + 3}_valid")
            m.d.sync += next_valid.eq(valid)
            for name, (terms, count, value) in trees.items():
                sums = [sum(terms[i:i + group]) for i in range(0, len(terms), group)]
                regs = [Signal(c.entry_addr_bits, name=f"p{stage + 3}_sum{name}{i}", reset_less=True)
                        for i in range(len(sums))]
                count_q = Signal(c.count_bits, name=f"p{stage + 3}_count{name}", reset_less=True)
                value_q = Signal(signed(c.act_bits), name=f"p{stage + 3}_value{name}", reset_less=True)
                with m.If(valid):
                    m.d.sync += [*(r.eq(v) for r, v in zip(regs, sums)), count_q.eq(count), value_q.eq(value)]
                trees[name] = (regs, count_q, value_q)
            valids.append(next_valid)
            valid = next_valid
        # the last level feeds the jobs FIFO
        return valids, [(sum(terms)[:c.entry_addr_bits], count, value) for terms, count, value in trees.values()]
