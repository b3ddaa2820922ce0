"""The flow from a PyTorch network to the simulated chip, as library functions: `load_data`, `build_model`,
`train`, `prune`, `compress` -> `CompressedModel` (`predict`, `estimate`, `simulate`, `storage`, `save`) and
`load`. `eie.api` (the front door for notebooks and scripts, re-exported as `eie.*`) and the `eie` commands
call these; the library never calls the front door.

`CompressedModel.simulate`, `trace_mismatch` and `verilog` run the model's chip in `eie.cosim` (imported when
called): the one place where software reaches the simulator.
"""

from dataclasses import dataclass, field
from pathlib import Path
import sys
import time
import weakref

import numpy as np

from eie.config import ChipConfig
from eie.errors import EieError
from eie.sw.pipeline import Training

__all__ = ["load_data", "build_model", "train", "prune", "compress", "load", "CompressedModel", "ChipRun"]


def _stderr(message):
    print(message, file=sys.stderr, flush=True)


# What `prune` did to a model, for the `CompressedModel` that `compress` makes of it, so that `save` writes the
# pruning figures as `eie prune` does. Weak: the entry goes with the model.
_PRUNED = weakref.WeakKeyDictionary()


def _check_model(model, data=None):
    """Refuse what is not a torch network (and, given, not a data set from `load_data`) in one line."""
    from torch import nn
    from eie.sw.data import Dataset
    if not isinstance(model, nn.Module):
        raise EieError(f"model must be a torch nn.Module (e.g. eie.build_model(...)), not {type(model).__name__}")
    if data is not None and not isinstance(data, Dataset):
        raise EieError(f"data must be a data set from eie.load_data(...), not {type(data).__name__}")


def _chain(model):
    """`model` as the nn.Sequential the flow works on: itself, or the chain of layers its forward runs,
    sharing them (so pruning it prunes `model`)."""
    from eie.sw.imports import as_sequential
    from eie.sw.models import LAYER_TYPES
    return as_sequential(model, LAYER_TYPES)


def load_data(name="fashion-mnist", data_dir=None):
    """A data set: "fashion-mnist" (Debian's package), "mnist" (any MNIST-format IDX folder, `data_dir`) or
    "digits" (scikit-learn's 8x8 digits). Fields x_train, y_train, x_test, y_test (torch tensors), classes."""
    from eie.sw.data import load_dataset
    return load_dataset(name, None if data_dir is None else Path(data_dir))


def build_model(arch, data, seed=0):
    """A fresh network for `data`'s images: "lenet-300-100", "lenet-5", or layer sizes such as "300-100"
    (a ReLU multi-layer perceptron; input and class counts come from the data), its weights initialized from
    `seed` (as `eie prune --seed` does), so a run can be repeated."""
    from eie.sw import models, train as _train
    _train.seed_everything(seed)
    return models.build(arch, data.input_shape, data.classes)


def train(model, data, training=None, desc="train", threads=1, log=_stderr):
    """Train `model` on `data` in place, on `threads` torch threads (as the commands' default); returns the test
    accuracy in percent. Progress: a bar on a terminal, else one line per epoch to `log`."""
    from eie.sw import train as _train
    _check_model(model, data)
    with _train.torch_threads(threads):
        (training or Training(epochs=20, lr=0.05)).fit(model, data, desc, log=log or _quiet)
        return _train.evaluate(model, data.x_test, data.y_test)


def _quiet(message):
    """`log=None`: say nothing."""


