"""The formal harnesses of `eie.cosim.formal`: per block of `eie.hw`, free inputs under the block's input
contract (``Assume``), its properties (``Assert``) and their reachability (``Cover``), and `PROOFS`, the list
`make formal` runs.

The harnesses reach into a block only through its ports, its submodules (the FIFOs) and, where a property is
about one stage, internal signals found by name (`_internal`): a renamed signal makes the proof an ERROR that
names it, never a silent pass.
"""

from functools import partial

from amaranth import Array, Cat, ClockDomain, Const, Module, Mux, Signal, Value, signed
from amaranth.asserts import AnyConst, AnySeq, Initial
from amaranth.hdl import Assert, Assume, Cover, Fragment

from eie.config import OUTPUT_LATENCY, REQUANT_LATENCY, ChipConfig
from eie.cosim.formal import _slug

__all__ = ["PROOFS", "requantizer", "requant_spec"]


def _module() -> Module:
    """A harness's module: one clock, no reset (registers start at their init values, as after reset)."""
    m = Module()
    m.domains.sync = domain = ClockDomain("sync", reset_less=True)
    m.formal_clk = domain.clk          # the one port (`eie.cosim.formal` drives it; undriven it would be 0)
    return m


def _delay(m, value, n, name):
    """`value` as it was `n` cycles ago (its init value before that)."""
    for i in range(n):
        q = Signal.like(value, name=f"{name}_d{i + 1}")
        m.d.sync += q.eq(value)
        value = q
    return value


# -- output pass: the Requantizer against a re-statement of `eie.sw.reference` --------------------------------------

def requant_spec(m, acc, partner, bias, shift, relu, config: ChipConfig, max_shift: int | None = None):
    """`reference.requantize(wrap(acc + partner + (bias << shift), acc_bits), shift, relu)` in gates, with Python's
    unbounded integers as a width that cannot overflow for shifts up to `max_shift`: the definition the
    Requantizer must equal."""
    c = config
    wide = c.acc_bits + 2 + max(0, (max_shift if max_shift is not None else (1 << c.shift_bits)) - c.acc_bits)
    total = Signal(signed(c.acc_bits), name="spec_total")       # wrap(..., acc_bits): the assignment truncates
    m.d.comb += total.eq(acc + partner + (bias.as_signed() << shift))
    half = Signal(signed(wide), name="spec_half")
    m.d.comb += half.eq(Mux(shift == 0, 0, Const(1, signed(wide)) << (shift - 1)[:len(shift)]))
    shifted = Signal(signed(wide), name="spec_shifted")
    m.d.comb += shifted.eq((total + half) >> shift)
    clipped = Signal(signed(c.act_bits), name="spec_clipped")
    m.d.comb += clipped.eq(Mux(shifted > c.act_max, c.act_max, Mux(shifted < c.act_min, c.act_min, shifted)))
    y = Signal(signed(c.act_bits), name="spec_y")
    m.d.comb += y.eq(Mux(relu & (clipped < 0), 0, clipped))
    return y, shifted


def requantizer(config: ChipConfig | None = None, *, all_shifts: bool = False):
    """Every row (any 40-bit accumulator and partner share, any bias, any legal shift, ReLU or not, a row every
    cycle or with gaps) leaves the Requantizer `LATENCY` cycles later equal to `requant_spec`. Shifts are the
    legal ones (``shift < acc_bits - act_bits``, `eie.sw.quant`), or every one up to ``acc_bits``."""
    from eie.hw.requant import LATENCY, Requantizer
    c = config or ChipConfig()
    m = _module()
    m.submodules.dut = rq = Requantizer(c)
    valid, shift, relu = AnySeq(1), AnySeq(c.shift_bits), AnySeq(1)
    acc, partner, bias = AnySeq(signed(c.acc_bits)), AnySeq(signed(c.acc_bits)), AnySeq(signed(c.act_bits))
    limit = c.acc_bits + 1 if all_shifts else c.acc_bits - c.act_bits
    m.d.comb += Assume(shift < limit)
    half = Signal(c.acc_bits, name="half")      # the port's contract: half of 1 << shift, 0 for shift 0
    m.d.comb += half.eq(Mux(shift == 0, 0, Const(1, c.acc_bits + 1) << (shift - 1)[:len(shift)]))
    m.d.comb += [rq.valid.eq(valid), rq.acc.eq(acc), rq.partner.eq(partner), rq.bias.eq(bias),
                 rq.shift.eq(shift), rq.rounding.eq(half), rq.relu.eq(relu)]
    y, shifted = requant_spec(m, acc, partner, bias, shift, relu, c, limit - 1)
    valid_out, y_out = _delay(m, valid, LATENCY, "valid"), _delay(m, y, LATENCY, "y")
    m.d.comb += Assert(~valid_out | (rq.y == y_out))
    relu_out, shifted_out = _delay(m, relu, LATENCY, "relu"), _delay(m, shifted, LATENCY, "shifted")
    m.d.comb += [Cover(valid_out & (shifted_out > c.act_max) & (rq.y == c.act_max)),
                 Cover(valid_out & ~relu_out & (shifted_out < c.act_min) & (rq.y == c.act_min)),
                 Cover(valid_out & relu_out & (shifted_out < 0) & (rq.y == 0)),
                 Cover(valid_out & (rq.y == 1) & (_delay(m, acc, LATENCY, "acc") == 1)
                       & (_delay(m, shift, LATENCY, "shift") == 1))]      # 0.5 rounds up to 1
    return m



# -- non-zero detector ----------------------------------------------------------------------------------------------

# A chip small enough to prove things about in seconds, with every structure of the large one: 2 PEs (two lanes
# per source word), 4-word banks (8 columns), 4-bit values, 2-deep queues (5 places with the slack).
TINY = dict(pes=2, act_bits=4, weight_bits=4, acc_bits=8, act_depth=4, queue_depth=2, jobs_depth=2, index_bits=2,
            weight_index_bits=2, entries_per_word=2, matrix_words=2, cols_per_ptr_word=2, count_bits=2, ptr_words=1,
            max_layers=1)


def tiny(**changes) -> ChipConfig:
    """The formal proofs' chip (`TINY`), with `changes`."""
    return ChipConfig(**{**TINY, **changes})


# The detector that pairs activations (acts_per_cycle=2): 4 lanes a source word over 2-column pointer words, so that a
# word's non-zeros may share a pointer word or not; 2-bit values, 2 words (8 columns).
DUAL_DETECTOR = tiny(pes=4, act_depth=2, act_bits=2, acts_per_cycle=2)


