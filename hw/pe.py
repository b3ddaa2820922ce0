"""One EIE processing element (PE), pipelined so that no stage holds more than one block-RAM read, one
carry chain or one multiplier between registers (an FPGA clock of 150 MHz is the aim). The PE holds its
memories and joins four stage components, each with its own signature and tests:

    `eie.hw.spans.SpanUnit`          queue, P0..P4, jobs FIFO: broadcast activations become column spans
    `eie.hw.entries.EntryReader`     S, D0, D1, D2: spans become decoded entries (row, weight, activation)
    `eie.hw.accumulate.Accumulator`  M, A (W): entries become accumulator updates, with EIE's bypass
    `eie.hw.output.OutputPass`       O1..O9: accumulators become activations (`eie.hw.requant` in O3..O9)

Compute pipeline, one entry per cycle at steady state (stage: what happens between its registers)::

    queue   activation queue (broadcasts land here one cycle after the chip's broadcast register)
    P0      pointer-word read (block RAM) of the queue head's column, or of the activation arriving at an
            empty queue (EIE's queue bypass), if the jobs FIFO has a free place
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

Output pass, one local row (two with ``outputs_per_cycle=2``) per cycle, `OUTPUT_LATENCY` = 9 stages::

    O1  accumulator and partner-share reads, bias read issued
    O2  bias registered (the RAM's output register); the share crosses to the partner PE
    O3..O9  `eie.hw.requant.Requantizer`: left shift and right shift in two stages each, sums, rounding, saturate, ReLU
"""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from eie.hw.accumulate import Accumulator
from eie.hw.arith import addr_bits
from eie.hw.component import ChipComponent
from eie.hw.entries import EntryReader
from eie.hw.output import OutputPass
from eie.hw.spans import ROOM_BITS, SpanUnit
from eie.hw.sram import connect_comb_read, sram

__all__ = ["ProcessingElement", "PeSignature", "PeLoadSignature", "TAIL", "ROOM_BITS"]

TAIL = 5              # cycles from an entry's matrix read (S) to the end of its write-back (A)


