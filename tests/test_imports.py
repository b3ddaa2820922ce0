"""Networks made elsewhere into the same flow: a scikit-learn MLP (`eie.from_sklearn`), an ONNX graph
(`eie.from_onnx`, `eie compress --onnx`, checked against onnxruntime) and a custom nn.Module that is a plain
chain of layers (torch.fx); anything else refused naming the layer or node and its position."""

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import eie
from conftest import cli

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    return eie.load_data("digits")


def _flat(x):
    return x.reshape(len(x), -1).numpy()


def _tiny_compress(model, data):
    return eie.compress(model, data, eie.ChipConfig(pes=2), finetuning=eie.Training(epochs=0, lr=1e-4),
                        calibration=300, log=None)


def test_an_sklearn_mlp_runs_on_the_chip_as_sklearn_predicts(digits):
    from sklearn.neural_network import MLPClassifier
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # sklearn's ConvergenceWarning at this few iterations
        clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=60, random_state=0).fit(
            _flat(digits.x_train), digits.y_train.numpy())
    model = eie.from_sklearn(clf)
    with torch.no_grad():
        assert np.array_equal(model(digits.x_test).argmax(1).numpy(), clf.predict(_flat(digits.x_test)))
    cm = _tiny_compress(model, digits)
    agree = (cm.predict(digits.x_test).argmax(1) == clf.predict(_flat(digits.x_test))).mean()
    assert agree > 0.95
    assert len(cm.simulate(digits.x_test[:10]).mismatches) == 0


def test_sklearn_refusals(digits):
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    x, y = _flat(digits.x_train[:200]), digits.y_train[:200].numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tanh = MLPClassifier(hidden_layer_sizes=(8,), activation="tanh", max_iter=5).fit(x, y)
        binary = MLPClassifier(hidden_layer_sizes=(8,), max_iter=30, random_state=0).fit(x, y % 2)
        reg = MLPRegressor(hidden_layer_sizes=(8,), activation="identity", max_iter=30, random_state=0).fit(x, y)
    with pytest.raises(eie.EieError, match="relu .*not activation='tanh'"):
        eie.from_sklearn(tanh)
    with pytest.raises(eie.EieError, match="not fitted"):
        eie.from_sklearn(MLPClassifier())
    with pytest.raises(eie.EieError, match="not str"):
        eie.from_sklearn("mlp")
    with torch.no_grad():
        assert np.array_equal(eie.from_sklearn(binary)(torch.from_numpy(x)).argmax(1).numpy(), binary.predict(x))
        assert np.allclose(eie.from_sklearn(reg)(torch.from_numpy(x)).numpy().ravel(), reg.predict(x), atol=1e-4)


def test_an_sklearn_regressor_is_fine_tuned_on_its_float_targets(digits):
    """An MLPRegressor (here: the digit's value from its pixels) compresses with centroid fine-tuning on squared
    error; its figures are R² in percent, the chip's beside scikit-learn's. Integer classes for a one-output
    model are refused in one line before any work, naming the way to float targets."""
    import dataclasses
    from sklearn.neural_network import MLPRegressor
    x, y = _flat(digits.x_train), digits.y_train.numpy().astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg = MLPRegressor(hidden_layer_sizes=(32,), max_iter=200, random_state=0).fit(x, y)
    data = dataclasses.replace(digits, y_train=digits.y_train.float(), y_test=digits.y_test.float())
    with pytest.raises(eie.EieError, match=r"gives \(1,\) outputs, the data set has 10 classes; a regressor .* float"):
        eie.compress(eie.from_sklearn(reg), digits, eie.ChipConfig(pes=2), log=None)
    cm = eie.compress(eie.from_sklearn(reg), data, eie.ChipConfig(pes=2),
                      finetuning=eie.Training(epochs=2, lr=1e-4, l2=0.0), calibration=300, log=None)
    f = cm.figures
    sklearn_r2 = 100 * reg.score(_flat(digits.x_test), digits.y_test.numpy())
    assert abs(f["pruned_accuracy"] - sklearn_r2) < 0.01
    assert f["finetuned_accuracy"] >= f["shared_accuracy"] - 0.5 and f["finetuned_accuracy"] > 80
    assert abs(cm.accuracy(data.x_test, data.y_test) - f["finetuned_accuracy"]) < 2
    assert np.corrcoef(cm.predict(data.x_test).ravel(), reg.predict(_flat(digits.x_test)))[0, 1] > 0.99


def _onnx_mlp(path, w1, b1, w2, b2, gemm=True, extra=None):
    """Flatten -> (Gemm | MatMul+Add) -> Relu -> Gemm [-> extra node], weights as initializers."""
    arrays = {"w1": w1, "b1": b1, "w2": w2, "b2": b2}
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in arrays.items()]
    first = ([helper.make_node("Gemm", ["flat", "w1", "b1"], ["h"], transB=1)] if gemm else
             [helper.make_node("MatMul", ["flat", "w1t"], ["hm"]), helper.make_node("Add", ["hm", "b1"], ["h"])])
    if not gemm:
        inits.append(numpy_helper.from_array(w1.T.astype(np.float32).copy(), "w1t"))
    nodes = [helper.make_node("Flatten", ["x"], ["flat"], axis=1), *first, helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y" if extra is None else "z"], transB=1)]
    if extra is not None:
        nodes.append(helper.make_node(extra, ["z"], ["y"], name="squash"))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 10])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