def prune(model, data, quality=None, iterations=5, retraining=None, final_epochs=None, remove_dead=True,
          arch=None, log=_stderr, threads=1, method="magnitude", sparsity=None, calibration=None):
    """Prune a trained `model` in place. `method` "magnitude" (the default) is Han et al. 2015: `iterations`
    steps of magnitude pruning (threshold = quality x std of each layer's dense weights, ramped up) with
    retraining, then `final_epochs` (default 15) of retraining; `quality`: one number, {layer: number}, or None
    for the tuned defaults of `arch`. "wanda" removes `sparsity` (default 0.5) of each row's weights, lowest
    |W| x input norm first, the norms measured on `calibration` (images shaped as `data`'s, or a number of
    training images; default 512); "2:4" (any "N:M") keeps the N largest of every M consecutive inputs of a
    row. Wanda and N:M retrain `final_epochs` (default 0, as published). Pruned weights stay masked as
    `torch.nn.utils.prune` leaves them. Returns the figures (Table 2 of the paper, the schedule or method); the
    `CompressedModel` that `compress` makes of `model` keeps them for `save`."""
    from eie.sw.pipeline import prune_network
    from eie.sw.train import torch_threads
    _check_model(model, data)
    retraining = retraining or Training(epochs=5, lr=0.02, l2=5e-4)
    started = time.perf_counter()
    with torch_threads(threads):
        figures = prune_network(_chain(model), data, quality, iterations, retraining, final_epochs, remove_dead,
                                arch, log or _quiet, method, sparsity, calibration)
    _PRUNED[model] = {**figures, "model": arch, "timings": {"prune": round(time.perf_counter() - started, 1)}}
    return figures


def compress(model, data, config=None, init="linear", finetuning=None, calibration=2000, placement="balanced",
             log=_stderr, threads=1):
    """Deep Compression on a pruned (or dense) `model`: weight sharing with a codebook of
    2^config.weight_index_bits entries (entry 0 is zero), centroid fine-tuning, the chip's fixed point and
    the chip image for `config`'s PE count and widths: the standard chip (`ChipConfig.standard`, memories fixed,
    one simulator build for every model that fits), else one whose memories are fitted to the model.
    `placement`: "balanced" places each layer's rows on the PEs to even out their work, pairing PEs on layers
    with few rows per PE (`eie.sw.placement`), "interleaved" keeps EIE's row i -> PE i mod N. `model` itself is
    left as it is. Returns a `CompressedModel`, with the pruning figures where `prune` made `model`."""
    from eie.sw import models
    from eie.sw.pipeline import compress_network
    from eie.sw.train import torch_threads
    _check_model(model, data)
    started = time.perf_counter()
    log = log or _quiet
    config = config or ChipConfig()
    if not isinstance(config, ChipConfig):
        raise EieError(f"config must be a ChipConfig, not {type(config).__name__}")
    finetuning = finetuning or Training(epochs=2, lr=1e-4, l2=0.0)
    with torch_threads(threads):
        network, ops, in_frac, layers, figures = compress_network(models.clone(_chain(model)), data, config, init,
                                                                  finetuning, calibration, log, placement)
    from eie.sw.image import chip_image
    image, standard = chip_image(layers, config, placement=placement)
    if not standard:
        log(f"the model does not fit the standard {config.pes}-PE chip: using one sized to it (a build of its own)")
    cm = CompressedModel(image, ops, in_frac, network, data.identity(), figures)
    accuracy = cm.accuracy(data.x_test, data.y_test)
    figures["fixed_point_accuracy"] = accuracy
    log(f"fixed point (as the chip computes) {accuracy:.2f}%")
    if model in _PRUNED:
        cm.pruning = _PRUNED[model]
    figures["timings"] = {"compress": round(time.perf_counter() - started, 1)}
    return cm


def load(run_dir):
    """The `CompressedModel` a run folder holds (image.npz, host.npz, compressed.pt, report.json)."""
    from eie.sw.host import load_front
    from eie.sw.image import load_image
    from eie.sw.runs import RunFolder
    run = RunFolder(run_dir)
    if not run.path.is_dir():
        raise EieError(f"{run.path} is not a run folder")
    if not run.has("image.npz"):
        raise EieError(f"{run.path} has no compressed model (image.npz): run 'eie compress {run.path}' first")
    image = load_image(run / "image.npz")
    ops, in_frac = load_front(run / "host.npz") if run.has("host.npz") else ([], image.fracs[0][0])
    network = None
    if run.has("compressed.pt"):
        from eie.sw import models
        network = models.load_checkpoint(run / "compressed.pt")[0]
    report = run.report()
    return CompressedModel(image, ops, in_frac, network, report.get("data"), report.get("compress", {}))


