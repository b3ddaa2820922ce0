"""A convolutional front on the host (`eie.sw.host`) feeding the chip's fully connected layers: the fixed-point
convolutions against torch's, and prune + compress of a small conv network on digits (8x8 images, too small
for LeNet-5) checked against the accuracy the report claims."""

from collections import OrderedDict
import json

import numpy as np
import pytest
import torch
from torch import nn

from eie.config import ChipConfig
from eie.errors import EieError
from conftest import cli as eie
from eie.sw import models, train
from eie.sw.data import load_dataset
from eie.sw.host import front_forward, load_front, quantize_front
from eie.sw.image import load_image
from eie.sw.quant import from_fixed, to_fixed
from eie.sw.reference import forward


def small_convnet():
    """LeNet-5's shape for 8x8 digits: conv, ReLU, conv, pool, then two Linear layers."""
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 6, 3, padding=1)), ("relu0", nn.ReLU()),
        ("conv2", nn.Conv2d(6, 12, 3)), ("pool", nn.MaxPool2d(2, 2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(12 * 3 * 3, 40)), ("relu1", nn.ReLU()),
        ("fc2", nn.Linear(40, 10)),
    ]))




def test_front_forward_matches_float_convolutions():
    config = ChipConfig()
    net = small_convnet().eval()
    x = load_dataset("digits").x_test[:50]
    front = [m for _, m in models.front(net)]
    ops, in_frac, out_frac = quantize_front(front, x.numpy(), config)
    with torch.no_grad():
        want = nn.Sequential(*front)(x).numpy()
    got = from_fixed(front_forward(ops, to_fixed(x.numpy(), in_frac, config.act_bits), config), out_frac)
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-3 * np.abs(want).max()


def test_front_and_fully_connected_split_the_network():
    net = small_convnet()
    assert [n for n, _ in models.front(net)] == ["conv1", "relu0", "conv2", "pool", "flatten"]
    assert [(n, relu) for n, _, relu in models.fully_connected(net)] == [("fc1", True), ("fc2", False)]
    assert models.front(models.lenet_300_100((1, 8, 8))) == []
    with pytest.raises(EieError, match="comes after a Linear layer"):
        models.fully_connected(nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.Flatten()))


def test_compress_writes_the_host_layers_and_reproduces_its_accuracy(tmp_path):
    net, data = small_convnet(), load_dataset("digits")
    train.fit(net, data.x_train, data.y_train, epochs=8, lr=0.05, show=False)
    models.save_checkpoint(tmp_path / "dense.pt", net)
    run = tmp_path / "run"
    assert eie("prune", run, "--data", "digits", "--checkpoint", tmp_path / "dense.pt",
               "--iterations", "1", "--retrain-epochs", "1", "--final-epochs", "0", "--quality", "0.5") == 0
    assert eie("compress", run, "--finetune-epochs", "1", "--calibration", "200") == 0
    assert (run / "host.npz").is_file() and (run / "image.npz").is_file()
    report = json.loads((run / "report.json").read_text())
    image = load_image(run / "image.npz", ChipConfig(**report["compress"]["chip"]))
    ops, in_frac = load_front(run / "host.npz")
    config = image.config
    features = front_forward(ops, to_fixed(data.x_test.numpy(), in_frac, config.act_bits), config)
    logits = image.unpermute(forward(image.quant_layers(), features, config)[-1])
    accuracy = 100.0 * float((logits.argmax(1) == data.y_test.numpy()).mean())
    assert round(accuracy, 2) == report["compressed_accuracy"] and accuracy > 70
    tables = report["compress"]["storage_bytes"]["4-bit"]["1"]
    assert tables["host_convs"] == 2 * (6 * 9 + 6 + 12 * 6 * 9 + 12)
    assert "host_convs" in (run / "report.md").read_text()
    with pytest.raises(EieError, match="already has compressed.pt, image.npz, host.npz"):
        eie("compress", run)


def test_a_damaged_host_file_is_one_line(tmp_path):
    """Flipped bits or truncation anywhere in host.npz: it loads as written or is refused with one line."""
    from eie.sw.host import MaxPool, QuantConv, save_front
    rng = np.random.default_rng(3)
    ops = [QuantConv(rng.integers(-99, 99, (4, 1, 3, 3)), rng.integers(-9, 9, 4), 7, True, 1, 1, (8, 9, 10)),
           MaxPool(2, 2)]
    data = save_front(ops, 8)
    path = tmp_path / "host.npz"
    refused = 0
    for trial in range(300):
        damaged = bytearray(data)
        if trial % 3:
            bit = int(rng.integers(len(damaged) * 8))
            damaged[bit // 8] ^= 1 << (bit % 8)
        else:
            damaged = damaged[:int(rng.integers(len(damaged)))]
        path.write_bytes(bytes(damaged))
        try:
            got, in_frac = load_front(path)
        except EieError as e:
            refused += 1
            assert "host-layer file" in str(e) and "\n" not in str(e)
        else:
            assert in_frac == 8 and len(got) == 2
    assert refused > 150
