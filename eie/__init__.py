"""eie: prune and compress PyTorch networks and run them bit-exact on a simulated EIE-style accelerator."""

from eie.config import ChipConfig
from eie.errors import EieError

__all__ = ["ChipConfig", "EieError"]
__version__ = "0.1.0"
