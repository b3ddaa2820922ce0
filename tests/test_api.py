"""The whole flow through the public API only (`import eie`), as a notebook user drives it: digits, tiny
budgets, a 2-PE chip."""

import warnings

import numpy as np
import pytest

import eie


@pytest.fixture(scope="module")
def flow():
    data = eie.load_data("digits")
    model = eie.build_model("lenet-300-100", data)
    dense = eie.train(model, data, eie.Training(epochs=8, lr=0.05))
    figures = eie.prune(model, data, quality=1.0, iterations=1, retraining=eie.Training(epochs=1, lr=0.02),
                        final_epochs=1, log=lambda s: None)
    cm = eie.compress(model, data, eie.ChipConfig(pes=2), finetuning=eie.Training(epochs=0, lr=1e-4),
                      calibration=300, log=lambda s: None)
    return data, model, dense, figures, cm


def test_prune_and_compress(flow):
    data, model, dense, figures, cm = flow
    assert dense > 80 and figures["pruning_ratio"] > 1.5
    assert figures["kept_weights"] == sum(int((l.weight != 0).sum()) for l in (model.fc1, model.fc2, model.fc3))
    assert hasattr(model.fc1, "weight_mask"), "prune works in place, with torch's masks"
    assert cm.config.pes == 2 and cm.config.codebook_size == 16
    assert abs(cm.figures["fixed_point_accuracy"] - figures["pruned_accuracy"]) < 5


def test_predict_is_the_reference(flow):
    data, _, _, _, cm = flow
    x = data.x_test[:50]
    scores = cm.predict(x)
    ints = cm.image.unpermute(cm.reference(cm.inputs(x))[-1])
    assert scores.shape == (50, 10) and np.array_equal(scores * 2.0 ** cm.layers[-1].out_frac, ints)
    assert cm.accuracy(data.x_test, data.y_test) == cm.figures["fixed_point_accuracy"]


def test_estimate_simulate_save_load(flow, tmp_path):
    data, _, _, _, cm = flow
    x = data.x_test[:30]
    estimate = cm.estimate(x, model_samples=5)
    run = cm.simulate(x)
    assert len(run.mismatches) == 0 and np.array_equal(run.outputs, cm.image.unpermute(cm.reference(cm.inputs(x))[-1]))
    assert np.array_equal(run.outputs / 2.0 ** cm.layers[-1].out_frac, cm.predict(x))
    assert run.figures["mismatches"] == 0 and run.figures["samples"] == 30
    # the model's cycles (first 5 images) match the RTL's within 2%, layer by layer
    for est, sim in zip(estimate["layers"], run.figures["layers"]):
        assert sim["model_cycles_error_pct"] <= 2
        assert est["bound_cycles"] == sim["bound_cycles"] and est["ideal_cycles"] == sim["ideal_cycles"]
    assert 0 < estimate["energy_pj_per_image"]["total"] == run.figures["energy_pj_per_image"]["total"]
    cm.save(tmp_path / "run")
    again = eie.load(tmp_path / "run")
    assert again.config == cm.config and again.data == {"name": "digits", "data_dir": None}
    assert np.array_equal(again.simulate(x[:5]).outputs, run.outputs[:5])


def test_relayout_and_bad_input(flow):
    data, _, _, _, cm = flow
    assert cm.relayout() is cm
    four = cm.relayout(pes=4, index_bits=5)
    assert four.config.pes == 4 and four.config.index_bits == 5
    assert np.array_equal(four.predict(data.x_test[:20]), cm.predict(data.x_test[:20]))
    with pytest.raises(eie.EieError, match="16-entry codebooks"):
        cm.relayout(weight_index_bits=5)
    with pytest.raises(eie.EieError, match="first layer takes 64 inputs"):
        cm.predict(np.zeros((3, 7)))
    with pytest.raises(eie.EieError, match="NaN"):
        cm.predict(np.full((1, 64), np.nan))


def test_codebook_size_follows_the_chip(flow):
    """`compress` makes 2^weight_index_bits-entry codebooks (here 8: seven shared values and zero)."""
    data, model, _, figures, _ = flow
    cm = eie.compress(model, data, eie.ChipConfig(pes=2, weight_index_bits=3),
                      finetuning=eie.Training(epochs=0, lr=1e-4), calibration=300, log=lambda s: None)
    assert cm.config.codebook_size == 8 and cm.figures["codebook_size"] == 8
    assert all(np.count_nonzero(q.codebook) <= 7 and q.w_index.max() <= 7 for q in cm.layers)
    assert cm.figures["fixed_point_accuracy"] > figures["pruned_accuracy"] - 15


