"""Networks: LeNet-300-100 and LeNet-5 as in Han et al. 2015 (Caffe's definitions), and any user `nn.Sequential`
of the layer types below, saved and loaded as checkpoints that rebuild without running pickled code.

A checkpoint is a dict: the layer list (``spec``), a plain state dict with pruned weights at zero, the pruning
masks by layer name, and free-form ``meta``. Plain state dicts and `torch.save(model)` of an allowed
`nn.Sequential` load too.
"""

from collections import OrderedDict
from pathlib import Path
import re

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from eie.errors import EieError

__all__ = ["ARCHITECTURES", "LAYER_TYPES", "lenet_300_100", "lenet5", "perceptron", "build", "spec", "from_spec", "describe",
           "check_input", "check_same_network", "clone", "front", "fully_connected", "save_checkpoint", "load_checkpoint"]

CHECKPOINT_FORMAT = "eie-checkpoint-1"

# Layer type -> (constructor arguments kept in a spec, names in the checkpoint).
_LAYERS = {
    nn.Linear: ("in_features", "out_features", "bias"),
    nn.Conv2d: ("in_channels", "out_channels", "kernel_size", "stride", "padding", "bias"),
    nn.ReLU: (),
    nn.Dropout: ("p",),
    nn.Flatten: (),
    nn.MaxPool2d: ("kernel_size", "stride"),
}
_BY_NAME = {cls.__name__: cls for cls in _LAYERS}
LAYER_TYPES = tuple(_LAYERS)     # what a network may be made of


def lenet_300_100(input_shape=(1, 28, 28), classes=10):
    """Fully connected 300-100 network (267K weights on 28x28 images)."""
    inputs = int(torch.tensor(input_shape).prod())
    return nn.Sequential(OrderedDict([
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(inputs, 300)), ("relu1", nn.ReLU()),
        ("fc2", nn.Linear(300, 100)), ("relu2", nn.ReLU()),
        ("fc3", nn.Linear(100, classes)),
    ]))


def lenet5(input_shape=(1, 28, 28), classes=10):
    """Caffe's LeNet-5: two 5x5 convolutions (20, 50 maps) with max pooling, then 500 and `classes` units
    (431K weights on 28x28 images). As in Caffe, only the hidden fully connected layer has a ReLU."""
    channels, height, width = input_shape
    if min(height, width) < 16:
        raise EieError(f"lenet-5 needs images of at least 16x16 pixels, not {height}x{width}; "
                       "use lenet-300-100 for small images")
    flat = 50 * (((height - 4) // 2 - 4) // 2) * (((width - 4) // 2 - 4) // 2)
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(channels, 20, 5)), ("pool1", nn.MaxPool2d(2, 2)),
        ("conv2", nn.Conv2d(20, 50, 5)), ("pool2", nn.MaxPool2d(2, 2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(flat, 500)), ("relu1", nn.ReLU()),
        ("fc2", nn.Linear(500, classes)),
    ]))


def perceptron(hidden, input_shape=(1, 28, 28), classes=10):
    """A ReLU multi-layer perceptron with `hidden` unit counts (LeNet-300-100 is hidden=(300, 100)); layers are
    named fc1, relu1, fc2, ... as in LeNet-300-100."""
    sizes = [int(torch.tensor(input_shape).prod()), *hidden, classes]
    layers = [("flatten", nn.Flatten())]
    for k in range(1, len(sizes)):
        layers.append((f"fc{k}", nn.Linear(sizes[k - 1], sizes[k])))
        if k < len(sizes) - 1:
            layers.append((f"relu{k}", nn.ReLU()))
    return nn.Sequential(OrderedDict(layers))


ARCHITECTURES = {"lenet-300-100": lenet_300_100, "lenet-5": lenet5}
_SIZES = re.compile(r"\d+(-\d+)*")


