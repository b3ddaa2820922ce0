"""One EIE processing element (PE): activation queue, pointer read, sparse-matrix read, index decoder,
arithmetic unit with bypass, accumulators and the output (requantize + ReLU) path.

Pipeline, one entry per cycle at steady state::

    queue -> P0 pointer read -> P1 span (prefix sum) -> jobs FIFO -> S matrix read -> D decode, codebook,
    multiply -> A accumulate (bypass from W) -> W write

Columns with no entries in this PE cost only a pointer-stage cycle, hidden behind the jobs FIFO. With
``acts_per_cycle=2`` a queue slot holds up to two activations of one pointer word: P1 turns them into one job
of two spans, and S reads the second span right after the first, as it does the next job's.
Accumulators start lazily: a row not yet touched in this layer reads its bias instead of the register, so a
layer needs no initialization pass.
"""

from amaranth import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, wiring
from amaranth.lib.wiring import In, Out

from eie.config import ChipConfig
from eie.hw.arith import shift_left
from eie.hw.sram import sram

__all__ = ["ProcessingElement", "PeSignature", "PeLoadSignature", "requantize", "rounding"]


def _log2(n):
    return n.bit_length() - 1


def _addr_bits(depth):
    """Address width for `depth` words (at least one bit, so single-word memories still have a port)."""
    return max(1, (depth - 1).bit_length())


class PeLoadSignature(wiring.Signature):
    """Host writes into one PE's memories: a write strobe per memory, address and data, the same at every PE, and
    ``sel``, high at the PE addressed (the codebook strobe writes every PE's copy whatever ``sel`` is). Only
    ``sel`` differs between PEs, so a simulator can share one PE's code between all of them."""

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
            "act_ready": Out(1),
            # a second activation of the same pointer word: its lane there, and its value (0: none)
            **({"act_lane_b": In(_addr_bits(c.cols_per_ptr_word)), "act_value_b": In(signed(c.act_bits))}
               if c.acts_per_cycle > 1 else {}),
            "layer": In(_addr_bits(c.max_layers)), "ptr_base": In(_addr_bits(c.ptr_words)),
            "shift": In(c.shift_bits), "rounding": In(c.acc_bits), "relu": In(1),
            "clear": In(1), "new_run": In(1), "busy": Out(1),
            "out_en": In(1), "out_row": In(_addr_bits(c.act_depth)), "out_data": Out(signed(c.act_bits)),
            **({"out_data_b": Out(signed(c.act_bits))} if c.outputs_per_cycle > 1 else {}),
            # a paired layer: this PE's partial sum of its partner's output row, and the partner's of this one's
            "paired": In(1), "share": Out(signed(c.acc_bits)), "partner": In(signed(c.acc_bits)),
            **({"share_b": Out(signed(c.acc_bits)), "partner_b": In(signed(c.acc_bits))}
               if c.outputs_per_cycle > 1 else {}),
            "load": In(PeLoadSignature(c)),
            "entries": Out(32), "macs": Out(32),
        })


def rounding(shift, config):
    """Half of ``1 << shift``, the constant `requantize` adds before shifting. It depends on the layer only, so
    the chip computes it once for all its PEs."""
    return (shift_left(Const(1, config.acc_bits + 1), shift, config.acc_bits + 1) >> 1)[:config.acc_bits]


def requantize(m, acc, shift, rnd, relu, config):
    """Combinational accumulator -> activation (round half-up, saturate, ReLU), as `eie.sw.reference`; `rnd` is
    ``rounding(shift)``."""
    c = config
    shifted = Signal(signed(c.acc_bits + 1))
    m.d.comb += shifted.eq((acc + rnd) >> shift)
    y = Signal(signed(c.act_bits))
    with m.If(shifted > c.act_max):
        m.d.comb += y.eq(c.act_max)
    with m.Elif(shifted < c.act_min):
        m.d.comb += y.eq(c.act_min)
    with m.Else():
        m.d.comb += y.eq(shifted)
    return Mux(relu & y[-1], 0, y)


