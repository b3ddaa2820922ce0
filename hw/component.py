"""The base of the chip's gateware components: each is built from one `ChipConfig`, the single source of its
widths and depths, and refuses anything else when it is constructed rather than deep inside elaboration."""

from amaranth.lib import wiring

from eie.config import ChipConfig

__all__ = ["ChipComponent"]


class ChipComponent(wiring.Component):
    """A `wiring.Component` of `config`'s chip. A subclass names in `signature_type` what builds its signature
    from the config (a `wiring.Signature` class, or a function returning one or a dict of members), so that the
    config is checked before anything reads it."""

    signature_type = None

    def __init__(self, config: ChipConfig):
        if not isinstance(config, ChipConfig):
            raise TypeError(f"config must be a ChipConfig, not {type(config).__name__}")
        self.config = config
        super().__init__(type(self).signature_type(config))