def detector(config: ChipConfig | None = None, *, check: str = "order"):
    """The detector over a source bank of arbitrary contents (``AnyConst``), read as the chip reads it (a RAM read
    and its output register), layers started whenever the contract allows (``start`` while settled, ``cols``
    stable from the cycle before it), and a consumer queue popped at will whose fill the detector sees two cycles late, as
    through the PEs' ``act_room`` and the chip's AND of them.

    ``check="order"``: every broadcast is a non-zero activation of the layer, with its value, the lowest column
    not yet sent (so each is sent once, in column order); once settled, none is left. ``check="room"``: the
    queue never holds more than ``queue_depth + QUEUE_SLACK``. Covers: a layer completes after two broadcasts in
    a row, the queue is full, the last column is sent."""
    from eie.config import QUEUE_SLACK
    from eie.hw.scanner import NonZeroDetector
    if check not in ("order", "complete", "room"):
        raise ValueError(f"detector check must be order, complete or room, not {check!r}")
    c = config or tiny(act_bits=2)      # values -2..1: as many zero/non-zero patterns, a smaller problem
    n, cols_max = c.pes, c.act_depth * c.pes
    m = _module()
    m.submodules.nzd = nzd = NonZeroDetector(c)
    bank = Array(AnyConst(n * c.act_bits) for _ in range(c.act_depth))
    r1, r2 = Signal(n * c.act_bits), Signal(n * c.act_bits)
    m.d.sync += [r1.eq(bank[nzd.addr]), r2.eq(r1)]
    m.d.comb += nzd.word.eq(r2)
    # the layer: start while settled, never two cycles running; cols at most the banks' and held in the layer
    start, cols = AnySeq(1), AnySeq(len(nzd.cols))
    layer_cols = Signal.like(nzd.cols)
    started = Signal()
    # `cols` stable from the cycle before `start` (the detector registers it ahead), free otherwise (the chip
    # shows the next layer's while one runs)
    m.d.comb += [nzd.start.eq(start), nzd.cols.eq(cols),
                 Assume(~start | (nzd.settled & (cols <= cols_max) & ~_delay(m, start, 1, "start") & ~Initial()
                                  & (cols == _delay(m, cols, 1, "cols"))))]
    with m.If(start):
        m.d.sync += [layer_cols.eq(cols), started.eq(1)]
    # the consumer: a queue of the PEs' depth plus slack, popped at will; its room registered twice
    depth = c.queue_depth + QUEUE_SLACK
    level = Signal(range(depth + 8))
    pop = AnySeq(1)
    m.d.comb += Assume(~pop | (level != 0))
    m.d.sync += level.eq(level + nzd.valid - pop)
    room_pe, room_chip = Signal(len(nzd.room)), Signal(len(nzd.room))
    m.d.sync += [room_pe.eq(Cat(level <= depth - 1 - j for j in range(len(nzd.room)))), room_chip.eq(room_pe)]
    m.d.comb += nzd.room.eq(room_chip)

    values = [bank[k // n].word_select(k % n, c.act_bits).as_signed() for k in range(cols_max)]
    nz = Cat((values[k] != 0) & (k < layer_cols) for k in range(cols_max))
    expect = Signal(range(cols_max + 1))     # the lowest column not sent yet
    dual = c.acts_per_cycle > 1
    paired = Signal(name="paired")            # a second activation rides along (acts_per_cycle=2)
    m.d.comb += paired.eq(nzd.value_b != 0 if dual else 0)
    with m.If(start):
        m.d.sync += expect.eq(0)
    with m.Elif(nzd.valid):
        m.d.sync += expect.eq(Mux(paired, nzd.col_b, nzd.col) + 1 if dual else nzd.col + 1)

    def next_nonzero(col, value, after, name):
        """`col` is the lowest non-zero column of the layer at or past `after`, sent with its value."""
        ok = Signal(name=f"{name}_ok")
        m.d.comb += ok.eq((col >= after) & (col < layer_cols) & nz.bit_select(col, 1) & (Array(values)[col] == value)
                          & ~Cat(nz[k] & (k >= after) & (k < col) for k in range(cols_max)).any())
        return ok
    col_ok = Signal()
    first_ok = next_nonzero(nzd.col, nzd.value, expect, "first")
    if dual:     # the second: the next non-zero after the first, of the same source word and pointer word
        K = (c.cols_per_ptr_word - 1).bit_length()
        second_ok = next_nonzero(nzd.col_b, nzd.value_b, nzd.col + 1, "second")
        same_word = (nzd.col_b // n) == (nzd.col // n)
        m.d.comb += col_ok.eq(first_ok & (~paired | (second_ok & same_word & ((nzd.col_b >> K) == (nzd.col >> K)))))
    else:
        m.d.comb += col_ok.eq(first_ok)
    left = Cat(nz[k] & (k >= expect) for k in range(cols_max)).any()
    if check == "order":
        m.d.comb += Assert(~nzd.valid | (started & col_ok))
    elif check == "complete":
        m.d.comb += Assert(~(started & nzd.settled & ~start) | ~left)
    else:
        m.d.comb += Assert(level <= depth)
    back_to_back = _delay(m, nzd.valid & _delay(m, nzd.valid, 1, "v"), 4, "vv")
    m.d.comb += [Cover(started & nzd.settled & (expect >= 2) & back_to_back),
                 Cover(level == depth),
                 Cover(nzd.valid & (nzd.col == cols_max - 1))]
    if dual:
        m.d.comb += Cover(nzd.valid & paired)
    return m


# -- processing element: its stage components ---------------------------------------------------------------------

def _internal(fragment, *names):
    """Signals of `fragment`'s own statements by name; a missing one is an error that names it (the harness no
    longer fits the RTL), never a property quietly left out."""
    found = {}
    for stmts in fragment.statements.values():
        for stmt in stmts:
            try:
                signals = stmt._lhs_signals() | stmt._rhs_signals()
            except NotImplementedError:      # ``ClockSignal().eq(...)``: no signal of interest
                continue
            for sig in signals:
                found.setdefault(sig.name, sig)
    missing = [n for n in names if n not in found]
    if missing:
        raise LookupError(f"signal(s) {', '.join(missing)} not found in the block: the harness needs updating")
    return [found[n] for n in names]



def _open(component):
    """`component` elaborated here, so that its submodules (the FIFOs) can be reached; the Module to add."""
    component._MustUse__silence = True      # its Module is what the harness adds
    return component.elaborate(None)


def _sync_read(m, port, words, name):
    """A block RAM's read port (data the cycle after the address, while enabled) over constant `words`."""
    q = Signal(len(port.data), name=f"{name}_q")
    with m.If(port.en):
        m.d.sync += q.eq(Array(words)[port.addr])
    m.d.comb += port.data.eq(q)


def _stable_stream(m, stream_in, name):
    """A stream's rule for its sender: once valid, valid and payload hold until taken."""
    held = Signal(name=f"{name}_held")
    payload_q = Signal.like(stream_in.payload.as_value(), name=f"{name}_payload_q")
    m.d.sync += [held.eq(stream_in.valid & ~stream_in.ready), payload_q.eq(stream_in.payload.as_value())]
    m.d.comb += Assume(~held | (stream_in.valid & (stream_in.payload.as_value() == payload_q)))


def _ghost_fifo(m, layout, slots, name):
    """A harness FIFO of `layout` records: (array, head, tail, count) registers."""
    arr = Array(Signal(layout, name=f"{name}{i}") for i in range(slots))
    return arr, Signal(range(slots), name=f"{name}_head"), Signal(range(slots), name=f"{name}_tail"), \
        Signal(range(slots + 1), name=f"{name}_count")


def _at_most(m, event, n, name):
    """Assume `event` happens at most `n` times in a trace (a bound that keeps a solver's problem small)."""
    seen = Signal(range(n + 1), name=f"{name}_seen")
    m.d.sync += seen.eq(seen + event)
    m.d.comb += Assume(~event | (seen < n))


def span_of(m, config: ChipConfig, words, col):
    """(start, count) of column `col` in a PE's pointer memory `words`, as the image defines them: the word's
    base plus the counts of the columns before it in the word."""
    c = config
    K = c.cols_per_ptr_word
    lane = col[:(K - 1).bit_length()] if K > 1 else Const(0, 1)
    word = Array(words)[col >> (K - 1).bit_length()]
    base = word[:c.entry_addr_bits]
    counts = [word[c.entry_addr_bits + i * c.count_bits:][:c.count_bits] for i in range(K)]
    start = Signal(c.entry_addr_bits, name="ghost_start")
    m.d.comb += start.eq(base + sum(Mux(lane > i, counts[i], 0) for i in range(K - 1)))
    return start, Array(counts)[lane]


def span_unit(config: ChipConfig | None = None, *, check: str = "fifos", max_broadcasts: int | None = None):
    """The PE's front end (`eie.hw.spans.SpanUnit`: activation queue with its bypass, P0..P4, jobs FIFO) over a
    pointer memory of any contents, fed broadcasts as the detector sends them (at most what ``room``,
    registered once more as by the chip, allows with the last three cycles' broadcasts in flight), its jobs
    taken whenever the reader likes.

    ``check="fifos"``: neither FIFO is written full, a take is of the queue's head or of the arriving broadcast
    (the bypass), and neither FIFO holds more than it is sized for (``queue_depth + QUEUE_SLACK``,
    ``jobs_depth + JOBS_SLACK``). ``check="spans"``: the jobs leaving are, in broadcast order, exactly the
    non-empty spans of the broadcast columns (start = base + the counts before the column in its word) with
    the activation's value; none is left once the unit is idle. ``check="order"`` (the queue and its bypass):
    P0 takes the broadcasts in the order they arrived, each once (its pointer word, lane and value), never
    one that has not arrived, whether from the queue or past it. Covers: both FIFOs hold three, a span of
    more than one entry leaves. `max_broadcasts` bounds the broadcasts of a trace ("spans" unbounded at depth
    20 took the solver over two minutes)."""
    from eie.config import JOBS_SLACK, QUEUE_SLACK
    from eie.hw.spans import SpanUnit, span_layout
    if check not in ("fifos", "spans", "order"):
        raise ValueError(f"span_unit check must be fifos, spans or order, not {check!r}")
    c = config or tiny(ptr_words=2)
    m = _module()
    su = SpanUnit(c)
    sm = _open(su)
    queue, jobs = sm.submodules.queue, sm.submodules.jobs
    m.submodules.spans = frag = Fragment.get(sm, None)
    words = [AnyConst(c.ptr_word_bits) for _ in range(c.ptr_words)]
    _sync_read(m, su.ptr_rd, words, "ptr")
    # broadcasts: the detector's flow control, restated
    emit, col, value = AnySeq(1), AnySeq(c.dim_bits), AnySeq(signed(c.act_bits))
    act = su.act
    room = Signal(len(su.room))
    m.d.sync += room.eq(su.room)
    in_flight = Signal(range(4))
    m.d.comb += in_flight.eq(act.valid + _delay(m, act.valid, 1, "act") + _delay(m, act.valid, 2, "act"))
    m.d.comb += [Assume(~emit | room.bit_select(in_flight, 1)), Assume(col < c.cols_per_ptr_word * c.ptr_words)]
    m.d.sync += [act.valid.eq(emit), act.payload.col.eq(col), act.payload.value.eq(value)]
    m.d.comb += [su.ptr_base.eq(0), su.jobs.ready.eq(AnySeq(1))]
    if max_broadcasts is not None:
        _at_most(m, emit, max_broadcasts, "broadcasts")
    qmax, jmax = c.queue_depth + QUEUE_SLACK, c.jobs_depth + JOBS_SLACK
    if check == "fifos":
        m.d.comb += [Assert(queue.level <= qmax), Assert(~queue.w_en | queue.w_rdy),
                     Assert(~queue.r_en | queue.r_rdy | act.valid),
                     Assert(jobs.level <= jmax), Assert(~jobs.w_en | jobs.w_rdy)]
    # the expected spans, in order: pushed at each broadcast whose column has entries here
    layout = span_layout(c)
    ghost, head, tail, count_in = _ghost_fifo(m, layout, 16, "ghost_span")
    start, count = span_of(m, c, words, act.payload.col)
    push = act.valid & (count != 0)
    taken = su.jobs.valid & su.jobs.ready
    with m.If(push):
        m.d.sync += [ghost[tail].start.eq(start), ghost[tail].count.eq(count), ghost[tail].value.eq(act.payload.value),
                     tail.eq(tail + 1)]
    with m.If(taken):
        m.d.sync += head.eq(head + 1)
    m.d.sync += count_in.eq(count_in + push - taken)
    out = su.jobs.payload
    if check == "order":
        # the broadcasts not yet taken by P0, oldest first; P0's take is of the oldest
        from amaranth.lib import data
        from eie.hw.arith import addr_bits
        # P1 holds what P0 took the cycle before: the pointer word it read, the lane and value beside it
        took, p1_bits = _internal(frag, "p1_valid", "p1")
        K = (c.cols_per_ptr_word - 1).bit_length()
        p1 = data.StructLayout({"lane": addr_bits(c.cols_per_ptr_word), "before": max(c.cols_per_ptr_word - 1, 1),
                                "value": signed(c.act_bits)})(p1_bits)
        ptr_read = _delay(m, su.ptr_rd.addr, 1, "ptr_read")
        arrived, a_head, a_tail, a_count = _ghost_fifo(m, act.payload.shape(), 16, "ghost_act")
        with m.If(act.valid):
            m.d.sync += [arrived[a_tail].eq(act.payload), a_tail.eq(a_tail + 1)]
        with m.If(took):
            m.d.sync += a_head.eq(a_head + 1)
        m.d.sync += a_count.eq(a_count + act.valid - took)
        oldest = arrived[a_head]
        m.d.comb += Assert(~took | ((a_count != 0) & (ptr_read == (oldest.col >> K))
                                    & (p1.lane == oldest.col[:max(K, 1)]) & (p1.value == oldest.value)))
    if check == "spans":
        expect = ghost[head]
        m.d.comb += [Assert(~taken | ((count_in != 0) & (out.start == expect.start) & (out.count == expect.count)
                                      & (out.value == expect.value))),
                     Assert(su.busy | act.valid | (count_in == 0))]
    m.d.comb += [Cover(queue.level >= 3), Cover(jobs.level >= 3), Cover(taken & (out.count > 1))]
    return m


def entry_reader(config: ChipConfig | None = None, *, max_jobs: int | None = None):
    """The PE's sparse-matrix reader and index decoder (`eie.hw.entries.EntryReader`: S, D0..D2) over a matrix
    memory and codebook of any contents, fed any non-empty jobs (held until taken, as a stream's sender must).

    The entries leaving are, in order, exactly the real entries of the jobs' spans as the image defines them:
    an entry's row is the previous row of its span plus its zeros plus one (the first: its zeros), its weight
    the codebook's value of its index, its activation the job's; an entry of index 0 is padding and never
    leaves (so never reaches an accumulator); none is left once the reader is idle, and none leaves later than
    two cycles after ``busy`` (which the PE reports as ``quiet``) was last high. Covers: a padding entry
    between two real ones of a span, two jobs' entries back to back (their activations differ). `max_jobs`
    bounds the jobs of a trace
    (unbounded, depth 20 took the solver over two minutes)."""
    from eie.hw.entries import EntryReader, entry_layout
    c = config or tiny()
    m = _module()
    er = EntryReader(c)
    m.submodules.reader = _open(er)
    matrix = [AnyConst(c.matrix_word_bits) for _ in range(c.matrix_words)]
    codebook = [AnyConst(signed(c.weight_bits)) for _ in range(c.max_layers * c.codebook_size)]
    _sync_read(m, er.mat_rd, matrix, "mat")
    m.d.comb += [er.codebook.data.eq(Array(codebook)[er.codebook.addr]), er.layer.eq(0)]
    jobs = er.jobs
    m.d.comb += [jobs.valid.eq(AnySeq(1)), jobs.payload.eq(AnySeq(len(jobs.payload.as_value())))]
    # a job as the span unit makes them: never empty, within the matrix memory (the image's spans are)
    capacity = c.matrix_words * c.entries_per_word
    job_in = jobs.payload
    dual = c.acts_per_cycle > 1     # a job of two spans, the second perhaps empty (count 0)
    span_b_ok = (job_in.count_b == 0) | (job_in.start_b + job_in.count_b <= capacity) if dual else 1
    m.d.comb += Assume(~jobs.valid | ((job_in.count != 0) & (job_in.start + job_in.count <= capacity) & span_b_ok))
    _stable_stream(m, jobs, "jobs")
    if max_jobs is not None:
        _at_most(m, jobs.valid & jobs.ready, max_jobs, "jobs")
    # the expected entries of a job taken, pushed in order (padding skipped)
    E, eb = c.entries_per_word, (c.entries_per_word - 1).bit_length()
    rb = max(1, (c.act_depth - 1).bit_length())
    layout = entry_layout(c)
    # S..D2 and out hold at most 5; a job taken adds the entries of its span(s)
    ghost, head, tail, count_in = _ghost_fifo(m, layout, 16 if dual else 8, "ghost_entry")
    taken = jobs.valid & jobs.ready
    job = jobs.payload
    pushed = Const(0, 4)
    spans = [(job.start, job.count, job.value)] + ([(job.start_b, job.count_b, job.value_b)] if dual else [])
    for i, (start, count, value) in enumerate(spans):
        prev = None
        for k in range(c.max_count):
            addr = Signal(c.entry_addr_bits, name=f"ghost_addr{i}_{k}")
            m.d.comb += addr.eq(start + k)
            word = Array(matrix)[addr >> eb] if c.matrix_words > 1 else matrix[0]
            entry = word.word_select(addr[:eb], c.entry_bits) if E > 1 else word
            v, z = entry[:c.weight_index_bits], entry[c.weight_index_bits:c.entry_bits]
            row = Signal(rb, name=f"ghost_row{i}_{k}")
            m.d.comb += row.eq(z if prev is None else prev + z + 1)
            prev = row
            real = Signal(name=f"ghost_real{i}_{k}")
            m.d.comb += real.eq((k < count) & (v != 0))
            slot = (tail + pushed)[:len(tail)]
            with m.If(taken & real):
                m.d.sync += [ghost[slot].row.eq(row), ghost[slot].weight.eq(Array(codebook)[v]),
                             ghost[slot].value.eq(value)]
            pushed = (pushed + real)[:4]
    n_pushed = Signal(4, name="ghost_pushed")
    m.d.comb += n_pushed.eq(Mux(taken, pushed, 0))
    out = er.entries
    m.d.sync += [tail.eq(tail + n_pushed), count_in.eq(count_in + n_pushed - out.valid)]
    with m.If(out.valid):
        m.d.sync += head.eq(head + 1)
    expect = ghost[head]
    idle = ~(er.busy | taken | out.valid)
    drained = idle & _delay(m, idle, 1, "idle") & _delay(m, idle, 2, "idle") & _delay(m, idle, 3, "idle")
    m.d.comb += [Assert(~out.valid | ((count_in != 0) & (out.payload.row == expect.row)
                                      & (out.payload.weight == expect.weight) & (out.payload.value == expect.value))),
                 Assert(~drained | (count_in == 0)),
                 # ``busy`` is what the PE's ``quiet`` reports: an entry leaves at most two cycles after it
                 # (the chip's output pass reads the accumulators two cycles after quiet, and M, A take two)
                 Assert(~out.valid | _delay(m, er.busy, 2, "busy"))]
    v_of = [Array(matrix)[(job.start + k)[:c.entry_addr_bits] >> eb]
            .word_select((job.start + k)[:eb], c.entry_bits)[:c.weight_index_bits] for k in range(3)]
    m.d.comb += [Cover(taken & (job.count == 3) & (v_of[0] != 0) & (v_of[1] == 0) & (v_of[2] != 0)),
                 Cover(out.valid & _delay(m, out.valid, 1, "b2b")
                       & (out.payload.value != _delay(m, out.payload.value, 1, "b2b_value")))]
    return m


def accumulator(config: ChipConfig | None = None, *, check: str = "write", max_entries: int | None = None):
    """The PE's accumulate stages (`eie.hw.accumulate.Accumulator`: M, A, W) over accumulators of any stale
    contents, fed any entry (row, weight, activation) in any cycle, ``clear`` (a new layer) between entries.

    ``check="write"``: the writes are, in entry order, to each entry's row, of the sum of the products of the
    entries of that row since ``clear`` up to and including it: read-after-write through the bypass, whatever
    the pipeline depth. ``check="sums"``: two cycles after the last entry (when the chip's output pass may read
    them), every accumulator, read as the output pass does (untouched rows as 0), is that sum. Covers: the
    bypass case (two entries of one row back to back), a row touched, cleared and touched again.
    `max_entries` bounds the entries of a trace ("sums" unbounded at depth 20 took the solver minutes)."""
    from eie.hw.accumulate import Accumulator
    if check not in ("write", "sums"):
        raise ValueError(f"accumulator check must be write or sums, not {check!r}")
    c = config or tiny(act_bits=2, weight_bits=2, acc_bits=4)   # routing, not width: 4-bit sums keep it fast
    m = _module()
    ac = Accumulator(c)
    m.submodules.accum = _open(ac)
    A = signed(c.acc_bits)
    rb = max(1, (c.act_depth - 1).bit_length())
    # the accumulator memory: stale (any) contents until written
    stale = [AnyConst(A) for _ in range(c.act_depth)]
    mem = [Signal(A, name=f"acc{r}") for r in range(c.act_depth)]
    fresh = Signal(c.act_depth)
    value_of = [Mux(fresh[r], mem[r], stale[r]) for r in range(c.act_depth)]
    m.d.comb += [ac.acc_rd.even.eq(Array(value_of)[ac.acc_rd.addr & ~1]),     # the pair of the entry's row
                 ac.acc_rd.odd.eq(Array(value_of)[ac.acc_rd.addr | 1])]
    wr = ac.acc_wr
    for r in range(c.act_depth):
        with m.If(wr.en & (wr.addr == r)):
            m.d.sync += [mem[r].eq(wr.data), fresh[r].eq(1)]
    e = ac.entries
    m.d.comb += [e.valid.eq(AnySeq(1)), e.payload.eq(AnySeq(len(e.payload.as_value())))]
    if max_entries is not None:
        _at_most(m, e.valid, max_entries, "entries")
    recent = e.valid | _delay(m, e.valid, 1, "entry") | _delay(m, e.valid, 2, "entry")
    clear = AnySeq(1)
    m.d.comb += [ac.clear.eq(clear), Assume(~clear | ~recent)]
    # the sums since clear, per row, as each entry arrives
    sums = Array(Signal(A, name=f"ghost_sum{r}") for r in range(c.act_depth))
    after = Signal(A, name="ghost_after")
    m.d.comb += after.eq(sums[e.payload.row] + e.payload.weight * e.payload.value)
    with m.If(clear):
        m.d.sync += [s_.eq(0) for s_ in sums]
    with m.Elif(e.valid):
        m.d.sync += sums[e.payload.row].eq(after)
    if check == "write":
        layout = {"row": rb, "sum": A}
        from amaranth.lib import data
        ghost, head, tail, count_in = _ghost_fifo(m, data.StructLayout(layout), 8, "ghost_write")
        with m.If(e.valid):
            m.d.sync += [ghost[tail].row.eq(e.payload.row), ghost[tail].sum.eq(after), tail.eq(tail + 1)]
        with m.If(wr.en):
            m.d.sync += head.eq(head + 1)
        m.d.sync += count_in.eq(count_in + e.valid - wr.en)
        expect = ghost[head]
        m.d.comb += [Assert(~wr.en | ((count_in != 0) & (wr.addr == expect.row) & (wr.data == expect.sum))),
                     Assert(recent | (count_in == 0))]
    else:
        r = AnyConst(rb)
        m.d.comb += Assert(recent | (Mux(ac.touched.bit_select(r, 1), Array(value_of)[r], 0) == sums[r]))
    row_q = _delay(m, e.payload.row, 1, "row")
    m.d.comb += [Cover(e.valid & _delay(m, e.valid, 1, "v") & (e.payload.row == row_q)),
                 Cover(e.valid & (e.payload.row == 1) & _delay(m, ac.touched[1] & clear, 2, "tc"))]
    return m


def output_pass(config: ChipConfig | None = None):
    """A PE's output pass (`eie.hw.output.OutputPass`: O1, O2 and the Requantizer) over accumulators and biases
    of any contents, rows asked for in any cycle with any layer parameters (the rounding constant by its
    contract), any touched bits, any partner share.

    Each row's activation, `OUTPUT_LATENCY` cycles after it was asked for, is `requant_spec` of its accumulator
    (0 if untouched), the partner's share (arriving the cycle after the ask, registered by the partner), and
    its bias (layer ``layer``, row ``slot``) with the shift and ReLU of the cycle it was asked for. The share
    handed to the partner, the cycle after the ask, is accumulator ``slot | 1`` in a paired layer where that
    row was touched, else 0. Covers: a paired row with a partner share, a row whose parameters changed behind
    it."""
    from eie.config import OUTPUT_LATENCY
    from eie.hw.output import OutputPass
    c = config or tiny(max_layers=2)
    m = _module()
    op = OutputPass(c)
    m.submodules.out = _open(op)
    A = signed(c.acc_bits)
    lane = op.a
    accs = [AnyConst(A) for _ in range(c.act_depth)]
    biases = [AnyConst(signed(c.act_bits)) for _ in range(c.max_layers * c.act_depth)]
    _sync_read(m, lane.bias_rd, biases, "bias")
    ask, slot, layer = AnySeq(1), AnySeq(len(lane.slot)), AnySeq(len(op.layer))
    shift, relu, paired, touched = AnySeq(c.shift_bits), AnySeq(1), AnySeq(1), AnySeq(c.act_depth)
    acc_in, partner = AnySeq(A), AnySeq(A)
    # the PE's read of the slot's accumulator pair: the slot's own word is any (acc_in), its pair-mate from accs
    other = Array(accs)[slot ^ 1]
    m.d.comb += [lane.even.eq(Mux(slot[0], other, acc_in)), lane.odd.eq(Mux(slot[0], acc_in, other))]
    m.d.comb += [Assume(shift < c.acc_bits - c.act_bits), Assume(layer < c.max_layers)]
    half = Signal(c.acc_bits, name="half")
    m.d.comb += half.eq(Mux(shift == 0, 0, Const(1, c.acc_bits + 1) << (shift - 1)[:len(shift)]))
    m.d.comb += [op.out_en.eq(ask), lane.slot.eq(slot), op.layer.eq(layer), op.shift.eq(shift), op.relu.eq(relu),
                 op.rounding.eq(half), op.paired.eq(paired), op.touched.eq(touched),
                 lane.partner.eq(partner)]
    own = Mux(touched.bit_select(slot, 1), acc_in, 0)
    bias = Array(biases)[layer * c.act_depth + slot]
    # the partner's share comes a cycle after the ask: the spec takes it from there
    L = OUTPUT_LATENCY
    own_d, bias_d = _delay(m, own, 1, "own"), _delay(m, bias, 1, "bias")
    shift_d, relu_d = _delay(m, shift, 1, "shift"), _delay(m, relu, 1, "relu")
    y, _ = requant_spec(m, own_d, partner, bias_d, shift_d, relu_d, c, c.acc_bits - c.act_bits - 1)
    asked = _delay(m, ask, L, "ask")
    m.d.comb += Assert(~asked | (lane.y == _delay(m, y, L - 1, "y")))
    share = Mux(paired & touched.bit_select(slot | 1, 1), Mux(slot[0], acc_in, Array(accs)[slot | 1]), 0)
    m.d.comb += Assert(~_delay(m, ask, 1, "ask") | (lane.share == _delay(m, share, 1, "share")))
    m.d.comb += [Cover(asked & (_delay(m, paired & (share != 0), L, "ps") != 0) & (lane.y != 0)),
                 Cover(asked & _delay(m, ask & (shift != _delay(m, shift, 1, "sh")), L - 1, "chg"))]
    return m


# -- host port and control ------------------------------------------------------------------------------------------

def chip_control(config: ChipConfig | None = None, *, check: str = "loads"):
    """The whole tiny chip behind its host port, every host input free (AnySeq) but ``start``, which the host
    pulses only while no chain runs (before the first or after ``done``), with 1..max_layers layers.

    ``check="loads"``: a PE's matrix, pointer, bias or codebook memory is written exactly when a host write to
    that memory of that PE (a codebook write: of any PE, it goes to every PE) was made `LOAD_LATENCY` cycles
    before (the port's two register stages and the PE's load register), at the host's address with its data.
    ``check="done"``:
    ``done`` rises once per chain (one rise per start) and only when no work is in flight: every PE quiet, the
    detector settled and no output word left to write. Covers: a chain completes; a PE's matrix is loaded."""
    from eie.config import OUTPUT_LATENCY
    from eie.hw.chip import Target
    if check not in ("loads", "done"):
        raise ValueError(f"chip_control check must be loads or done, not {check!r}")
    c = config or tiny(pes=2 if check == "loads" else 1)
    m = Module()
    chip, cm, frag = _chip(m, c)
    pes = [cm.submodules[f"pe{k}"] for k in range(c.pes)]
    nzd = cm.submodules.nzd
    host = chip.host
    for name in ("we", "target", "pe", "addr", "data", "rtarget", "raddr", "n_layers"):
        port = getattr(host, name)
        m.d.comb += port.eq(AnySeq(len(port)))
    start = AnySeq(1)
    m.d.comb += host.start.eq(start)
    # chains: started by the host, ended by a rise of done
    outstanding = Signal(2)
    done_q = Signal()
    m.d.sync += done_q.eq(host.done)
    rose = host.done & ~done_q
    m.d.sync += outstanding.eq(outstanding + start - rose)
    m.d.comb += Assume(~start | ((outstanding == 0) & (host.n_layers >= 1) & (host.n_layers <= c.max_layers)
                                 & ~_delay(m, start, 1, "start") & ~_delay(m, start, 2, "start")))
    chains = Signal(2)
    with m.If(rose & (chains != 3)):
        m.d.sync += chains.eq(chains + 1)
    if check == "loads":
        addr_d = _delay(m, host.addr, LOAD_LATENCY, "host_addr")
        data_d = _delay(m, host.data, LOAD_LATENCY, "host_data")
        for k, pe in enumerate(pes):
            for mem, target in ((pe.matrix, Target.MATRIX), (pe.pointers, Target.POINTER), (pe.bias, Target.BIAS),
                                (pe.codebook, Target.CODEBOOK)):
                # a codebook write goes to every PE, every other write to the PE addressed only
                addressed = host.we & (host.target == target) & ((host.pe == k) | (target == Target.CODEBOOK))
                wp = mem._write_ports[0]
                data = Value.cast(wp.data).as_unsigned()
                m.d.comb += [Assert(wp.en == _delay(m, addressed, LOAD_LATENCY, f"addressed{k}_{target.name.lower()}")),
                             Assert(~wp.en | ((wp.addr == addr_d[:len(wp.addr)]) & (data == data_d[:len(data)])))]
        m.d.comb += [Cover(pes[-1].matrix._write_ports[0].en),
                     Cover(pes[0].codebook._write_ports[0].en & pes[-1].codebook._write_ports[0].en)]
    else:
        writes = _internal(frag, *(f"write{k}" for k in range(OUTPUT_LATENCY)))
        pending = Cat(w[0] for w in writes).any()     # the en bit of each stage of the output word write line
        quiet = Cat(pe.quiet for pe in pes).all()
        m.d.comb += [Assert(~rose | ((outstanding == 1) & quiet & nzd.settled & ~pending)),
                     Assert(outstanding <= 1)]
    m.d.comb += Cover(rose)
    return m


# A host write reaches a PE memory's write port this many cycles on: the host port's two register stages and the
# PE's load register.
LOAD_LATENCY = 3

# A host read's data is on ``rdata`` this many cycles after its ``rtarget``/``raddr``: the host port's register, the
# pick among each four PEs, the pick among the fours, the port's output register.
READ_LATENCY = 4


def chip_flow(config: ChipConfig | None = None, *, check: str = "writes"):
    """The whole tiny chip behind its host port, every host input free, under the host's contract: ``start``
    only while no chain runs, with 1..max_layers layers whose rows of the table (written by the host: the
    harness keeps its own copy) have 1..max_dim rows and at most max_dim columns; no host write while a chain
    runs or in the three cycles before ``start``. The harness counts the layers begun (the detector's ``start``)
    and the rows
    the output pass asks for (``out_en``), and watches the activation banks' memory (one memory, the bank its
    top address bit).

    ``check="writes"`` (the activation write line and bank select): every output write is of a row asked for
    exactly `OUTPUT_LATENCY` cycles before, at that row of the bank its layer does not read (layer l writes bank
    (l + 1) % 2), of the PEs' ``out_data`` (lanes past the layer's rows zero), and every row asked for is
    written; a layer asks for its rows 0..ceil(rows/pes)-1 once each, in order; when ``done`` rises every
    layer has asked for all its rows and no output word is in flight. ``check="reads"`` (bank select and
    layer overlap): every word the detector reads is the word of its layer's source bank (layer l reads bank
    l % 2) at the address it read, and a layer after the first reads a word of the previous layer's output only
    after that layer's pass has written it. ``check="params"`` (4 PEs: partner pairing and the layer's
    parameters): PE k's partner input is PE (k + pes/2) % pes's share; every row asked for goes to every PE with
    its layer's slot (2r in a paired layer), shift, rounding constant (half of 1 << shift), ReLU and layer
    number; every broadcast reaches the PEs with its layer's pointer base and number. Covers: a chain of two
    layers completes with a non-zero output word written; the second layer reads a word the first wrote; a
    paired row's share crosses to its partner."""
    from eie.config import OUTPUT_LATENCY
    from eie.hw.arith import addr_bits
    from eie.hw.chip import Target, layer_layout
    if check not in ("writes", "reads", "params"):
        raise ValueError(f"chip_flow check must be writes, reads or params, not {check!r}")
    c = config or tiny(max_layers=2, pes=4 if check == "params" else 2)
    n, L = c.pes, OUTPUT_LATENCY
    m = Module()
    chip, cm, frag = _chip(m, c)
    pes = [cm.submodules[f"pe{k}"] for k in range(n)]
    nzd = cm.submodules.nzd
    host = chip.host
    for name in ("we", "target", "pe", "addr", "data", "rtarget", "raddr", "n_layers"):
        port = getattr(host, name)
        m.d.comb += port.eq(AnySeq(len(port)))
    start = AnySeq(1)
    m.d.comb += host.start.eq(start)
    # the host's copy of the layer table
    layout = layer_layout(c)
    table = Array(Signal(layout, name=f"ghost_layer{l}") for l in range(c.max_layers))
    with m.If(host.we & (host.target == Target.LAYER) & (host.addr < c.max_layers)):
        m.d.sync += table[host.addr[:max(1, (c.max_layers - 1).bit_length())]].eq(host.data[:layout.size])
    # chains: one at a time, of layers with rows
    running, done_q = Signal(name="ghost_running"), Signal(name="ghost_done_q")
    m.d.sync += done_q.eq(host.done)
    rose = host.done & ~done_q
    with m.If(start):
        m.d.sync += running.eq(1)
    with m.Elif(rose):
        m.d.sync += running.eq(0)
    n_layers = Signal.like(host.n_layers, name="ghost_n_layers")
    with m.If(start):
        m.d.sync += n_layers.eq(host.n_layers)
    wrote = Cat(_delay(m, host.we, d, "host_we") for d in range(1, 4)).any()
    m.d.comb += [Assume(~start | (~running & (host.n_layers >= 1) & (host.n_layers <= c.max_layers) & ~wrote
                                  & ~_delay(m, start, 1, "start") & ~_delay(m, start, 2, "start")
                                  & Cat((l >= host.n_layers) | ((table[l].rows >= 1) & (table[l].rows <= c.max_dim)
                                                                & (table[l].cols <= c.max_dim))
                                        for l in range(c.max_layers)).all())),
                 Assume(~host.we | (~running & ~start)),
                 # n_layers held with start (the chip takes it a cycle after start, with its start register)
                 Assume(~(_delay(m, start, 1, "s1") | _delay(m, start, 2, "s2")) | (host.n_layers == n_layers))]
    # layers begun in this chain, and rows asked for in the current pass
    clear = nzd.start            # a layer's first cycle (the PEs' clear may be registered behind it)
    begun = Signal(range(c.max_layers + 2), name="ghost_begun")    # layers begun before this cycle
    with m.If(start):
        m.d.sync += begun.eq(0)
    with m.Elif(clear):
        m.d.sync += begun.eq(begun + 1)
    ask = pes[0].out_en
    ask_layer = Signal.like(begun, name="ghost_ask_layer")         # a row asked for is the layer's before a clear
    m.d.comb += ask_layer.eq(begun - 1)
    read_layer = Signal.like(begun, name="ghost_read_layer")
    m.d.comb += read_layer.eq(begun - 1 + clear)
    rb = c.dim_bits + 1
    asked, fresh = Signal(rb, name="ghost_asked"), Signal(name="ghost_fresh")
    row = Signal(rb, name="ghost_row")
    m.d.comb += row.eq(Mux(fresh, 0, asked))
    with m.If(ask):
        m.d.sync += [asked.eq(row + 1), fresh.eq(0)]
    with m.If(clear):
        m.d.sync += fresh.eq(1)

    def words_of(l):
        return (table[l[:max(1, (c.max_layers - 1).bit_length())]].rows + n - 1) >> (n - 1).bit_length() \
            if n > 1 else table[l[:max(1, (c.max_layers - 1).bit_length())]].rows

    def param(l):
        return table[l[:max(1, (c.max_layers - 1).bit_length())]]

    acts = cm.submodules.act
    wp = acts._write_ports[0]
    rows_bits = addr_bits(c.act_depth)
    w_bank, w_row = wp.addr[rows_bits], wp.addr[:rows_bits]
    out_write = wp.en & running & ~wrote
    if check == "writes":
        req = _delay(m, ask, L, "req")
        req_row = _delay(m, row, L, "req_row")
        req_layer = _delay(m, ask_layer, L, "req_layer")
        req_rows = _delay(m, param(ask_layer).rows, L, "req_rows")
        lanes = Cat(Mux(req_row * n + k < req_rows, pe.out_data, 0) for k, pe in enumerate(pes))
        m.d.comb += [Assert(~out_write | (req & (w_row == req_row) & (w_bank == ~req_layer[0])
                                          & (wp.data == lanes))),
                     Assert(~req | (wp.en & (w_row == req_row) & (w_bank == ~req_layer[0]))),
                     Assert(~ask | (running & (ask_layer < n_layers) & (row < words_of(ask_layer)))),
                     # a layer's first row asked for: the layer before asked for all of its
                     Assert(~(ask & fresh & (ask_layer >= 1)) | (asked == words_of(ask_layer - 1))),
                     Assert(~rose | ((begun == n_layers) & (asked == words_of(n_layers - 1))
                                     & ~Cat(_delay(m, ask, d, "ask") for d in range(L)).any()))]
        m.d.comb += Cover(rose & (n_layers == 2) & _delay(m, out_write & (wp.data != 0), 1, "nz"))
    elif check == "reads":
        # the banks as the memory holds them, and which words of a bank the pass writing it has written
        shadow = Array(Signal(n * c.act_bits, name=f"ghost_act{i}") for i in range(2 << rows_bits))
        with m.If(wp.en):
            m.d.sync += shadow[wp.addr].eq(wp.data)
        written = Array(Signal(c.act_depth, name=f"ghost_written{b}") for b in range(2))
        for b in range(2):
            with m.If(clear & (begun[0] == b)):          # layer `begun` begins: it writes bank (begun + 1) % 2
                m.d.sync += written[1 - b].eq(0)
            with m.Elif(out_write & (w_bank == 1 - b)):
                m.d.sync += written[1 - b].eq(written[1 - b] | (1 << w_row))
        bank = read_layer[0]
        addr = nzd.addr[:rows_bits]
        expect = _delay(m, shadow[Cat(addr, bank)], 2, "expect")
        m.d.comb += [Assert(~_delay(m, nzd.read, 2, "read") | (nzd.word == expect)),
                     Assert(~(nzd.read & running & (read_layer >= 1) & (addr < words_of(read_layer - 1)))
                            | written[bank].bit_select(addr, 1))]
        m.d.comb += Cover(nzd.read & (read_layer == 1) & _delay(m, nzd.read, 2, "read2")
                          & (nzd.word != 0) & written[bank][0])
    else:
        rnd = Signal(c.acc_bits, name="ghost_rounding")
        shift = param(ask_layer).shift
        m.d.comb += rnd.eq(Mux(shift == 0, 0, Const(1, c.acc_bits + 1) << (shift - 1)[:len(shift)]))
        lp = param(ask_layer)
        for k, pe in enumerate(pes):
            m.d.comb += [Assert(pe.partner == pes[(k + n // 2) % n].share),
                         Assert(~ask | ((pe.out_slot == Mux(lp.paired, row << 1, row)[:len(pe.out_slot)])
                                        & (pe.shift == lp.shift) & (pe.relu == lp.relu) & (pe.paired == lp.paired)
                                        & (pe.rounding == rnd) & (pe.layer == ask_layer))),
                         Assert(~(pe.act_valid & running) | ((pe.ptr_base == param(begun - 1).ptr_base)
                                                              & (pe.layer == begun - 1)))]
        m.d.comb += Cover(ask & lp.paired & _delay(m, pes[0].share != 0, 0, "sh") & (row == 1))
    return m


# -- the tiny chip end to end: a miter against the arithmetic contract -------------------------------------------

# The end-to-end chip: 1 PE, layers up to 2x2 (2-word banks), 2-bit codebook indices and zero runs, 2 entries a
# word, 4 entries in all; 2-bit activations and weights, 4-bit accumulators (the requantizer's width is proven
# apart, at 40 bits). Larger ones were measured out of reach: 1 PE with 4x4 layers (or 2 PEs with 4x4) met a
# solver wall at about 30 cycles into the layer (minutes a step), short of its 36-cycle bound.
MITER = dict(pes=1, act_bits=2, weight_bits=2, acc_bits=4, act_depth=2, queue_depth=2, jobs_depth=2, index_bits=2,
             weight_index_bits=2, entries_per_word=2, matrix_words=2, cols_per_ptr_word=2, count_bits=2, ptr_words=2,
             max_layers=1)
# the same with 2 output rows a cycle; with 2 PEs (layers up to 4x2, paired or not), 4 PEs (pairing) and 6 PEs (the
# statistics of two groups of four)
MITER_OPC2 = {**MITER, "outputs_per_cycle": 2}
MITER_2, MITER_4, MITER_6 = ({**MITER, "pes": n} for n in (2, 4, 6))
# `done` rises this many cycles after `start` at the latest, for every layer of the end-to-end proofs (up to 2x2 on
# 1 PE, 4x2 on 2 PEs): 23 cycles of work and control, then the output pass (proven: the "bound" proofs)
MITER_BOUND = 23 + OUTPUT_LATENCY
MITER_DEPTH = MITER_BOUND + 8          # the host's write and start, the reset synchronizer: a layer whole


def _chip(m, c):
    """The chip of `c` elaborated into `m` (its PEs and detector reachable), clocked by the harness's clock, its
    reset held low (the reset synchronizer still holds the chip in reset for its first cycles)."""
    from eie.hw.chip import Chip
    m.formal_clk = clk = Signal(name="clk")
    chip = Chip(c)
    chip._MustUse__silence = True
    cm = chip.elaborate(None)
    frag = Fragment.get(cm, None)
    m.submodules.chip = frag
    m.d.comb += [chip.clk.eq(clk), chip.rst.eq(0)]
    return chip, cm, frag


def layer_model(m, c, image, cols, rows, shift, relu, paired=None, name="model"):
    """The arithmetic contract of one layer, in gates, from the image's words (`image`: per PE its
    pointer words, matrix words, codebook and bias values; the activation words): for every column ``j <
    cols`` with a non-zero activation, every real entry of its span in PE p (start = the pointer word's base
    plus the counts before the column's lane; rows by zero runs: the first entry's zeros, then previous + zeros
    + 1; index 0 is padding) adds ``codebook[index] * x_j`` to accumulator ``row`` of PE p (wrapping at
    acc_bits); global row ``s * pes + p`` is `requant_spec` of accumulator s with bias slot s, or, where the
    signal `paired` is high (`eie.sw.encode`'s paired layer), of accumulator 2s plus accumulator 2s + 1 of
    the partner PE (p + pes/2) % pes with bias slot 2s. Returns the
    expected output words (one value per PE each, lanes past `rows` zero) and an `ok` signal: the image is well
    formed (every span inside the matrix memory, every real row below ``act_depth``), which the harness
    assumes."""
    n, E = c.pes, c.entries_per_word
    eb = (E - 1).bit_length()
    A = signed(c.acc_bits)
    acts = image["acts"]
    x = [acts[j // n].word_select(j % n, c.act_bits).as_signed() for j in range(c.act_depth * n)]
    ok_terms, words = [], []
    outs = [[None] * n for _ in range(c.act_depth)]
    accs = [[] for _ in range(n)]
    for p in range(n):
        ptr, mat, cb, bias = (image[k][p] for k in ("ptr", "matrix", "codebook", "bias"))
        terms = [[] for _ in range(c.act_depth)]
        end = None
        for j in range(c.act_depth * n):
            col = Const(j, c.dim_bits)
            start, count = span_of(m, c, ptr, col)
            live = Signal(name=f"{name}_pe{p}_col{j}_live")
            m.d.comb += live.eq((j < cols) & (x[j] != 0))
            # as the image lays them out: the layer's spans one after the other, inside the matrix memory
            ok_terms.append((j >= cols) | ((start + count <= c.matrix_words * E)
                                           & (start == end if end is not None else 1)))
            end = Signal(c.entry_addr_bits + 1, name=f"{name}_pe{p}_col{j}_end")
            m.d.comb += end.eq(start + count)
            prev = None
            for k in range(c.max_count):
                addr = Signal(c.entry_addr_bits + 1, name=f"{name}_pe{p}_c{j}_addr{k}")
                m.d.comb += addr.eq(start + k)
                word = Array(mat)[addr >> eb] if len(mat) > 1 else mat[0]
                entry = word.word_select(addr[:eb], c.entry_bits) if E > 1 else word
                v, z = entry[:c.weight_index_bits], entry[c.weight_index_bits:c.entry_bits]
                row = Signal(8, name=f"{name}_pe{p}_c{j}_row{k}")
                m.d.comb += row.eq(z if prev is None else prev + z + 1)
                prev = row
                real = Signal(name=f"{name}_pe{p}_c{j}_real{k}")
                m.d.comb += real.eq(live & (k < count) & (v != 0))
                ok_terms.append(~real | (row < c.act_depth))
                product = Signal(A, name=f"{name}_pe{p}_c{j}_prod{k}")
                m.d.comb += product.eq(Array(cb)[v] * x[j])
                for r in range(c.act_depth):
                    terms[r].append(Mux(real & (row == r), product, 0))
        for s in range(c.act_depth):
            acc = Signal(A, name=f"{name}_pe{p}_acc{s}")
            m.d.comb += acc.eq(sum(terms[s]))
            accs[p].append(acc)
    for p in range(n):
        bias, q = image["bias"][p], (p + n // 2) % n
        for s in range(c.act_depth):
            if paired is None or 2 * s + 1 >= c.act_depth:      # no paired layer has a row s here
                own, share, b = accs[p][s], Const(0, A), bias[s]
            else:    # a paired row: the own accumulator 2s and bias slot 2s, the partner's accumulator 2s + 1
                own, share = Mux(paired, accs[p][2 * s], accs[p][s]), Mux(paired, accs[q][2 * s + 1], 0)
                b = Mux(paired, bias[2 * s], bias[s])
            y, _ = requant_spec(m, own, share, b, shift, relu, c, c.acc_bits - c.act_bits - 1)
            outs[s][p] = Mux(s * n + p < rows, y, 0)
    for s in range(c.act_depth):
        w = Signal(n * c.act_bits, name=f"{name}_word{s}")
        m.d.comb += w.eq(Cat(*outs[s]))
        words.append(w)
    ok = Signal(name=f"{name}_ok")
    m.d.comb += ok.eq(Cat(*ok_terms).all())
    return words, ok


def chip_miter(config: ChipConfig | None = None, *, bound: int | None = None, check: str = "outputs",
               max_cols: int | None = None, max_shift: int | None = None, paired: bool = False):
    """The whole tiny chip (`MITER`: 1 PE, layers up to 4x4) against `layer_model`, end to end: its memories
    hold an image of any contents at the first step (``AnyConst`` words peeked into the memories: codebook
    values, biases, matrix and pointer words, the input words; loading them through the host port is the
    "host port" proof's), the host writes the layer's row of the table (any rows and cols up to the banks',
    any legal shift and ReLU, any pointer base) and pulses ``start`` for one layer.

    ``check="bound"``: ``done`` rises within `bound` cycles of ``start``, so a proof as deep as the host's
    cycles plus `bound` covers every such layer whole. ``check="outputs"``: once ``done`` is high, every output
    word of the destination bank that the layer writes is the model's (every lane: the requantized sum of the
    layer's products of its row, lanes past the layer's rows zero). `paired`: the layer may be paired as well
    (an even number of PEs; rows that fit paired), the model then adds the partner's share. Covers: a layer
    of at least 2x2 done with both output words non-zero; with `paired`, a paired layer done with a non-zero
    word that a partner's share changed. ``check="partner"`` (with `paired`, 4 PEs or more, where a wrong
    partner differs from the right one): every PE's partner input is PE (k + pes/2) % pes's share, in layers
    whose shares are not all zero. ``check="stats"`` (the host reads the statistics at will: 6 PEs, two groups
    of four, the second short): a read of ``PE_STATS`` at ``raddr`` k < pes returns, `READ_LATENCY` cycles on,
    PE k's entries (low 32 bits) and multiplies (high 32 bits) as they were the cycle after the read was asked;
    cover: the second group's last PE read with non-zero counts."""
    from eie.hw.chip import Target, layer_layout
    from eie.hw.arith import addr_bits
    if check not in ("outputs", "bound", "partner", "stats"):
        raise ValueError(f"chip_miter check must be outputs, bound, partner or stats, not {check!r}")
    c = config or ChipConfig(**MITER)
    n = c.pes
    bound = MITER_BOUND if bound is None else bound
    m = Module()
    chip, cm, frag = _chip(m, c)
    host = chip.host
    peeks = []

    def peek(shape, reg):
        sig = Signal(shape, name=f"peek_{_slug(reg)}")
        peeks.append((sig, reg))
        return sig

    layout = layer_layout(c)
    desc = Signal(layout, name="image_layer")
    m.d.comb += desc.as_value().eq(AnyConst(layout.size))
    ptr_bits = (c.cols_per_ptr_word - 1).bit_length()
    m.d.comb += Assume(~Initial() | ((desc.rows >= 1) & (desc.rows <= c.max_dim) & (desc.cols <= c.max_dim)
                                     & (desc.cols <= (max_cols if max_cols is not None else c.max_dim))
                                     & (~desc.paired | (paired & (((desc.rows + n - 1) // n) * 2 <= c.act_depth)))
                                     & (desc.shift < c.acc_bits - c.act_bits)
                                     & (desc.shift <= (max_shift if max_shift is not None else c.acc_bits))
                                     & (desc.ptr_base + ((desc.cols + c.cols_per_ptr_word - 1) >> ptr_bits)
                                        <= c.ptr_words)))
    K = c.cols_per_ptr_word
    image = {"ptr": [], "matrix": [], "codebook": [], "bias": [],
             "acts": [AnyConst(n * c.act_bits) for _ in range(c.act_depth)]}
    held = []                   # (AnyConst, the memory word that holds it at the first step)
    rows_bits = addr_bits(c.act_depth)     # the banks share one memory: the bank is the top address bit

    def act_word(bank, a):
        return f"chip.act[{(bank << rows_bits) | a}]"
    held += [(w, peek(len(w), act_word(0, a))) for a, w in enumerate(image["acts"])]
    for p in range(n):
        words = [AnyConst(c.ptr_word_bits) for _ in range(c.ptr_words)]
        # the layer's pointer words, as the PE reads them: from ptr_base on
        image["ptr"].append([Array(words)[(desc.ptr_base + i)[:addr_bits(c.ptr_words)]]
                             for i in range(-(-c.max_dim // K))])
        mat = [AnyConst(c.matrix_word_bits) for _ in range(c.matrix_words)]
        bias = [AnyConst(signed(c.act_bits)) for _ in range(c.act_depth)]
        codebook = [AnyConst(signed(c.weight_bits)) for _ in range(c.codebook_size)]
        image["matrix"].append(mat)
        image["bias"].append(bias)
        image["codebook"].append(codebook)
        for name, values, shape in (("pointers", words, c.ptr_word_bits), ("matrix", mat, c.matrix_word_bits),
                                    ("bias", bias, signed(c.act_bits)), ("codebook", codebook, signed(c.weight_bits))):
            held += [(v, peek(shape, f"chip.pe{p}.{name}[{a}]")) for a, v in enumerate(values)]
    m.d.comb += Assume(~Initial() | Cat(v == mem for v, mem in held).all())
    # the model's words, computed once: constants equal to the model at the first step only, so that the
    # solver does not meet the model's gates again at every step it unrolls
    model, ok = layer_model(m, c, image, desc.cols, desc.rows, desc.shift, desc.relu, desc.paired if paired else None)
    words = [AnyConst(len(w)) for w in model]
    m.d.comb += Assume(~Initial() | (ok & Cat(w == x for w, x in zip(words, model)).all()))
    # the host: the layer's row of the table as the chip comes out of reset, then start
    step = Signal(range(4), name="host_step")
    m.d.sync += step.eq(step + (step != 3))
    intended = {"we": step == 0, "target": Target.LAYER, "pe": 0, "addr": 0, "data": desc.as_value(),
                "start": step == 1, "n_layers": 1}
    for name, value in intended.items():     # free inputs, assumed: no write port is constant, so Yosys keeps
        port = getattr(host, name)           # every memory word a register (one never written it would drop)
        free = AnySeq(len(port))
        m.d.comb += [port.eq(free), Assume(free == value)]
    since = Signal(range(bound + 2), name="since_start")
    started = Signal(name="started")
    with m.If(step == 1):
        m.d.sync += started.eq(1)
    with m.If(started & ~host.done & (since != bound + 1)):
        m.d.sync += since.eq(since + 1)
    out = [peek(n * c.act_bits, act_word(1, a)) for a in range(c.act_depth)]
    finished = started & host.done
    if check == "bound":
        m.d.comb += Assert(since <= bound)
    elif check == "partner":     # the encoder's pairing: PE k's partner is PE (k + pes/2) % pes, every cycle
        pes = [cm.submodules[f"pe{k}"] for k in range(n)]
        m.d.comb += [Assert(pe.partner == pes[(k + n // 2) % n].share) for k, pe in enumerate(pes)]
    elif check == "stats":       # the host reads the PEs' statistics while the layer runs and after
        from eie.hw.chip import ReadTarget
        pes = [cm.submodules[f"pe{k}"] for k in range(n)]
        rtarget, raddr = AnySeq(len(host.rtarget)), AnySeq(len(host.raddr))
        m.d.comb += [host.rtarget.eq(rtarget), host.raddr.eq(raddr)]
        asked = (rtarget == ReadTarget.PE_STATS) & (raddr < n)
        sel = _delay(m, raddr, 1, "stats_raddr")[:max(1, (n - 1).bit_length())]
        expect = _delay(m, Array(Cat(pe.entries, pe.macs) for pe in pes)[sel], READ_LATENCY - 1, "stats_expect")
        read = _delay(m, asked, READ_LATENCY, "stats_read")
        m.d.comb += [Assert(~read | (host.rdata[:64] == expect)),
                     Cover(read & (_delay(m, raddr, READ_LATENCY, "stats_pe") == n - 1) & (host.rdata[:64] != 0))]
    else:
        for a in range(c.act_depth):
            m.d.comb += Assert(~finished | (a * n >= desc.rows) | (out[a] == words[a]))
    if check in ("outputs", "bound"):
        m.d.comb += Cover(finished & (desc.cols >= 2) & (desc.rows >= 2) & (out[1] != 0) & (out[0] != 0))
    if paired:
        crossed = Signal(name="share_crossed")     # a non-zero partial sum crossed to a partner
        with m.If(Cat(cm.submodules[f"pe{k}"].share != 0 for k in range(n)).any()):
            m.d.sync += crossed.eq(1)
        m.d.comb += Cover(finished & desc.paired & crossed & (out[0] != 0))
    m.formal_peeks = peeks
    return m


PROOFS = []

from eie.cosim.formal import Proof  # noqa: E402  (the list below needs it; formal imports this module lazily)

PROOFS += [   # fastest first (the mutant tier stops at the first that fails); covers last
    Proof("requantizer", "equals reference.requantize, all 40-bit inputs, legal shifts", requantizer,
          mode="prove", depth=REQUANT_LATENCY + 2, fast=True),
    Proof("host port", "each PE memory write is the host's write to that PE (codebooks: every PE), 3 cycles on",
          partial(chip_control, check="loads"), mode="bmc", depth=20, fast=True),
    Proof("control", "done rises once per chain, with no work in flight", partial(chip_control, check="done"),
          mode="bmc", depth=32, fast=True),
    Proof("detector", "the consumers' queues never overfill", partial(detector, check="room"), mode="bmc", depth=24,
          fast=True),
    Proof("pe queue + jobs FIFO", "never written full, within their sizes; takes only what arrived",
          partial(span_unit, check="fifos"), mode="bmc", depth=20, fast=True),
    Proof("pe accumulate + bypass", "each write is its row's sum so far (read-after-write)",
          partial(accumulator, check="write"), mode="bmc", depth=20, fast=True),
    Proof("pe index decoder", "entries are the spans' real entries, rows decoded; padding never leaves (2 jobs)",
          partial(entry_reader, max_jobs=2), mode="bmc", depth=12, fast=True),
    Proof("pe accumulate + bypass", "accumulators equal the sums when the output pass reads (2 entries)",
          partial(accumulator, check="sums", max_entries=2), mode="bmc", depth=12, fast=True),
    Proof("pe pointer/span stage", "jobs are the broadcast columns' spans, in order (2 broadcasts)",
          partial(span_unit, check="spans", max_broadcasts=2), mode="bmc", depth=14, fast=True),
    Proof("pe queue + jobs FIFO", "P0 takes the broadcasts in arrival order, from the queue or past it",
          partial(span_unit, check="order"), mode="bmc", depth=16, fast=True),
    Proof("chip control", "partner pairing; each row asked with its layer's slot, shift, rounding, ReLU (4 PEs)",
          partial(chip_flow, check="params"), mode="bmc", depth=30, fast=True),
    Proof("tiny chip end to end", "2 output rows a cycle (outputs_per_cycle=2): every output word, layers up to 2x2",
          partial(chip_miter, ChipConfig(**MITER_OPC2)), mode="bmc", depth=MITER_DEPTH, mutants=True),
    Proof("detector", "2 activations a cycle: each pair the next two non-zeros, of one pointer word (4 PEs)",
          partial(detector, DUAL_DETECTOR, check="order"), mode="bmc", depth=20, mutants=True),
    Proof("pe index decoder", "2 activations a cycle: a job's two spans' real entries, in order (1 job)",
          partial(entry_reader, tiny(acts_per_cycle=2), max_jobs=1), mode="bmc", depth=14, mutants=True, needs=60),
    Proof("chip control", "PE k's partner is PE k + pes/2 in a paired layer with non-zero shares (4 PEs)",
          partial(chip_miter, ChipConfig(**MITER_4), check="partner", paired=True, max_cols=1), mode="bmc",
          depth=MITER_DEPTH - 4, mutants=True, needs=60),
    Proof("chip write line", "each output word: the row asked L cycles before, bank not read, PEs' data; all rows",
          partial(chip_flow, check="writes"), mode="bmc", depth=36, mutants=True, needs=60),
    Proof("chip banks", "the detector reads its layer's source bank; a next layer reads only words written",
          partial(chip_flow, check="reads"), mode="bmc", depth=36, mutants=True, needs=60),
    Proof("tiny chip end to end", f"done within {MITER_BOUND} cycles of start: every layer up to 2x2 whole by "
          f"depth {MITER_DEPTH}", partial(chip_miter, check="bound"), mode="bmc", depth=MITER_DEPTH),
    Proof("tiny chip end to end", "every output word equals the arithmetic contract (any image, layers up to 2x2)",
          chip_miter, mode="bmc", depth=MITER_DEPTH, mutants=True),
    Proof("host port", "a PE_STATS read returns the PE's entries and multiplies (6 PEs)",
          partial(chip_miter, ChipConfig(**MITER_6), check="stats", max_cols=1), mode="bmc", depth=25,
          mutants=True, needs=150),
    Proof("tiny chip end to end", f"2 PEs, paired or not: done within {MITER_BOUND} cycles, layers up to 4x2",
          partial(chip_miter, ChipConfig(**MITER_2), check="bound", paired=True, max_cols=2), mode="bmc",
          depth=MITER_DEPTH),
    Proof("tiny chip end to end", "2 PEs, paired or not: every output word equals the arithmetic contract, layers up "
          "to 4x2", partial(chip_miter, ChipConfig(**MITER_2), paired=True, max_cols=2), mode="bmc",
          depth=MITER_DEPTH, mutants=True, needs=240),
    Proof("pe pointer/span stage", "jobs are the broadcast columns' spans, in order (4 broadcasts)",
          partial(span_unit, check="spans", max_broadcasts=4), mode="bmc", depth=20, needs=200),
    Proof("pe accumulate + bypass", "accumulators equal the sums when the output pass reads (3 entries)",
          partial(accumulator, check="sums", max_entries=3), mode="bmc", depth=20),
    Proof("pe index decoder", "entries are the spans' real entries, rows decoded; padding never leaves (2 jobs)",
          partial(entry_reader, max_jobs=2), mode="bmc", depth=20, needs=150),
    Proof("requantizer", "equals reference.requantize, every shift up to acc_bits",
          partial(requantizer, all_shifts=True), mode="prove", depth=REQUANT_LATENCY + 2),
    Proof("detector", "none left once settled", partial(detector, check="complete"), mode="bmc", depth=20),
    Proof("detector", "each broadcast is the next non-zero, in column order", partial(detector, check="order"),
          mode="bmc", depth=20),
    Proof("pe output pass", "each row's activation and partner share, with the parameters it was asked with",
          output_pass, mode="prove", depth=OUTPUT_LATENCY + 1, fast=True),
    Proof("requantizer", "saturation, ReLU, rounding reached", requantizer, mode="cover", depth=8, fast=True),
    Proof("pe output pass", "a paired row with a partner share, parameters changed behind a row", output_pass,
          mode="cover", depth=12),
    Proof("detector", "layer completes, queue full, last column sent", detector, mode="cover", depth=24),
    Proof("pe queue + jobs FIFO", "both hold three, a span of several entries leaves", span_unit, mode="cover",
          depth=30),
    Proof("pe index decoder", "padding inside a span, two jobs back to back", entry_reader, mode="cover", depth=20),
    Proof("pe accumulate + bypass", "bypass case, a row cleared and touched again", accumulator, mode="cover",
          depth=12, fast=True),
    Proof("host port", "a PE's matrix is loaded", partial(chip_control, check="loads"), mode="cover", depth=20),
    Proof("control", "a chain completes (done rises)", partial(chip_control, check="done"), mode="cover", depth=32,
          fast=True),
    Proof("host port", "a codebook write reaches both PEs", partial(chip_control, check="loads"), mode="cover",
          depth=20),
    Proof("chip control", "a paired row's share crosses to its partner", partial(chip_flow, check="params"),
          mode="cover", depth=32),
    Proof("chip write line", "a 2-layer chain completes with a non-zero word written",
          partial(chip_flow, check="writes"), mode="cover", depth=36),
    Proof("chip banks", "layer 2 reads a non-zero word layer 1 wrote", partial(chip_flow, check="reads"),
          mode="cover", depth=30),
    Proof("tiny chip end to end", "a 2x2 layer done with both output words non-zero", chip_miter, mode="cover",
          depth=MITER_DEPTH),
    Proof("tiny chip end to end", "2 output rows a cycle: a 2x2 layer done with both output words non-zero",
          partial(chip_miter, ChipConfig(**MITER_OPC2)), mode="cover", depth=MITER_DEPTH),
    Proof("detector", "2 activations a cycle: a pair is sent", partial(detector, DUAL_DETECTOR), mode="cover",
          depth=24),
    Proof("pe index decoder", "2 activations a cycle: padding inside a span, two spans back to back",
          partial(entry_reader, tiny(acts_per_cycle=2)), mode="cover", depth=20),
    Proof("tiny chip end to end", "2 PEs: a paired layer done, a partner's non-zero share in its output",
          partial(chip_miter, ChipConfig(**MITER_2), paired=True, max_cols=2), mode="cover", depth=MITER_DEPTH),
    Proof("chip control", "4 PEs: a paired layer done with a non-zero share crossed",
          partial(chip_miter, ChipConfig(**MITER_4), check="partner", paired=True, max_cols=1), mode="cover",
          depth=MITER_DEPTH),
    Proof("host port", "6 PEs: the second group's last PE read with non-zero counts",
          partial(chip_miter, ChipConfig(**MITER_6), check="stats", max_cols=1), mode="cover", depth=25, needs=150),
]