@pytest.fixture(scope="module")
def trained_onnx(digits, tmp_path_factory):
    """A 64-24-10 perceptron trained in torch, written as ONNX by hand (Gemm and MatMul+Add forms)."""
    model = eie.build_model("24", digits)
    eie.train(model, digits, eie.Training(epochs=6, lr=0.05), log=None)
    w = [model.fc1.weight.detach().numpy(), model.fc1.bias.detach().numpy(), model.fc2.weight.detach().numpy(),
         model.fc2.bias.detach().numpy()]
    folder = tmp_path_factory.mktemp("onnx")
    return _onnx_mlp(folder / "gemm.onnx", *w), _onnx_mlp(folder / "matmul.onnx", *w, gemm=False), w, folder


def test_onnx_imports_match_onnxruntime(digits, trained_onnx):
    ort = pytest.importorskip("onnxruntime")
    gemm, matmul, _, _ = trained_onnx
    x = digits.x_test.numpy()
    for path in (gemm, matmul):
        expected = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
        model = eie.from_onnx(path)
        assert [n for n, _ in model.named_children()] == ["flatten", "fc1", "relu1", "fc2"]
        with torch.no_grad():
            assert np.allclose(model(digits.x_test).numpy(), expected, atol=1e-5)
    cm = _tiny_compress(eie.from_onnx(gemm), digits)
    assert (cm.predict(digits.x_test).argmax(1) == expected.argmax(1)).mean() > 0.9   # 16-entry codebooks


def test_onnx_refusals_name_the_node(trained_onnx):
    _, _, w, folder = trained_onnx
    with pytest.raises(eie.EieError, match=r"node 4 \(Sigmoid 'squash'\) is not supported: eie imports Gemm, "
                                           r"MatMul \(\+ Add\), Relu and Flatten"):
        eie.from_onnx(_onnx_mlp(folder / "sigmoid.onnx", *w, extra="Sigmoid"))
    (folder / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(eie.EieError, match="not a readable ONNX model"):
        eie.from_onnx(folder / "junk.onnx")
    with pytest.raises(eie.EieError, match="no ONNX file"):
        eie.from_onnx(folder / "missing.onnx")


def test_onnx_weights_first_is_refused_naming_the_node(tmp_path):
    """A Gemm or MatMul with the weight initializer as input 0 (W @ x) passes the chain check; it is refused in
    one line naming the node, not with a KeyError."""
    w = numpy_helper.from_array(np.ones((3, 64), np.float32), "w")
    for op in ("Gemm", "MatMul"):
        nodes = [helper.make_node("Flatten", ["x"], ["flat"], axis=1),
                 helper.make_node(op, ["w", "flat"], ["y"], name="wx")]
        graph = helper.make_graph(nodes, "wx", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 8, 8])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, None])], [w])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "wx.onnx"))
        with pytest.raises(eie.EieError, match=rf"node 1 \({op} 'wx'\) takes its weights as input 0 \(W @ x\)"):
            eie.from_onnx(tmp_path / "wx.onnx")


def test_compress_command_takes_onnx(trained_onnx, tmp_path):
    gemm, _, _, _ = trained_onnx
    run = tmp_path / "run"
    assert cli("compress", run, "--data", "digits", "--onnx", gemm, "--finetune-epochs", "0", "--calibration", "200",
               "--pes", "2") == 0
    report = json.loads((run / "report.json").read_text())
    assert report["compressed_accuracy"] > 70 and report["model"] == "onnx:gemm.onnx"
    assert cli("run", run, "--samples", "8", "--json") == 0


class Chain(nn.Module):
    """A custom module that is a plain chain: accepted."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(64, 32)
        self.out = nn.Linear(32, 10)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(torch.flatten(x, 1))))


class Skip(Chain):
    """A residual connection: refused, naming the step."""

    def forward(self, x):
        h = torch.relu(self.hidden(torch.flatten(x, 1)))
        return self.out(h + h)


class Tanh(Chain):
    def forward(self, x):
        return self.out(torch.tanh(self.hidden(torch.flatten(x, 1))))


def test_a_custom_module_that_is_a_plain_chain_goes_through_the_flow(digits):
    torch.manual_seed(0)
    model = Chain()
    eie.train(model, digits, eie.Training(epochs=4, lr=0.05), log=None)
    eie.prune(model, digits, quality=0.8, iterations=1, retraining=eie.Training(epochs=1, lr=0.02),
              final_epochs=0, log=None)
    assert hasattr(model.hidden, "weight_mask"), "pruned in place, the user's module included"
    cm = _tiny_compress(model, digits)
    assert cm.accuracy(digits.x_test, digits.y_test) > 70
    refusals = ((Skip(), r"step 4 \(call_function <built-in function add>\) does not take the previous step's "
                         r"output alone"),
                (Tanh(), r"step 3 \(call_function <built-in method tanh.* is not supported: the chip runs chains"))
    for bad, message in refusals:
        with pytest.raises(eie.EieError, match=message):
            eie.compress(bad, digits)