@dataclass(repr=False)
class ChipRun:
    """What `CompressedModel.simulate` returns: the chip's outputs beside the reference's, and the figures.
    `outputs` are the integers the chip computes, `predict()`'s values times 2**out_frac; `scores` are those
    values."""
    outputs: np.ndarray     # (samples, classes) integer outputs of the chip's last layer, in the model's order
    reference: np.ndarray   # the same from the bit-exact reference
    figures: dict           # cycles, per-layer figures, energy, SRAM, speed (JSON-able)
    out_frac: int = 0       # fraction bits of `outputs`

    def __repr__(self):
        f = self.figures
        return (f"ChipRun({len(self.outputs)} samples on a {f.get('chip', {}).get('pes')}-PE chip, "
                f"{len(self.mismatches)} mismatches, {f.get('cycles_per_image')} cycles per image)")

    @property
    def scores(self):
        """The chip's outputs as floats, as `CompressedModel.predict` gives them."""
        from eie.sw.quant import from_fixed
        return from_fixed(self.outputs, self.out_frac)

    @property
    def mismatches(self):
        """Indices of the samples whose outputs differ from the reference."""
        return np.flatnonzero((self.outputs != self.reference).any(axis=1))

    @property
    def predictions(self):
        return self.outputs.argmax(axis=1)