def build(name, input_shape, classes):
    """A network by name, or a perceptron by hidden sizes ("500-200"; the data set gives inputs and classes)."""
    if name in ARCHITECTURES:
        return ARCHITECTURES[name](tuple(input_shape), classes)
    if isinstance(name, str) and _SIZES.fullmatch(name) and all(int(h) > 0 for h in name.split("-")):
        return perceptron([int(h) for h in name.split("-")], tuple(input_shape), classes)
    raise EieError(f"unknown model {name!r}: choose one of {', '.join(ARCHITECTURES)}, hidden layer sizes such "
                   "as 500-200, or give --checkpoint FILE with your own nn.Sequential")


def spec(model):
    """The layer list of an `nn.Sequential` as plain data: [(name, type, {argument: value}), ...]."""
    if not isinstance(model, nn.Sequential):
        raise EieError(f"the network must be an nn.Sequential, not {type(model).__name__}")
    layers = []
    for name, layer in model.named_children():
        if type(layer) not in _LAYERS:
            raise EieError(f"layer {name} is a {type(layer).__name__}; supported layers are "
                           f"{', '.join(_BY_NAME)}")
        args = {a: getattr(layer, a) for a in _LAYERS[type(layer)]}
        if "bias" in args:
            args["bias"] = layer.bias is not None
        layers.append((name, type(layer).__name__, args))
    return layers


def from_spec(layers):
    try:
        return nn.Sequential(OrderedDict((name, _BY_NAME[kind](**args)) for name, kind, args in layers))
    except (KeyError, TypeError, ValueError) as e:
        raise EieError(f"checkpoint has an unusable layer list ({e}); re-save it with this version") from None


def describe(layers):
    """One line naming the layers, for messages: 'fc1 Linear(784->300), relu1 ReLU, ...'."""
    def one(name, kind, args):
        if kind == "Linear":
            return f"{name} Linear({args['in_features']}->{args['out_features']})"
        if kind == "Conv2d":
            return f"{name} Conv2d({args['in_channels']}->{args['out_channels']})"
        return f"{name} {kind}"
    return ", ".join(one(*layer) for layer in layers)


def check_input(model, data):
    """Refuse a network that cannot take `data`'s images or does not give one output per class (a regressor's
    data set, with float targets: one per target)."""
    input_shape = data.input_shape
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, *input_shape))
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise EieError(f"the network does not accept {'x'.join(map(str, input_shape))} images ({first}); "
                       "pick a data set it was built for") from None
    if out.shape[1:] == (data.outputs,):
        return
    if data.regression:
        raise EieError(f"the network gives {tuple(out.shape[1:])} outputs, the data set's float targets have "
                       f"{data.outputs} per image")
    raise EieError(f"the network gives {tuple(out.shape[1:])} outputs, the data set has {data.classes} classes; "
                   "a regressor (e.g. an MLPRegressor) takes float targets: dataclasses.replace(data, "
                   "y_train=data.y_train.float(), y_test=data.y_test.float())")


def check_same_network(reference, model, reference_name, name):
    """Refuse `model` as a replacement for `reference` unless it is the same network: the same layers in order,
    the same input and output sizes, and hidden layers no wider than the reference's (removing dead neurons
    only narrows them)."""
    want, got = spec(reference), spec(model)
    def linear_sizes(layers):
        return [(a["in_features"], a["out_features"]) for _, kind, a in layers if kind == "Linear"]
    same = [(n, k) for n, k, _ in want] == [(n, k) for n, k, _ in got]
    if same:
        convs = lambda layers: [a for _, k, a in layers if k == "Conv2d"]
        a, b = linear_sizes(want), linear_sizes(got)
        same = (convs(want) == convs(got) and a[0][0] == b[0][0] and a[-1][1] == b[-1][1]
                and all(y[1] <= x[1] for x, y in zip(a[:-1], b[:-1])))
    if not same:
        raise EieError(f"{name} holds another network than {reference_name}: [{describe(got)}] instead of "
                       f"[{describe(want)}]; use a new run folder for another network")


