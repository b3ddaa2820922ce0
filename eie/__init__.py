"""eie: prune and compress PyTorch networks and run them bit-exact on a simulated EIE-style accelerator.

The Python API (`eie.api`, documented in the README): `load_data`, `build_model`, `Training`, `train`,
`prune`, `compress` -> `CompressedModel` (`predict`, `estimate`, `simulate`, `verilog`, `save`), `load`;
and `compare` (`eie.sw.compare`: pruning against the alternatives on a run folder's baseline); `from_sklearn` and
`from_onnx` (`eie.sw.imports`: networks made elsewhere, into the same flow); `build_lstm`, `prune_lstm`,
`compress_lstm` -> `CompressedLSTM` (`eie.sw.lstm`: an LSTM classifier, its gates one sparse mat-vec per step).
They are imported on first use, so that `import eie` and the `eie` command start without torch.
"""

from eie.config import ChipConfig
from eie.errors import EieError, InputRangeWarning

_API = {name: "eie.api" for name in ("load_data", "build_model", "Training", "train", "prune", "compress", "load",
                                     "CompressedModel", "ChipRun")}
_API["compare"] = "eie.sw.compare"
_API.update(from_sklearn="eie.sw.imports", from_onnx="eie.sw.imports")
_API.update({name: "eie.sw.lstm" for name in ("build_lstm", "prune_lstm", "compress_lstm", "LSTMClassifier",
                                              "CompressedLSTM")})
__all__ = ["ChipConfig", "EieError", "InputRangeWarning", *_API]
__version__ = "0.1.0"


def __getattr__(name):
    if name in _API:
        import importlib
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'eie' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
