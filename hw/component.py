"""The base of the chip's gateware components: each is built from one `ChipConfig`, the single source of its
widths and depths, and refuses anything else when it is constructed rather than deep inside elaboration."""

from amaranth.lib import wiring

from eie.config import ChipConfig

__all__ = ["ChipComponent"]


class ChipComponent(wiring.Component):
    """A `wiring.Component` of `config`'s chip. A subclass names its signature class in `signature_type` (built
    from the config), or passes a signature to ``__init__``."""

    signature_type: type | None = None

    def __init__(self, config: ChipConfig, signature: wiring.Signature | dict | None = None):
        if not isinstance(config, ChipConfig):
            raise TypeError(f"config must be a ChipConfig, not {type(config).__name__}")
        self.config = config
        super().__init__(self.signature_type(config) if signature is None else signature)