@dataclass(repr=False)
class CompressedModel:
    """A compressed network as the chip runs it: the chip image (`image`, for `config`), the host's fixed-point
    convolutions when the network has a convolutional front (`host_ops`, at input scale `in_frac`), the
    weight-shared float network (`network`, for its float accuracy), the data set it was made with, the
    compression figures and, where `eie.prune` made the model in this session, the pruning figures (`pruning`,
    which `save` writes as `eie prune` does)."""
    image: object
    host_ops: list
    in_frac: int
    network: object = None
    data: dict = None
    figures: dict = field(default_factory=dict)
    pruning: dict = None

    def __repr__(self):
        sizes = "-".join(str(n) for n in [self.layers[0].cols, *(q.rows for q in self.layers)])
        accuracy = self.figures.get("fixed_point_accuracy")
        return (f"CompressedModel({len(self.layers)} layers {sizes}{', host convolutions' if self.host_ops else ''}"
                f" on a {self.config.pes}-PE chip, {self.config.index_bits}-bit indices, "
                f"{self.config.codebook_size}-entry codebooks"
                + (f", fixed-point accuracy {accuracy}%" if accuracy is not None else "")
                + (f", data {self.data['name']}" if self.data else "") + ")")

    @property
    def config(self):
        return self.image.config

    @property
    def layers(self):
        """QuantLayers decoded from the image, rows as the chip holds them: the reference runs on exactly
        what the chip holds."""
        if getattr(self, "_layers", None) is None:
            self._layers = self.image.quant_layers()
        return self._layers

    @property
    def placement(self):
        """How the rows were placed on the PEs ("balanced" or "interleaved"); a re-layout places them so too."""
        return self.figures.get("placement", "interleaved")

    def dataset(self):
        """The data set this model was compressed with (as recorded)."""
        if not self.data:
            raise EieError("this model does not record its data set: load one with eie.load_data(...) and pass "
                           "its images")
        return load_data(self.data["name"], self.data.get("data_dir"))

    # -- the input contract and the reference --------------------------------------------------------------
    def check_images(self, x) -> np.ndarray:
        """Images of your own (numpy, torch or lists; samples first, each image flat or in the data set's shape)
        as the float array the model takes; the wrong dtype or shape refused in one line (`EieError`): no
        samples, integers where the model was calibrated on floats, another number of values per image."""
        from eie.sw.host import as_images
        x = as_images(x, self.figures.get("input"))
        if not self.host_ops and x[0].size != self.layers[0].cols:
            raise EieError(f"the chip's first layer takes {self.layers[0].cols} inputs but these images give "
                           f"{x[0].size}: use the data set the model was made for")
        return x

    def check_labels(self, y, samples: int) -> np.ndarray:
        """Labels of your own for `samples` images as an integer array, one class (0..outputs-1) per image;
        anything else refused in one line (`EieError`)."""
        from eie.sw.host import as_labels
        return as_labels(y, samples, self.layers[-1].rows)

    def inputs(self, x):
        """Float images (torch or numpy, samples first) -> integer inputs of the chip's first layer. Images are
        checked as `check_images` does; an `InputRangeWarning` says when more than 1% of the values lie outside
        the calibrated range (`input_range`), as they saturate."""
        from eie.sw.host import check_range, chip_inputs
        x = self.check_images(x)
        check_range(x, self.figures.get("input"))
        x_int = chip_inputs(x, self.in_frac, self.host_ops, self.config)
        if x_int.shape[1] != self.layers[0].cols:
            raise EieError(f"the chip's first layer takes {self.layers[0].cols} inputs but these images give "
                           f"{x_int.shape[1]}: use the data set the model was made for")
        return x_int

    @property
    def input_range(self):
        """(min, max) of the values the model was calibrated on, or None where the run does not record it."""
        record = self.figures.get("input")
        return (record["min"], record["max"]) if record else None

    def reference(self, x_int):
        """Integer outputs of every layer for integer inputs (the bit-exact reference), each in the row order
        the chip holds; `image.unpermute` gives the model's order."""
        from eie.sw.reference import forward
        return forward(self.layers, x_int, self.config)

    def predict(self, x):
        """The network's outputs (floats, at the last layer's scale) for images `x`, bit-exact as the chip
        computes them; `.argmax(1)` gives the classes."""
        from eie.sw.quant import from_fixed
        return from_fixed(self.image.unpermute(self.reference(self.inputs(x))[-1]), self.layers[-1].out_frac)

    def accuracy(self, x, y):
        """Top-1 accuracy (%) of the chip's arithmetic on images `x` with labels `y` (checked as `check_labels`
        does); for float `y` (a regressor's targets), R² in percent (`eie.sw.train.r2_percent`)."""
        scores = self.predict(x)
        if (y.is_floating_point() if hasattr(y, "is_floating_point") else np.asarray(y).dtype.kind == "f"):
            from eie.sw.train import r2_percent
            return round(r2_percent(scores, y.numpy() if hasattr(y, "numpy") else y), 2)
        return round(100.0 * float((scores.argmax(1) == self.check_labels(y, len(scores))).mean()), 2)

    # -- chips ---------------------------------------------------------------------------------------------
    def relayout(self, **changes):
        """This model on a chip like its own with `changes` (e.g. pes=4, index_bits=5); memory depths not named
        are the standard chip's, or fitted to the model when it does not fit that. No change gives the model
        back as it is."""
        from eie.sw.image import SIZED_FIELDS, chip_image
        if "weight_index_bits" in changes and changes["weight_index_bits"] != self.config.weight_index_bits:
            raise EieError(f"the model has {self.config.codebook_size}-entry codebooks "
                           f"({self.config.weight_index_bits}-bit weight indices), not "
                           f"{changes['weight_index_bits']}-bit: compress it again for that chip")
        config = self.config.replace(**changes)
        if config == self.config:
            return self
        keep = [f for f in SIZED_FIELDS if f in changes]
        image, _ = chip_image(self.image.model_layers(), config, keep, placement=self.placement)
        return CompressedModel(image, self.host_ops, self.in_frac, self.network, self.data, self.figures,
                               self.pruning)

    def estimate(self, x, model_samples=100):
        """Cycles, utilization and energy from the performance model (no simulator). The cycle model steps
        every cycle in Python, so only the first `model_samples` images are predicted; work, balance and
        energy cover all of `x`."""
        from eie.sw.perf import network_figures
        x_int = self.inputs(x)
        perfs = self._perfs(x_int, self.reference(x_int), model_samples)
        return {"samples": len(x_int), "model_samples": min(model_samples, len(x_int)),
                **network_figures(perfs, self.config), "storage": self.storage(), "chip": self.config.to_dict()}

    def _perfs(self, x_int, refs, model_samples):
        from eie.sw.perf import layer_perf
        inputs = [x_int] + refs[:-1]
        encs = self.image.encoded_layers()
        return [layer_perf(enc, a, self.config, model_samples, last=l == len(encs) - 1)
                for l, (enc, a) in enumerate(zip(encs, inputs))]

    def simulate(self, x, log=None, model_samples=20, waves=None, waves_sample=0, mismatch_waves=None, jobs=None,
                 scheduler=None, labels=None):
        """Run images `x` through the Verilator-simulated chip (built once per chip configuration, cached) and
        compare every output with the reference. Returns a `ChipRun`. Up to `jobs` simulator processes (default:
        the cores) share the samples on a Dask local cluster, one per 2,000 samples, as fewer do not repay a
        process's start (`eie.cosim.campaign.workers_for`); works from a script without a `__main__` guard. Or
        the workers of the Dask cluster at `scheduler`. The results are those of one process. `waves` writes a
        VCD of sample `waves_sample`; on a mismatch, the first one is traced to its layer and row (recorded in
        `mismatch_waves` if given). With `labels` (one class per image), the run's figures give the chip's and
        the reference's accuracy."""
        from eie.cosim.build import build
        from eie.cosim.sim import simulate
        from eie.sw.perf import network_figures
        from eie.sw.storage import sram
        x_int = self.inputs(x)
        labels = None if labels is None else self.check_labels(labels, len(x_int))
        if waves is not None and not 0 <= waves_sample < len(x_int):
            raise EieError(f"waves_sample must be one of the {len(x_int)} samples, 0..{len(x_int) - 1}, "
                           f"not {waves_sample}")
        refs = self.reference(x_int)
        build(self.config, log=log or _stderr)       # outside the timing: once per configuration, said when it runs
        t0 = time.perf_counter()
        with _progress(len(x_int), f"chip ({self.config.pes} PEs)") as bar:
            parts = _chip_chunks(self.image, x_int, jobs, scheduler, log, bar.update)
        outputs = [r.outputs for r in parts]
        cycles = [r.layer_cycles for r in parts]
        sim_s, sim_cycles = sum(r.sim_seconds for r in parts), sum(r.sim_cycles for r in parts)
        wall = time.perf_counter() - t0
        outputs, cycles = np.concatenate(outputs), np.concatenate(cycles)
        figures = {"samples": len(x_int), "chip": self.config.to_dict(),
                   **network_figures(self._perfs(x_int, refs, model_samples), self.config, cycles),
                   "sim_cycles_per_s": round(sim_cycles / sim_s) if sim_s else None,
                   "images_per_s": round(len(x_int) / wall, 1), "sim_wall_seconds": round(wall, 1),
                   "sram": sram(self.image)}
        run = ChipRun(self.image.unpermute(outputs), self.image.unpermute(refs[-1]), figures, self.layers[-1].out_frac)
        figures["mismatches"] = len(run.mismatches)
        if labels is not None:
            figures["chip_accuracy"] = round(100 * float((run.predictions == labels).mean()), 2)
            figures["reference_accuracy"] = round(100 * float((run.reference.argmax(1) == labels).mean()), 2)
        if len(run.mismatches):
            found = self.trace_mismatch(x_int, refs, int(run.mismatches[0]), mismatch_waves, log)
            if found:
                figures["first_mismatch"] = found
        if waves is not None:
            simulate(self.image, x_int[waves_sample:waves_sample + 1], waves=waves, log=log)
            figures["waveform"] = str(waves)
        return run

    def trace_mismatch(self, x_int, refs, sample, waves=None, log=None):
        """Rerun one sample with growing layer chains to find the first layer and row that differ; with
        `waves`, record that run as a VCD. Returns {layer, row, chip, reference, ...} or None."""
        from eie.cosim.sim import simulate
        from eie.sw.image import build_image
        for l in range(len(self.layers)):       # the layers as the chip holds them, paired as they ran
            sub = build_image(self.layers[:l + 1], self.config, pairs=[d.paired for d in self.image.layers[:l + 1]])
            got = simulate(sub, x_int[sample:sample + 1], log=log).outputs[0]
            rows = np.flatnonzero(got != refs[l][sample])
            if len(rows):
                found = {"sample": sample, "layer": l, "row": int(rows[0]), "chip": int(got[rows[0]]),
                         "reference": int(refs[l][sample][rows[0]])}
                if waves is not None:
                    simulate(sub, x_int[sample:sample + 1], waves=waves, log=log)
                    found["waveform"] = str(waves)
                return found
        return None

    def storage(self, per_pe=False):
        """Bytes by part on this model's chip (`eie.sw.storage.storage`)."""
        from eie.sw.storage import storage
        return storage(self.image.model_layers(), self.config, self.host_ops, per_pe, self.placement)

    def verilog(self, path):
        """Write the Verilog of this model's chip to `path`."""
        from eie.cosim.build import write_verilog
        write_verilog(self.config, path)
        return Path(path)

    # -- files ---------------------------------------------------------------------------------------------
    def save(self, run_dir, force=False):
        """Write image.npz, host.npz (networks with convolutions), compressed.pt and the figures into a run
        folder, with the data set and chip recorded so that `eie.load` / `eie run` can run it again."""
        from eie.sw import models
        from eie.sw.host import save_front
        from eie.sw.runs import RunFolder, atomic_write
        run = RunFolder(run_dir, ["image.npz", "host.npz", "compressed.pt"], force, "save(..., force=True)")
        self.image.save(run.output("image.npz"))
        if self.host_ops:
            atomic_write(run.output("host.npz"), lambda f: f.write(save_front(self.host_ops, self.in_frac)))
        elif run.has("host.npz"):   # left by an earlier, convolutional model: `eie run` would use it
            (run / "host.npz").unlink()
        if self.network is not None:
            models.save_checkpoint(run.output("compressed.pt"), self.network, data=(self.data or {}).get("name"))
        figures = dict(self.figures)
        pruning = dict(self.pruning or {})
        timings = {**pruning.pop("timings", {}), **figures.pop("timings", {})}
        layers = figures.pop("layers", {})
        pruned_layers = pruning.pop("layers", {})
        layers = {n: {**pruned_layers.get(n, {}), **layers.get(n, {})} for n in {**pruned_layers, **layers}}
        # a dense model's size is the one before pruning removed dead neurons, as `eie prune` records it
        dense_parameters = (pruning.get("dense_parameters") or run.report().get("dense_parameters")
                            or figures.get("dense_parameters", 0))
        dense_bytes = 4 * dense_parameters
        own = figures.get("storage_bytes", {}).get(f"{self.config.index_bits}-bit", {})
        ratio = {n: round(dense_bytes / s["total"], 2) for n, s in own.items()}
        huffman = {n: round(dense_bytes / s["total_huffman"], 2) for n, s in own.items() if "total_huffman" in s}
        entries = {**{k: v for k, v in pruning.items() if v is not None},
                   "compress": {**figures, "chip": self.config.to_dict(), "image": "image.npz"}, "layers": layers}
        if timings:
            entries["timings"] = timings
        if "fixed_point_accuracy" in figures:
            entries["compressed_accuracy"] = figures["fixed_point_accuracy"]
        if ratio:
            entries.update(dense_bytes=dense_bytes, storage_ratio=ratio.get("1"), storage_ratio_by_pes=ratio)
        if huffman:
            entries.update(storage_ratio_huffman=huffman.get("1"), storage_ratio_huffman_by_pes=huffman)
        if self.data:
            entries["data"] = self.data
        return run.update_report(**entries)


