"""The host's share of a network whose front is convolutional (LeNet-5): convolutions and max-pooling in the
chip's fixed-point arithmetic, feeding the fully connected layers that run on the chip.

A convolution is the chip's layer on image patches: 16-bit weights at ``w_frac`` fraction bits, the
accumulator starting at ``bias << shift``, rounded half-up by ``shift``, saturated, ReLU'd if asked
(`eie.sw.reference.requantize`). Max-pooling commutes with that rounding, so it runs on the integers.
"""

from dataclasses import dataclass, field
import io
import json
import warnings

import numpy as np

from eie.errors import EieError, InputRangeWarning
from eie.sw.quant import frac_for, to_fixed
from eie.sw.reference import requantize, wrap

__all__ = ["QuantConv", "MaxPool", "OUT_OF_RANGE_LIMIT", "input_record", "as_images", "as_labels", "check_range", "chip_inputs",
           "quantize_front", "front_forward", "save_front", "load_front"]


@dataclass
class QuantConv:
    weight: np.ndarray   # (out, in, kh, kw) signed fixed point
    bias: np.ndarray     # (out,) at the output scale
    shift: int
    relu: bool
    stride: int = 1
    padding: int = 0
    fracs: tuple = field(default=(0, 0, 0))  # (in_frac, w_frac, out_frac)


@dataclass
class MaxPool:
    kernel: int
    stride: int


def _patches(x, kh, kw, stride, padding):
    """(batch, c, h, w) -> (batch, oh, ow, c * kh * kw)."""
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    b, c, oh, ow = windows.shape[:4]
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(b, oh, ow, c * kh * kw)


def _conv(op, x, config):
    out, _, kh, kw = op.weight.shape
    p = _patches(x, kh, kw, op.stride, op.padding).astype(np.float64)
    # exact in float64 while every sum stays below 2**53 (16-bit by 16-bit products, a few hundred terms)
    acc = (p @ op.weight.reshape(out, -1).T.astype(np.float64)).astype(np.int64)
    acc = wrap(acc + (op.bias.astype(np.int64) << op.shift), config.acc_bits)
    return requantize(acc, op.shift, op.relu, config).transpose(0, 3, 1, 2)


def _pool(op, x):
    w = np.lib.stride_tricks.sliding_window_view(x, (op.kernel, op.kernel), axis=(2, 3))
    return w[:, :, ::op.stride, ::op.stride].max(axis=(-1, -2))


def front_forward(ops, x_int, config, batch=256):
    """Integer (batch, c, h, w) images -> integer (batch, features) inputs of the chip's first layer.
    Images go `batch` at a time: a convolution's patches take hundreds of times an image's memory."""
    x = np.asarray(x_int, np.int64)
    out = []
    for start in range(0, max(len(x), 1), batch):
        part = x[start:start + batch]
        for op in ops:
            part = _conv(op, part, config) if isinstance(op, QuantConv) else _pool(op, part)
        out.append(part.reshape(len(part), -1))
    return np.concatenate(out)


OUT_OF_RANGE_LIMIT = 0.01   # inputs outside the calibrated range beyond this fraction are warned about


def input_record(calibration):
    """What a compressed model records of the inputs it was calibrated on: their dtype and range."""
    x = np.asarray(calibration)
    return {"dtype": str(x.dtype), "min": float(x.min()), "max": float(x.max())}


def as_images(x, record=None):
    """Images as a float array, samples first: torch tensors (with gradients or not) and lists too. Refuses no
    samples, a single unbatched image, and integers where the model was calibrated on floats (`record`)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise EieError(f"inputs must be numbers, not {x.dtype}")
    if x.ndim < 2:
        raise EieError(f"inputs of shape {x.shape} have no samples axis: give (samples, features...), "
                       "e.g. x[None] for one image")
    if not len(x) or not x[0].size:
        raise EieError(f"inputs of shape {x.shape} hold no values: give at least one image")
    if record and x.dtype.kind in "biu" and np.dtype(record["dtype"]).kind == "f":
        raise EieError(f"inputs are {x.dtype} (values {x.min()}..{x.max()}) but the model was calibrated on "
                       f"{record['dtype']} values in [{record['min']:g}, {record['max']:g}]: convert and scale them "
                       "as its training data was")
    return x.astype(np.float64)


def as_labels(y, samples: int, classes: int) -> np.ndarray:
    """Class labels for `samples` images (torch, numpy or a list) as an integer array: one per image, each one
    of 0..classes-1; anything else refused in one line."""
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        raise EieError(f"labels must be integer classes 0..{classes - 1}, not {y.dtype} values")
    if y.shape != (samples,):
        raise EieError(f"labels of shape {y.shape} do not fit {samples} images: give one class per image, "
                       f"shape ({samples},)")
    if len(y) and (y.min() < 0 or y.max() >= classes):
        raise EieError(f"labels must be classes 0..{classes - 1} (the model's outputs), not "
                       f"{y.min()}..{y.max()}")
    return y.astype(np.int64)


def check_range(x, record):
    """Warn (`InputRangeWarning`) when more than `OUT_OF_RANGE_LIMIT` of the values in `x` lie outside the
    range `record` was calibrated on: the chip's fixed point was chosen for that range and saturates beyond."""
    if not record:
        return
    lo, hi = record["min"], record["max"]
    fraction = float(((x < lo) | (x > hi)).mean())
    if fraction > OUT_OF_RANGE_LIMIT:
        warnings.warn(InputRangeWarning(
            f"{100 * fraction:.1f}% of the input values lie outside [{lo:g}, {hi:g}], the range the model was "
            f"calibrated on (largest {np.abs(x).max():g}); they saturate in fixed point and the outputs may be "
            "wrong: scale the inputs as the training data was"), stacklevel=4)


