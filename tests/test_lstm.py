"""An LSTM on the chip (issue 22): the host's fixed-point cell, the refusals, and the quick flow on the Verilator
chip with every step compared; beside each check, a perturbed run showing that the check catches a wrong answer.
The full Fashion-MNIST run is the slow test."""

import numpy as np
import pytest
import torch
from torch import nn

from conftest import cli, test_chip
from eie.errors import EieError
from eie.sw.image import SIZED_FIELDS
from eie.sw.lstm import check_fits, from_torch
from eie.sw.reference import ACTIVATIONS, activation_table, lstm_cell, pwl, state_frac

CONFIG = test_chip(2)    # the 2-PE build the other system tests use


def table_error(name, table, config=CONFIG):
    """Largest |pwl - the function| over every 16-bit input, at a few input scales."""
    x = np.arange(config.act_min, config.act_max + 1)
    return max(float(np.abs(pwl(x, frac, table, config) / 2.0 ** state_frac(config)
                            - ACTIVATIONS[name](x / 2.0 ** frac)).max()) for frac in (4, 8, 10, 13))


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_tables_are_the_functions(name):
    table = activation_table(name, CONFIG)
    assert table_error(name, table) < 5e-4
    wrong = table.copy()
    wrong[len(wrong) // 2 + 3] += 10          # one knot off by 10 LSB (6e-4)
    assert table_error(name, wrong) > 5e-4


def float_cell(z, c):
    i, f, g, o = np.split(z, 4, axis=1)
    sig = ACTIVATIONS["sigmoid"]
    c = sig(f) * c + sig(i) * np.tanh(g)
    return sig(o) * np.tanh(c), c


def test_fixed_point_cell_follows_the_float_cell(rng):
    s, z_frac, c_frac = state_frac(CONFIG), 10, 11
    z = rng.integers(-12 << z_frac, 12 << z_frac, (64, 4 * 8))
    c = rng.integers(-3 << c_frac, 3 << c_frac, (64, 8))
    h, c2 = lstm_cell(z, c, z_frac, c_frac, CONFIG)
    h_f, c_f = float_cell(z / 2.0 ** z_frac, c / 2.0 ** c_frac)
    assert np.abs(h / 2.0 ** s - h_f).max() < 2e-3 and np.abs(c2 / 2.0 ** c_frac - c_f).max() < 2e-3
    wrong = lstm_cell(z, c, z_frac, c_frac - 1, CONFIG)[1]      # the cell read at the wrong scale
    assert np.abs(wrong / 2.0 ** c_frac - c_f).max() > 0.1


def test_from_torch_computes_what_nn_lstm_does():
    torch.manual_seed(0)
    lstm, head = nn.LSTM(5, 7, batch_first=True), nn.Linear(7, 3)
    x = torch.randn(4, 6, 5)
    expected = head(lstm(x)[0][:, -1])
    model = from_torch(lstm, head)
    torch.testing.assert_close(model(x), expected)
    with torch.no_grad():
        lstm.bias_hh_l0[:7] += 1.0                  # the input gates' bias: from_torch must add both biases
    assert not torch.allclose(from_torch(lstm, head)(x), expected)


@pytest.mark.parametrize("module, what", [
    (nn.GRU(5, 7), "a GRU cell"), (nn.RNN(5, 7), "a RNN cell"), (nn.LSTM(5, 7, num_layers=2), "2 layers"),
    (nn.LSTM(5, 7, bidirectional=True), "bidirectional"), (nn.LSTM(5, 7, proj_size=3), "proj_size=3"),
])
def test_unsupported_recurrent_networks_are_refused_in_one_line(module, what):
    with pytest.raises(EieError) as e:
        from_torch(module, nn.Linear(7, 3))
    message = str(e.value)
    assert "\n" not in message and what in message and "single-layer, unidirectional LSTM" in message


def test_unsupported_variants_and_unfitting_steps_refused_by_the_command(tmp_path):
    with pytest.raises(EieError, match="a gru cell.*single-layer, unidirectional LSTM"):
        cli("lstm", "--quick", "--cell", "gru", "--run-dir", tmp_path / "r")
    with pytest.raises(EieError, match="bidirectional"):
        cli("lstm", "--quick", "--bidirectional", "--run-dir", tmp_path / "r")
    # 16 hidden units: 64 gate rows; 1 PE x 32 activations cannot hold them (refused before any training)
    with pytest.raises(EieError, match="64 gate rows.*holds 32"):
        cli("lstm", "--quick", "--pes", "1", "--act-depth", "32", "--run-dir", tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_check_fits_counts_the_stacked_input_and_the_gates():
    check_fits(28, 128, CONFIG.replace(pes=1, act_depth=512))
    with pytest.raises(EieError, match="156 stacked inputs"):
        check_fits(28, 128, CONFIG.replace(pes=1, act_depth=511))
    with pytest.raises(EieError):
        check_fits(200, 32, CONFIG.replace(pes=1, act_depth=231))     # the stacked input is the larger


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """The `--quick` flow (digits, 16 hidden, the 2-PE chip), through the library the command calls."""
    from eie.cosim.lstm import lstm_flow
    results, cl = lstm_flow(tmp_path_factory.mktemp("lstm") / "run", quick=True, config=CONFIG, keep=SIZED_FIELDS,
                            log=lambda m: None)
    return results, cl


def test_quick_flow_is_bit_exact_every_step(quick):
    r, cl = quick
    run = r["run"]
    assert run["samples"] == 40 and run["steps"] == 8 and run["steps_compared"] == 320
    assert run["mismatched_steps"] == 0 and run["head_mismatches"] == 0
    assert r["chip_accuracy"] == r["reference_accuracy"] > 50
    assert run["model_equals_rtl"] and run["model_samples"] == 20
    assert run["model_cycles_per_sequence"] == run["rtl_cycles_per_sequence_on_model_samples"]
    assert r["weights_kept_fraction"] < 0.5 and r["storage_ratio"] > 1
    from eie.cosim.lstm import summary
    text = summary(r)
    assert "{r[" not in text and f"-> {r['storage_bytes']['total']:.0f} bytes" in text and "magnitude, 3 final" in text
    from eie.sw.data import load_dataset
    estimate = cl.estimate(load_dataset("digits").x_test[:40], model_samples=20)   # no simulator
    assert estimate["cycles_per_sequence"] == run["model_cycles_per_sequence"]


def test_a_chip_too_small_for_a_step_is_refused_before_simulating(quick):
    _, cl = quick
    with pytest.raises(EieError, match="64 gate rows"):
        cl.relayout(pes=1, act_depth=32)
    assert cl.relayout(pes=1, act_depth=64).config.max_dim == 64


def test_an_earlier_run_is_not_overwritten(quick, tmp_path):
    from eie.cosim.lstm import lstm_flow
    (tmp_path / "lstm.json").write_text("{}")
    with pytest.raises(EieError, match="already has lstm.json"):
        lstm_flow(tmp_path, quick=True, config=CONFIG, keep=SIZED_FIELDS, log=lambda m: None)


def first_sequences(n=6):
    from eie.sw.data import load_dataset
    return load_dataset("digits").x_test[:n]


def test_a_wrong_weight_on_the_chip_is_caught_at_a_step(quick):
    _, cl = quick
    from dataclasses import replace
    image = cl.gates
    entries = [e.copy() for e in image.entries]
    k = int(np.argmax([np.count_nonzero(e[:, 0]) for e in entries]))
    real = np.flatnonzero(entries[k][:, 0])
    e = real[len(real) // 2]
    entries[k][e, 0] = 1 if entries[k][e, 0] != 1 else cl.config.codebook_size - 1   # one weight, another value
    run = cl.simulate(first_sequences(), images=(replace(image, entries=entries), cl.head), log=lambda m: None)
    assert run.figures["mismatched_steps"] > 0 and "first_mismatch" in run.figures


def test_a_wrong_host_table_entry_is_caught_at_a_step(quick):
    _, cl = quick
    x = first_sequences()
    tables = {n: activation_table(n, cl.config) for n in ACTIVATIONS}
    table = tables["sigmoid"].copy()
    table[len(table) // 2] += 50                 # sigmoid(0), the knot the gates pass most often
    run = cl.simulate(x, images=None, tables={**tables, "sigmoid": table}, log=lambda m: None)
    assert run.figures["mismatched_steps"] > 0
    assert run.figures["first_mismatch"]["step"] >= 1      # the chip's step 0 is right; the host's h is not


def test_a_wrong_cycle_model_is_caught(quick, monkeypatch):
    _, cl = quick
    from eie.sw import perf
    monkeypatch.setattr(perf, "OUTPUT_LATENCY", perf.OUTPUT_LATENCY + 1)
    run = cl.simulate(first_sequences(2), log=lambda m: None)
    assert not run.figures["model_equals_rtl"] and run.figures["mismatched_steps"] == 0


@pytest.mark.slow
def test_full_fashion_mnist_lstm_on_16_pes(tmp_path):
    """The issue's targets: the whole test set bit-exact on the 16-PE chip, >= 8x fewer weights, accuracy within
    1 pp of dense float, cycles per sequence from the RTL equal to the model's."""
    from eie.cosim.lstm import lstm_flow
    r, _ = lstm_flow(tmp_path / "run", model_samples=200)
    run = r["run"]
    assert run["samples"] == 10000 and run["steps"] == 28 and run["chip"]["pes"] == 16
    assert run["mismatched_steps"] == 0 and run["head_mismatches"] == 0
    assert r["chip_accuracy"] == r["reference_accuracy"]
    assert r["pruning_ratio"] >= 8
    assert r["dense_float_accuracy"] - r["chip_accuracy"] <= 1.0
    assert run["model_equals_rtl"] and run["model_samples"] == 200


# -- the modern pruning methods on the stacked gates (issue 22) -------------------------------------------------

def small_lstm():
    from eie.sw.data import load_dataset
    from eie.sw.lstm import build_lstm
    data = load_dataset("digits")
    return build_lstm(data, hidden=16, seed=0), data


def test_wanda_weighs_the_gates_by_every_steps_stacked_input():
    """Wanda on the LSTM keeps half of every row of the gates and the head, and weighs the gates' columns by
    [x_t, h_{t-1}] over every step: the recurrent columns keep weights (on the first step alone h is zero,
    which would cut every recurrent weight), and the cut is the one `wanda_mask` makes from all steps."""
    from eie.sw import methods
    from eie.sw.lstm import prune_lstm
    model, data = small_lstm()
    before = model.gates.weight.detach().clone()
    x = methods.calibration_images(data, 32, seed=0)
    trace = []
    with torch.no_grad():
        model.eval()(x, trace)
    stacked = torch.cat([a for a, _, _ in trace])
    expected = nn.Linear(24, 64)
    with torch.no_grad():
        expected.weight.copy_(before)
    methods.wanda_mask(expected, stacked, 0.5)
    f = prune_lstm(model, data, method="wanda", calibration=x, log=lambda m: None)
    kept = model.gates.weight.detach() != 0
    assert f["prune"]["method"] == "wanda" and f["kept_weights"] == f["dense_weights"] // 2
    assert (kept.sum(1) == 12).all() and ((model.head.weight.detach() != 0).sum(1) == 8).all()
    assert torch.equal(kept, expected.weight.detach() != 0)
    assert int(kept[:, 8:].sum()) > 0                        # recurrent weights kept: h of later steps counted
    first_only = nn.Linear(24, 64)
    with torch.no_grad():
        first_only.weight.copy_(before)
    methods.wanda_mask(first_only, trace[0][0], 0.5)
    assert not torch.equal(kept, first_only.weight.detach() != 0)


def test_n_m_keeps_two_of_every_four_inputs_after_retraining_and_refusals():
    from eie.sw.lstm import prune_lstm
    from eie.sw.pipeline import Training
    model, data = small_lstm()
    f = prune_lstm(model, data, method="2:4", retraining=Training(epochs=1, lr=0.05, l2=0.0), final_epochs=1,
                   log=lambda m: None)
    assert f["prune"]["method"] == "2:4" and f["prune"]["final_epochs"] == 1
    for layer in (model.gates, model.head):
        groups = (layer.weight.detach() != 0).reshape(-1, 4).sum(1)
        assert (groups <= 2).all() and int(groups.sum()) == layer.weight.numel() // 2
    model, data = small_lstm()
    with pytest.raises(EieError, match="3:5 sparsity needs M=5 to divide"):
        prune_lstm(model, data, method="3:5", log=lambda m: None)
    with pytest.raises(EieError, match="fixes the pruned fraction"):
        prune_lstm(model, data, method="2:4", sparsity=0.3, log=lambda m: None)
    with pytest.raises(EieError, match="unknown pruning method 'sparsegpt'"):
        prune_lstm(model, data, method="sparsegpt", log=lambda m: None)
    f = prune_lstm(model, data, sparsity=0.5, iterations=1, final_epochs=0, log=lambda m: None)  # magnitude at 50%
    assert f["prune"]["method"] == "magnitude" and abs(f["kept_weights"] / f["dense_weights"] - 0.5) < 0.01


def test_quick_flow_with_2_4_sparsity_is_bit_exact(tmp_path):
    """The quick flow pruned 2:4 (retrained one epoch): half of each matrix kept, every step bit-exact, the
    cycle model equal to the RTL."""
    from eie.cosim.lstm import lstm_flow
    r, _ = lstm_flow(tmp_path / "run", quick=True, config=CONFIG, keep=SIZED_FIELDS, method="2:4", final_epochs=1,
                     samples=10, log=lambda m: None)
    run = r["run"]
    assert r["prune"]["method"] == "2:4" and r["weights_kept_fraction"] == 0.5
    assert run["mismatched_steps"] == 0 and run["head_mismatches"] == 0 and run["model_equals_rtl"]
    assert r["chip_accuracy"] == r["reference_accuracy"] > 50


def test_eie_demo_model_lstm_is_the_lstm_command(tmp_path):
    """`eie demo --model lstm --quick` runs `eie lstm --quick` (its parser, its flow, its run folder); the demo's
    default model stays the MLP."""
    import json
    from eie.cli import build_parser
    assert build_parser().parse_args(["demo"]).model == "mlp"
    assert cli("demo", "--model", "lstm", "--quick", "--samples", "4", "--run-dir", tmp_path / "demo") == 0
    r = json.loads((tmp_path / "demo" / "lstm.json").read_text())
    assert r["run"]["samples"] == 4 and r["run"]["chip"]["pes"] == 2 and r["data"]["name"] == "digits"
    assert r["run"]["mismatched_steps"] == 0 and r["prune"]["method"] == "magnitude"
    with pytest.raises(SystemExit) as e:                    # argparse: invalid choice, exit 2
        build_parser().parse_args(["demo", "--model", "gru"])
    assert e.value.code == 2
