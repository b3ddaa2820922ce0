"""Wanda and N:M structured sparsity beside Han's magnitude pruning: masks known by hand, the API and `eie prune`,
bad input in one line."""

import json

import pytest
import torch
from torch import nn

import eie
from eie.cli import main
from eie.errors import EieError
from eie.sw import methods, prune


def linear(weight):
    """A Flatten + bias-less Linear network holding `weight` (out x in)."""
    w = torch.tensor(weight, dtype=torch.float32)
    layer = nn.Linear(w.shape[1], w.shape[0], bias=False)
    layer.weight.data.copy_(w)
    return nn.Sequential(nn.Flatten(), layer)


def mask(model):
    return prune.masks(model)["1"].int().tolist()


# -- Wanda ------------------------------------------------------------------------------------------------

def test_wanda_weighs_by_activations_and_compares_per_row():
    # input norms 10, 1, 1 (one sample): scores row 0 = 10, 2, 3 and row 1 = 30, 2, 1; each row keeps two.
    # Magnitude alone would drop row 0's first weight; one ranking over the layer would drop two of row 1's.
    model = linear([[1, 2, 3], [3, 2, 1]])
    methods.wanda_prune(model, torch.tensor([[10.0, 1, 1]]), 1 / 3)
    assert mask(model) == [[1, 0, 1], [1, 1, 0]]


def test_wanda_uses_the_l2_norm_of_each_input():
    # input 0 takes 1 and 1 (L2 1.414, L1 2), input 1 takes 1.3 and 0 (L2 = L1 = 1.3); weights 1 and 1.1.
    # |W| x L2: 1.414 < 1.43, so input 1 stays; |W| x L1 (2 > 1.43) or x L2 squared (2 > 1.859) keep input 0.
    model = linear([[1.0, 1.1]])
    methods.wanda_prune(model, torch.tensor([[1.0, 1.3], [1.0, 0.0]]), 0.5)
    assert mask(model) == [[0, 1]]


def test_wanda_prunes_each_layer_on_the_activations_of_the_pruned_ones_before():
    first = nn.Linear(2, 2, bias=False)
    first.weight.data = torch.tensor([[1.0, 0.1], [0.1, 1.0]])
    second = nn.Linear(2, 1, bias=False)
    second.weight.data = torch.tensor([[1.0, 0.77]])
    model = nn.Sequential(nn.Flatten(), first, second)
    # input (3, 4): the first layer keeps its diagonal, so its outputs are (3, 4), and the second keeps its
    # input 1 (0.77 x 4 = 3.08 > 3); on the dense first layer's outputs (3.4, 4.3) it would keep input 0
    methods.wanda_prune(model, torch.tensor([[3.0, 4.0]]), 0.5)
    assert prune.masks(model)["1"].int().tolist() == [[1, 0], [0, 1]]
    assert prune.masks(model)["2"].int().tolist() == [[0, 1]]


def test_wanda_calibration_of_the_wrong_shape_says_which_was_expected():
    data = eie.load_data("digits")
    model = eie.build_model("16", data)
    with pytest.raises(EieError, match=r"expected images of shape \(N, 1, 8, 8\) as the data set's, got \(5, 64\)"):
        eie.prune(model, data, method="wanda", calibration=torch.zeros(5, 64), log=None)
    with pytest.raises(EieError, match="floats"):
        eie.prune(model, data, method="wanda", calibration=torch.zeros(5, 1, 8, 8, dtype=torch.int64), log=None)
    assert not prune.masks(model), "refused before pruning anything"


# -- N:M ----------------------------------------------------------------------------------------------------

def test_nm_keeps_the_largest_magnitudes_of_each_group_of_consecutive_inputs():
    # groups (0.1, -0.5, 0.3, 0.2) and (1, 2, -3, 0.5): by magnitude -0.5, 0.3 and 2, -3. By signed value
    # the first group would keep 0.3, 0.2; groups of strided inputs would differ again.
    model = linear([[0.1, -0.5, 0.3, 0.2, 1, 2, -3, 0.5], [4, 3, 2, 1, 0.5, 0.5, 0.5, 0.5]])
    methods.nm_prune(model, 2, 4)
    assert mask(model) == [[0, 1, 1, 0, 0, 1, 1, 0], [1, 1, 0, 0, 1, 1, 0, 0]]    # ties: the earlier input
    model = linear([[1, 5, 2, 4, 3, 6]])
    methods.nm_prune(model, 1, 3)
    assert mask(model) == [[0, 1, 0, 0, 0, 1]]


