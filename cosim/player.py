"""The host's work as a program that the simulator plays back, so no Python and no VPI run per cycle or per
image (issue 10).

`eie.cosim.hostport.ChipHost` is written once, over a port. Run over a `RecordingPort`, every clock cycle it
spends becomes one *op*: the host inputs it drives during that cycle, whether it waits there for ``done``, and
which host outputs it samples. The Verilog testbench of `testbench_verilog` (a clock inside the simulator, the
chip, a player) reads the ops from a binary file in blocks, drives them cycle by cycle, waits on ``done``
with a single event (free run: no testbench code per cycle) and writes each sample to a text file. Running
`ChipHost` a second time over a `ReplayPort` that answers its samples from that file turns the run into
results, so what the host reads and how it decodes it are written once too. The player has the timing of a
cocotb host: inputs change at the falling edge, ``run_until_done`` waits for ``done`` to rise and then for a
falling edge.

Two things keep the simulator's own overhead small:

* The clock runs `CYCLES_PER_STEP` cycles in one simulator time step: each rise is followed by a fall once the
  registers have taken their new values, and each fall by the next rise. A time step costs cocotb's main loop
  its callbacks and Verilator's scheduler a timed wake-up, whatever the chip does. A waveform build runs one
  cycle per step (10 ns), so that a viewer shows every cycle.
* An op holds the low `OpLayout.chunk` bits of ``data``, enough for a matrix or pointer word (the loads are
  most of the ops); wider data (a row of activations, a layer descriptor) goes ahead of its op in extension
  records of one chunk each, most significant first. The simulator reads the program a byte at a time: at 64
  PEs full-width ops made reading it a sixth of the simulation time.

The same testbench runs under cocotb (`eie.cosim.session`) and under a bare C++ main (``harness.cpp``: no
Python, no VPI), so the two speeds compare like for like.
"""

from amaranth import Shape

from eie.hw.chip import HostSignature
from eie.cosim.hostport import HOST_INPUTS

__all__ = ["OpLayout", "RecordingPort", "ReplayPort", "read_captures", "run_sync", "testbench_verilog",
           "TESTBENCH", "BLOCK_OPS", "CYCLES_PER_STEP"]

TESTBENCH = "eie_tb"
BLOCK_OPS = 4096            # ops the testbench reads from the program file at a time
CYCLES_PER_STEP = 32        # clock cycles in one simulator time step (1 in waveform builds)
CAPTURED = ("rdata", "cycles")   # host outputs a program may sample, in the order the player writes them
_FLAGS = ("wait", *(f"capture_{name}" for name in CAPTURED), "more")    # more: an extension record
END = -1                    # op index of the line giving the testbench's total cycles


