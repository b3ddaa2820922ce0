import math

import pytest
import torch
from torch import nn

from eie.errors import EieError
from eie.sw import models, prune, train


def small_net(dropout=0.0):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Dropout(dropout), nn.Linear(12, 8),
                         nn.ReLU(), nn.Linear(8, 3))


def toy_data(n=96):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 4, 4, generator=g)
    return x, (x.flatten(1)[:, :3].argmax(1))


def test_threshold_is_quality_times_dense_std():
    net = small_net()
    layer = net[1]
    std = layer.weight.std().item()
    dense = layer.weight.detach().clone()
    prune.prune_by_std(layer, 0.8, std)
    expected = dense.abs() >= 0.8 * std
    assert torch.equal(prune.masks(net)["1"], expected)
    assert torch.equal(layer.weight, dense * expected)


def test_quality_for_fraction_inverts_the_threshold():
    layer = small_net()[1]
    std = layer.weight.std().item()
    q = prune.quality_for_fraction(layer, 0.75, std)
    prune.prune_by_std(layer, q, std)
    assert layer.weight.count_nonzero().item() == layer.weight.numel() // 4


@pytest.mark.parametrize("quality", [0.0, -1.0, math.nan, 50.0])
def test_quality_out_of_range(quality):
    layer = small_net()[1]
    with pytest.raises(EieError, match="out of range"):
        prune.prune_by_std(layer, quality, layer.weight.std().item(), "fc1")


def test_masks_hold_through_retraining_and_survivors_keep_values():
    net = small_net()
    stds = prune.dense_stds(net)
    for name, layer in prune.layers(net):
        prune.prune_by_std(layer, 1.0, stds[name], name)
    pruned = {n: l.weight.detach().clone() for n, l in prune.layers(net)}
    x, y = toy_data()
    train.fit(net, x, y, epochs=3, lr=0.1, l2=1e-3, l1=1e-4, batch_size=16, show=False)
    for name, layer in prune.layers(net):
        mask = prune.masks(net)[name]
        assert torch.all(layer.weight[~mask] == 0)
        assert not torch.equal(layer.weight[mask], pruned[name][mask])  # survivors trained, not reset
    # a second cut only adds to the mask
    before = prune.masks(net)["1"].clone()
    prune.prune_by_std(net[1], 1.2, stds["1"])
    assert torch.all(prune.masks(net)["1"] <= before)


def test_training_is_deterministic():
    x, y = toy_data()
    runs = []
    for _ in range(2):
        net = small_net(dropout=0.3)
        train.fit(net, x, y, epochs=2, lr=0.05, batch_size=16, seed=7, show=False)
        runs.append(torch.cat([p.flatten() for p in net.parameters()]))
    assert torch.equal(runs[0], runs[1])


def test_dropout_rescaled_by_sqrt_of_kept_connections():
    net = small_net(dropout=0.5)
    mask = torch.zeros(8, 12, dtype=torch.bool)
    mask.view(-1)[:24] = True  # a quarter of the layer the dropout feeds
    prune.apply_masks(net, {"4": mask})
    assert prune.adjust_dropout(net, {"3": 0.5}) == {"3": pytest.approx(0.5 * math.sqrt(0.25))}
    assert net[3].p == pytest.approx(0.25)


def test_dead_neurons_are_found_and_removed_exactly():
    net = small_net()
    with torch.no_grad():
        net[1].bias[5] = 0.7            # unit 5 of layer 1: no inputs, but a constant output
        m1 = torch.ones(12, 16, dtype=torch.bool)
        m1[5] = False
        m2 = torch.ones(8, 12, dtype=torch.bool)
        m2[:, 2] = False                # unit 2 of layer 1: no outputs
        m2[3] = False                   # unit 3 of layer 4: no inputs
    prune.apply_masks(net, {"1": m1, "4": m2})
    dead = prune.dead_neurons(net)
    assert dead["1"] == {"no_inputs": [5], "no_outputs": [2]}
    assert dead["4"]["no_inputs"] == [3]
    x, _ = toy_data()
    expected = train.predict(net, x)
    assert prune.remove_dead_neurons(net) == {"1": 2, "4": 1}
    assert (net[1].out_features, net[4].in_features, net[4].out_features, net[6].in_features) == (10, 10, 7, 7)
    assert torch.allclose(train.predict(net, x), expected, atol=1e-5)
    assert prune.masks(net)["1"].shape == (10, 16)  # masks follow the surviving units
    assert prune.dead_neurons(net) == {"1": {"no_inputs": [], "no_outputs": []},
                                       "4": {"no_inputs": [], "no_outputs": []}}


