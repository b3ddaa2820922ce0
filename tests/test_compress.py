import json

import numpy as np
import pytest
import torch
from torch import nn

from eie.config import ChipConfig
from eie.errors import EieError
from conftest import cli as eie
from eie.sw import compress, prune


def test_kmeans_converges_to_nearest_assignment_and_cluster_means():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([-1.0, -0.3, 0.4, 1.1], dtype=torch.float64)
    values = centers.repeat(50) + 0.01 * torch.randn(200, generator=g, dtype=torch.float64)
    for init in compress.INITS:
        found, assign = compress.kmeans(values, 4, init, seed=1)
        assert torch.equal(assign, (values[:, None] - found[None]).abs().argmin(1)), init
        means = torch.stack([values[assign == c].mean() for c in assign.unique()])
        assert torch.allclose(found[assign.unique()], means), init
    for init in ("linear", "density"):  # evenly spread, equal clusters: both find them
        assert torch.allclose(compress.kmeans(values, 4, init)[0], centers, atol=0.01), init
    with pytest.raises(EieError, match="unknown centroid initialization"):
        compress.kmeans(values, 4, "kmeans++")


def test_linear_init_spans_min_to_max():
    values = torch.tensor([-3.0, -1.0, 0.5, 0.6, 0.7, 4.0])
    found, _ = compress.kmeans(values, 3, "linear", iterations=0)
    assert found.tolist() == pytest.approx([-3.0, 0.5, 4.0])


def shared_layer():
    torch.manual_seed(0)
    layer = nn.Linear(20, 10)
    prune.prune_by_std(layer, 0.8, layer.weight.std().item())
    prune.remove(nn.Sequential(layer))
    pruned = layer.weight.detach().clone()
    compress.share_weights(layer, codebook_size=8)
    return layer, pruned


def test_sharing_keeps_zero_as_entry_zero():
    layer, pruned = shared_layer()
    index, book = compress.indices(layer), compress.codebook(layer)
    assert book[0] == 0 and len(book) == 8 and torch.all(book[1:] != 0)
    assert torch.equal(index == 0, pruned == 0)
    assert torch.equal(layer.weight, book[index])
    assert (layer.weight - pruned).abs().max() < (pruned.abs().max() / 4)


def test_centroid_gradient_is_the_sum_over_its_cluster():
    layer, _ = shared_layer()
    x, r = torch.randn(5, 20), torch.randn(5, 10)
    (layer(x) * r).sum().backward()
    weight_grad = r.T @ x
    index = compress.indices(layer)
    expected = torch.stack([weight_grad[index == c].sum() for c in range(1, 8)])
    assert torch.allclose(layer.weight_centroids.grad, expected, atol=1e-5)


def test_fine_tuning_moves_centroids_not_zeros_and_remove_folds():
    layer, _ = shared_layer()
    net = nn.Sequential(layer)
    before = compress.codebook(layer).clone()
    x = torch.randn(64, 20)
    y = torch.randint(0, 10, (64,))
    from eie.sw import train
    train.fit(net, x, y, epochs=2, lr=0.01, batch_size=16, show=False)
    assert not torch.equal(compress.codebook(layer), before)
    zeros = compress.indices(layer) == 0
    compress.remove(layer)
    assert isinstance(layer.weight, nn.Parameter) and not compress.is_shared(layer)
    assert torch.all(layer.weight[zeros] == 0) and len(torch.unique(layer.weight)) <= 8


def test_shared_network_checkpoints_as_plain_weights(tmp_path):
    from eie.sw import models
    layer, _ = shared_layer()
    net = nn.Sequential(layer)
    with torch.no_grad():
        layer.weight_centroids += 1.0  # no forward pass since: the cached weight is stale
    models.save_checkpoint(tmp_path / "c.pt", net)
    plain, masks, _ = models.load_checkpoint(tmp_path / "c.pt")
    assert masks == {} and torch.equal(plain[0].weight, compress.codebook(layer)[compress.indices(layer)])


