"""One EIE processing element (PE), pipelined so that no stage holds more than one block-RAM read, one
carry chain or one multiplier between registers (an FPGA clock of 150 MHz is the aim).

Compute pipeline, one entry per cycle at steady state (stage: what happens between its registers)::

    queue   activation queue (broadcasts land here one cycle after the chip's broadcast register)
    P0      pointer-word read (block RAM) of the queue head's column, if the jobs FIFO has a free place
    P1      the pointer word registered (the RAM's output register)
    P2..P4  start = base + the counts of the columns before the lane in the word: an adder tree, one level
            per stage; P4 writes the span into the jobs FIFO (spans without entries here are dropped)
    S       sparse-matrix read (block RAM), one entry per cycle, the next span without a bubble
    D0      the matrix word registered (the RAM's output register)
    D1      entry select
    D2      index decode (row = previous row + zeros + 1), codebook lookup
    M       multiply (registered inputs and output: a DSP); accumulator read of the entry's row
    A       accumulate: accumulator (0 if untouched this layer) + product, written back at the end of the
            cycle; W keeps the sum one more cycle for the bypass

An entry read by S at cycle t is written back at the end of t + 5 (`TAIL`). The accumulator read at M misses
the entry in A at that cycle; A takes its sum from W instead when the rows match (EIE's bypass).
Accumulators start at zero (lazily: an untouched row reads as 0), and the bias joins in the output pass, so
no block-RAM read sits in front of the accumulate adder.

Output pass, one local row (two with ``outputs_per_cycle=2``) per cycle, `OUTPUT_LATENCY` = 7 stages::

    O1  accumulator and partner-share reads, bias read issued
    O2  bias registered (the RAM's output register); the share crosses to the partner PE
    O3..O7  `eie.hw.requant.Requantizer`: shifted bias, sums, rounding, right shift, saturate and ReLU
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, wiring
from amaranth.lib.wiring import In, Out

from eie.config import JOBS_SLACK, OUTPUT_LATENCY, PREFIX_STAGES, QUEUE_SLACK, ChipConfig
from eie.hw.arith import pow2
from eie.hw.requant import Requantizer, row_params
from eie.hw.sram import sram

__all__ = ["ProcessingElement", "PeSignature", "PeLoadSignature", "TAIL", "ROOM_BITS"]

TAIL = 5              # cycles from an entry's matrix read (S) to the end of its write-back (A)
ROOM_BITS = QUEUE_SLACK + 1


def _log2(n):
    return n.bit_length() - 1


def _addr_bits(depth):
    """Address width for `depth` words (at least one bit, so single-word memories still have a port)."""
    return max(1, (depth - 1).bit_length())


class PeLoadSignature(wiring.Signature):
    """Host writes into one PE's memories: a write strobe per memory, address and data, the same at every PE, and
    ``sel``, high at the PEs addressed (all of them for a codebook write, since every PE holds the codebooks). Only
    ``sel`` differs between PEs, so a simulator can share one PE's code between all of them, while synthesis
    cannot merge the PEs' load registers into one that would drive every memory across the die."""

    def __init__(self, config):
        c = config
        super().__init__({
            "sel": Out(1), "matrix_we": Out(1), "ptr_we": Out(1), "codebook_we": Out(1), "bias_we": Out(1),
            "addr": Out(_addr_bits(max(c.matrix_words, c.ptr_words, c.max_layers * c.act_depth,
                                       c.max_layers * c.codebook_size))),
            "data": Out(max(c.matrix_word_bits, c.ptr_word_bits, c.act_bits, c.weight_bits)),
        })


