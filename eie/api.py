"""The Python API: the flow from a PyTorch network to the simulated chip, for notebooks and scripts.

    import eie
    data = eie.load_data("digits")
    model = eie.build_model("lenet-300-100", data)
    eie.train(model, data, eie.Training(epochs=20, lr=0.05))
    eie.prune(model, data, quality=1.0)                    # in place, like torch.nn.utils.prune
    cm = eie.compress(model, data, eie.ChipConfig(pes=2))  # -> CompressedModel
    cm.predict(data.x_test)          # the bit-exact reference of the chip's arithmetic
    cm.estimate(data.x_test)         # performance and energy model, no simulator
    cm.simulate(data.x_test[:100])   # the Verilator chip, every output checked against the reference
    cm.save("runs/mine"); eie.load("runs/mine")

A front door only: the functions live in the library (`eie.sw.flow`, `Training` in `eie.sw.pipeline`), which
never imports this module; the `eie` commands are thin callers of the same functions.
"""

from eie.sw.flow import ChipRun, CompressedModel, build_model, compress, load, load_data, prune, train
from eie.sw.pipeline import Training

__all__ = ["load_data", "build_model", "Training", "train", "prune", "compress", "load", "CompressedModel",
           "ChipRun"]
