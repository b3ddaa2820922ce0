"""The chip: N processing elements, the non-zero detector, the activation register files and central
control, behind one host port.

The host loads the image (sparse matrix, pointers, codebooks, biases, layer table) and the first input,
pulses ``start`` with ``n_layers``, waits for ``done`` and reads the last layer's output. Layers chain on
chip: layer ``l`` reads activation bank ``l % 2`` and writes bank ``(l + 1) % 2`` (EIE's source/destination
swap). A layer runs as: clear accumulators, broadcast non-zero activations until every PE drains, then an
output pass that requantizes ``outputs_per_cycle`` local rows per cycle in every PE at once (in a paired layer,
each PE adding its partner's partial sums of its rows: `eie.sw.encode`).
"""

import enum

from amaranth import Array, Cat, ClockDomain, Const, ClockSignal, Instance, Module, Mux, ResetSignal, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

from eie.config import OUTPUT_LATENCY, ChipConfig
from eie.hw.arith import addr_bits, at_most
from eie.hw.component import ChipComponent
from eie.hw.pe import ROOM_BITS, PeSignature, ProcessingElement
from eie.hw.requant import rounding
from eie.hw.scanner import NonZeroDetector
from eie.hw.sram import sram

__all__ = ["Chip", "PeInstance", "HostSignature", "Target", "ReadTarget", "layer_layout", "RESET_CYCLES"]

# Cycles after ``rst`` falls before the chip accepts host writes (reset synchronizer stages + 1).
RESET_CYCLES = 3


class Target(enum.IntEnum):
    """What a host write goes to."""
    MATRIX = 0
    POINTER = 1
    CODEBOOK = 2   # broadcast to every PE
    BIAS = 3
    LAYER = 4      # layer table row `addr`
    ACT0 = 5       # activation bank 0 word `addr` (one value per PE)
    ACT1 = 6


class ReadTarget(enum.IntEnum):
    """What the host read port shows at ``raddr``."""
    ACT0 = 0
    ACT1 = 1
    LAYER_CYCLES = 2   # cycles layer `raddr` took in the last run
    PE_STATS = 3       # PE `raddr`: entries read (low 32 bits) and multiplies (high 32 bits) in the last run


def layer_layout(config):
    """One row of the layer table; the host packs it with the same field offsets."""
    c = config
    return data.StructLayout({
        "rows": unsigned(c.dim_bits), "cols": unsigned(c.dim_bits),
        "ptr_base": unsigned(addr_bits(c.ptr_words)),
        "shift": unsigned(c.shift_bits), "relu": unsigned(1), "paired": unsigned(1),
    })


def host_widths(config):
    c = config
    addr = addr_bits(max(c.matrix_words, c.ptr_words, c.act_depth * c.max_layers,
                          c.codebook_size * c.max_layers, c.max_layers, c.pes))
    data_bits = max(c.matrix_word_bits, c.ptr_word_bits, c.pes * c.act_bits, layer_layout(c).size)
    return addr, data_bits, max(c.pes * c.act_bits, 64)


class HostSignature(wiring.Signature):
    """The chip's only port, seen from the host."""

    def __init__(self, config):
        addr, data_bits, rdata = host_widths(config)
        super().__init__({
            "we": Out(1), "target": Out(3), "pe": Out(addr_bits(config.pes)),
            "addr": Out(addr), "data": Out(data_bits),
            "rtarget": Out(2), "raddr": Out(addr), "rdata": In(rdata),
            "start": Out(1), "n_layers": Out(addr_bits(config.max_layers + 1)),
            "done": In(1), "cycles": In(32),
        })


class HostRegisters:
    """The chip's side of the host port: a register per input, and the signals behind its outputs."""

    def __init__(self, config):
        for name, member in HostSignature(config).members.items():
            setattr(self, name, Signal(member.shape, name=f"host_{name}_q"))


class PeInstance(ChipComponent):
    """A PE as an instance of the Verilog module `module`, written once from `ProcessingElement` (ports named
    as Amaranth names a component's: ``act_valid``, ``load__addr``, ``clk``, ``rst``). Verilog generation then
    processes one PE instead of N identical copies, which took minutes at 64 PEs."""

    signature_type = PeSignature

    def __init__(self, config: ChipConfig, module: str):
        self.module = module
        super().__init__(config)

    def elaborate(self, platform):
        ports = {("i_" if member.flow == In else "o_") + "__".join(map(str, path)): value
                 for path, member, value in self.signature.flatten(self)}
        m = Module()
        m.submodules.pe = Instance(self.module, i_clk=ClockSignal("sync"), i_rst=ResetSignal("sync"), **ports)
        return m