class PeSignature(wiring.Signature):
    """A processing element's ports, seen from the PE (see `ProcessingElement`)."""

    def __init__(self, config):
        c = config
        super().__init__({
            "act_valid": In(1), "act_col": In(c.dim_bits), "act_value": In(signed(c.act_bits)),
            "act_room": Out(ROOM_BITS),
            # a second activation of the same pointer word: its lane there, and its value (0: none)
            **({"act_lane_b": In(_addr_bits(c.cols_per_ptr_word)), "act_value_b": In(signed(c.act_bits))}
               if c.acts_per_cycle > 1 else {}),
            "layer": In(_addr_bits(c.max_layers)), "ptr_base": In(_addr_bits(c.ptr_words)),
            "shift": In(c.shift_bits), "rounding": In(c.acc_bits), "relu": In(1),
            "clear": In(1), "new_run": In(1), "quiet": Out(1),
            "out_en": In(1), "out_slot": In(_addr_bits(c.act_depth)), "out_data": Out(signed(c.act_bits)),
            **({"out_slot_b": In(_addr_bits(c.act_depth)), "out_data_b": Out(signed(c.act_bits))}
               if c.outputs_per_cycle > 1 else {}),
            # a paired layer: this PE's partial sum of its partner's output row, and the partner's of this one's
            "paired": In(1), "share": Out(signed(c.acc_bits)), "partner": In(signed(c.acc_bits)),
            **({"share_b": Out(signed(c.acc_bits)), "partner_b": In(signed(c.acc_bits))}
               if c.outputs_per_cycle > 1 else {}),
            "load": In(PeLoadSignature(c)),
            "entries": Out(32), "macs": Out(32),
        })