class OpLayout:
    """Bit fields of one op, least significant first: the flags, ``rst``, then the chip's host inputs, of which
    ``data`` holds only its low `chunk` bits (`data_bits` in all)."""

    def __init__(self, config):
        members = HostSignature(config).members
        self.data_bits = Shape.cast(members["data"].shape).width
        self.chunk = min(self.data_bits, max(config.matrix_word_bits, config.ptr_word_bits))
        self.fields = [(name, 1) for name in _FLAGS] + [("rst", 1)] + \
                      [(name, self.chunk if name == "data" else Shape.cast(members[name].shape).width)
                       for name in HOST_INPUTS]
        self.offsets, offset = {}, 0
        for name, width in self.fields:
            self.offsets[name] = offset
            offset += width
        self.bits = offset
        self.bytes = -(-offset // 8)     # $fread fills a memory word from this many bytes, most significant first
        self.widths = dict(self.fields)


class RecordingPort:
    """A host port that records each cycle the host spends as an op (appended to the bytearray `program`);
    samples read as 0. The op's input fields are kept packed, so a cycle costs a few integer operations."""

    def __init__(self, layout, program):
        self.layout, self.program = layout, program
        self.word = 1 << layout.offsets["rst"]      # every input low, rst high: the chip's state at time 0
        self.data = 0
        self.captures = 0
        self.ops = 0

    def drive(self, name, value):
        if name == "data":
            self.data = int(value) & ((1 << self.layout.data_bits) - 1)
            return
        off, width = self.layout.offsets[name], self.layout.widths[name]
        mask = ((1 << width) - 1) << off
        self.word = (self.word & ~mask) | ((int(value) << off) & mask)

    def sample(self, name):
        if name not in CAPTURED:
            raise ValueError(f"a program can sample {', '.join(CAPTURED)}, not {name!r}")
        self.captures |= 1 << self.layout.offsets[f"capture_{name}"]
        return 0

    def _emit(self, wait):
        layout, data = self.layout, self.data
        at, chunk, size = layout.offsets["data"], layout.chunk, layout.bytes
        more = 1 << layout.offsets["more"]
        for k in range((data.bit_length() - 1) // chunk, 0, -1):     # extension records, high chunks first
            self.program += (more | ((data >> (k * chunk)) & ((1 << chunk) - 1)) << at).to_bytes(size, "big")
        low = (data & ((1 << chunk) - 1)) << at
        self.program += (self.word | low | self.captures | wait).to_bytes(size, "big")
        self.captures = 0
        self.ops += 1

    async def step(self):
        self._emit(0)

    async def run_until_done(self):
        self._emit(1)

    def close(self):
        """End the program: samples taken since the last cycle still need one."""
        if self.captures:
            self._emit(0)


class ReplayPort:
    """A host port that drives nothing and answers each sample with what the player captured at that op."""

    def __init__(self, captures):
        self.captures = captures     # {(op index, name): value}
        self.op = 0

    def drive(self, name, value):
        pass

    def sample(self, name):
        return self.captures[(self.op, name)]

    async def step(self):
        self.op += 1

    async def run_until_done(self):
        self.op += 1


def read_captures(path):
    """The player's capture file -> ({(op index, name): value}, total testbench cycles)."""
    captures, cycles = {}, None
    with open(path) as f:
        for line in f:
            op, code, value = line.split()
            if int(op) == END:
                cycles = int(value, 16)
            else:
                captures[(int(op), CAPTURED[int(code)])] = int(value, 16)
    return captures, cycles


def run_sync(coroutine):
    """Run a host coroutine over a recording or replay port (they never suspend) to its result."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("a host program waited on something other than its port")


def testbench_verilog(config, chip_module, cycles_per_step=CYCLES_PER_STEP):
    """SystemVerilog of the testbench top: the clock, `chip_module` and the player (Verilator ``--timing``)."""
    layout = OpLayout(config)
    members = HostSignature(config).members
    regs = "\n".join(f"  reg [{(layout.data_bits if n == 'data' else layout.widths[n]) - 1}:0] {n} = 0;"
                     for n in HOST_INPUTS)
    wires = "\n".join(f"  wire [{Shape.cast(members[n].shape).width - 1}:0] {n};" for n in ("rdata", "done", "cycles"))
    ports = ", ".join([".clk(clk)", ".rst(rst)"] + [f".host__{n}({n})" for n in (*HOST_INPUTS, "rdata", "done",
                                                                                   "cycles")])
    first_input = layout.offsets["rst"]
    unpack = "{" + ", ".join(reversed(["rst", *(n if n != "data" else "data_low" for n in HOST_INPUTS)])) + "}"
    chunk, data_lo = layout.chunk, layout.offsets["data"]
    upper_bits = layout.data_bits - chunk
    if upper_bits:      # data wider than an op's chunk: extension records fill `upper`, most significant first
        upper = f"  reg [{upper_bits - 1}:0] upper = 0;\n"
        extend = f"upper = {{upper, op[{data_lo + chunk - 1}:{data_lo}]}};"
        assemble = "data = {upper, data_low};\n        upper = 0;"
    else:
        upper, extend, assemble = "", "", "data = data_low;"
    captures = "\n".join(
        f'        if (op[{layout.offsets[f"capture_{name}"]}]) $fwrite(fout, "%0d {k} %h\\n", index, {name});'
        for k, name in enumerate(CAPTURED))
    return f"""// Testbench of the {config.pes}-PE chip: plays a host program (eie.cosim.player). Generated; do not edit.
module {TESTBENCH}(output reg finished = 1'b0);
  // The clock: {cycles_per_step} cycle(s) per 10 ns time step. It stops with the program (nothing is left to
  // simulate), and `posedges` counts its cycles.
  reg clk = 1'b0;
  reg step = 1'b0, last_step = 1'b0;
  integer burst = 0;
  longint posedges = 0;
  initial while (!finished) #10 step = ~step;
  always @(step or clk)
    if (clk) begin
      clk <= 1'b0;                  // falls once the registers have taken their new values
      posedges = posedges + 1;
    end else begin
      if (step != last_step) begin
        last_step = step;
        burst = 0;
      end
      if (!finished && burst < {cycles_per_step}) begin
        burst = burst + 1;
        clk <= 1'b1;
      end
    end
  reg rst = 1'b1;
{regs}
{wires}
  {chip_module} chip({ports});

  reg [{layout.bits - 1}:0] program_block [0:{BLOCK_OPS - 1}];
  reg [{layout.bits - 1}:0] op;
  reg [{chunk - 1}:0] data_low;
{upper}  reg [8*4096-1:0] program_path, captures_path;
  integer fin, fout, got, n, i;
  longint index;

  initial begin
    if (!$value$plusargs("program=%s", program_path)) $fatal(1, "+program=FILE is missing");
    if (!$value$plusargs("captures=%s", captures_path)) $fatal(1, "+captures=FILE is missing");
    fin = $fopen(program_path, "rb");
    if (fin == 0) $fatal(1, "cannot open the host program");
    fout = $fopen(captures_path, "w");
    if (fout == 0) $fatal(1, "cannot write the captures file");
    index = 0;
    @(negedge clk);
    while (1) begin
      got = $fread(program_block, fin, 0, {BLOCK_OPS});
      n = got / {layout.bytes};
      if (n == 0) break;
      for (i = 0; i < n; i = i + 1) begin
        op = program_block[i];
        if (op[{layout.offsets["more"]}]) begin
          {extend}
          continue;
        end
{captures}
        {unpack} = op[{layout.bits - 1}:{first_input}];
        {assemble}
        if (op[0]) begin
          @(posedge done);                 // the clock has fallen in this time step too
        end else begin
          @(negedge clk);
        end
        index = index + 1;
      end
    end
    $fwrite(fout, "{END} 0 %h\\n", posedges);
    $fclose(fout);
    $fclose(fin);
    finished = 1'b1;
  end
endmodule
"""