def test_nm_refuses_an_m_that_does_not_divide_the_inputs():
    with pytest.raises(EieError, match=r"2:4 sparsity needs M=4 to divide every layer's inputs, but the layers "
                                       r"have 1 6: choose an M"):
        methods.nm_prune(linear([[1, 2, 3, 4, 5, 6]]), 2, 4)
    for bad in ("4:2", "2:2", "0:4", "two:four", "2:4:8", "obd"):
        with pytest.raises(EieError, match="choose magnitude, wanda or N:M with 0 < N < M"):
            methods.parse_method(bad)
    assert methods.parse_method("2:4") == (2, 4) and methods.parse_method("wanda") == "wanda"


# -- through the API and the command ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained():
    data = eie.load_data("digits")
    model = eie.build_model("32-16", data)
    eie.train(model, data, eie.Training(epochs=6, lr=0.1), log=None)
    return data, model


def test_api_wanda_and_2_4_with_and_without_retraining(trained):
    from eie.sw import models
    data, base = trained
    model = models.clone(base)
    figures = eie.prune(model, data, method="wanda", sparsity=0.75, remove_dead=False, log=None)
    assert figures["prune"]["method"] == "wanda" and figures["prune"]["calibration_images"] == 512
    for name, layer in prune.layers(model):
        kept = (layer.weight != 0).sum(1)
        assert (kept <= layer.in_features // 4).all() and kept.max() == layer.in_features // 4, name
    for final in (0, 2):
        model = models.clone(base)
        figures = eie.prune(model, data, method="2:4", final_epochs=final, log=None)
        assert figures["prune"]["final_epochs"] == final and not figures["prune"]["dead_removed"]
        for name, layer in prune.layers(model):
            assert layer.weight.shape == base.get_submodule(name).weight.shape      # no unit removed
            groups = (layer.weight != 0).reshape(-1, 4).sum(1)
            assert (groups == 2).all(), name      # after retraining too: the masks hold the pattern
    assert figures["pruned_accuracy"] > 50        # 2:4 of a trained network, retrained, still classifies digits
    with pytest.raises(EieError, match="quality parameters are magnitude pruning's; wanda takes a sparsity"):
        eie.prune(models.clone(base), data, quality=1.0, method="wanda", log=None)
    with pytest.raises(EieError, match="2:4 sparsity fixes the pruned fraction"):
        eie.prune(models.clone(base), data, sparsity=0.5, method="2:4", log=None)


def test_eie_prune_method_2_4_and_bad_input(tmp_path, capsys):
    run = tmp_path / "nm"
    assert main(["prune", str(run), "--data", "digits", "--model", "32-16", "--epochs", "2", "--method", "2:4",
                 "--final-epochs", "1"]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["prune"]["method"] == "2:4" and report["pruning_ratio"] == 2.0
    assert "2:4 structured sparsity: the 2 largest weights of every 4 consecutive inputs" in (run / "report.md").read_text()
    capsys.readouterr()
    for argv, words in ((["--method", "3:2"], "unknown pruning method '3:2'"),
                        (["--method", "wanda", "--quality", "1"], "quality parameters are magnitude pruning's"),
                        (["--sparsity", "0.5"], "magnitude pruning takes quality parameters")):
        assert main(["prune", str(tmp_path / "bad"), "--data", "digits"] + argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
    assert not (tmp_path / "bad" / "baseline.pt").exists(), "refused before training"


def test_eie_prune_refuses_what_the_method_cannot_prune_before_training_the_baseline(tmp_path, monkeypatch, capsys):
    """A Wanda sparsity outside (0, 1), Wanda on a network with convolutions, an N:M whose M does not divide a
    layer's inputs: one line, before the dense baseline is trained (or evaluated)."""
    from eie.cli import pruning
    from eie.sw import models
    monkeypatch.setattr(pruning, "_baseline", lambda *a, **k: pytest.fail("baseline trained anyway"))
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 10))    # digits: 1x8x8
    models.save_checkpoint(tmp_path / "conv.pt", conv, data="digits")
    for argv, words in ((["--method", "wanda", "--sparsity", "1.5"], "sparsity 1.5 is out of range"),
                        (["--method", "wanda", "--checkpoint", str(tmp_path / "conv.pt")],
                         "wanda prunes fully connected (Linear) layers only; this network has convolutions (0)"),
                        (["--method", "2:4", "--model", "30-16"], "2:4 sparsity needs M=4 to divide every layer's")):
        assert main(["prune", str(tmp_path / "run"), "--data", "digits", *argv]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert len(errors) == 1 and words in errors[0], errors


# -- SparseGPT ----------------------------------------------------------------------------------------------

def _correlated_inputs(n=512, cols=64):
    torch.manual_seed(0)
    return torch.randn(n, 8) @ torch.randn(8, cols) + 0.1 * torch.randn(n, cols)


@pytest.mark.parametrize("sparsity, nm", [(0.75, None), (None, (2, 4))])
def test_sparsegpt_rebuilds_the_layers_outputs_better_than_the_cut_alone(sparsity, nm):
    """SparseGPT keeps exactly the per-row count (or N of every M) and, through its OBS updates of the surviving
    weights, reproduces the layer's outputs on correlated calibration inputs far better than Wanda's or N:M's cut
    of the same count without updates; the weights it keeps are changed (the update happened)."""
    x = _correlated_inputs()
    torch.manual_seed(1)
    a, b = nn.Linear(64, 30), nn.Linear(64, 30)
    b.load_state_dict(a.state_dict())
    dense = a.weight.detach().clone()
    methods.sparsegpt_mask(a, x, sparsity, nm, block=16)
    if nm is None:
        methods.wanda_mask(b, x, sparsity)
    else:
        methods.nm_prune(nn.Sequential(b), *nm)
    kept = a.weight.detach() != 0
    if nm is None:
        assert (kept.sum(1) == 16).all()
    else:
        assert (kept.reshape(-1, 4).sum(1) == 2).all()
    error = {name: float(((x @ layer.weight.detach().T - x @ dense.T) ** 2).mean()) for name, layer in (("gpt", a),
                                                                                                      ("cut", b))}
    assert error["gpt"] < 0.7 * error["cut"], error
    assert not torch.equal(a.weight.detach()[kept], dense[kept])


def test_sparsegpt_prunes_layer_by_layer_on_top_of_existing_masks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8))
    prune.prune_by_std(model[0], 0.5, model[0].weight.detach().std().item())
    before = model[0].weight_mask.bool().clone()
    methods.sparsegpt_prune(model, _correlated_inputs(), 0.75)
    after = prune.masks(model)
    assert not (after["0"] & ~before).any()                   # pruned weights stay pruned
    assert (after["0"].sum(1) <= 16).all() and (after["2"].sum(1) == 8).all()
    with pytest.raises(EieError, match="sparsity 1.5 is out of range"):
        methods.sparsegpt_prune(model, _correlated_inputs(), 1.5)
    with pytest.raises(EieError, match="3:5 sparsity needs M=5"):
        methods.sparsegpt_prune(model, _correlated_inputs(), nm=(3, 5))


@pytest.mark.parametrize("command, retraining", [("lstm", "--final-epochs"), ("decoder", "--final-steps")])
def test_the_sequence_commands_refuse_a_method_they_cannot_take_before_training(tmp_path, command, retraining):
    """`eie lstm` and `eie decoder` take eie prune's methods; an M that does not divide every layer's inputs, a
    sparsity beside N:M, an unknown method or negative retraining: one line, before any training."""
    from conftest import cli
    for argv, words in ((["--method", "3:5"], "3:5 sparsity needs M=5 to divide"),
                        (["--method", "2:4", "--sparsity", "0.3"], "fixes the pruned fraction"),
                        (["--method", "sparsegpt"], "unknown pruning method 'sparsegpt'"),
                        (["--method", "wanda", "--sparsity", "1.5"], "sparsity 1.5 is out of range"),
                        (["--method", "2:4", retraining, "-1"], "must be an integer >= 0")):
        with pytest.raises(EieError, match=words):
            cli(command, "--quick", *argv, "--run-dir", tmp_path / "r")
    assert not (tmp_path / "r").exists()
