"""`eie compare` and the methods it sets against pruning: sizes, the storage rule, OBD's Hessian diagonal, SVD,
low-bit weights, CPU timing, bad input; the full Fashion-MNIST comparison in the slow tier."""

import json
import time

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from eie.cli import main
from eie.errors import EieError
from eie.sw import compare as cmp
from eie.sw import cputime, methods, prune
from eie.sw.storage import storage, storage_bits_by_part
from timing_helpers import SOURCE, hinted_config, private_fmax, record_fmax


def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A run folder with a LeNet-300-100 baseline trained briefly on digits."""
    run = tmp_path_factory.mktemp("compare") / "run"
    assert main(["prune", str(run), "--data", "digits", "--epochs", "4", "--iterations", "1",
                 "--retrain-epochs", "0", "--final-epochs", "0"]) == 0
    return run


@pytest.fixture(scope="module")
def results(digits_run):
    return cmp.compare(digits_run, budgets=(0.25, 0.1), epochs=2, iterations=1, chip_samples=2, min_run_time=0.002)


# -- each method at the requested size -----------------------------------------------------------------------

def test_every_method_and_budget_is_measured(results):
    dense = results["dense_weights"]
    assert dense == 64 * 300 + 300 * 100 + 100 * 10
    seen = {(p["method"], p["budget"]) for p in results["points"]}
    for method in cmp.METHODS:
        budgets = [None] if method in ("int8", "int4", "2:4", "2:4-noretrain") else [0.25, 0.1]
        assert {(method, b) for b in budgets} <= seen, method
    for p in results["points"]:
        assert 0 <= p["accuracy"] <= 100 and p["bytes"] > 0
        # Huffman-coded entries: Deep Compression's points only, and smaller
        assert (p["bytes_huffman"] is not None) == (p["form"] == "shared"), p["method"]
        assert p["form"] != "shared" or p["bytes_huffman"] < p["bytes"]
        assert set(p["cpu"]) == {"1", "64"} and all(v["threads"] == 1 for v in p["cpu"].values())
        assert (p["chip"] is not None) == (p["form"] in ("dense", "sparse", "shared")), p["method"]
        if p["budget"] is None:
            assert p["weights"] == (dense // 2 if p["method"].startswith("2:4") else dense), p["method"]
            continue
        # pruned: exactly the budget's weights (ties aside; Wanda in whole weights per row); SVD: at most the budget
        assert p["weights"] <= p["budget"] * dense, p
        if p["form"] != "lowrank":
            per_row = p["method"] in ("wanda", "sparsegpt")
            assert p["weights"] >= p["budget"] * dense - (300 + 100 + 10 if per_row else 3), p


def _count(model):
    return sum(int(layer.weight.count_nonzero()) for _, layer in prune.layers(model))


def _data():
    from eie.sw.data import load_dataset
    return load_dataset("digits")


def _lenet(data):
    """LeNet-300-100 for digits, trained a little (pruning budgets assume a trained network's weights)."""
    from eie.sw import models, train
    torch.manual_seed(0)
    model = models.build("lenet-300-100", data.input_shape, data.classes)
    train.fit(model, data.x_train, data.y_train, epochs=3, lr=0.05, show=False)
    return model


def test_pruning_methods_leave_the_requested_count():
    from eie.sw.pipeline import Training
    data = _data()
    quality = {"fc1": 1.75, "fc2": 1.3, "fc3": 0.9}
    step = Training(epochs=1, lr=0.02, l2=5e-4)
    for budget in (0.3, 0.07):
        model = _lenet(data)
        total = methods.prunable_weights(model)
        methods.iterative_to_budget(model, data, quality, budget, 2, step, 1, log=lambda m: None)
        assert int(budget * total) - 3 <= _count(model) <= budget * total
        model = _lenet(data)
        methods.prune_to_quality(model, methods.scaled_quality(model, quality, budget))
        assert int(budget * total) - 3 <= _count(model) <= budget * total
        model = _lenet(data)
        methods.obd_schedule(model, data, budget, 2, step, 1, hessian_images=64)
        assert _count(model) == int(budget * total)


def test_obd_keeps_the_highest_saliencies():
    net = tiny_net()
    x, y = torch.rand(40, 1, 6), torch.randint(0, 3, (40,))
    diag = methods.hessian_diagonal(net, x, y)
    saliency = torch.cat([(diag[n][0] * l.weight.detach().double() ** 2 / 2).flatten() for n, l in prune.layers(net)])
    methods.obd_prune(net, 17, x, y)
    kept = torch.cat([(l.weight != 0).flatten() for _, l in prune.layers(net)])
    assert int(kept.sum()) == 17
    assert saliency[kept].min() >= saliency[~kept].max()


def test_low_rank_model_fits_the_budget():
    data = _data()
    base = _lenet(data)
    for budget in (0.25, 0.05):
        model = methods.low_rank(base, budget)
        factors = sum(m.weight.numel() for m in model if isinstance(m, nn.Linear))
        assert factors <= budget * methods.prunable_weights(base)
        assert model(data.x_test[:3]).shape == (3, 10)


def test_fine_tuning_the_low_rank_model_leaves_the_baseline_as_it_was():
    """A layer cheaper dense (LeNet-300-100's fc3 at 25%) stays dense in the low-rank model, as a copy: compare
    fine-tunes the low-rank model, and every method after it starts from the same baseline (a shared fc3 was
    trained in place, which changed later points' results)."""
    from eie.sw.pipeline import Training
    data = _data()
    base = _lenet(data)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = methods.low_rank(base, 0.25)
    assert "fc3" in dict(model.named_children())           # kept dense
    Training(epochs=1, lr=0.05).fit(model, data, "svd", log=lambda m: None)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    assert not torch.equal(model.fc3.weight.detach(), base.fc3.weight.detach())


def test_low_bit_weights_lie_on_the_grid():
    x, y = torch.rand(64, 1, 6), torch.randint(0, 3, (64,))
    from eie.sw import train
    for bits in (4, 8):
        model = methods.quantize_weights(tiny_net(), bits)
        train.fit(model, x, y, epochs=2, lr=0.05, batch_size=16, show=False)
        scales = methods.fix_quantized(model)
        for name, layer in prune.layers(model):
            q = layer.weight.detach().numpy() / scales[name][:, None]
            assert np.allclose(q, np.round(q), atol=1e-3)
            assert np.abs(np.round(q)).max() <= 2 ** (bits - 1) - 1
        assert not any(hasattr(l, "parametrizations") for _, l in prune.layers(model))


# -- storage: one rule, known bytes ------------------------------------------------------------------------

def test_storage_rule_on_a_hand_built_matrix():
    # 20 x 3 on one PE with 4-bit relative indices: column 0 holds rows 0 and 19 (a gap of 18 zeros needs one
    # padding entry), column 1 is empty, column 2 holds row 5: 3 real entries + 1 padding. The model's own chip
    # has 1 matrix word (4-bit entry addresses) and counts up to 2 (2 bits): one pointer word of 4 + 8 x 2 bits.
    w = np.zeros((20, 3))
    w[0, 0], w[19, 0], w[5, 2] = 0.5, -1.0, 2.0
    # float32 values: 4 entries x (32 + 4) + 20 pointer bits + 20 biases x 32 = 804 bits
    assert cmp.sparse_bytes([w]) == 804 / 8
    # 4-bit codebook indices, 16-bit biases, a 16 x 16-bit codebook: 4 x 8 + 20 + 320 + 256 = 628 bits, which is
    # what `eie.sw.storage.storage` (Deep Compression's accounting) counts for the same matrix
    assert cmp.sparse_bytes([w], value_bits=4, bias_bits=16, codebook_bits=256) == 628 / 8
    exact = storage_bits_by_part(cmp._pattern_layers([w]), cmp.STORAGE_CHIP)
    assert sum(exact[p] for p in ("weights", "indices", "padding", "pointers", "codebook", "bias")) == 628
    # storage() counts each part in whole bytes: 12, 12, 8, 20, 256 and 320 bits -> 2 + 2 + 1 + 3 + 32 + 40
    assert storage(cmp._pattern_layers([w]), cmp.STORAGE_CHIP)["total"] == 80


def test_dense_and_low_bit_bytes():
    net = nn.Sequential(nn.Linear(3, 2))
    assert cmp.dense_bytes(net) == (6 + 2) * 4
    assert cmp.low_bit_bytes(net, 4) == (6 * 4 + 2 * 32 + 2 * 32) / 8


# -- OBD's Hessian diagonal, SVD ---------------------------------------------------------------------------

def test_hessian_diagonal_is_exact_on_a_tiny_network():
    net = tiny_net().double()
    x = torch.randn(11, 1, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (11,))
    diag = methods.hessian_diagonal(net, x, y, batch_size=4)
    names = [n for n, _ in net.named_parameters()]
    params = tuple(p.detach().clone() for p in net.parameters())

    def loss(*ps):
        return nn.functional.cross_entropy(functional_call(net, dict(zip(names, ps)), (x,)), y)
    hessian = torch.autograd.functional.hessian(loss, params)
    largest = 0.0
    for i, (name, p) in enumerate(zip(names, params)):
        exact = hessian[i][i].reshape(p.numel(), p.numel()).diagonal().reshape(p.shape)
        layer, kind = name.split(".")
        mine = diag[layer][0 if kind == "weight" else 1]
        assert torch.allclose(mine, exact, rtol=1e-9, atol=1e-15), name
        largest = max(largest, exact.abs().max().item())
    assert largest > 1e-2                  # not a vacuous comparison of zeros


def test_svd_at_full_rank_reproduces_the_layer():
    layer = nn.Linear(7, 5)
    a, b = methods.svd_factors(layer.weight, 5)
    assert a.shape == (5, 7) and b.shape == (5, 5)
    assert torch.allclose(b @ a, layer.weight, atol=1e-5)
    a2, b2 = methods.svd_factors(layer.weight, 2)
    u, s, vh = torch.linalg.svd(layer.weight.detach().double())
    best = (u[:, :2] * s[:2]) @ vh[:2]
    assert torch.allclose((b2 @ a2).double(), best, atol=1e-5)


def test_svd_ranks_respect_the_budget_and_keep_cheap_layers_dense():
    spectra = {"big": (300, 784, torch.linspace(3, 0.1, 300)), "out": (10, 100, torch.ones(10))}
    ranks = methods.svd_ranks(spectra, 0.05)
    cost = (ranks["big"] * (300 + 784) if ranks["big"] else 300 * 784) + (ranks["out"] * 110 if ranks["out"] else 1000)
    assert cost <= 0.05 * (300 * 784 + 1000)
    assert ranks["out"] is None            # 10 equal singular values: worth keeping whole, and dense is cheaper
    with pytest.raises(EieError, match="budget"):
        methods.svd_ranks(spectra, 1e-4)


# -- CPU timing --------------------------------------------------------------------------------------------

def test_time_call_reports_seconds_per_call_and_threads():
    r = cputime.time_call(lambda: time.sleep(0.002), threads=1, min_run_time=0.05)
    assert 0.0019 < r["seconds"] < 0.02 and r["calls"] >= 3 and r["threads"] == 1
    seen = []
    r = cputime.time_call(lambda: seen.append(torch.get_num_threads()), threads=2, min_run_time=0.01)
    assert r["threads"] == 2 and set(seen) == {2}


def test_network_kernels_agree_and_time_network_picks_the_fastest():
    rng = np.random.default_rng(0)
    layers = [(rng.standard_normal((30, 20)).astype(np.float32) * (rng.random((30, 20)) < 0.2),
               rng.standard_normal(30).astype(np.float32), True),
              (rng.standard_normal((4, 30)).astype(np.float32), np.zeros(4, np.float32), False)]
    fns = cputime.network_kernels(layers, (1, 5))
    out = {k: np.asarray(f()) for k, f in fns[5].items()}
    assert np.allclose(out["torch-dense"].T, out["torch-csr"], atol=1e-5)
    assert np.allclose(out["torch-dense"].T, out["scipy-csr"], atol=1e-5)
    timed = cputime.time_network(layers, (1, 5), min_run_time=0.002)
    for batch in (1, 5):
        t = timed[batch]
        assert set(t["kernels"]) == set(cputime.KERNELS) and t["threads"] == 1
        assert t["seconds"] == min(t["kernels"].values()) == t["kernels"][t["best"]]


def test_crossover_density():
    densities = [0.5, 0.2, 0.1, 0.05]
    assert cputime.crossover_density(densities, 1.0, [4, 2, 0.5, 0.2]) == pytest.approx(np.exp(
        np.log(0.2) + 0.5 * (np.log(0.1) - np.log(0.2))))
    assert cputime.crossover_density(densities, 1.0, [4, 3, 2, 1.5]) is None
    assert cputime.crossover_density(densities, 1.0, [0.9, 0.5, 0.2, 0.1]) == 0.5


def test_kernel_benchmark_table():
    rows = cputime.kernel_benchmark(layers=(("toy", 256, 128, 0.05),), densities=(0.5, 0.01), min_run_time=0.002)
    assert [r["batch"] for r in rows] == [1, 64]
    table = cputime.kernel_table(rows)
    assert "| toy | 128x256 | 5% | 1 | 1 |" in table and len(table.splitlines()) == 4


# -- outputs and bad input -----------------------------------------------------------------------------------

def test_every_chip_point_reports_its_load_under_both_placements(results, digits_run):
    """Issue 22's question, N:M against balanced placement of unstructured sparsity at equal density, answered in
    compare's output: each point run through `chip_figures` has the busiest PE over the mean per layer and the
    model's cycles, interleaved and balanced, and compare.md has the table with the 2:4 points in it."""
    loaded = [p for p in results["points"] if p["chip"] and "load" in p["chip"]]
    assert {p["method"] for p in loaded} >= {"dense", "iterative", "wanda", "2:4", "2:4-noretrain"}
    for p in loaded:
        load = p["chip"]["load"]
        for placement in ("interleaved", "balanced"):
            figures = load[placement]
            assert len(figures["busiest_over_mean"]) == 3 and all(r >= 1 for r in figures["busiest_over_mean"])
            assert figures["network"] >= 1 and figures["cycles_per_image"] > 0
        assert load["interleaved"]["cycles_per_image"] == p["chip"]["cycles_per_image"], p["method"]
    text = (digits_run / "compare.md").read_text()
    assert "## Load balance on the chip" in text and "| 2:4-noretrain | - | 50.00 |" in text


def test_outputs_are_written(results, digits_run):
    for name in cmp.OUTPUTS:
        assert (digits_run / name).stat().st_size > 0, name
    saved = json.loads((digits_run / "compare.json").read_text())
    assert saved["verdict"] == results["verdict"]
    assert saved["verdict"]["best_accuracy_per_kb"]["point"] in saved["verdict"]["accuracy_per_kb"]
    assert "## Verdict" in (digits_run / "compare.md").read_text()


def test_pareto_front():
    pts = [{"bytes": 10, "accuracy": 80}, {"bytes": 20, "accuracy": 79}, {"bytes": 30, "accuracy": 90},
           {"bytes": 30, "accuracy": 85}, {"bytes": 5, "accuracy": 50}]
    assert cmp.pareto_front(pts) == [pts[4], pts[0], pts[2]]


def test_verdict_names_who_beats_the_project_and_by_how_much():
    pts = [{"method": "deep-compression", "budget": 0.1, "bytes": 2000, "accuracy": 80.0},
           {"method": "iterative", "budget": 0.1, "bytes": 8000, "accuracy": 81.0},
           {"method": "int4", "budget": None, "bytes": 1000, "accuracy": 60.0},
           {"method": "svd", "budget": 0.1, "bytes": 7000, "accuracy": 82.0}]
    v = cmp.verdict(pts)
    assert v["best_accuracy_per_kb"] == {"point": "int4", "value": 60.0}
    assert v["best_project_point"] == {"point": "deep-compression @ 0.1", "value": 40.0}
    assert not v["project_is_best"] and v["beaten_by_factor"] == 1.5
    assert v["project_dominated"] == {"iterative @ 0.1": {"by": "svd @ 0.1", "accuracy_points": 1.0,
                                                          "bytes_ratio": round(8000 / 7000, 3)}}
    assert v["pareto_front"] == ["int4", "deep-compression @ 0.1", "svd @ 0.1"]
    assert "beaten by a factor 1.5" in cmp.markdown({
        "model": "m", "data": "d", "baseline_accuracy": 82.0, "dense_weights": 1, "budgets": [0.1],
        "training": dict.fromkeys(("epochs_per_point", "lr", "l2", "l1", "l1_dense_epochs", "iterations",
                                   "epochs_per_step", "final_epochs", "centroid_finetune_epochs", "hessian_images",
                                   "baseline"), 0),
        "cpu": {"min_run_time_s": 0.2, "threads": 1, "torch": "x"}, "chip": {"pes": 16, "cycle_samples": 1},
        "points": [], "verdict": v})


def _one_line_error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err


def test_bad_input_is_one_line(tmp_path, capsys, digits_run):
    _one_line_error(capsys, ["compare", str(tmp_path / "none")], "not a run folder")
    (tmp_path / "empty").mkdir()
    _one_line_error(capsys, ["compare", str(tmp_path / "empty"), "--data", "digits"], "no baseline.pt")
    for budgets in ("0.5,1", "0", "-0.1", "nan", "a"):
        _one_line_error(capsys, ["compare", str(digits_run), "--budgets", budgets], "budget")
    _one_line_error(capsys, ["compare", str(digits_run), "--methods", "iterative,magic"], "unknown method 'magic'")
    _one_line_error(capsys, ["compare", str(digits_run), "--epochs", "1"], "epochs")
    _one_line_error(capsys, ["compare", str(digits_run), "--pes", "100"], "pes")
    _one_line_error(capsys, ["compare"], "--kernels")


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory):
    """A run folder whose baseline (64-30-16-10 on digits) has a layer of 30 inputs, which 4 does not divide."""
    run = tmp_path_factory.mktemp("compare") / "odd"
    assert main(["prune", str(run), "--data", "digits", "--model", "30-16", "--epochs", "1", "--iterations", "1",
                 "--retrain-epochs", "0", "--final-epochs", "0"]) == 0
    return run


