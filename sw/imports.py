"""Networks from elsewhere, as the `nn.Sequential` the flow prunes and compresses: a scikit-learn MLP, an ONNX
graph of Gemm / MatMul+Add / Relu / Flatten, or any `nn.Module` whose forward is a plain chain of supported
layers (traced with torch.fx). Anything else is refused naming the layer or node and its position.
"""

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from eie.errors import EieError

__all__ = ["from_sklearn", "from_onnx", "as_sequential"]

_SKLEARN_ACTIVATIONS = {"relu": nn.ReLU, "identity": None}


def _linear(weight, bias):
    """An nn.Linear holding `weight` (out x in) and `bias` (float32 copies)."""
    weight = np.asarray(weight, np.float32)
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(np.asarray(bias, np.float32).reshape(-1)))
    return layer


def _chain(linears, hidden_relu):
    """Flatten, then fc1, relu1, fc2, ... as `eie.sw.models.perceptron` names them."""
    layers = [("flatten", nn.Flatten())]
    for k, layer in enumerate(linears, 1):
        layers.append((f"fc{k}", layer))
        if hidden_relu and k < len(linears):
            layers.append((f"relu{k}", nn.ReLU()))
    return nn.Sequential(OrderedDict(layers))


def from_sklearn(clf):
    """A fitted `MLPClassifier` or `MLPRegressor` (activation relu or identity) as an `nn.Sequential` whose
    outputs' argmax is `clf.predict` (a classifier: the logits before softmax; a binary one gets two outputs,
    0 and its logit) or whose outputs are `clf.predict` (a regressor)."""
    try:
        from sklearn.neural_network import MLPClassifier, MLPRegressor
    except ImportError:
        raise EieError("importing a scikit-learn model needs scikit-learn: pip install scikit-learn") from None
    if not isinstance(clf, (MLPClassifier, MLPRegressor)):
        raise EieError(f"from_sklearn takes a fitted MLPClassifier or MLPRegressor, not {type(clf).__name__}")
    if not hasattr(clf, "coefs_"):
        raise EieError(f"this {type(clf).__name__} is not fitted: call its fit(...) first")
    if clf.activation not in _SKLEARN_ACTIVATIONS:
        raise EieError(f"the chip runs relu (or identity) hidden layers, not activation={clf.activation!r}: "
                       "train the MLP with activation='relu'")
    linears = [_linear(w.T, b) for w, b in zip(clf.coefs_, clf.intercepts_)]
    if isinstance(clf, MLPClassifier) and clf.coefs_[-1].shape[1] == 1:
        last = clf.coefs_[-1].T, clf.intercepts_[-1]      # binary: class 1 where its logit is above 0
        linears[-1] = _linear(np.concatenate([np.zeros_like(last[0]), last[0]]), np.concatenate([[0.0], last[1]]))
    return _chain(linears, clf.activation == "relu")


# -- ONNX -------------------------------------------------------------------------------------------------

_ONNX_OPS = "Gemm, MatMul (+ Add), Relu and Flatten"