QUICK = ["--data", "digits", "--epochs", "3"]
QUICK_PRUNE = QUICK + ["--iterations", "2", "--retrain-epochs", "1", "--final-epochs", "1",
                       "--quality", "fc1=1.2,fc2=1.0,fc3=0.5"]


@pytest.fixture(scope="module")
def compressed_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    assert eie("sensitivity", run, *QUICK, "--fractions", "0.5,0.9") == 0
    assert eie("prune", run, *QUICK_PRUNE) == 0
    assert eie("compress", run, "--finetune-epochs", "1", "--calibration", "200") == 0
    return run


def test_pipeline_writes_the_run_folder(compressed_run):
    files = {p.name for p in compressed_run.iterdir()}
    assert {"baseline.pt", "pruned.pt", "compressed.pt", "image.npz", "report.json", "report.md",
            "sensitivity.json", "sensitivity.png", "weights.png"} <= files
    report = json.loads((compressed_run / "report.json").read_text())
    for key in ("baseline_accuracy", "pruned_accuracy", "compressed_accuracy", "pruning_ratio",
                "storage_ratio", "storage_ratio_by_pes", "storage_ratio_huffman", "storage_ratio_huffman_by_pes",
                "layers", "wall_seconds"):
        assert key in report, key
    assert set(report["storage_ratio_by_pes"]) == set(report["storage_ratio_huffman_by_pes"]) == {"1", "16", "64"}
    assert report["storage_ratio_huffman"] > report["storage_ratio"]
    assert report["pruning_ratio"] > 1.5 and report["storage_ratio"] > 5
    assert abs(report["compressed_accuracy"] - report["pruned_accuracy"]) < 10
    assert set(report["layers"]) == {"fc1", "fc2", "fc3"}
    assert {"kept_percent", "activation_percent", "flop_percent", "shift"} <= set(report["layers"]["fc1"])
    md = (compressed_run / "report.md").read_text()
    assert "weights kept %" in md and "5-bit indices" in md and "## Sensitivity" in md
    assert "| ratio with Huffman |" in md and "| 4-bit, Huffman |" in md


def test_image_decodes_to_the_fixed_point_model(compressed_run):
    from eie.sw.image import load_image
    from eie.sw.reference import forward
    from eie.sw.data import load_dataset
    from eie.sw.quant import to_fixed
    report = json.loads((compressed_run / "report.json").read_text())
    image = load_image(compressed_run / "image.npz", ChipConfig(**report["compress"]["chip"]))
    layers = image.quant_layers()
    d = load_dataset("digits")
    x = to_fixed(d.x_test.flatten(1).numpy(), report["compress"]["input_frac"], 16)
    logits = image.unpermute(forward(layers, x, image.config)[-1])     # the model's row order
    accuracy = 100 * (logits.argmax(1) == d.y_test.numpy()).mean()
    assert accuracy == pytest.approx(report["compressed_accuracy"], abs=0.01)


