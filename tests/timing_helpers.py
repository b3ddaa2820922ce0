"""Helpers for the tests of times beside cycles (`eie.cosim.timing`): a private Fmax store, an Fmax recorded
as `eie synth --ecp5` records one (from a made-up synthesis result), and the chip a hint's command names."""

import shlex

SOURCE = "ECP5 LFE5U-85F speed 6 Fmax, measured"      # how `eie.cosim.fmax.record` names a measured clock


def private_fmax(monkeypatch, tmp_path):
    """A temporary $EIE_CACHE: its Fmax store starts empty, while its Verilator builds are the real cache's (its
    sim/ folder linked in), so that a test that simulates builds nothing again."""
    from eie.cosim.cache import sim_dir
    real = sim_dir()
    real.mkdir(parents=True, exist_ok=True)
    cache = tmp_path / "eie-cache"
    cache.mkdir()
    (cache / "sim").symlink_to(real.resolve(), target_is_directory=True)
    monkeypatch.setenv("EIE_CACHE", str(cache))
    return cache


def record_fmax(config, mhz):
    """Store `mhz` as the measured Fmax of `config`'s chip and the current RTL (as `eie synth --ecp5` does)."""
    from eie.cosim import fmax
    result = {"ecp5": {"device": "LFE5U-85F", "speed": 6, "fmax_mhz": mhz, "seeds": 1},
              "tools": {"yosys": "Yosys 0.50 (git sha1 0)", "nextpnr-ecp5": "nextpnr-0.8"}}
    fmax.record(config, result)
    clock = fmax.lookup(config)
    assert clock is not None and clock.mhz == mhz
    return clock


def hinted_config(hint):
    """The ChipConfig that the `eie synth ...` command quoted in a hint names (parsed as `eie synth` parses it)."""
    from eie.cli import build_parser
    from eie.cosim.commands import chip_config
    assert "  " not in hint, hint          # the default chip's command too: 'eie synth --ecp5'
    command = shlex.split(hint.split("'")[1])
    assert command[:2] == ["eie", "synth"] and "--ecp5" in command, hint
    return chip_config(build_parser().parse_args(command[1:]))
