"""The host program (eie.cosim.player): what ChipHost drives is what the ops hold, samples come back in
order, and the testbench plays the program alike under cocotb and under the raw C++ harness."""

import numpy as np
import pytest

from eie.config import ChipConfig
from eie.cosim.hostport import HOST_INPUTS, ChipHost
from eie.cosim.player import OpLayout, RecordingPort, ReplayPort, run_sync
from eie.sw.image import build_image
from eie.sw.reference import forward
from conftest import random_inputs, random_layer

SMALL = ChipConfig(pes=2, act_depth=8, matrix_words=64, ptr_words=16, max_layers=2)


class Logger:
    """A port that logs, per cycle, every host input as the chip would register it."""

    def __init__(self):
        self.values = {name: 0 for name in ("rst", *HOST_INPUTS)}
        self.values["rst"] = 1
        self.cycles, self.samples = [], []

    def drive(self, name, value):
        self.values[name] = int(value)

    def sample(self, name):
        self.samples.append((len(self.cycles), name))
        return 0

    async def step(self):
        self.cycles.append((dict(self.values), False))

    async def run_until_done(self):
        self.cycles.append((dict(self.values), True))

    def close(self):
        """Samples after the last cycle need one more (the host reads the chip there)."""
        if self.samples and self.samples[-1][0] == len(self.cycles):
            self.cycles.append((dict(self.values), False))


def decode(program, layout):
    """The ops of a program as (inputs, wait, sampled names); extension records give the data's high chunks."""
    ops, upper = [], 0
    for at in range(0, len(program), layout.bytes):
        word = int.from_bytes(program[at:at + layout.bytes], "big")
        field = {name: (word >> layout.offsets[name]) & ((1 << width) - 1) for name, width in layout.fields}
        if field["more"]:
            upper = (upper << layout.chunk) | field["data"]
            continue
        field["data"] |= upper << layout.chunk
        upper = 0
        ops.append(({n: field[n] for n in ("rst", *HOST_INPUTS)}, bool(field["wait"]),
                    {n for n in ("rdata", "cycles") if field[f"capture_{n}"]}))
    return ops


@pytest.fixture(scope="module")
def job():
    rng = np.random.default_rng(5)
    layers = [random_layer(rng, 7, 9, 0.5, SMALL, relu=True), random_layer(rng, 5, 7, 0.6, SMALL)]
    return build_image(layers, SMALL), random_inputs(rng, 3, 9, 0.7), layers


def test_each_op_holds_the_cycle_the_host_spent(job):
    image, x, _ = job
    log, program = Logger(), bytearray()
    recorder = RecordingPort(OpLayout(SMALL), program)
    for port in (log, recorder):
        run_sync(ChipHost(port, SMALL, np.random.default_rng(1)).run_jobs([(image, x)], True, True))
        port.close()
    ops = decode(program, OpLayout(SMALL))
    assert len(ops) == len(log.cycles) == recorder.ops
    assert [(inputs, wait) for inputs, wait, _ in ops] == log.cycles
    sampled = {}
    for cycle, name in log.samples:
        sampled.setdefault(cycle, set()).add(name)
    assert {k: names for k, (_, _, names) in enumerate(ops) if names} == sampled
    assert sum(wait for _, wait, _ in ops) >= len(x)            # at least one free run per sample


def test_data_wider_than_an_op_travels_in_extension_records():
    wide = ChipConfig(pes=16, act_depth=8, matrix_words=64, ptr_words=16)
    layout = OpLayout(wide)
    assert layout.chunk < layout.data_bits
    program = bytearray()
    recorder = RecordingPort(layout, program)
    values = [0, 5, (1 << layout.chunk) - 1, 1 << layout.chunk, (1 << layout.data_bits) - 1, 3 << layout.chunk]
    for v in values:
        recorder.drive("data", v)
        run_sync(recorder.step())
    assert [inputs["data"] for inputs, _, _ in decode(program, layout)] == values
    # one extension record for each chunk above the lowest that holds a bit
    assert len(program) // layout.bytes == len(values) + sum((v.bit_length() - 1) // layout.chunk for v in values if v)


def test_replay_answers_each_sample_from_its_op():
    port = ReplayPort({(0, "cycles"): 7, (2, "rdata"): 9})
    assert port.sample("cycles") == 7
    run_sync(port.step())
    run_sync(port.run_until_done())
    assert port.sample("rdata") == 9
    with pytest.raises(KeyError):           # nothing captured there: a misaligned replay cannot pass silently
        port.sample("cycles")


def test_the_testbench_plays_alike_under_cocotb_and_the_raw_harness(job):
    from eie.cosim.sim import simulate_many
    image, x, layers = job
    expect = forward(image.quant_layers(), x, SMALL)[-1]
    runs = {h: simulate_many([(image, x), (image, x[::-1])], stats=True, gaps=4, harness=h) for h in ("cocotb", "raw")}
    for h, (first, second) in runs.items():
        assert (first.outputs == expect).all(), h
        assert (second.outputs == expect[::-1]).all(), h
    for field in ("outputs", "cycles", "layer_cycles", "pe_stats"):
        assert all((getattr(a, field) == getattr(b, field)).all() for a, b in zip(runs["cocotb"], runs["raw"])), field
    assert runs["cocotb"][0].sim_cycles == runs["raw"][0].sim_cycles > runs["cocotb"][0].cycles.sum()
