"""Checkpoints from outside eie: torch.nn.utils.prune's reparametrization (pickled model and state dict), a
custom perceptron named by its sizes, and architecture checks when a checkpoint replaces a run's model."""

import json

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from conftest import cli
from eie.errors import EieError
from eie.sw import models, train
from eie.sw.data import load_dataset


@pytest.fixture(scope="module")
def torch_pruned(tmp_path_factory):
    """A 64-32-10 perceptron trained on digits, pruned by torch (L1, 60% of fc1, 30% of fc2), saved both ways."""
    folder = tmp_path_factory.mktemp("torch")
    data = load_dataset("digits")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    train.fit(net, data.x_train, data.y_train, epochs=6, lr=0.05, show=False)
    torch_prune.l1_unstructured(net[1], "weight", 0.6)
    torch_prune.l1_unstructured(net[3], "weight", 0.3)
    torch.save(net, folder / "model.pt")
    torch.save(net.state_dict(), folder / "state.pt")
    return folder, net[1].weight_mask.bool().clone()


def _pruned_mask(run):
    _, masks, _ = models.load_checkpoint(run / "pruned.pt")
    return masks["fc1"] if "fc1" in masks else next(iter(masks.values()))


PRUNE = ["--data", "digits", "--iterations", "1", "--retrain-epochs", "1", "--final-epochs", "0",
         "--quality", "1.2", "--keep-dead"]


def test_pickled_torch_pruned_model_keeps_its_mask_through_prune_compress_run(torch_pruned, tmp_path):
    folder, mask = torch_pruned
    run = tmp_path / "run"
    assert cli("prune", run, "--checkpoint", folder / "model.pt", *PRUNE) == 0
    kept = _pruned_mask(run)
    assert not (kept & ~mask).any(), "a weight torch pruned came back"
    assert kept.sum() < mask.sum(), "our pruning went on from torch's pattern"
    assert cli("compress", run, "--finetune-epochs", "0", "--calibration", "100", "--pes", "2") == 0
    assert cli("run", run, "--samples", "8", "--json") == 0
    assert json.loads((run / "report.json").read_text())["run"]["mismatches"] == 0


def test_torch_pruned_state_dict_with_its_sizes(torch_pruned, tmp_path):
    folder, mask = torch_pruned
    run = tmp_path / "run"
    assert cli("prune", run, "--checkpoint", folder / "state.pt", "--model", "32", *PRUNE) == 0
    kept = _pruned_mask(run)
    assert kept.shape == mask.shape and not (kept & ~mask).any()
    assert cli("compress", run, "--finetune-epochs", "0", "--calibration", "100", "--pes", "2") == 0
    assert cli("run", run, "--samples", "8", "--json") == 0


def test_a_wrong_architecture_is_one_line_naming_both(torch_pruned, tmp_path):
    folder, _ = torch_pruned
    with pytest.raises(EieError, match=r"another architecture: \[1.weight 32x64, 3.weight 10x32\], expected \[.*Linear\(64->20\)"):
        cli("prune", tmp_path / "a", "--checkpoint", folder / "state.pt", "--model", "20", *PRUNE)
    with pytest.raises(EieError, match=r"bare state dict, which does not say what network it belongs to: name "
                                        r"the architecture \(--model\)"):
        cli("prune", tmp_path / "b", "--checkpoint", folder / "state.pt", *PRUNE)


def test_compress_checks_a_replacing_checkpoint(torch_pruned, tmp_path):
    """`eie compress RUN --checkpoint OTHER.pt --force` on a run of another network is refused, naming both."""
    folder, _ = torch_pruned
    run = tmp_path / "run"
    assert cli("prune", run, "--checkpoint", folder / "model.pt", *PRUNE) == 0
    other = nn.Sequential(nn.Flatten(), nn.Linear(64, 50), nn.ReLU(), nn.Linear(50, 10))
    models.save_checkpoint(tmp_path / "other.pt", other)
    with pytest.raises(EieError, match=r"holds another network than .*pruned.pt: \[.*Linear\(64->50\).*\] instead of "
                                       r"\[.*Linear\(64->32\)"):
        cli("compress", run, "--checkpoint", tmp_path / "other.pt", "--force")
    assert not (run / "image.npz").exists()
    # the same network, narrower after dead neurons were removed, is accepted
    narrower = nn.Sequential(nn.Flatten(), nn.Linear(64, 30), nn.ReLU(), nn.Linear(30, 10))
    models.save_checkpoint(tmp_path / "narrower.pt", narrower)
    models.check_same_network(models.load_checkpoint(run / "pruned.pt")[0],
                              models.load_checkpoint(tmp_path / "narrower.pt")[0], "a", "b")


def test_perceptron_by_sizes():
    net = models.build("200-50", (1, 8, 8), 10)
    assert [m.out_features for m in net if isinstance(m, nn.Linear)] == [200, 50, 10]
    with pytest.raises(EieError, match="hidden layer sizes such as 500-200"):
        models.build("200-0x", (1, 8, 8), 10)


def test_compress_takes_a_state_dict_with_its_architecture(torch_pruned, tmp_path):
    """`eie compress --checkpoint state.pt` used to say "name its architecture with --model", which compress lacked."""
    folder, mask = torch_pruned
    run = tmp_path / "run"
    assert cli("compress", run, "--data", "digits", "--checkpoint", folder / "state.pt", "--model", "32",
               "--finetune-epochs", "0", "--calibration", "100", "--pes", "2") == 0
    assert json.loads((run / "report.json").read_text())["model"] == "32"


def test_an_unsupported_layer_is_named_with_the_supported_ones(tmp_path):
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Tanh()), tmp_path / "tanh.pt")
    with pytest.raises(EieError) as refused:
        cli("prune", tmp_path / "run", "--checkpoint", tmp_path / "tanh.pt", *PRUNE)
    message = str(refused.value)
    assert "holds a Tanh (torch.nn.modules.activation.Tanh), which the chip does not run; supported layers are " \
           "Linear, Conv2d, ReLU, Dropout, Flatten, MaxPool2d" in message and "--model" not in message


def test_options_are_never_abbreviated(tmp_path, capsys):
    """`eie run RUN --data digits` once meant --data-dir: argparse's prefix matching is off."""
    from eie.cli import main
    with pytest.raises(SystemExit):
        main(["prune", str(tmp_path / "run"), "--dat", "digits"])
    assert "unrecognized arguments: --dat digits" in capsys.readouterr().err