class _Stop(Exception):
    """Raised by a stand-in to end a comparison once the part under test has run."""


def test_default_methods_skip_2_4_where_4_does_not_divide_the_inputs(odd_run, monkeypatch, capsys):
    """Plain `eie compare RUN`: the default list's 2:4 methods are left out with a log line saying why; named in
    --methods, they are refused in one line that says to drop them."""
    def stop(model):
        raise _Stop
    monkeypatch.setattr(methods, "prunable_weights", stop)       # called just after the methods are settled
    with pytest.raises(_Stop):
        main(["compare", str(odd_run)])
    err = capsys.readouterr().err
    assert ("skipping 2:4-noretrain, 2:4: 2:4 sparsity needs 4 to divide every layer's inputs, but this baseline "
            "has fc2 30") in err, err
    assert main(["compare", str(odd_run), "--methods", "iterative,2:4"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].endswith("but this baseline has fc2 30: drop 2:4 from --methods"), errors


def test_deep_compression_trains_at_compares_threads(odd_run, monkeypatch):
    from eie.sw import flow
    seen = {}

    def compress(*args, threads=1, **kwargs):
        seen["threads"] = threads
        raise _Stop
    monkeypatch.setattr(flow, "compress", compress)
    with pytest.raises(_Stop):
        cmp.compare(odd_run, budgets=(0.25,), methods="deep-compression", epochs=2, iterations=1, threads=2,
                    force=True)
    assert seen == {"threads": 2}


def test_existing_comparison_is_kept_without_force(digits_run, results, capsys):
    before = (digits_run / "compare.json").read_bytes()
    _one_line_error(capsys, ["compare", str(digits_run)], "--force")
    assert (digits_run / "compare.json").read_bytes() == before


# -- the chip's time beside the CPU's ---------------------------------------------------------------------------

def _run_copy(digits_run, tmp_path, monkeypatch):
    """A copy of the digits run's baseline (with a private Fmax store), and the 4-PE chip fitted to it dense."""
    import shutil
    from eie.sw import models
    private_fmax(monkeypatch, tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    for name in ("baseline.pt", "report.json"):
        shutil.copy(digits_run / name, run / name)
    base = models.load_checkpoint(run / "baseline.pt")[0]
    return run, cmp.chip_config([np.ones(w.shape) for w, _, _ in cmp._layers(base)], pes=4)


def test_compare_states_the_chips_time_beside_the_cpus(digits_run, tmp_path, monkeypatch):
    """`eie compare` puts each chip point's time per image at its chip's measured Fmax (where one is stored; else
    'not measured' and the command that measures it) and at EIE's 800 MHz beside the CPU's batch-1 and -64 times."""
    run, dense_chip = _run_copy(digits_run, tmp_path, monkeypatch)
    record_fmax(dense_chip, 40.0)        # the dense point's chip measured; the pruned point's chip not
    assert main(["compare", str(run), "--methods", "iterative", "--budgets", "0.25", "--epochs", "2",
                 "--iterations", "1", "--pes", "4", "--chip-samples", "2", "--timing-seconds", "0.002"]) == 0
    dense, pruned = json.loads((run / "compare.json").read_text())["points"]
    assert dense["chip"]["config"] == dense_chip.to_dict() and pruned["chip"]["config"] != dense_chip.to_dict()
    for p in (dense, pruned):
        t, cycles = p["chip"]["time"], p["chip"]["cycles_per_image"]
        assert t["cycles_from"] == "model" and t["clocks"]["eie_800mhz"]["us_per_image"] == pytest.approx(
            cycles / 800, abs=1e-4)
    f = dense["chip"]["time"]["clocks"]["fmax"]
    assert f["mhz"] == 40 and f["source"].startswith(SOURCE) and "fmax_hint" not in dense["chip"]["time"]
    assert f["us_per_image"] == pytest.approx(dense["chip"]["cycles_per_image"] / 40, abs=1e-4)
    hint = pruned["chip"]["time"]["fmax_hint"]
    assert "fmax" not in pruned["chip"]["time"]["clocks"]
    assert hinted_config(hint).to_dict() == pruned["chip"]["config"]
    md = (run / "compare.md").read_text()
    section = md.split("## Wall-clock per image: CPU against the chip")[1].split("## Verdict")[0]
    us = lambda s: f"{1e6 * s:.1f}"
    c = dense["chip"]["cycles_per_image"]
    assert (f"| dense | - | {us(dense['cpu']['1']['seconds'])} | {us(dense['cpu']['64']['seconds'])} | {c} | "
            f"{c / 40:.3f} (40 MHz) | {c / 800:.3f} |") in section
    c = pruned["chip"]["cycles_per_image"]
    assert (f"| iterative | 0.25 | {us(pruned['cpu']['1']['seconds'])} | {us(pruned['cpu']['64']['seconds'])} | "
            f"{c} | not measured | {c / 800:.3f} |") in section
    assert f"- Fmax 40 MHz: {SOURCE}" in section and "(dense)" in section
    assert f"- iterative @ 0.25: {hint}" in section


def test_compare_runs_every_point_on_the_given_chips_memories(digits_run, tmp_path, monkeypatch):
    """With a synthesized chip's memories given (--matrix-words ...), every point that fits them runs on that chip
    and gets its measured Fmax; a point they cannot hold gets a chip fitted to it (no Fmax, never an error)."""
    run, dense_chip = _run_copy(digits_run, tmp_path, monkeypatch)
    record_fmax(dense_chip, 40.0)
    flags = ["--matrix-words", str(dense_chip.matrix_words), "--ptr-words", str(dense_chip.ptr_words),
             "--count-bits", str(dense_chip.count_bits), "--act-depth", str(dense_chip.act_depth)]
    common = ["--methods", "iterative", "--budgets", "0.25", "--epochs", "2", "--iterations", "1", "--pes", "4",
              "--chip-samples", "2", "--timing-seconds", "0.002", "--force"]
    assert main(["compare", str(run), *common, *flags]) == 0
    points = json.loads((run / "compare.json").read_text())["points"]
    assert [p["chip"]["config"] for p in points] == [dense_chip.to_dict()] * 2       # the pruned point too
    assert all(p["chip"]["time"]["clocks"]["fmax"]["mhz"] == 40 for p in points)
    # memories too small for the dense point: it falls back to a fitted chip, the pruned one stays
    small = {**dict(zip(flags[::2], flags[1::2])), "--matrix-words": str(dense_chip.matrix_words // 2)}
    assert main(["compare", str(run), *common, *(x for kv in small.items() for x in kv)]) == 0
    dense, pruned = json.loads((run / "compare.json").read_text())["points"]
    assert dense["chip"]["config"] == dense_chip.to_dict()          # fitted, as without the flags
    assert pruned["chip"]["config"]["matrix_words"] == dense_chip.matrix_words // 2
    assert "fmax" not in pruned["chip"]["time"]["clocks"]           # that chip was not measured


def test_sw_compare_imports_no_cosimulation():
    """The library stays software: the chip's clocks come in from the command (`eie.cosim.compare`)."""
    import ast
    tree = ast.parse(open(cmp.__file__).read())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    upward = {m for m in imported if m and m.startswith(("eie.cosim", "eie.cli", "eie.api"))}
    assert not upward, upward


# -- the full comparison (slow) ----------------------------------------------------------------------------

@pytest.mark.slow
def test_full_comparison_on_fashion_mnist(tmp_path):
    from eie.sw.data import FASHION_MNIST_DIR
    if not FASHION_MNIST_DIR.is_dir():
        pytest.skip("Fashion-MNIST is not installed")
    run = tmp_path / "fm"
    assert main(["prune", str(run), "--iterations", "1", "--retrain-epochs", "0", "--final-epochs", "0"]) == 0
    started = time.perf_counter()
    r = cmp.compare(run)
    assert time.perf_counter() - started < 20 * 60
    by = {(p["method"], p["budget"]): p for p in r["points"]}
    assert len(by) == 1 + 9 * 4 + 4
    # Deep Compression keeps the pruned accuracy within a point and stores under a tenth of the dense bytes
    for b in cmp.DEFAULT_BUDGETS:
        assert by[("deep-compression", b)]["accuracy"] > by[("iterative", b)]["accuracy"] - 1
        assert by[("deep-compression", b)]["bytes"] < by[("dense", None)]["bytes"] / 10