def front(model):
    """The modules before the first Linear layer, as [(name, module)], when they need the host (a Conv2d or
    MaxPool2d among them, see `eie.sw.host`); [] for a fully connected network, whose Flatten the chip's
    input layout already is."""
    children = list(model.named_children())
    first = next((i for i, (_, c) in enumerate(children) if isinstance(c, nn.Linear)), len(children))
    if any(isinstance(c, (nn.Conv2d, nn.MaxPool2d)) for _, c in children[:first]):
        return children[:first]
    return []


def fully_connected(model):
    """The Linear layers the chip runs, from the first Linear on (what precedes it is the `front`), as
    [(name, linear, relu_follows)]; an `EieError` if a layer there is not Linear/ReLU/Dropout."""
    layers, children = [], list(model.named_children())
    for i, (name, layer) in enumerate(children):
        if isinstance(layer, nn.Linear):
            after = [c for _, c in children[i + 1:] if not isinstance(c, nn.Dropout)]
            layers.append((name, layer, bool(after) and isinstance(after[0], nn.ReLU)))
        elif layers and not isinstance(layer, (nn.ReLU, nn.Dropout)):
            raise EieError(f"layer {name} ({type(layer).__name__}) comes after a Linear layer; the chip runs only "
                           "Linear/ReLU/Dropout there (convolutions go before the first Linear layer)")
    if not layers:
        raise EieError("the network has no Linear layer")
    return layers


def _state(model):
    """(plain state dict with pruned weights at zero, {layer: bool mask}). Re-parametrizations are folded
    away so the state dict loads into a plain copy: torch's pruning (weight_orig * weight_mask) and weight
    sharing (codebook [0, weight_centroids...] indexed by weight_index, see `eie.sw.compress`)."""
    state, masks = {}, {}
    for name, layer in model.named_children():
        for key, value in layer.state_dict().items():
            if key == "weight_mask":
                masks[name] = value.bool().clone()
            elif key == "weight_orig":
                state[f"{name}.weight"] = (value * layer.weight_mask).detach().clone()
            elif key == "weight_index":
                centroids = layer.weight_centroids.detach()
                state[f"{name}.weight"] = torch.cat([centroids.new_zeros(1), centroids])[value].clone()
            elif key != "weight_centroids":
                state[f"{name}.{key}"] = value.detach().clone()
    return state, masks


def clone(model):
    """A copy of `model` with its pruning masks (`copy.deepcopy` fails on torch's pruning reparametrization);
    weight-shared layers come out as plain weights."""
    from eie.sw.prune import apply_masks
    state, masks = _state(model)
    twin = from_spec(spec(model))
    twin.load_state_dict(state)
    apply_masks(twin, masks)
    return twin


def save_checkpoint(path, model, **meta):
    """Write `model` (pruned or not) and `meta` to `path` atomically."""
    from eie.sw.runs import atomic_write
    state, masks = _state(model)
    data = {"format": CHECKPOINT_FORMAT, "spec": spec(model), "state": state, "masks": masks, "meta": meta}
    atomic_write(path, lambda f: torch.save(data, f))