def _chip_chunks(image, x_int, jobs, scheduler, log, update):
    """SimResults for `x_int` in order: in this process, or spread over `jobs` processes / a Dask cluster."""
    from eie.cosim.campaign import SIM_CHUNK, run_tasks, workers_for
    from eie.cosim.sim import simulate_task
    n = len(x_int)
    workers = workers_for(n, jobs)
    if workers == 1 and not scheduler:
        parts = []
        for start in range(0, n, SIM_CHUNK):
            parts.append(simulate_task((image, x_int[start:start + SIM_CHUNK])))
            update(len(parts[-1].outputs))
        return parts
    size = min(SIM_CHUNK, -(-n // workers))
    starts = range(0, n, size)
    if log:
        log(f"{n} samples in {len(starts)} chunks over {'the cluster at ' + scheduler if scheduler else f'{workers} processes'}")
    chunks = [(image, x_int[a:a + size]) for a in starts]
    parts, failed = run_tasks(simulate_task, chunks, workers, scheduler, progress=lambda k: update(len(chunks[k][1])))
    if failed:
        raise EieError("simulation chunks failed: " + "; ".join(
            f"samples {starts[k]}..{min(starts[k] + size, n) - 1}: {why}" for k, why in failed.items()))
    return parts


def _progress(total, desc):
    from eie.sw.train import progress
    return progress(total, desc, unit="img")
