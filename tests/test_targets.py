"""The issue's targets on full Fashion-MNIST with LeNet-300-100 and the default settings (minutes)."""

import json
import time

import pytest

from eie.cli import main
from eie.sw.data import FASHION_MNIST_DIR


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="needs 'apt-get install dataset-fashion-mnist'")
def test_fashion_mnist_lenet_300_100_targets(tmp_path):
    started = time.perf_counter()
    for argv in (["prune", str(tmp_path)], ["compress", str(tmp_path)]):
        assert main(argv) == 0
    wall = time.perf_counter() - started
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["pruning_ratio"] >= 12
    assert report["baseline_accuracy"] - report["pruned_accuracy"] <= 0.3
    assert report["storage_ratio"] >= 40
    assert report["baseline_accuracy"] - report["compressed_accuracy"] <= 0.5
    assert wall < 600 and report["wall_seconds"] < 600