class Chip(ChipComponent):
    """The chip of `config`. With `pe_module`, the PEs are instances of that Verilog module (`PeInstance`),
    for Verilog generation; without it they are elaborated here, as Amaranth's simulator needs."""

    @staticmethod
    def signature_type(config: ChipConfig) -> dict:
        return {"clk": In(1), "rst": In(1), "host": In(HostSignature(config))}

    def __init__(self, config: ChipConfig, pe_module: str | None = None):
        self.pe_module = pe_module
        super().__init__(config)

    def elaborate(self, platform):
        c = self.config
        n = c.pes
        m = Module()
        # The chip owns its clock domain; reset passes through a synchronizer, so no logic depends on an
        # input pin combinationally (Verilator would otherwise re-evaluate all of it on every clock edge).
        m.domains.sync = ClockDomain("sync")
        m.d.comb += ClockSignal("sync").eq(self.clk)
        m.submodules.reset_sync = ResetSynchronizer(self.rst, domain="sync", stages=RESET_CYCLES - 1)
        # Register the host port at the boundary too: one cycle of latency each way (writes and reads take one
        # more inside, see below).
        host = HostRegisters(self.config)
        for name in ("we", "target", "pe", "addr", "data", "rtarget", "raddr", "start", "n_layers"):
            m.d.sync += getattr(host, name).eq(getattr(self.host, name))
        m.d.comb += [self.host.done.eq(host.done), self.host.cycles.eq(host.cycles)]
        m.d.sync += self.host.rdata.eq(host.rdata)
        pes = [ProcessingElement(c) if self.pe_module is None else PeInstance(c, self.pe_module) for _ in range(n)]
        for k, pe in enumerate(pes):
            m.submodules[f"pe{k}"] = pe
        m.submodules.nzd = nzd = NonZeroDetector(c)

        # -- host writes -------------------------------------------------------------------------------------
        # A second register stage: the write decoded into one strobe per target (per row for the layer table,
        # below) and one select per PE, so that no decoder sits in front of the wide fan-out to the memories.
        # `start` waits a cycle with them, so the last write lands before a run begins.
        strobe = {t: Signal(name=f"write_{t.name.lower()}") for t in Target if t != Target.LAYER}
        wr_addr, wr_data = Signal.like(host.addr, name="write_addr"), Signal.like(host.data, name="write_data")
        wr_sel = Signal(n, name="write_sel")
        start = Signal()
        m.d.sync += [*(strobe[t].eq(host.we & (host.target == t)) for t in strobe), wr_addr.eq(host.addr),
                     wr_data.eq(host.data), start.eq(host.start),
                     wr_sel.eq(Cat((host.pe == k) | (host.target == Target.CODEBOOK) for k in range(n)))]
        # the layer table's rows, each with its own decoded strobe (a flip-flop drives each row's enables)
        layout = layer_layout(c)
        table = Array(Signal(layout, name=f"layer{l}") for l in range(c.max_layers))
        row_we = Signal(c.max_layers, name="write_layer_row")
        m.d.sync += row_we.eq(Cat(host.we & (host.target == Target.LAYER) & (host.addr == l)
                                  for l in range(c.max_layers)))
        for l in range(c.max_layers):
            with m.If(row_we[l]):
                m.d.sync += table[l].eq(wr_data[:layout.size])
        # Strobes common to every PE are shared, not one per PE: a PE whose inputs differ from its neighbours'
        # only in `sel` gets one copy of simulator code for all instances.
        strobes = {"matrix_we": strobe[Target.MATRIX], "ptr_we": strobe[Target.POINTER],
                   "bias_we": strobe[Target.BIAS], "codebook_we": strobe[Target.CODEBOOK]}
        for k, pe in enumerate(pes):
            m.d.comb += [pe.load.addr.eq(wr_addr), pe.load.data.eq(wr_data), pe.load.sel.eq(wr_sel[k]),
                         *(getattr(pe.load, name).eq(s) for name, s in strobes.items())]

        # -- control ---------------------------------------------------------------------------------------
        # The current row of the layer table and its rounding constant (every PE reads them), copied from the next
        # row, which was read ahead, in a layer's first cycle (`begin_layer`): a layer starts with register copies.
        layer, layer_next = Signal(addr_bits(c.max_layers)), Signal(addr_bits(c.max_layers))
        desc, desc_next = Signal(layout), Signal(layout)
        rnd = Signal(c.acc_bits)
        more = Signal()                          # a layer follows this one
        first = Signal()                         # the run's first layer: no layer before it to record
        layer_count = Signal(32)                 # cycles since the layer's first cycle
        layer_cycles = Array(Signal(32, name=f"layer{l}_cycles") for l in range(c.max_layers))
        n_layers = Signal.like(host.n_layers)
        src = layer[0]
        clear = Signal()
        new_run = Signal()
        out_en = Signal()
        out_row = Signal(addr_bits(c.act_depth))
        # the accumulators of the rows asked for (row r's own, 2r when paired); with outputs_per_cycle=2, the
        # next row's too (a row past the last is read in range and not used): registers, once for all PEs
        out_slots = [Signal(addr_bits(c.act_depth), name=f"out_slot{lane}") for lane in ("", "_b")]

        def ask(row):
            m.d.sync += out_row.eq(row)
            slot = Mux(desc.paired, row << 1, row)
            slot_b = Mux(desc.paired, (row + 1) << 1, row + 1)
            m.d.sync += [out_slots[0].eq(slot), out_slots[1].eq(Mux(slot_b + desc.paired < c.act_depth, slot_b, 0))]
        out_left = Signal(c.dim_bits + 1)       # rows of the layer from lane 0 of this request's word on
        out_last = Signal()                     # this request is the layer's last
        out_cycles = Signal(range(OUTPUT_LATENCY + 2))
        drain = Signal(range(OUTPUT_LATENCY + 1))
        # every PE quiet and every PE's queue with room, ANDed and registered (both two cycles old at the FSM)
        all_quiet = Signal()
        room = Signal(ROOM_BITS)
        m.d.sync += [all_quiet.eq(Cat(pe.quiet for pe in pes).all()),
                     room.eq(Cat(Cat(pe.act_room[j] for pe in pes).all() for j in range(ROOM_BITS)))]

        # the detector's next layer: the table's first row while idle (a run's first layer starts two cycles after
        # `start`), else the row read ahead, which is loaded in a layer's first cycle, long before the next one
        idle = Signal()
        m.d.comb += [nzd.cols.eq(Mux(idle, table[0].cols, desc_next.cols)), nzd.start.eq(clear), nzd.room.eq(room)]
        # what reaches every PE leaves a flip-flop: the PEs forget their accumulators and counters a cycle after
        # the FSM decides it, long before the layer's first entry reaches them
        pe_clear, pe_new_run = Signal(), Signal()
        m.d.sync += [pe_clear.eq(clear), pe_new_run.eq(new_run)]
        for k, pe in enumerate(pes):
            m.d.comb += [pe.layer.eq(layer), pe.ptr_base.eq(desc.ptr_base),
                         pe.shift.eq(desc.shift), pe.rounding.eq(rnd), pe.relu.eq(desc.relu), pe.clear.eq(pe_clear),
                         pe.new_run.eq(pe_new_run), pe.paired.eq(desc.paired),
                         pe.out_en.eq(out_en), pe.out_slot.eq(out_slots[0]),
                         *([pe.out_slot_b.eq(out_slots[1])] if c.outputs_per_cycle > 1 else [])]
            # PEs k and k + N/2 are partners (`eie.sw.encode`; a paired layer needs an even number of PEs)
            partner = pes[(k + n // 2) % n] if n % 2 == 0 else None
            for lane in ("", "_b")[:c.outputs_per_cycle]:
                share = 0 if partner is None else getattr(partner, f"share{lane}")
                m.d.comb += getattr(pe, f"partner{lane}").eq(share)

        running = Signal()
        with m.If(running):
            m.d.sync += [host.cycles.eq(host.cycles + 1), layer_count.eq(layer_count + 1)]

        rows_per_word = c.outputs_per_cycle * n     # rows one request covers
        # the request after this one will be the layer's last (out_left then less one word's rows)
        next_last = Signal()
        m.d.comb += next_last.eq(at_most(out_left, 2 * rows_per_word))

        def begin_layer():
            """A layer's first cycle (`clear`, a register decided a cycle ahead, see below): the detector starts,
            the PEs forget their accumulators, the next table row becomes the current one. In SETUP after IDLE,
            or in the last cycle of the layer before's output pass (its last request is in O1 then, which reads
            the layer's registers before they change)."""
            with m.If(~first):       # the layer before, recorded here off the exit path
                m.d.sync += layer_cycles[layer].eq(layer_count)
            m.d.sync += [layer.eq(layer_next), desc.eq(desc_next), rnd.eq(rounding(desc_next.shift, c)),
                         layer_next.eq(layer_next + 1), desc_next.eq(table[(layer_next + 1)[:len(layer)]]),
                         more.eq(layer_next + 1 < n_layers), layer_count.eq(1), first.eq(0)]
            m.next = "RUN"

        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.comb += idle.eq(1)
                with m.If(start):
                    m.d.comb += new_run.eq(1)
                    m.d.sync += [n_layers.eq(host.n_layers), host.done.eq(0), host.cycles.eq(0), running.eq(1),
                                 layer_next.eq(0), desc_next.eq(table[0]), first.eq(1)]
                    m.next = "SETUP"
            with m.State("SETUP"):       # `clear` is high here
                begin_layer()
            with m.State("RUN"):
                with m.If(nzd.settled & all_quiet):
                    m.d.sync += [out_en.eq(1), out_left.eq(desc.rows), out_cycles.eq(0),
                                 out_last.eq(at_most(desc.rows, rows_per_word))]
                    ask(Const(0, len(out_row)))
                    m.next = "OUTPUT"
            with m.State("OUTPUT"):
                # one request per cycle; a next layer starts once its last request is in O1 and the first
                # output word is written, so that its detector never reads a word before the pass has written it
                done_asking = ~out_en | out_last
                with m.If(out_cycles != OUTPUT_LATENCY + 1):
                    m.d.sync += out_cycles.eq(out_cycles + 1)
                with m.If(out_en):
                    m.d.sync += [out_left.eq(out_left - rows_per_word),
                                 out_last.eq(next_last)]
                    ask(out_row + c.outputs_per_cycle)
                    with m.If(out_last):
                        m.d.sync += out_en.eq(0)
                with m.If(clear):
                    begin_layer()
                with m.Elif(done_asking & ~more):
                    m.d.sync += drain.eq(OUTPUT_LATENCY)
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                # the last layer's last rows reach the activation register file
                m.d.sync += drain.eq(drain - 1)
                with m.If(drain == 1):
                    m.d.sync += [layer_cycles[layer].eq(layer_count + 1), host.done.eq(1), running.eq(0)]
                    m.next = "IDLE"

        # `clear`, a layer's first cycle, is decided the cycle before from registers, so that no FSM decode sits in
        # front of what it enables (the table rows' copies, the detector's start, the banks' read address): a run
        # starts (SETUP follows IDLE), or the output pass will, next cycle, have asked for its last row
        # (`done_asking`) with its first word written (`out_cycles` at OUTPUT_LATENCY + 1) and a layer to follow
        done_next = ~out_en | out_last | next_last
        m.d.sync += clear.eq((fsm.ongoing("IDLE") & start)
                             | (fsm.ongoing("OUTPUT") & ~clear & more & (out_cycles >= OUTPUT_LATENCY) & done_next))

        # -- activation register files (two banks; a word holds one value per PE) ---------------------------
        # The output word of a request is written OUTPUT_LATENCY cycles later; the request's row, the layer's
        # rows left from its first lane on and the destination bank travel beside it (the next layer may have
        # started).
        wr = data.StructLayout({"en": 1, "row": len(out_row), "left": len(out_left), "bank": 1})
        line = [Signal(wr, name=f"write{k}") for k in range(OUTPUT_LATENCY)]
        m.d.sync += [line[0].en.eq(out_en), line[0].row.eq(out_row), line[0].left.eq(out_left),
                     line[0].bank.eq(~src)]
        m.d.sync += [later.eq(earlier) for earlier, later in zip(line, line[1:])]
        w = line[-1]

        def output_word(first, data):
            """The output word of global rows base + first ..., lanes past the layer's rows zero (which lanes,
            compared a cycle ahead: only a multiplexer sits between a PE's output register and the bank)."""
            valid = Signal(n, name=f"lanes_valid{first}")
            word = Signal(n * c.act_bits, name=f"out_word{first}")
            m.d.sync += valid.eq(Cat(line[-2].left > first + k for k in range(n)))
            m.d.comb += word.eq(Cat(Mux(valid[k], d, 0) for k, d in enumerate(data)))
            return valid, word

        _, out_word = output_word(0, [pe.out_data for pe in pes])
        if c.outputs_per_cycle > 1:     # the next word, row + 1, through a second write port
            lanes_valid_b, out_word_b = output_word(n, [pe.out_data_b for pe in pes])
        # Both banks in one memory, the bank the top address bit (EIE's source/destination swap is an address
        # bit): the detector reads its layer's source bank alone, so no multiplexer stands between the banks and
        # it, and the 64 words of both take the block RAMs one bank would (8 at 16 PEs: the RAMs are as wide as
        # a word and far deeper than a bank).
        rows = addr_bits(c.act_depth)
        m.submodules.act = acts = sram(unsigned(n * c.act_bits), 2 << rows)
        wp = acts.write_port()
        host_we = strobe[Target.ACT0] | strobe[Target.ACT1]
        m.d.comb += [wp.en.eq(host_we | w.en),
                     wp.addr.eq(Mux(w.en, Cat(w.row[:rows], w.bank),
                                    Cat(wr_addr[:rows], strobe[Target.ACT1]))),
                     wp.data.eq(Mux(w.en, out_word, wr_data))]
        if c.outputs_per_cycle > 1:
            wp_b = acts.write_port()
            m.d.comb += [wp_b.en.eq(w.en & lanes_valid_b[0]), wp_b.addr.eq(Cat((w.row + 1)[:rows], w.bank)),
                         wp_b.data.eq(out_word_b)]
        # one read port serves the detector during a run (the source bank; in a layer's first cycle, when the
        # detector reads its first word, the next layer's) and the host between runs: a second port would double
        # the block RAMs
        rd = acts.read_port()
        read_src = Mux(clear, layer_next[0], src)
        m.d.comb += rd.addr.eq(Mux(running, Cat(nzd.addr[:rows], read_src),
                                   Cat(host.raddr[:rows], host.rtarget == ReadTarget.ACT1)))
        # the word registered as it leaves the RAM (its output register)
        word_q = Signal(n * c.act_bits, name="act_word_q", reset_less=True)
        m.d.sync += word_q.eq(rd.data)
        m.d.comb += nzd.word.eq(word_q)

        # -- broadcast: the detector's broadcast register drives every PE ------------------------------------
        for pe in pes:
            m.d.comb += [pe.act_valid.eq(nzd.valid), pe.act_col.eq(nzd.col), pe.act_value.eq(nzd.value)]
            if c.acts_per_cycle > 1:
                m.d.comb += [pe.act_lane_b.eq(nzd.col_b), pe.act_value_b.eq(nzd.value_b)]

        # -- host reads: every source read at `raddr` into a register, then the one `rtarget` names -------------
        # (two register stages each: the banks' output register, then the register after the select; the PEs'
        # statistics, from across the die, are picked among each four PEs, then among the fours)
        read_cycles = [Signal(32), Signal(32)]
        rtarget = [Signal.like(host.rtarget), Signal.like(host.rtarget)]
        raddr_q = Signal.like(host.raddr)
        fours = [Signal(64, name=f"stats{g}_q") for g in range(-(-n // 4))]
        for g, q in enumerate(fours):
            group = Array(Cat(pe.entries, pe.macs) for pe in pes[4 * g:4 * g + 4])
            m.d.sync += q.eq(group[host.raddr[:2]])
        read_stats = Signal(64)
        m.d.sync += [read_cycles[0].eq(layer_cycles[host.raddr]), rtarget[0].eq(host.rtarget), raddr_q.eq(host.raddr),
                     read_cycles[1].eq(read_cycles[0]), rtarget[1].eq(rtarget[0]),
                     read_stats.eq(Array(fours)[raddr_q >> 2])]
        read_cycles, rtarget = read_cycles[1], rtarget[1]
        with m.Switch(rtarget):
            with m.Case(ReadTarget.ACT0, ReadTarget.ACT1):     # the bank was the read's address bit
                m.d.comb += host.rdata.eq(word_q)
            with m.Case(ReadTarget.LAYER_CYCLES):
                m.d.comb += host.rdata.eq(read_cycles)
            with m.Case(ReadTarget.PE_STATS):
                m.d.comb += host.rdata.eq(read_stats)
        return m