def test_storage_parts_and_padding():
    rng = np.random.default_rng(0)
    from eie.sw.quant import QuantLayer
    from eie.sw.storage import storage
    w = np.where(rng.random((300, 200)) < 0.05, rng.integers(1, 16, (300, 200)), 0)
    layer = QuantLayer(w, np.arange(16), np.zeros(300, np.int64), 8, True)
    four, five = storage([layer], ChipConfig(pes=1, index_bits=4)), storage([layer], ChipConfig(pes=1, index_bits=5))
    nonzero = np.count_nonzero(w)
    assert four["weights"] == -(-nonzero * 4 // 8) and five["indices"] == -(-nonzero * 5 // 8)
    assert four["padding"] > five["padding"] > 0      # gaps of ~20 rows often exceed 15
    assert storage([layer], ChipConfig(pes=16))["padding"] < four["padding"] / 4  # 19 local rows per PE: few long gaps
    assert four["total"] == sum(four[p] for p in ("weights", "indices", "padding", "pointers", "codebook", "bias"))


def test_storage_is_whole_bytes_each_part_inside_a_total_and_a_table_in_a_notebook():
    """An odd number of 4-bit entries is whole bytes; EIE's pointers are inside "total_eie", the Huffman-coded
    entries inside "total_huffman"; the dict (and the per-PE list) print as an HTML table."""
    from eie.sw.quant import QuantLayer
    from eie.sw.storage import NOT_IN_TOTAL, storage
    w = np.zeros((7, 3), np.int64)
    w[[0, 2, 4], [0, 1, 2]] = [3, 5, 7]                  # 3 entries: 12 bits of weight indices
    layer = QuantLayer(w, np.arange(16), np.zeros(7, np.int64), 8, True)
    parts = storage([layer], ChipConfig(pes=1))
    assert all(type(v) is int for v in parts.values()), parts
    assert parts["weights"] == 2
    assert parts["total"] == sum(v for k, v in parts.items() if k not in (*NOT_IN_TOTAL, "total"))
    assert parts["total_eie"] == parts["total"] - parts["pointers"] + parts["eie_pointers"]
    assert parts["total_huffman"] == (parts["total"] - parts["weights"] - parts["indices"] - parts["padding"]
                                      + parts["huffman_entries"])
    html = parts._repr_html_()
    assert html.startswith("<table>") and "<td>eie_pointers</td>" in html and "<td>total_eie</td>" in html
    per_pe = storage([layer], ChipConfig(pes=2), per_pe=True)
    assert all(type(v) is int for pe in per_pe for v in pe.values())
    assert all(pe["total_eie"] == pe["total"] - pe["pointers"] + pe["eie_pointers"] for pe in per_pe)
    assert per_pe._repr_html_().count("<tr>") == 3      # the head and one row per PE


def test_existing_files_are_kept_unless_forced(compressed_run):
    pruned = (compressed_run / "pruned.pt").read_bytes()
    report = (compressed_run / "report.json").read_text()
    with pytest.raises(EieError, match="already has pruned.pt"):
        eie("prune", compressed_run, *QUICK_PRUNE)
    with pytest.raises(EieError, match="already has compressed.pt, image.npz"):
        eie("compress", compressed_run)
    assert (compressed_run / "pruned.pt").read_bytes() == pruned
    assert (compressed_run / "report.json").read_text() == report


def test_bad_input_is_refused_before_anything_is_written(compressed_run, tmp_path):
    with pytest.raises(EieError, match="unknown model 'alexnet'"):
        eie("prune", tmp_path / "a", *QUICK, "--model", "alexnet")
    with pytest.raises(EieError, match="another architecture"):
        eie("prune", tmp_path / "b", *QUICK, "--model", "lenet-300-100", "--checkpoint",
            compressed_run / "baseline.pt", "--data", "fashion-mnist")
    with pytest.raises(EieError, match="out of range"):
        eie("prune", tmp_path / "c", *QUICK_PRUNE[:-1], "fc1=40")
    with pytest.raises(EieError, match="names no layer"):
        eie("prune", tmp_path / "c", *QUICK_PRUNE[:-1], "conv9=1")
    with pytest.raises(EieError, match="between 0 and 1"):
        eie("sensitivity", tmp_path / "d", *QUICK, "--fractions", "0.5,1.5")
    with pytest.raises(EieError, match="no pruned network"):
        eie("compress", tmp_path / "e")
    with pytest.raises(EieError, match="unknown centroid initialization"):
        eie("compress", compressed_run, "--init", "kmeans++", "--force")
    # refused before anything was written (an out-of-range quality shows only after training: "c" keeps
    # its baseline.pt)
    assert not any((tmp_path / d).exists() for d in "abde")


def test_help_texts(capsys):
    for command in ("prune", "sensitivity", "compress"):
        with pytest.raises(SystemExit):
            eie(command, "--help")
        text = capsys.readouterr().out
        assert "RUN_DIR" in text and "--force" in text