def chip_inputs(images, in_frac, ops, config):
    """The input contract, in one place: float images -> the integers the chip's first layer takes. Images go
    to fixed point at `in_frac`; through the host's convolutions `ops` when the network has a front (LeNet-5),
    else flattened (the chip's input layout is the flattened image)."""
    x = np.asarray(images, np.float64)
    if not np.isfinite(x).all():
        raise EieError("inputs contain NaN or infinite values")
    if ops:
        if x.ndim != 4:
            raise EieError(f"this network's convolutions take (samples, channels, height, width) images, "
                           f"not shape {x.shape}")
        return front_forward(ops, to_fixed(x, in_frac, config.act_bits), config)
    return to_fixed(x.reshape(len(x), -1), in_frac, config.act_bits)


def quantize_front(modules, calib_x, config):
    """Fixed-point ops for a torch front of Conv2d / ReLU / MaxPool2d / Flatten / Dropout modules.

    Scales come from the largest activations on `calib_x` ((n, c, h, w) floats); returns (ops, in_frac,
    out_frac), `out_frac` being the scale of the features handed to the chip."""
    import torch
    from torch import nn
    x = torch.as_tensor(calib_x, dtype=torch.float32)
    in_frac = frac = frac_for(float(x.abs().max()), config.act_bits)
    ops, modules = [], list(modules)
    for i, m in enumerate(modules):
        with torch.no_grad():
            if isinstance(m, nn.Conv2d):
                relu = i + 1 < len(modules) and isinstance(modules[i + 1], nn.ReLU)
                if m.groups != 1 or m.dilation != (1, 1) or len(set(m.stride)) != 1 or len(set(m.padding)) != 1:
                    raise EieError(f"{m}: only square strides and paddings without groups or dilation run here")
                x = m(x)
                x = torch.relu(x) if relu else x
                out_frac = frac_for(float(x.abs().max()), config.act_bits)
                w = m.weight.numpy().astype(np.float64)
                w_frac = max(frac_for(np.abs(w).max(), config.weight_bits), out_frac - frac)
                # as on the chip (`quantize_layer`): a shift this small keeps bias << shift and every in-range
                # output inside the accumulator
                w_frac -= max(0, frac + w_frac - out_frac - (config.acc_bits - config.act_bits - 1))
                bias = m.bias.numpy() if m.bias is not None else np.zeros(m.out_channels)
                ops.append(QuantConv(to_fixed(w, w_frac, config.weight_bits), to_fixed(bias, out_frac, config.act_bits),
                                     frac + w_frac - out_frac, relu, m.stride[0], m.padding[0],
                                     (frac, w_frac, out_frac)))
                frac = out_frac
            elif isinstance(m, nn.MaxPool2d):
                ops.append(MaxPool(m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0],
                                   m.stride if isinstance(m.stride, int) else m.stride[0]))
                x = m(x)
            elif not isinstance(m, (nn.ReLU, nn.Flatten, nn.Dropout)):
                raise EieError(f"the host runs Conv2d, ReLU, MaxPool2d, Flatten and Dropout before the first "
                               f"Linear layer, not {type(m).__name__}")
    return ops, in_frac, frac


def save_front(ops, in_frac):
    """Bytes of an .npz holding `ops` (for the run folder's host.npz)."""
    arrays, spec = {}, []
    for n, op in enumerate(ops):
        if isinstance(op, QuantConv):
            arrays[f"w{n}"], arrays[f"b{n}"] = op.weight, op.bias
            spec.append({"conv": [op.shift, op.relu, op.stride, op.padding, list(op.fracs)]})
        else:
            spec.append({"pool": [op.kernel, op.stride]})
    buf = io.BytesIO()
    np.savez(buf, spec=np.array(json.dumps({"ops": spec, "in_frac": in_frac})), **arrays)
    return buf.getvalue()


def load_front(path):
    """(ops, in_frac) from a host.npz; any damage is a one-line EieError."""
    from eie.sw.archive import read_npz
    fix = "compress again"
    z = read_npz(path, "host-layer file", fix)
    try:
        spec = json.loads(str(z.pop("spec")))
        ops = []
        for n, op in enumerate(spec["ops"]):
            if "conv" in op:
                shift, relu, stride, padding, fracs = op["conv"]
                weight, bias = z[f"w{n}"], z[f"b{n}"]
                if weight.ndim != 4 or bias.shape != weight.shape[:1] or not np.issubdtype(weight.dtype, np.integer):
                    raise ValueError(f"convolution {n} has weights {weight.dtype} {weight.shape}, bias {bias.shape}")
                ops.append(QuantConv(weight, bias, int(shift), bool(relu), int(stride), int(padding),
                                     tuple(int(f) for f in fracs)))
            else:
                kernel, stride = op["pool"]
                ops.append(MaxPool(int(kernel), int(stride)))
        in_frac = int(spec["in_frac"])
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise EieError(f"{path}: not a readable host-layer file ({type(e).__name__}: {e}); {fix}") from None
    return ops, in_frac