def test_checkpoint_round_trip_keeps_masks(tmp_path):
    net = models.lenet_300_100((1, 8, 8), 10)
    prune.prune_by_std(net.fc1, 1.0, net.fc1.weight.std().item())
    models.save_checkpoint(tmp_path / "p.pt", net, arch="lenet-300-100")
    loaded, masks, meta = models.load_checkpoint(tmp_path / "p.pt", models.spec(models.lenet_300_100((1, 8, 8), 10)))
    assert meta == {"arch": "lenet-300-100"} and set(masks) == {"fc1"}
    prune.apply_masks(loaded, masks)
    assert torch.equal(loaded.fc1.weight, net.fc1.weight)
    assert "fc1.weight" in torch.load(tmp_path / "p.pt")["state"]  # plain state dict inside


def test_checkpoint_of_another_architecture(tmp_path):
    models.save_checkpoint(tmp_path / "a.pt", models.lenet_300_100((1, 8, 8), 10))
    with pytest.raises(EieError, match="another architecture"):
        models.load_checkpoint(tmp_path / "a.pt", models.spec(models.lenet_300_100((1, 28, 28), 10)))
    torch.save(models.lenet_300_100((1, 8, 8), 10).state_dict(), tmp_path / "sd.pt")
    with pytest.raises(EieError, match="another architecture"):
        models.load_checkpoint(tmp_path / "sd.pt", models.spec(models.lenet_300_100((1, 28, 28), 10)))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(EieError, match="cannot load checkpoint"):
        models.load_checkpoint(tmp_path / "junk.pt")


def test_user_sequential_and_unnamed_state_dict(tmp_path):
    user = small_net(dropout=0.2)
    torch.save(user, tmp_path / "user.pt")  # a pickled nn.Sequential, loaded without running code
    loaded, _, _ = models.load_checkpoint(tmp_path / "user.pt")
    x, _ = toy_data()
    assert torch.equal(train.predict(loaded, x), train.predict(user, x))
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                          nn.Linear(100, 10))
    torch.save(plain.state_dict(), tmp_path / "sd.pt")  # keys 1.weight..., lenet's are fc1.weight...
    model, _, _ = models.load_checkpoint(tmp_path / "sd.pt", models.spec(models.lenet_300_100((1, 8, 8), 10)))
    assert torch.equal(model.fc1.weight, plain[1].weight)

    torch.save(nn.Sequential(nn.Linear(2, 2), nn.Tanh()), tmp_path / "tanh.pt")
    with pytest.raises(EieError, match="Tanh"):
        models.load_checkpoint(tmp_path / "tanh.pt")


def test_lenet_sizes_match_the_paper():
    count = lambda net: sum(l.weight.numel() for _, l in prune.layers(net))
    assert count(models.lenet_300_100()) == 266_200   # "267K"
    assert count(models.lenet5()) == 430_500          # "431K"
    with pytest.raises(EieError, match="16x16"):
        models.lenet5((1, 8, 8))
    with pytest.raises(EieError, match="unknown model 'vgg'"):
        models.build("vgg", (1, 28, 28), 10)


def test_sort_units_keeps_the_function_and_moves_zero_runs_to_column_ends():
    net = small_net()
    with torch.no_grad():
        net[1].weight[::2] = 0  # even units of layer 1 have no inputs
    prune.apply_masks(net, {"1": net[1].weight != 0})
    x, _ = toy_data()
    expected = train.predict(net, x)
    prune.sort_units(net)
    assert torch.allclose(train.predict(net, x), expected, atol=1e-6)
    counts = (net[1].weight != 0).sum(1)
    assert torch.all(counts[:-1] >= counts[1:]) and torch.all(counts[6:] == 0)
    assert torch.equal(prune.masks(net)["1"], net[1].weight != 0)


def test_lenet5_prunes_its_convolutions_too():
    from types import SimpleNamespace
    from eie.sw import pipeline
    torch.manual_seed(0)
    net = models.lenet5((1, 16, 16), 4)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 16, 16, generator=g)
    data = SimpleNamespace(x_train=x, y_train=torch.randint(0, 4, (64,), generator=g), x_test=x[:16],
                           y_test=torch.randint(0, 4, (16,), generator=g))
    # half the defaults: untrained (uniform) weights have no tail beyond 1.73 std
    quality = {n: q / 2 for n, q in pipeline.resolve_quality(None, [n for n, _ in prune.layers(net)], "lenet-5").items()}
    steps = pipeline.prune_schedule(net, data, quality, 1, pipeline.Training(epochs=1, lr=0.01, batch_size=32), 0)
    kept = steps[0]["kept_percent"]
    assert set(kept) == {"conv1", "conv2", "fc1", "fc2"} and all(0 < k < 100 for k in kept.values())
    assert kept["conv1"] > kept["conv2"]  # the first convolution is the most sensitive (Table 3: 66% vs 12%)
    figures = pipeline.layer_figures(net, data.x_test)
    assert figures["conv2"]["flop_percent"] <= figures["conv2"]["kept_percent"]