def test_balanced_placement_is_the_default_and_never_worse(flow):
    """Rows placed to balance the PEs (the default) against EIE's interleaving: the same outputs, and the
    busiest PE's expected work (every input non-zero; what placement balances) never larger."""
    from eie.sw.placement import expected_work
    data, model, _, _, cm = flow
    inter = eie.compress(model, data, eie.ChipConfig(pes=2), finetuning=eie.Training(epochs=0, lr=1e-4),
                         calibration=300, placement="interleaved", log=lambda s: None)
    assert cm.placement == "balanced" and inter.placement == "interleaved"
    assert any(d.order is not None for d in cm.image.layers) and all(d.order is None for d in inter.image.layers)
    x = data.x_test[:100]
    assert np.array_equal(cm.predict(x), inter.predict(x))
    for placed, plain in zip(cm.layers, inter.layers):
        assert expected_work(placed.w_index, None, cm.config).max() <= \
            expected_work(plain.w_index, None, inter.config).max()
    assert cm.relayout(pes=4).placement == "balanced"


def test_models_of_other_sizes_share_the_standard_chip(flow):
    """One simulator build per PE count: a model of another size lands on the same standard chip; one too big
    for it gets a chip fitted to it."""
    data, _, _, _, cm = flow
    small = eie.compress(eie.build_model("40", data), data, eie.ChipConfig(pes=2),
                         finetuning=eie.Training(epochs=0, lr=1e-4), calibration=100, log=lambda s: None)
    assert small.config == cm.config == eie.ChipConfig.standard(2)
    wide = eie.compress(eie.build_model("1500", data), data, eie.ChipConfig(pes=1),
                        finetuning=eie.Training(epochs=0, lr=1e-4), calibration=100, log=lambda s: None)
    assert wide.config.act_depth == 2048 > eie.ChipConfig.standard(1).act_depth