class PeLoadSignature(wiring.Signature):
    """Host writes into one PE's memories: a write strobe per memory, address and data, the same at every PE, and
    ``sel``, high at the PEs addressed (all of them for a codebook write, since every PE holds the codebooks). Only
    ``sel`` differs between PEs, so a simulator can share one PE's code between all of them, while synthesis
    cannot merge the PEs' load registers into one that would drive every memory across the die."""

    def __init__(self, config):
        c = config
        super().__init__({
            "sel": Out(1), "matrix_we": Out(1), "ptr_we": Out(1), "codebook_we": Out(1), "bias_we": Out(1),
            "addr": Out(addr_bits(max(c.matrix_words, c.ptr_words, c.max_layers * c.act_depth,
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
            **({"act_lane_b": In(addr_bits(c.cols_per_ptr_word)), "act_value_b": In(signed(c.act_bits))}
               if c.acts_per_cycle > 1 else {}),
            "layer": In(addr_bits(c.max_layers)), "ptr_base": In(addr_bits(c.ptr_words)),
            "shift": In(c.shift_bits), "rounding": In(c.acc_bits), "relu": In(1),
            "clear": In(1), "new_run": In(1), "quiet": Out(1),
            "out_en": In(1), "out_slot": In(addr_bits(c.act_depth)), "out_data": Out(signed(c.act_bits)),
            **({"out_slot_b": In(addr_bits(c.act_depth)), "out_data_b": Out(signed(c.act_bits))}
               if c.outputs_per_cycle > 1 else {}),
            # a paired layer: this PE's partial sum of its partner's output row, and the partner's of this one's
            "paired": In(1), "share": Out(signed(c.acc_bits)), "partner": In(signed(c.acc_bits)),
            **({"share_b": Out(signed(c.acc_bits)), "partner_b": In(signed(c.acc_bits))}
               if c.outputs_per_cycle > 1 else {}),
            "load": In(PeLoadSignature(c)),
            "entries": Out(32), "macs": Out(32),
        })


class ProcessingElement(ChipComponent):
    """Parameters: a `ChipConfig`. Ports:

    * ``act_*``: a broadcast non-zero activation (column, value), from the chip's broadcast register; with
      ``acts_per_cycle=2`` perhaps a second one of the same pointer word (``act_lane_b``, ``act_value_b``).
      ``act_room`` (registered): bit j is high while the queue has room for j + 1 more broadcasts. The chip
      sees it two cycles late and knows what it sent since, so it never overfills the queue.
    * layer parameters (``layer``, ``ptr_base``, ``paired``), stable during a layer; output-pass parameters
      (``shift``, ``rounding`` = `rounding` of ``shift``, ``relu``), read as each row is asked for (the row
      carries them through the later stages); ``clear`` forgets the accumulators (the cycle after a layer's first,
      which may be the one in which the layer before asks for its last row).
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

    signature_type = PeSignature

    def elaborate(self, platform):
        c = self.config
        m = Module()
        self._memories(m)
        m.submodules.spans = spans = SpanUnit(c)
        m.submodules.reader = reader = EntryReader(c)
        m.submodules.accum = acc = Accumulator(c)
        m.submodules.outpass = out = OutputPass(c)

        # broadcasts in; the queue's room out
        m.d.comb += [spans.act.valid.eq(self.act_valid), spans.act.payload.col.eq(self.act_col),
                     spans.act.payload.value.eq(self.act_value), spans.ptr_base.eq(self.ptr_base),
                     self.act_room.eq(spans.room)]
        if c.acts_per_cycle > 1:
            m.d.comb += [spans.act.payload.lane_b.eq(self.act_lane_b), spans.act.payload.value_b.eq(self.act_value_b)]
        wiring.connect(m, spans.ptr_rd, self.pointers.read_port())
        wiring.connect(m, spans.jobs, reader.jobs)
        wiring.connect(m, reader.mat_rd, self.matrix.read_port())
        connect_comb_read(m, reader.codebook, self.codebook)
        m.d.comb += reader.layer.eq(self.layer)
        wiring.connect(m, reader.entries, acc.entries)
        m.d.comb += acc.clear.eq(self.clear)
        # the accumulators in two memories, even rows and odd rows, so that one read of each gives a pair (a
        # paired layer's row and its partner's share) and each memory needs one LUT-RAM copy per pair read
        wr = acc.acc_wr
        for parity, mem in enumerate(self.accs):
            wp = mem.write_port()
            m.d.comb += [wp.en.eq(wr.en & (wr.addr[0] == parity)), wp.addr.eq(wr.addr >> 1), wp.data.eq(wr.data)]

        def read_pair(row):
            """The pair of accumulators `row` belongs to, even and odd, read asynchronously."""
            even, odd = (mem.read_port(domain="comb") for mem in self.accs)
            m.d.comb += [even.addr.eq(row >> 1), odd.addr.eq(row >> 1)]
            return even.data, odd.data

        # one pair read serves M and, while the PE is quiet, the output pass's lane a
        row = Signal.like(self.out_slot, name="acc_row")
        m.d.comb += row.eq(Mux(self.out_en, self.out_slot, acc.acc_rd.addr))
        even_word, odd_word = read_pair(row)
        m.d.comb += [acc.acc_rd.even.eq(even_word), acc.acc_rd.odd.eq(odd_word)]
        m.d.comb += [out.out_en.eq(self.out_en), out.layer.eq(self.layer), out.paired.eq(self.paired),
                     out.shift.eq(self.shift), out.rounding.eq(self.rounding), out.relu.eq(self.relu),
                     out.touched.eq(acc.touched)]
        lanes = [(out.a, self.out_slot, (even_word, odd_word), self.out_data, self.share, self.partner)]
        if c.outputs_per_cycle > 1:
            lanes.append((out.b, self.out_slot_b, read_pair(self.out_slot_b), self.out_data_b, self.share_b,
                          self.partner_b))
        for lane, slot, (even, odd), y, share, partner in lanes:
            m.d.comb += [lane.slot.eq(slot), lane.even.eq(even), lane.odd.eq(odd), lane.partner.eq(partner),
                         share.eq(lane.share), y.eq(lane.y)]
            wiring.connect(m, lane.bias_rd, self.bias.read_port())

        m.d.sync += self.quiet.eq(~(spans.busy | reader.busy))
        with m.If(self.new_run):
            m.d.sync += [self.entries.eq(0), self.macs.eq(0)]
        with m.Else():
            m.d.sync += [self.entries.eq(self.entries + reader.read), self.macs.eq(self.macs + acc.entries.valid)]
        return m

    # -- memories and their loads --------------------------------------------------------------------------------
    def _memories(self, m):
        c = self.config
        m.submodules.matrix = self.matrix = sram(unsigned(c.matrix_word_bits), c.matrix_words)
        m.submodules.pointers = self.pointers = sram(unsigned(c.ptr_word_bits), c.ptr_words)
        m.submodules.codebook = self.codebook = sram(signed(c.weight_bits), c.max_layers * c.codebook_size)
        m.submodules.bias = self.bias = sram(signed(c.act_bits), c.max_layers * c.act_depth)
        self.accs = [sram(signed(c.acc_bits), max((c.act_depth + 1 - parity) // 2, 1)) for parity in (0, 1)]
        m.submodules.accumulators_even, m.submodules.accumulators_odd = self.accs
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
