"""Cycles as time: what `eie run`, `eie sweep`, `eie compare` and `eie bench` state beside their cycles.

A chip's time is given at its measured ECP5 Fmax when `eie synth --ecp5` has recorded one for that chip
configuration and the current RTL (`eie.cosim.fmax.lookup`), and always at EIE's 800 MHz
(`eie.cosim.fmax.EIE_REFERENCE`), each clock with its source. Without a measured Fmax, `synth_hint` says in
one line which `eie synth` command records one. Cycles become microseconds in `eie.cosim.fmax.time_us` only.

A "time" entry (`entry`) is JSON:

    {"cycles_per_image": 793.0, "cycles_from": "rtl",
     "clocks": {"fmax": {"mhz": 61.2, "source": "ECP5 LFE5U-85F speed 6 Fmax, measured ...",
                         "us_per_image": 12.96, "us_per_layer": [...]},
                "eie_800mhz": {"mhz": 800.0, "source": "EIE's 800 MHz ...", "us_per_image": 0.991, ...}},
     "fmax_hint": "..."}

``clocks["fmax"]`` is there only when an Fmax is stored, ``fmax_hint`` only when it is not; ``us_per_layer``
only where per-layer cycles are given.
"""

from eie.config import ChipConfig
from eie.cosim import fmax

__all__ = ["FMAX", "REFERENCE", "synth_flags", "synth_hint", "at_clock", "entry", "us", "describe", "summary"]

FMAX = "fmax"                                        # the measured Fmax's key in an entry's "clocks"
REFERENCE = f"eie_{fmax.EIE_REFERENCE.mhz:g}mhz"     # EIE's clock: "eie_800mhz"


def synth_flags(config) -> str:
    """The `eie synth` chip flags that name `config` (every field that differs from the defaults ``eie synth``
    starts from), e.g. ``--pes 4 --index-bits 5 --matrix-words 4096``."""
    from eie.cosim.commands import _CHIP_FLAGS
    default, fields = ChipConfig().to_dict(), config.to_dict()
    return " ".join(f"--{f.replace('_', '-')} {fields[f]}" for f in _CHIP_FLAGS if fields[f] != default[f])


def synth_hint(config) -> str:
    """One line: no Fmax is stored for `config`'s chip and the current RTL, and the command that records one."""
    from eie.cosim.commands import _CHIP_FLAGS
    default, fields = ChipConfig().to_dict(), config.to_dict()
    unflagged = [f for f in fields if f not in _CHIP_FLAGS and fields[f] != default[f]]
    note = f" (and {', '.join(f'{f} {fields[f]}' for f in unflagged)}, which eie synth takes no flag for)" \
        if unflagged else ""
    command = " ".join(["eie synth", synth_flags(config), "--ecp5"]).replace("  ", " ")
    return f"no Fmax measured for this chip and RTL: '{command}'{note} records one"


def at_clock(clock, cycles_per_image, layer_cycles=None) -> dict:
    """{mhz, source, us_per_image[, us_per_layer]} of `cycles_per_image` (and per-layer cycles) at `clock`."""
    out = {"mhz": round(float(clock.mhz), 2), "source": clock.source,
           "us_per_image": None if cycles_per_image is None else round(fmax.time_us(cycles_per_image, clock), 4)}
    if layer_cycles is not None:
        out["us_per_layer"] = [None if c is None else round(fmax.time_us(c, clock), 4) for c in layer_cycles]
    return out


def entry(config, cycles_per_image, layer_cycles=None, cycles_from=None) -> dict:
    """The "time" entry of `config`'s chip for `cycles_per_image` (and `layer_cycles`, one figure per layer):
    at its measured Fmax where one is stored, and at EIE's 800 MHz."""
    measured = fmax.lookup(config)
    out = {"cycles_per_image": cycles_per_image}
    if cycles_from is not None:
        out["cycles_from"] = cycles_from
    out["clocks"] = {}
    if measured is not None:
        out["clocks"][FMAX] = at_clock(measured, cycles_per_image, layer_cycles)
    out["clocks"][REFERENCE] = at_clock(fmax.EIE_REFERENCE, cycles_per_image, layer_cycles)
    if measured is None:
        out["fmax_hint"] = synth_hint(config)
    return out


def us(time, key=FMAX):
    """Microseconds per image at clock `key` (`FMAX` or `REFERENCE`) of a time entry, or None when absent."""
    clock = (time or {}).get("clocks", {}).get(key)
    return None if clock is None else clock["us_per_image"]


def describe(key, clock) -> str:
    """Which clock, in words: 'the measured Fmax, 61.2 MHz (ECP5 ...)' or "EIE's 800 MHz (reference)"."""
    if key == FMAX:
        return f"the measured Fmax, {clock['mhz']:g} MHz ({clock['source']})"
    return f"EIE's {clock['mhz']:g} MHz (for reference, not this chip's clock)"


def summary(time) -> list[str]:
    """Lines for a console or a report: the time per image at each clock, saying which is which, then the
    hint when no Fmax is stored."""
    lines = [f"{c['us_per_image']:.3f} us per image at {describe(k, c)}" for k, c in time["clocks"].items()]
    if "fmax_hint" in time:
        lines.append(time["fmax_hint"])
    return lines