def test_inputs_on_another_scale_are_refused_or_warned(flow, tmp_path):
    """Raw digits (integers 0..16) where the model was calibrated on floats in [0, 1] are refused; the same as
    floats run with a warning saying how much lies outside; the recorded range survives save and load."""
    data, _, _, _, cm = flow
    assert cm.input_range == (0.0, 1.0) and cm.figures["input"]["dtype"] == "float32"
    raw = np.rint(data.x_test[:20].numpy() * 16).astype(np.int64)
    for call in (cm.predict, cm.simulate, cm.estimate):
        with pytest.raises(eie.EieError, match=r"inputs are int64 \(values 0..16\) but the model was calibrated "
                                               r"on float32 values in \[0, 1\]"):
            call(raw)
    with pytest.raises(eie.EieError, match="uint8"):
        cm.predict((data.x_test[:5] * 255).to(dtype=__import__("torch").uint8))
    with pytest.warns(eie.InputRangeWarning, match=r"^\d+\.\d% of the input values lie outside \[0, 1\]"):
        cm.predict(raw.astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cm.predict(data.x_test)             # the test set is on the training data's scale: not a word
    cm.save(tmp_path / "run")
    assert eie.load(tmp_path / "run").input_range == (0.0, 1.0)


def test_bad_calls_are_one_line_errors(flow):
    """Each of these was a ValueError, RuntimeError, AttributeError or FileNotFoundError from deep inside."""
    data, model, _, _, cm = flow
    cases = [
        (lambda: cm.predict(np.zeros((0, 64), np.float32)), r"shape \(0, 64\) hold no values"),
        (lambda: cm.predict(data.x_test[0].flatten().numpy()), r"shape \(64,\) have no samples axis.*x\[None\]"),
        (lambda: cm.predict(np.array([["a"]])), "inputs must be numbers"),
        (lambda: eie.ChipConfig(pes=-1), "ChipConfig.pes must be in 1..64, not -1"),
        (lambda: eie.ChipConfig(pes=2.0), "ChipConfig.pes must be an int"),
        (lambda: eie.compress("hello", data), "model must be a torch nn.Module .*not str"),
        (lambda: eie.prune(model, "digits"), "data must be a data set from eie.load_data"),
        (lambda: eie.train(None, data), "not NoneType"),
        (lambda: cm.verilog("/no/such/dir/x.v"), "cannot write /no/such/dir/x.v: folder /no/such/dir does not exist"),
        (lambda: cm.simulate(data.x_test[:3], waves="w.vcd", waves_sample=5), "waves_sample must be one of the 3"),
    ]
    for call, message in cases:
        with pytest.raises(eie.EieError, match=message):
            call()
    x = data.x_test[:4].clone().requires_grad_(True)      # straight from a training loop
    assert np.array_equal(cm.predict(x), cm.predict(data.x_test[:4]))


def test_five_layers_compress_onto_a_chip_with_a_larger_layer_table(flow):
    """The standard chip's table holds 4 layers; a deeper model gets a chip sized to it, not an error after
    fine-tuning naming a flag that `eie compress` lacks."""
    data = flow[0]
    model = eie.build_model("24-20-16-12", data)
    eie.train(model, data, eie.Training(epochs=2, lr=0.05))
    cm = eie.compress(model, data, eie.ChipConfig(pes=2), finetuning=eie.Training(epochs=0, lr=1e-4),
                      calibration=100, log=lambda s: None)
    assert len(cm.layers) == 5 and cm.config.max_layers == 5
    assert len(cm.simulate(data.x_test[:4]).mismatches) == 0


def test_api_errors_name_no_command_line_flags(flow, tmp_path):
    data, _, _, _, cm = flow
    cm.save(tmp_path / "run")
    with pytest.raises(eie.EieError, match=r"pick a new folder or save\(..., force=True\) to replace") as refused:
        cm.save(tmp_path / "run")
    bare = eie.CompressedModel(cm.image, cm.host_ops, cm.in_frac)
    with pytest.raises(eie.EieError, match=r"load one with eie.load_data") as refused_data:
        bare.dataset()
    with pytest.raises(eie.EieError) as refused_jobs:
        cm.simulate(data.x_test[:2], jobs=0)
    with pytest.raises(eie.EieError) as refused_digits:
        eie.load_data("digits", data_dir="/tmp")
    for e in (refused, refused_data, refused_jobs, refused_digits):
        assert "--" not in str(e.value), e.value


def test_the_api_and_the_commands_write_the_same_run(tmp_path, monkeypatch, capfd):
    """The same settings through the API (one torch thread, as the commands' default, then restored; `log`
    silencing every line) and through `eie prune` + `eie compress`: the same figures in report.json, pruning
    figures and the dense size before dead neurons were removed included, and a wall time."""
    import json
    import torch
    from conftest import cli
    from eie.sw import train as train_module
    threads, fit = [], train_module.fit
    monkeypatch.setattr(train_module, "fit", lambda *a, **k: threads.append(torch.get_num_threads()) or fit(*a, **k))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    data = eie.load_data("digits")
    model = eie.build_model("lenet-300-100", data)
    eie.train(model, data, eie.Training(epochs=3, lr=0.05), log=None)
    figures = eie.prune(model, data, quality=1.7, iterations=1, retraining=eie.Training(epochs=1, lr=0.02, l2=5e-4),
                        final_epochs=1, arch="lenet-300-100", log=lambda s: None)
    cm = eie.compress(model, data, eie.ChipConfig(pes=2), finetuning=eie.Training(epochs=1, lr=1e-4, l2=0.0),
                      calibration=300, log=lambda s: None)
    assert threads == [1, 1, 1, 1] and torch.get_num_threads() == 2
    torch.set_num_threads(before)
    assert capfd.readouterr().err == "", "log= silences the per-epoch lines too"
    assert figures["prune"]["dead_removed"], "this setting removes dead neurons (what made the ratios differ)"
    api = cm.save(tmp_path / "api")
    assert cli("prune", tmp_path / "cli", "--data", "digits", "--epochs", 3, "--quality", 1.7, "--iterations", 1,
               "--retrain-epochs", 1, "--final-epochs", 1) == 0
    assert cli("compress", tmp_path / "cli", "--finetune-epochs", 1, "--calibration", 300, "--pes", 2) == 0
    command = json.loads((tmp_path / "cli" / "report.json").read_text())
    for key in ("model", "data", "dense_parameters", "dense_bytes", "storage_ratio", "storage_ratio_by_pes",
                "storage_ratio_huffman", "pruning_ratio", "pruned_accuracy", "baseline_accuracy", "kept_weights", "compressed_accuracy",
                "layers"):
        assert api[key] == command[key], key
    assert api["wall_seconds"] > 0 and set(api["timings"]) == {"prune", "compress"}


def test_short_reprs_and_scores(flow):
    """A notebook prints a model or a run in one line, not its whole image; `scores` are the chip's outputs
    as `predict` gives them (the integers are those times 2**out_frac)."""
    data, _, _, _, cm = flow
    assert repr(cm).startswith("CompressedModel(3 layers 64-") and "2-PE chip" in repr(cm) and len(repr(cm)) < 200
    run = cm.simulate(data.x_test[:6])
    assert repr(run) == f"ChipRun(6 samples on a 2-PE chip, 0 mismatches, {run.figures['cycles_per_image']} " \
                        "cycles per image)"
    assert np.array_equal(run.scores, cm.predict(data.x_test[:6]))
    assert eie.ChipConfig.__doc__ and "EieError" in eie.ChipConfig.__doc__


def test_progress_shows_in_a_notebook(monkeypatch):
    """A notebook's stderr is no terminal, yet it shows bars (tqdm.auto's widget); a log file gets none."""
    import sys
    import types
    from eie.sw.train import progress
    assert progress(3, "x").disable, "no terminal, no notebook: no redraws in a log"
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    bar = progress(3, "x")
    assert not bar.disable
    bar.close()