class ProcessingElement(wiring.Component):
    """Parameters: a `ChipConfig`. Ports:

    * ``act_*``: broadcast of a non-zero activation (column, value), with ``acts_per_cycle=2`` perhaps a second
      one of the same pointer word (``act_lane_b``, ``act_value_b``); ``act_ready`` is low while the queue is full.
    * layer parameters (``layer``, ``ptr_base``, ``shift``, ``rounding`` = `rounding` of ``shift``, ``relu``),
      stable during a layer (pointer words hold absolute entry addresses, so the layer's place in the matrix
      SRAM needs no port);
      ``clear`` forgets the accumulators (start of a layer); ``busy`` is high while any work is in flight.
    * output pass: ``out_en``/``out_row`` ask for one local row; ``out_data`` holds it one cycle later (with
      ``outputs_per_cycle=2``, ``out_data_b`` holds the next row). In a ``paired`` layer (`eie.sw.encode`) row
      ``s`` is accumulator ``2s`` plus the partner PE's accumulator ``2s + 1``: a PE hands its partner that
      partial sum on ``share`` as it hands its own row on ``out_data``, and adds the partner's from ``partner``.
    * ``load``: host writes into the matrix, pointer, codebook and bias memories.
    * ``entries``/``macs``: entries read and multiplies done since ``new_run``.
    """

    def __init__(self, config):
        if not isinstance(config, ChipConfig):
            raise TypeError(f"config must be a ChipConfig, not {type(config).__name__}")
        self.config = c = config
        self.row_bits = _addr_bits(c.act_depth)
        super().__init__(PeSignature(c))

    def elaborate(self, platform):
        c = self.config
        m = Module()
        K, E = c.cols_per_ptr_word, c.entries_per_word
        dual = c.acts_per_cycle > 1
        span = {"start": c.entry_addr_bits, "count": c.count_bits, "value": signed(c.act_bits)}
        job_layout = data.StructLayout({**span, **({f"{k}_b": v for k, v in span.items()} if dual else {})})
        act_layout = data.StructLayout({"col": c.dim_bits, "value": signed(c.act_bits),
                                        **({"lane_b": _addr_bits(K), "value_b": signed(c.act_bits)} if dual else {})})

        # -- memories --------------------------------------------------------------------------------------
        m.submodules.matrix = matrix = sram(unsigned(c.matrix_word_bits), c.matrix_words)
        m.submodules.pointers = pointers = sram(unsigned(c.ptr_word_bits), c.ptr_words)
        m.submodules.codebook = codebook = sram(signed(c.weight_bits), c.max_layers * c.codebook_size)
        m.submodules.bias = bias = sram(signed(c.act_bits), c.max_layers * c.act_depth)
        m.submodules.accumulators = accs = sram(signed(c.acc_bits), c.act_depth)

        sel = self.load.sel
        for mem, we in ((matrix, self.load.matrix_we & sel), (pointers, self.load.ptr_we & sel),
                        (codebook, self.load.codebook_we), (bias, self.load.bias_we & sel)):
            wp = mem.write_port()
            m.d.comb += [wp.en.eq(we), wp.addr.eq(self.load.addr), wp.data.eq(self.load.data)]

        # -- activation queue ----------------------------------------------------------------------------
        m.submodules.queue = queue = fifo.SyncFIFO(width=act_layout.size, depth=c.queue_depth)
        head = act_layout(queue.r_data)
        incoming = act_layout(queue.w_data)
        m.d.comb += [
            queue.w_en.eq(self.act_valid),
            incoming.col.eq(self.act_col),
            incoming.value.eq(self.act_value),
            *([incoming.lane_b.eq(self.act_lane_b), incoming.value_b.eq(self.act_value_b)] if dual else []),
            self.act_ready.eq(queue.w_rdy),
        ]

        # -- P0/P1: pointer read and span ------------------------------------------------------------------
        m.submodules.jobs = jobs = fifo.SyncFIFO(width=job_layout.size, depth=c.jobs_depth)
        ptr_rd = pointers.read_port()
        p1_valid = Signal()
        p1_lane = Signal(_addr_bits(K), reset_less=True)
        p1_value = Signal(signed(c.act_bits), reset_less=True)
        take = queue.r_rdy & (jobs.level + p1_valid < c.jobs_depth)
        m.d.comb += [
            queue.r_en.eq(take),
            ptr_rd.addr.eq(self.ptr_base + (head.col >> _log2(K))),
        ]
        m.d.sync += [p1_valid.eq(take), p1_lane.eq(head.col[:_log2(K)] if K > 1 else 0),
                     p1_value.eq(head.value)]
        if dual:
            p1_lane_b = Signal.like(p1_lane)
            p1_value_b = Signal.like(p1_value)
            m.d.sync += [p1_lane_b.eq(head.lane_b), p1_value_b.eq(head.value_b)]

        word = ptr_rd.data
        base = word[:c.entry_addr_bits]
        counts = [word[c.entry_addr_bits + i * c.count_bits:][:c.count_bits] for i in range(K)]
        prefix = [Const(0, c.entry_addr_bits)]
        for n in counts[:-1]:
            prefix.append(prefix[-1] + n)
        job = job_layout(jobs.w_data)
        count = Signal(c.count_bits)
        start = Signal(c.entry_addr_bits)
        m.d.comb += [count.eq(Array(counts)[p1_lane]), start.eq(base + Array(prefix)[p1_lane])]
        if dual:
            count_b = Signal(c.count_bits)
            start_b = Signal(c.entry_addr_bits)
            m.d.comb += [count_b.eq(Mux(p1_value_b != 0, Array(counts)[p1_lane_b], 0)),
                         start_b.eq(base + Array(prefix)[p1_lane_b])]
            # a first span without entries here gives its place to the second: a job's first span is never empty
            with m.If(count == 0):
                m.d.comb += [job.start.eq(start_b), job.count.eq(count_b), job.value.eq(p1_value_b)]
            with m.Else():
                m.d.comb += [job.start.eq(start), job.count.eq(count), job.value.eq(p1_value),
                             job.start_b.eq(start_b), job.count_b.eq(count_b), job.value_b.eq(p1_value_b)]
            m.d.comb += jobs.w_en.eq(p1_valid & ((count != 0) | (count_b != 0)))
        else:
            m.d.comb += [job.start.eq(start), job.count.eq(count), job.value.eq(p1_value),
                         jobs.w_en.eq(p1_valid & (count != 0))]

        # -- S: sparse-matrix read, one entry per cycle ------------------------------------------------------
        s_active = Signal()
        s_addr = Signal(c.entry_addr_bits, reset_less=True)
        s_left = Signal(c.count_bits, reset_less=True)
        s_value = Signal(signed(c.act_bits), reset_less=True)
        s_first = Signal(reset_less=True)
        next_job = job_layout(jobs.r_data)
        mat_rd = matrix.read_port()
        m.d.comb += mat_rd.addr.eq(s_addr >> _log2(E))

        d_valid = Signal()
        d_slot = Signal(_addr_bits(E), reset_less=True)
        d_value = Signal(signed(c.act_bits), reset_less=True)
        d_first = Signal(reset_less=True)
        m.d.sync += [d_valid.eq(s_active), d_slot.eq(s_addr[:_log2(E)] if E > 1 else 0),
                     d_value.eq(s_value), d_first.eq(s_first)]

        last = ~s_active | (s_left == 1)
        with m.If(s_active):
            m.d.sync += [s_addr.eq(s_addr + 1), s_left.eq(s_left - 1), s_first.eq(0)]

        def take_job():
            m.d.comb += jobs.r_en.eq(jobs.r_rdy)
            m.d.sync += [s_active.eq(jobs.r_rdy), s_addr.eq(next_job.start), s_left.eq(next_job.count),
                         s_value.eq(next_job.value), s_first.eq(1)]

        b_valid = Const(0)
        if dual:
            # the job's second span waits here while S reads the first
            b_valid = Signal()
            b_job = Signal(data.StructLayout(span), reset_less=True)
            with m.If(last):
                with m.If(b_valid):
                    m.d.sync += [s_active.eq(1), s_addr.eq(b_job.start), s_left.eq(b_job.count),
                                 s_value.eq(b_job.value), s_first.eq(1), b_valid.eq(0)]
                with m.Else():
                    take_job()
                    m.d.sync += [b_valid.eq(jobs.r_rdy & (next_job.count_b != 0)), b_job.start.eq(next_job.start_b),
                                 b_job.count.eq(next_job.count_b), b_job.value.eq(next_job.value_b)]
        else:
            with m.If(last):
                take_job()

        # -- D: index decoder, codebook lookup, multiply ------------------------------------------------------
        entry = mat_rd.data.word_select(d_slot, c.entry_bits)
        v = entry[:c.weight_index_bits]
        z = entry[c.weight_index_bits:]
        prev_row = Signal(self.row_bits, reset_less=True)
        row = Signal(self.row_bits)
        m.d.comb += row.eq(Mux(d_first, z, prev_row + z + 1))
        with m.If(d_valid):
            m.d.sync += prev_row.eq(row)
        cb_rd = codebook.read_port(domain="comb")
        m.d.comb += cb_rd.addr.eq(self.layer * c.codebook_size + v)
        bias_rd = bias.read_port()

        a_valid = Signal()
        a_row = Signal(self.row_bits, reset_less=True)
        a_product = Signal(signed(c.act_bits + c.weight_bits), reset_less=True)
        m.d.sync += [a_valid.eq(d_valid & (v != 0)), a_row.eq(row), a_product.eq(cb_rd.data * d_value)]

        # -- A: accumulate (bypass from W), W: write back ---------------------------------------------------
        touched = Signal(c.act_depth)
        acc_rd = accs.read_port(domain="comb")
        acc_wr = accs.write_port()
        w_valid = Signal()
        w_row = Signal(self.row_bits, reset_less=True)
        w_sum = Signal(signed(c.acc_bits), reset_less=True)

        def slot(r):
            """The accumulator of output row `r`: row r's own, 2r when paired."""
            return Mux(self.paired, r << 1, r)
        out_slot = Signal(self.row_bits)
        m.d.comb += out_slot.eq(slot(self.out_row))
        m.d.comb += [acc_rd.addr.eq(Mux(self.out_en, out_slot, a_row)),
                     bias_rd.addr.eq(self.layer * c.act_depth + Mux(self.out_en, out_slot, row))]
        # The bias read is synchronous: its data belongs to the row of the previous cycle.
        # a signal, not an expression: its two uses would each get a copy of the shifter
        bias_shifted = Signal(signed(c.acc_bits))
        m.d.comb += bias_shifted.eq(shift_left(bias_rd.data, self.shift, c.acc_bits))

        acc_or_bias = Mux(touched.bit_select(a_row, 1), acc_rd.data, bias_shifted)
        start = Mux(w_valid & (w_row == a_row), w_sum, acc_or_bias)
        m.d.sync += [w_valid.eq(a_valid), w_row.eq(a_row), w_sum.eq(start + a_product)]
        m.d.comb += [acc_wr.en.eq(w_valid), acc_wr.addr.eq(w_row), acc_wr.data.eq(w_sum)]
        # a shifted one, not a bit select on the left: Yosys turns that into a mux tree over every row
        with m.If(self.clear):
            m.d.sync += touched.eq(0)
        with m.Elif(w_valid):
            m.d.sync += touched.eq(touched | (Const(1, 1) << w_row)[:c.act_depth])

        # -- output pass: row r asked at cycle t is ready at t+1 ---------------------------------------------
        def output(own, acc, bias_now, port, share, partner, name):
            out_touched = Signal(name=f"{name}_touched", reset_less=True)
            out_acc = Signal(signed(c.acc_bits), name=f"{name}_acc", reset_less=True)
            # the partner's row: accumulator own + 1, zero until touched (its bias lives in the partner) and in
            # unpaired layers; a synchronous read enabled in the output pass only, so a simulator skips it while
            # the PE computes
            share_rd = accs.read_port()
            share_touched = Signal(name=f"{name}_share_touched", reset_less=True)
            m.d.comb += [share_rd.addr.eq(own | 1), share_rd.en.eq(self.out_en),
                         share.eq(Mux(share_touched, share_rd.data, 0))]
            with m.If(self.out_en):
                m.d.sync += [out_touched.eq(touched.bit_select(own, 1)), out_acc.eq(acc),
                             share_touched.eq(self.paired & touched.bit_select(own | 1, 1))]
            total = Signal(signed(c.acc_bits), name=f"{name}_total")   # wraps as the accumulators do
            m.d.comb += total.eq(Mux(out_touched, out_acc, bias_now) + partner)
            m.d.comb += port.eq(requantize(m, total, self.shift, self.rounding, self.relu, c))

        output(out_slot, acc_rd.data, bias_shifted, self.out_data, self.share, self.partner, "out")
        if c.outputs_per_cycle > 1:
            # the next row (any row past the last is read in range and not used)
            next_slot = slot(self.out_row + 1)
            own_b = Signal(self.row_bits)
            m.d.comb += own_b.eq(Mux(next_slot + self.paired < c.act_depth, next_slot, 0))
            acc_rd_b = accs.read_port(domain="comb")
            bias_rd_b = bias.read_port()
            m.d.comb += [acc_rd_b.addr.eq(own_b), bias_rd_b.addr.eq(self.layer * c.act_depth + own_b)]
            output(own_b, acc_rd_b.data, shift_left(bias_rd_b.data, self.shift, c.acc_bits),
                   self.out_data_b, self.share_b, self.partner_b, "out_b")

        # -- status and counters ----------------------------------------------------------------------------
        m.d.comb += self.busy.eq(queue.r_rdy | p1_valid | jobs.r_rdy | s_active | b_valid | d_valid | a_valid
                                 | w_valid)
        with m.If(self.new_run):
            m.d.sync += [self.entries.eq(0), self.macs.eq(0)]
        with m.Else():
            m.d.sync += [self.entries.eq(self.entries + d_valid), self.macs.eq(self.macs + a_valid)]
        return m