def load_checkpoint(path, expect=None):
    """(model, masks, meta) from `path`. `expect` is a spec the checkpoint must match (same layers and
    sizes); masks are returned, not applied, so the caller decides whether to keep pruning."""
    path = Path(path)
    if not path.is_file():
        raise EieError(f"no checkpoint at {path}")
    allowed = [nn.Sequential, *_LAYERS, *_TORCH_PRUNING]
    try:
        with torch.serialization.safe_globals(allowed):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file; all mean the same to the user
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if found:
            raise EieError(f"cannot load checkpoint {path}: it holds a {found.group(1).rsplit('.', 1)[-1]} "
                           f"({found.group(1)}), which the chip does not run; supported layers are "
                           f"{', '.join(_BY_NAME)}") from None
        why = (str(e).splitlines() or [type(e).__name__])[0]
        raise EieError(f"cannot load checkpoint {path}: {why[:200]} (expected torch.save() of an eie checkpoint, "
                       f"of an nn.Sequential of {', '.join(_BY_NAME)}, or of its state_dict)") from None
    masks, meta = {}, {}
    if isinstance(data, nn.Module):   # torch.save(model): fold any reparametrization away into a plain copy
        layers = spec(data)
        state, masks = _state(data)
        model = from_spec(layers)
        _load_state(model, state, path)
    elif isinstance(data, dict) and data.get("format") == CHECKPOINT_FORMAT:
        layers, masks, meta = data["spec"], data["masks"], data["meta"]
        model = from_spec(layers)
        _load_state(model, data["state"], path)
    elif isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) for v in data.values()):
        if expect is None:
            raise EieError(f"{path} is a bare state dict, which does not say what network it belongs to: "
                           "name the architecture (--model)")
        layers = expect
        model = from_spec(layers)
        state, masks = _fold_pruning(data)
        _load_state(model, state, path)
        if masks:   # torch's names are positional for an unnamed Sequential: follow the state dict's order
            masks = _rename_masks(model, state, masks)
    else:
        raise EieError(f"{path} is not a checkpoint (expected an eie checkpoint, a state dict or an nn.Sequential)")
    if expect is not None and _shape_of(layers) != _shape_of(expect):
        raise EieError(f"{path} holds another architecture: [{describe(layers)}], expected [{describe(expect)}]")
    return model, masks, meta


# What a pickled model carrying torch.nn.utils.prune's reparametrization holds besides layers.
_TORCH_PRUNING = [torch_prune.PruningContainer, torch_prune.CustomFromMask, torch_prune.Identity,
                  torch_prune.RandomUnstructured, torch_prune.L1Unstructured, torch_prune.RandomStructured,
                  torch_prune.LnStructured]


def _fold_pruning(state):
    """A state dict with torch's `X.weight_orig` / `X.weight_mask` -> (plain state with `X.weight` = orig x
    mask, {X: bool mask}). Keys keep the order a plain module's state dict has (weight before bias), so that a
    state dict of an unnamed Sequential still loads by position."""
    plain, masks = {}, {}
    for key, value in state.items():
        if key.endswith(".weight_mask"):
            continue
        if key.endswith(".weight_orig"):
            layer = key[:-len(".weight_orig")]
            mask = state.get(f"{layer}.weight_mask")
            if mask is None:
                raise EieError(f"state dict has {key} but no {layer}.weight_mask: not a torch-pruned layer")
            plain[f"{layer}.weight"] = value * mask
            masks[layer] = mask.bool()
        else:
            plain[key] = value
    layers = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in plain))
    order = {layer: i for i, layer in enumerate(layers)}
    rank = lambda k: (order[k.rsplit(".", 1)[0]], k.rsplit(".", 1)[1] != "weight")
    return {k: plain[k] for k in sorted(plain, key=rank)}, masks


def _rename_masks(model, state, masks):
    """Masks keyed by the state dict's layer names -> keyed by `model`'s layer names (loaded by position)."""
    own = [k[:-len(".weight")] for k in model.state_dict() if k.endswith(".weight")]
    theirs = [k[:-len(".weight")] for k in state if k.endswith(".weight")]
    names = dict(zip(theirs, own)) if len(own) == len(theirs) else {}
    return {names.get(k, k): m for k, m in masks.items()}


def _shape_of(layers):
    """What must match for two specs to be the same architecture (layer names may differ)."""
    return [(kind, sorted(args.items())) for _, kind, args in layers]


def _load_state(model, state, path):
    """Load by name, or by position when only the names differ (a state dict of an unnamed Sequential)."""
    own = model.state_dict()
    if set(state) != set(own) and [v.shape for v in state.values()] == [v.shape for v in own.values()]:
        state = dict(zip(own, state.values()))
    try:
        model.load_state_dict(state)
    except RuntimeError:
        weights = ", ".join(f"{k} {'x'.join(map(str, v.shape))}" for k, v in state.items() if k.endswith("weight"))
        raise EieError(f"{path} holds another architecture: [{weights}], expected "
                       f"[{describe(spec(model))}]") from None