class ProcessingElement(wiring.Component):
    """Parameters: a `ChipConfig`. Ports:

    * ``act_*``: a broadcast non-zero activation (column, value), from the chip's broadcast register; with
      ``acts_per_cycle=2`` perhaps a second one of the same pointer word (``act_lane_b``, ``act_value_b``).
      ``act_room`` (registered): bit j is high while the queue has room for j + 1 more broadcasts. The chip
      sees it two cycles late and knows what it sent since, so it never overfills the queue.
    * layer parameters (``layer``, ``ptr_base``, ``paired``), stable during a layer; output-pass parameters
      (``shift``, ``rounding`` = `rounding` of ``shift``, ``relu``), stable from the start of a layer's output
      pass until its last row leaves; ``clear`` forgets the accumulators (start of a layer).
    * ``quiet`` (registered): nothing in the queue, P stages, jobs FIFO, S, D0 or D1, so every entry is written
      back by the time the chip, seeing ``quiet`` of all PEs two cycles later, starts the output pass.
    * output pass: ``out_en``/``out_slot`` ask for the local row whose accumulator is ``out_slot``; ``out_data``
      holds it `OUTPUT_LATENCY` cycles later (with ``outputs_per_cycle=2``, ``out_data_b`` the row of
      ``out_slot_b``). In a ``paired`` layer (`eie.sw.encode`) row ``s`` is accumulator ``2s`` plus the partner
      PE's accumulator ``2s + 1``: a PE hands its partner that partial sum on ``share`` (registered) and adds
      the partner's from ``partner``. The chip computes the slots (`out_slots`), once for all PEs.
    * ``load``: host writes into the matrix, pointer, codebook and bias memories.
    * ``entries``/``macs``: entries read and multiplies done since ``new_run``.
    """

    def __init__(self, config: ChipConfig):
        if not isinstance(config, ChipConfig):
            raise TypeError(f"config must be a ChipConfig, not {type(config).__name__}")
        self.config = c = config
        self.row_bits = _addr_bits(c.act_depth)
        super().__init__(PeSignature(c))

    def elaborate(self, platform):
        c = self.config
        m = Module()
        self._memories(m)
        job, jobs = self._span_stages(m)
        s_valid, s_value, s_first, s_slot = self._matrix_read(m, job, jobs)
        self._accumulate(m, s_valid, s_value, s_first, s_slot)
        self._output_pass(m)

        m.d.sync += self.quiet.eq(~(self._front_busy | s_valid | self._d0_valid | self._d1_valid))
        with m.If(self.new_run):
            m.d.sync += [self.entries.eq(0), self.macs.eq(0)]
        with m.Else():
            m.d.sync += [self.entries.eq(self.entries + self._d1_valid), self.macs.eq(self.macs + self._m_valid)]
        return m

    # -- memories ------------------------------------------------------------------------------------------
    def _memories(self, m):
        c = self.config
        m.submodules.matrix = self.matrix = sram(unsigned(c.matrix_word_bits), c.matrix_words)
        m.submodules.pointers = self.pointers = sram(unsigned(c.ptr_word_bits), c.ptr_words)
        m.submodules.codebook = self.codebook = sram(signed(c.weight_bits), c.max_layers * c.codebook_size)
        m.submodules.bias = self.bias = sram(signed(c.act_bits), c.max_layers * c.act_depth)
        m.submodules.accumulators = self.accs = sram(signed(c.acc_bits), c.act_depth)
        # The load bus reaches every PE across the chip: each PE registers it on arrival (write strobes decoded
        # with `sel`), so the long wires end in flip-flops and the fan-out to the memories stays local.
        ld = self.load
        strobes = [Signal(name=f"load_{name}_q") for name in ("matrix", "ptr", "codebook", "bias")]
        addr, wdata = Signal.like(ld.addr, name="load_addr_q"), Signal.like(ld.data, name="load_data_q")
        m.d.sync += [q.eq(we & ld.sel) for q, we in zip(strobes, (ld.matrix_we, ld.ptr_we, ld.codebook_we, ld.bias_we))]
        with m.If((ld.matrix_we | ld.ptr_we | ld.codebook_we | ld.bias_we) & ld.sel):
            m.d.sync += [addr.eq(ld.addr), wdata.eq(ld.data)]
        for mem, we in zip((self.matrix, self.pointers, self.codebook, self.bias), strobes):
            wp = mem.write_port()
            m.d.comb += [wp.en.eq(we), wp.addr.eq(addr), wp.data.eq(wdata)]

    # -- queue, P0..P4: activations become column spans --------------------------------------------------------
    def _span_stages(self, m):
        c = self.config
        K = c.cols_per_ptr_word
        dual = c.acts_per_cycle > 1
        lane_bits = _addr_bits(K)
        span = {"start": c.entry_addr_bits, "count": c.count_bits, "value": signed(c.act_bits)}
        job_layout = data.StructLayout({**span, **({f"{k}_b": v for k, v in span.items()} if dual else {})})
        # a queued activation: its pointer word's address (computed on arrival, so that P0's read address
        # comes straight from the queue) and its lane in that word
        act_layout = data.StructLayout({"ptr": _addr_bits(c.ptr_words), "lane": lane_bits, "value": signed(c.act_bits),
                                        **({"lane_b": lane_bits, "value_b": signed(c.act_bits)} if dual else {})})
        # a lane travels with its thermometer code (bit i: the lane is past column i of the word), so that P2
        # masks the counts before it without a comparator
        before = max(K - 1, 1)
        lane_layout = data.StructLayout({"lane": lane_bits, "before": before, "value": signed(c.act_bits),
                                         **({"lane_b": lane_bits, "before_b": before, "value_b": signed(c.act_bits)}
                                            if dual else {})})

        # FIFOs are allocated a power of two deep (their pointers then wrap by themselves, in gates and in a
        # simulator); how much of them is used is set by `act_room` and the jobs credit
        depth = c.queue_depth + QUEUE_SLACK
        m.submodules.queue = queue = fifo.SyncFIFO(width=act_layout.size, depth=pow2(depth))
        incoming = act_layout(queue.w_data)
        m.d.comb += [incoming.ptr.eq(self.ptr_base + (self.act_col >> _log2(K))),
                     incoming.lane.eq(self.act_col[:_log2(K)] if K > 1 else 0), incoming.value.eq(self.act_value),
                     *([incoming.lane_b.eq(self.act_lane_b), incoming.value_b.eq(self.act_value_b)] if dual else [])]
        m.d.sync += self.act_room.eq(Cat(queue.level <= depth - 1 - j for j in range(ROOM_BITS)))

        jobs_depth = c.jobs_depth + JOBS_SLACK
        m.submodules.jobs = jobs = fifo.SyncFIFO(width=job_layout.size, depth=pow2(jobs_depth))
        # jobs FIFO places not taken by a span in it or in P1..P4: a span leaves the queue only into a free one
        credit = Signal(range(jobs_depth + 1), init=jobs_depth)
        # P0 takes the queue's head, or, past an empty queue, the activation arriving (EIE's queue bypass: a
        # cycle less of fill per layer)
        take, bypass = Signal(), Signal()
        head = Signal(act_layout)
        m.d.comb += [bypass.eq(self.act_valid & ~queue.r_rdy & (credit != 0)),
                     take.eq(bypass | (queue.r_rdy & (credit != 0))),
                     queue.w_en.eq(self.act_valid & ~bypass), queue.r_en.eq(take),
                     head.eq(Mux(bypass, queue.w_data, queue.r_data))]
        ptr_rd = self.pointers.read_port()
        m.d.comb += ptr_rd.addr.eq(head.ptr)

        # P0 -> P1: the lane(s) travel beside the pointer read; P1 registers the word
        p1_valid = Signal()
        p1 = Signal(lane_layout, reset_less=True)
        lane = head.lane
        # Data registers load only when their stage holds a span (here and below): an idle stage then costs a
        # simulator nothing, and a flip-flop's enable costs the FPGA nothing.
        m.d.sync += p1_valid.eq(take)
        with m.If(take):
            m.d.sync += [p1.lane.eq(lane), p1.value.eq(head.value), p1.before.eq(Cat(lane > i for i in range(before)))]
            if dual:
                m.d.sync += [p1.lane_b.eq(head.lane_b), p1.value_b.eq(head.value_b),
                             p1.before_b.eq(Cat(head.lane_b > i for i in range(before)))]
        p2_valid = Signal()
        p2 = Signal(lane_layout, reset_less=True)
        word = Signal(c.ptr_word_bits, reset_less=True)
        m.d.sync += p2_valid.eq(p1_valid)
        with m.If(p1_valid):
            m.d.sync += [p2.eq(p1), word.eq(ptr_rd.data)]

        # P2..P4: start = base + the counts of the word's columns before the lane, a tree of adders one level
        # per stage; the lane's own count and value travel beside it
        base = word[:c.entry_addr_bits]
        counts = [word[c.entry_addr_bits + i * c.count_bits:][:c.count_bits] for i in range(K)]
        spans = [("", p2.before, Array(counts)[p2.lane], p2.value)]
        if dual:
            spans.append(("_b", p2.before_b, Mux(p2.value_b != 0, Array(counts)[p2.lane_b], 0), p2.value_b))
        valid = p2_valid
        self._p_valid = [p1_valid, p2_valid]
        trees = {}
        for name, before_bits, count, value in spans:
            terms = [base] + [Mux(before_bits[i], n, 0) for i, n in enumerate(counts[:-1])]
            group = 2
            while group ** PREFIX_STAGES < len(terms):
                group += 1
            trees[name] = (terms, count, value)
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
            self._p_valid.append(next_valid)
            valid = next_valid
        # the last level feeds the jobs FIFO
        trees = {name: ([sum(terms)[:c.entry_addr_bits]], count, value)
                 for name, (terms, count, value) in trees.items()}

        # P4: the span goes into the jobs FIFO; spans without entries here are dropped
        new = job_layout(jobs.w_data)
        (start,), count, value = trees[""]
        if dual:
            (start_b,), count_b, value_b = trees["_b"]
            # a first span without entries here gives its place to the second: a job's first span is never empty
            with m.If(count == 0):
                m.d.comb += [new.start.eq(start_b), new.count.eq(count_b), new.value.eq(value_b)]
            with m.Else():
                m.d.comb += [new.start.eq(start), new.count.eq(count), new.value.eq(value),
                             new.start_b.eq(start_b), new.count_b.eq(count_b), new.value_b.eq(value_b)]
            m.d.comb += jobs.w_en.eq(valid & ((count != 0) | (count_b != 0)))
        else:
            m.d.comb += [new.start.eq(start), new.count.eq(count), new.value.eq(value),
                         jobs.w_en.eq(valid & (count != 0))]
        # a place comes back when S takes a span, or when P4 drops one
        m.d.sync += credit.eq(credit - take + jobs.r_en + (valid & ~jobs.w_en))
        self._front_busy = queue.r_rdy | Cat(*self._p_valid).any() | jobs.r_rdy
        return job_layout, jobs

    # -- S: sparse-matrix read, one entry per cycle -------------------------------------------------------------
    def _matrix_read(self, m, job_layout, jobs):
        c = self.config
        E = c.entries_per_word
        dual = c.acts_per_cycle > 1
        s_active = Signal()
        s_addr = Signal(c.entry_addr_bits, reset_less=True)
        s_left = Signal(c.count_bits, reset_less=True)
        s_value = Signal(signed(c.act_bits), reset_less=True)
        s_first = Signal(reset_less=True)
        next_job = job_layout(jobs.r_data)
        self._mat_rd = mat_rd = self.matrix.read_port()
        m.d.comb += mat_rd.addr.eq(s_addr >> _log2(E))

        s_last = Signal(reset_less=True)      # the entry read this cycle is the span's last (s_left == 1)
        last = ~s_active | s_last
        with m.If(s_active):
            m.d.sync += [s_addr.eq(s_addr + 1), s_left.eq(s_left - 1), s_first.eq(0), s_last.eq(s_left == 2)]

        def start_span(span):
            m.d.sync += [s_addr.eq(span.start), s_left.eq(span.count), s_value.eq(span.value), s_first.eq(1),
                         s_last.eq(span.count == 1)]

        def take_job():
            m.d.comb += jobs.r_en.eq(jobs.r_rdy)
            m.d.sync += s_active.eq(jobs.r_rdy)
            start_span(next_job)

        if dual:
            # the job's second span waits here while S reads the first
            b_valid = Signal()
            b_job = Signal(data.StructLayout({"start": c.entry_addr_bits, "count": c.count_bits,
                                              "value": signed(c.act_bits)}), reset_less=True)
            with m.If(last):
                with m.If(b_valid):
                    m.d.sync += [s_active.eq(1), b_valid.eq(0)]
                    start_span(b_job)
                with m.Else():
                    take_job()
                    m.d.sync += [b_valid.eq(jobs.r_rdy & (next_job.count_b != 0)), b_job.start.eq(next_job.start_b),
                                 b_job.count.eq(next_job.count_b), b_job.value.eq(next_job.value_b)]
            self._front_busy = self._front_busy | b_valid
        else:
            with m.If(last):
                take_job()
        return s_active, s_value, s_first, (s_addr[:_log2(E)] if E > 1 else Const(0, 1))

    # -- D0, D1, D2, M, A, W: decode, multiply, accumulate ---------------------------------------------------------
    def _accumulate(self, m, s_valid, s_value, s_first, s_slot):
        c = self.config
        rb = self.row_bits
        # D0: the RAM's data belongs to the address of the previous cycle; its companions wait a cycle beside it
        r_valid = Signal()
        r_slot, r_value = Signal(len(s_slot), reset_less=True), Signal(signed(c.act_bits), reset_less=True)
        r_first = Signal(reset_less=True)
        m.d.sync += r_valid.eq(s_valid)
        with m.If(s_valid):
            m.d.sync += [r_slot.eq(s_slot), r_value.eq(s_value), r_first.eq(s_first)]
        d_valid = Signal()
        d_word = Signal(c.matrix_word_bits, reset_less=True)
        d_slot, d_value = Signal(len(s_slot), reset_less=True), Signal(signed(c.act_bits), reset_less=True)
        d_first = Signal(reset_less=True)
        m.d.sync += d_valid.eq(r_valid)
        with m.If(r_valid):
            m.d.sync += [d_word.eq(self._mat_rd.data), d_slot.eq(r_slot), d_value.eq(r_value), d_first.eq(r_first)]
        self._d0_valid, self._d1_valid = r_valid, d_valid

        # D1: entry select
        entry = d_word.word_select(d_slot, c.entry_bits)
        e_valid = Signal()
        e_v, e_z = Signal(c.weight_index_bits, reset_less=True), Signal(c.index_bits, reset_less=True)
        e_value, e_first = Signal(signed(c.act_bits), reset_less=True), Signal(reset_less=True)
        m.d.sync += e_valid.eq(d_valid)
        with m.If(d_valid):
            m.d.sync += [e_v.eq(entry[:c.weight_index_bits]), e_z.eq(entry[c.weight_index_bits:]),
                         e_value.eq(d_value), e_first.eq(d_first)]

        # D2: row decode (the first entry of a span counts zeros from row 0), codebook lookup
        prev_row = Signal(rb, reset_less=True)
        row = Signal(rb)
        m.d.comb += row.eq(Mux(e_first, e_z, prev_row + e_z + 1))
        with m.If(e_valid):
            m.d.sync += prev_row.eq(row)
        cb_rd = self.codebook.read_port(domain="comb")
        m.d.comb += cb_rd.addr.eq(self.layer * c.codebook_size + e_v)
        self._m_valid = m_valid = Signal()      # a real (non-padding) entry in M
        m_row = Signal(rb, reset_less=True)
        m_weight = Signal(signed(c.weight_bits), reset_less=True)
        m_value = Signal(signed(c.act_bits), reset_less=True)
        m.d.sync += m_valid.eq(e_valid & (e_v != 0))
        with m.If(e_valid):
            m.d.sync += [m_row.eq(row), m_weight.eq(cb_rd.data), m_value.eq(e_value)]

        # M: multiply; accumulator and touched-bit read of the row; which in-flight sums A must take instead
        self.touched = touched = Signal(c.act_depth)
        self.acc_rd = acc_rd = self.accs.read_port(domain="comb")
        acc_wr = self.accs.write_port()
        a_valid = Signal()
        a_row = Signal(rb, reset_less=True)
        a_product = Signal(signed(c.act_bits + c.weight_bits), reset_less=True)
        a_acc = Signal(signed(c.acc_bits), reset_less=True)
        a_touched, a_hit = Signal(reset_less=True), Signal(reset_less=True)
        w_sum = Signal(signed(c.acc_bits), reset_less=True)
        m.d.comb += acc_rd.addr.eq(Mux(self.out_en, self.out_slot, m_row))
        m.d.sync += a_valid.eq(m_valid)
        with m.If(m_valid):
            m.d.sync += [a_row.eq(m_row), a_product.eq(m_weight * m_value),
                         a_acc.eq(acc_rd.data), a_touched.eq(touched.bit_select(m_row, 1)),
                         # the entry now in A is written at the end of this cycle, too late for this read
                         a_hit.eq(a_valid & (a_row == m_row))]

        # A: accumulate, with the previous entry's sum from W when it was the same row; written back at the end
        # of the cycle (W holds the sum one more cycle, for that bypass only)
        total = Signal(signed(c.acc_bits))
        m.d.comb += total.eq(Mux(a_hit, w_sum, Mux(a_touched, a_acc, 0)) + a_product)
        with m.If(a_valid):
            m.d.sync += w_sum.eq(total)
        m.d.comb += [acc_wr.en.eq(a_valid), acc_wr.addr.eq(a_row), acc_wr.data.eq(total)]
        # a shifted one, not a bit select on the left: Yosys turns that into a mux tree over every row
        with m.If(self.clear):
            m.d.sync += touched.eq(0)
        with m.Elif(a_valid):
            m.d.sync += touched.eq(touched | (Const(1, 1) << a_row)[:c.act_depth])

    # -- output pass: O1, O2 here, O3..O7 in a `Requantizer` ---------------------------------------------------
    def _output_pass(self, m):
        c = self.config
        # the layer's shift, rounding constant and ReLU travel with each row: the next layer may start (and the
        # chip's layer parameters change) while this layer's last rows are still in O2..O7
        params = row_params(c)
        o2, o3 = Signal(params, name="o2_params", reset_less=True), Signal(params, name="o3_params", reset_less=True)
        self._o2_valid, o3_valid = Signal(), Signal()
        m.d.sync += [self._o2_valid.eq(self.out_en), o3_valid.eq(self._o2_valid)]
        with m.If(self.out_en):
            m.d.sync += [o2.shift.eq(self.shift), o2.rounding.eq(self.rounding), o2.relu.eq(self.relu)]
        with m.If(self._o2_valid):
            m.d.sync += o3.eq(o2)
        lanes = [(self.out_slot, self.acc_rd, self.out_data, self.share, self.partner)]
        if c.outputs_per_cycle > 1:
            acc_rd_b = self.accs.read_port(domain="comb")
            m.d.comb += acc_rd_b.addr.eq(self.out_slot_b)
            lanes.append((self.out_slot_b, acc_rd_b, self.out_data_b, self.share_b, self.partner_b))
        for i, (own, acc_rd, port, share, partner) in enumerate(lanes):
            name = "o" + "_b" * i
            m.submodules[f"requant{'_b' * i}"] = rq = Requantizer(c)
            m.d.comb += [rq.valid.eq(o3_valid), rq.shift.eq(o3.shift), rq.rounding.eq(o3.rounding),
                         rq.relu.eq(o3.relu), port.eq(rq.y)]
            self._output_reads(m, own, acc_rd, rq, share, partner, name)

    def _output_reads(self, m, own, acc_rd, rq, share, partner, name):
        """O1: accumulator, partner-share and bias reads of row `own`; O2: the bias registered (the RAM's output
        register), the partner's share registered on arrival. The partner's share (accumulator own + 1) is zero
        until touched and in unpaired layers."""
        c = self.config
        A = signed(c.acc_bits)
        share_rd = self.accs.read_port(domain="comb")
        bias_rd = self.bias.read_port()
        m.d.comb += [share_rd.addr.eq(own | 1), bias_rd.addr.eq(self.layer * c.act_depth + own)]
        # the rows' touched bits are looked up beside the reads and applied in O2: the own row's before the
        # Requantizer's input register, the share's before it crosses to the partner (registered there)
        acc2 = Signal(A, name=f"{name}2_acc", reset_less=True)
        share2 = Signal(A, name=f"{name}2_share", reset_less=True)
        touched2, share_touched2 = Signal(name=f"{name}2_touched"), Signal(name=f"{name}2_share_touched")
        with m.If(self.out_en):
            m.d.sync += [acc2.eq(acc_rd.data), touched2.eq(self.touched.bit_select(own, 1)),
                         share2.eq(share_rd.data), share_touched2.eq(self.paired & self.touched.bit_select(own | 1, 1))]
        m.d.comb += share.eq(Mux(share_touched2, share2, 0))
        # O2's registers (reset-less, so that the bias's can be the RAM's own output register)
        bias3, acc3, partner3 = (Signal(shape, name=f"{name}3_{what}", reset_less=True)
                                 for shape, what in ((signed(c.act_bits), "bias"), (A, "acc"), (A, "partner")))
        with m.If(self._o2_valid):
            m.d.sync += [bias3.eq(bias_rd.data), acc3.eq(Mux(touched2, acc2, 0)), partner3.eq(partner)]
        m.d.comb += [rq.bias.eq(bias3), rq.acc.eq(acc3), rq.partner.eq(partner3)]