def from_onnx(path):
    """The network of an ONNX file, a chain of Gemm (or MatMul followed by Add) / Relu / Flatten nodes, as an
    `nn.Sequential` (Linear layers named fc1, fc2, ...). Weights must be initializers."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise EieError("importing ONNX needs the onnx package: pip install 'eie[onnx]'") from None
    path = Path(path)
    if not path.is_file():
        raise EieError(f"no ONNX file at {path}")
    try:
        graph = onnx.load(str(path)).graph
    except Exception as e:   # noqa: BLE001 -- protobuf raises many types for a file that is not ONNX
        raise EieError(f"{path} is not a readable ONNX model ({type(e).__name__}: {str(e)[:120]})") from None
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise EieError(f"{path}: the graph has {len(inputs)} data inputs; eie imports a chain with one")
    current, layers, nodes = inputs[0], [], list(graph.node)
    k = 0
    while k < len(nodes):
        node, where = nodes[k], f"{path}: node {k} ({nodes[k].op_type} {nodes[k].name!r})"
        data = [i for i in node.input if i and i not in weights]
        if data != [current]:
            raise EieError(f"{where} does not take the previous node's output alone: eie imports a plain chain")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type in ("Gemm", "MatMul") and node.input[0] != current:
            raise EieError(f"{where} takes its weights as input 0 (W @ x): eie imports x @ W, the data first "
                           "and the weight initializer second")
        if node.op_type == "Gemm":
            if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
                raise EieError(f"{where}: only Gemm with transA=0, alpha=1, beta=1 is imported")
            w = weights[node.input[1]] if attrs.get("transB", 0) else weights[node.input[1]].T   # out x in
            bias = weights[node.input[2]] if len(node.input) > 2 and node.input[2] else np.zeros(len(w))
            layers.append(("linear", _linear(w, bias)))
        elif node.op_type == "MatMul":
            after = nodes[k + 1] if k + 1 < len(nodes) else None
            bias = None
            if after is not None and after.op_type == "Add" and node.output[0] in after.input:
                bias = next((weights[i] for i in after.input if i in weights), None)
            if bias is None:
                raise EieError(f"{where}: a MatMul must be followed by an Add of its bias (an initializer)")
            layers.append(("linear", _linear(weights[node.input[1]].T, bias)))
            node = after
            k += 1
        elif node.op_type == "Relu":
            layers.append(("relu", nn.ReLU()))
        elif node.op_type == "Flatten":
            if attrs.get("axis", 1) != 1:
                raise EieError(f"{where}: only Flatten with axis=1 is imported")
            layers.append(("flatten", nn.Flatten()))
        else:
            raise EieError(f"{where} is not supported: eie imports {_ONNX_OPS}")
        current = node.output[0]
        k += 1
    if not any(kind == "linear" for kind, _ in layers):
        raise EieError(f"{path}: the graph has no Gemm or MatMul layer")
    return _named(layers)


def _named(layers):
    """[(kind, module)] -> nn.Sequential named as `eie.sw.models.perceptron` names its layers (flatten, fc1,
    relu1, fc2, ...), a Flatten first: the chip takes the flattened input."""
    if layers[0][0] != "flatten":
        layers = [("flatten", nn.Flatten()), *layers]
    prefix, count, named = {"linear": "fc", "relu": "relu", "flatten": "flatten"}, {}, []
    for kind, module in layers:
        count[kind] = count.get(kind, 0) + 1
        named.append((f"{prefix[kind]}{count[kind] if kind != 'flatten' or count[kind] > 1 else ''}", module))
    return nn.Sequential(OrderedDict(named))


# -- torch.fx ---------------------------------------------------------------------------------------------

def as_sequential(model, supported):
    """`model` itself if it is an nn.Sequential, else the chain its forward runs, as an nn.Sequential sharing its
    layers (torch.fx tracing): each step a submodule of a `supported` type, or torch.relu / torch.flatten(x, 1),
    applied to the previous step's output alone. Refuses anything else, naming it and its position."""
    if isinstance(model, nn.Sequential):
        return model
    import torch.fx
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as e:   # noqa: BLE001 -- tracing fails in many ways on data-dependent Python
        raise EieError(f"{type(model).__name__}'s forward cannot be traced as a chain of layers "
                       f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}): "
                       "write it as an nn.Sequential") from None
    modules = dict(model.named_modules())
    layers, previous, position = [], None, 0
    for node in graph.nodes:
        if node.op == "placeholder":
            if previous is not None:
                raise EieError(f"{type(model).__name__}.forward takes more than one input; the chip runs a chain")
            previous = node
            continue
        if node.op == "output":
            if node.args[0] is not previous:
                raise EieError(f"{type(model).__name__}.forward does not return its last layer's output")
            break
        position += 1
        args = [a for a in node.args if isinstance(a, torch.fx.Node)]
        target = node.target if node.op != "call_module" else type(modules[node.target]).__name__
        what = f"{type(model).__name__}: step {position} ({node.op} {target})"
        if args != [previous]:
            raise EieError(f"{what} does not take the previous step's output alone: the chip runs a plain chain")
        if node.op == "call_module" and type(modules[node.target]) in supported:
            layers.append((node.target.replace(".", "_"), modules[node.target]))
        elif node.op in ("call_function", "call_method") and node.target in (torch.relu, nn.functional.relu, "relu"):
            layers.append((f"relu_{position}", nn.ReLU()))
        elif (node.op in ("call_function", "call_method") and node.target in (torch.flatten, "flatten")
              and (node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)) == 1
              and (node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)) == -1):
            layers.append((f"flatten_{position}", nn.Flatten()))
        else:
            raise EieError(f"{what} is not supported: the chip runs chains of "
                           f"{', '.join(c.__name__ for c in supported)} (and torch.relu, torch.flatten(x, 1))")
        previous = node
    return nn.Sequential(OrderedDict(layers))
