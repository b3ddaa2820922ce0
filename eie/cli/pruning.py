"""`eie sensitivity`, `eie prune` and `eie compress`: the steps of Han et al. 2015 and Deep Compression (the
library's `eie.sw.flow` functions), each reading what earlier steps left in a run folder and writing its files and figures
there. torch is imported only when a command runs.

Files in a run folder: baseline.pt (the dense network, trained once and reused), sensitivity.json and .png,
pruned.pt, weights.png, compressed.pt (weight-shared float network), image.npz (the chip image), host.npz
(a convolutional front's fixed-point layers, which the host runs before the chip), report.json / report.md.
"""

from pathlib import Path
import sys
import time

from eie.errors import EieError

__all__ = ["register", "dense_network"]

_RUN_HELP = ("run folder: created if missing; files from earlier steps are read, and a file this step writes "
             "that is already there stops the command unless --force")


def _common(p, training=True):
    p.add_argument("run", type=Path, metavar="RUN_DIR", help=_RUN_HELP)
    p.add_argument("--force", action="store_true", help="replace this step's files if the run folder has them")
    p.add_argument("--data", metavar="NAME",
                   help="fashion-mnist (default; Debian's dataset-fashion-mnist), mnist or digits "
                        "(scikit-learn's 8x8 digits, for runs of seconds)")
    p.add_argument("--data-dir", type=Path, metavar="DIR",
                   help="folder of MNIST-format IDX files (gzipped or not; torchvision's raw layout works)")
    p.add_argument("--seed", type=_seed, default=0, help="seed for initialization, shuffling and dropout (default 0)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for torch (default 1: networks this small gain little from more, a busy "
                        "machine loses a lot, and a fixed count gives the same numbers on every machine)")
    p.add_argument("--model", metavar="NAME|SIZES",
                   help="lenet-300-100 (default), lenet-5, or hidden layer sizes such as 500-200 (a ReLU "
                        "perceptron; the data set gives inputs and classes)" if training else
                        "the architecture a --checkpoint state dict belongs to (names as for eie prune)")
    if training:
        p.add_argument("--checkpoint", type=Path, metavar="FILE",
                       help="trained dense network to start from instead of training one: an eie checkpoint, "
                            "torch.save() of an nn.Sequential (Linear/ReLU/Dropout/Flatten, Conv2d/MaxPool2d), "
                            "or a state dict of --model; torch.nn.utils.prune's weight_orig/weight_mask are "
                            "folded in and the mask kept as the pruning pattern")
        g = p.add_argument_group("baseline training (when the run folder has no baseline.pt)")
        g.add_argument("--epochs", type=int, default=20, help="epochs (default 20)")
        g.add_argument("--lr", type=float, default=0.05, help="SGD learning rate, cosine-decayed (default 0.05)")
        g.add_argument("--l2", type=float, default=1e-4, help="L2 weight decay (default 1e-4)")
        g.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")


def _seed(text):
    """argparse type: a seed is a non-negative integer (torch and numpy refuse the rest deep inside)."""
    import argparse
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; seeds are integers >= 0")
    return value


def _torch_threads(args):
    import torch
    if args.threads < 1:
        raise EieError(f"--threads must be at least 1, not {args.threads}")
    torch.set_num_threads(args.threads)


def _baseline_training(args):
    from eie.sw.pipeline import Training
    return Training(epochs=args.epochs, lr=args.lr, l2=args.l2, batch_size=args.batch_size, seed=args.seed)


def register(sub):
    p = sub.add_parser(
        "sensitivity", help="accuracy versus pruned fraction, one layer at a time",
        description="Prune each layer alone to a range of fractions (no retraining) and measure test accuracy: "
                    "writes sensitivity.json, sensitivity.png and a table in report.md, and suggests per-layer "
                    "quality parameters for 'eie prune --quality sensitivity'. Trains the baseline first "
                    "if the run folder has none.")
    _common(p)
    p.add_argument("--fractions", default=None, metavar="F,F,...",
                   help="pruned fractions to try, in (0, 1) (default 0.25,0.5,...,0.99)")
    p.add_argument("--tolerance", type=float, default=1.0,
                   help="accuracy points a layer may lose (before retraining) at its suggested quality (default 1)")
    p.set_defaults(func=sensitivity_command)

    p = sub.add_parser(
        "prune", help="iterative magnitude pruning with retraining (Han et al. 2015), or Wanda, or N:M",
        description="Train (or load) a dense network, then prune it. By default (--method magnitude) in steps "
                    "with retraining: each layer drops weights below quality x std of its dense weights, masks "
                    "keep them at zero, survivors retrain from their current values at a reduced learning rate. "
                    "--method wanda removes --sparsity of each row's weights, lowest |W| x the input's L2 norm "
                    "over --calibration training images first (Sun et al. 2023), no retraining; --method 2:4 "
                    "(any N:M) keeps the N largest of every M consecutive inputs of a row; both retrain "
                    "--final-epochs (default 0). Writes baseline.pt, pruned.pt, weights.png and report.json / "
                    "report.md (a table like Table 2 of the paper).")
    _common(p)
    g = p.add_argument_group("pruning")
    g.add_argument("--method", default="magnitude", metavar="magnitude|wanda|N:M",
                   help="pruning method (default magnitude; N:M such as 2:4, M dividing every layer's inputs)")
    g.add_argument("--sparsity", type=float, metavar="F",
                   help="wanda: the fraction of each layer's weights removed, per output row (default 0.5)")
    g.add_argument("--calibration", type=int, metavar="N",
                   help="wanda: training images whose activations weigh the weights (default 512)")
    g.add_argument("--quality", metavar="Q|LAYER=Q,...|sensitivity",
                   help="quality parameters: one number for every layer, per layer (fc1=2,fc2=1.8; unnamed "
                        "layers keep their defaults), or 'sensitivity' to use the run folder's sensitivity "
                        "analysis (defaults: tuned per architecture; 1.0 for other networks)")
    g.add_argument("--iterations", type=int, default=5,
                   help="magnitude: prune/retrain steps; the threshold ramps up linearly over them (default 5)")
    g.add_argument("--retrain-epochs", type=int, default=5,
                   help="magnitude: retraining epochs per step (default 5)")
    g.add_argument("--final-epochs", type=int,
                   help="retraining epochs after the last step (default 15 for magnitude, 0 for wanda and N:M)")
    g.add_argument("--retrain-lr", type=float, default=0.02,
                   help="retraining learning rate (default 0.02; the paper retrains at a tenth of the original "
                        "rate, here each retraining decays its rate to zero on a cosine and the defaults were "
                        "tuned with 0.4x the baseline's peak)")
    g.add_argument("--retrain-l2", type=float, default=5e-4,
                   help="L2 weight decay while retraining (default 5e-4: it pulls weights the network no longer "
                        "needs under the threshold, so later steps prune them at little cost)")
    g.add_argument("--l1", type=float, default=0.0, help="L1 regularization while retraining (default 0)")
    g.add_argument("--keep-dead", action="store_true",
                   help="keep neurons left with no inputs or no outputs (default: remove them; exact; N:M never "
                        "removes them, as that would shift its groups of inputs)")
    p.set_defaults(func=prune_command)

    p = sub.add_parser(
        "compress", help="weight sharing, fixed point and the chip image (Deep Compression)",
        description="Share each fully connected layer's weights through a k-means codebook (entry 0 fixed at "
                    "zero), fine-tune the centroids, convert to the chip's fixed point and write image.npz (the "
                    "fully connected layers), host.npz (convolutions before them, run by the host), compressed.pt and "
                    "storage tables (4- and 5-bit indices; 1, 16 and 64 PEs; fixed-width as the chip holds them and "
                    "with the entries Huffman-coded for off-chip storage) into report.md. Reads pruned.pt "
                    "from the run folder; the data set is the one recorded there unless given.")
    _common(p, training=False)
    p.add_argument("--checkpoint", type=Path, metavar="FILE",
                   help="pruned network to compress instead of the run folder's pruned.pt: an eie checkpoint, "
                        "torch.save() of an nn.Sequential, or a state dict of --model")
    p.add_argument("--onnx", type=Path, metavar="FILE.onnx",
                   help="compress an ONNX network instead (a chain of Gemm or MatMul+Add, Relu and Flatten nodes; "
                        "pip install 'eie[onnx]'), with --data naming the data set it takes")
    p.add_argument("--init", default="linear", metavar="linear|density|random",
                   help="centroid initialization (default linear, the paper's best)")
    p.add_argument("--finetune-epochs", type=int, default=2, help="centroid fine-tuning epochs (default 2)")
    p.add_argument("--finetune-lr", type=float, default=1e-4,
                   help="centroid learning rate; a centroid's gradient sums its whole cluster (default 1e-4)")
    p.add_argument("--calibration", type=int, default=2000, metavar="N",
                   help="training images used to choose fixed-point scales (default 2000)")
    p.add_argument("--pes", type=int, default=16, help="PEs of the chip the image is built for (default 16)")
    p.add_argument("--index-bits", type=int, default=4,
                   help="relative-index bits of that chip (default 4, as EIE); storage_ratio uses them")
    p.add_argument("--placement", choices=("balanced", "interleaved"), default="balanced",
                   help="rows on PEs: balanced to even out the PEs' work, pairing PEs on layers with few rows per PE "
                        "(default), or EIE's interleaving (row i -> PE i mod N)")
    p.add_argument("--weight-index-bits", type=int, default=4,
                   help="codebook index bits: 2^bits - 1 shared values plus zero per layer (default 4: 16 entries)")
    p.set_defaults(func=compress_command)


def _fractions(text):
    if text is None:
        from eie.sw.pipeline import SENSITIVITY_FRACTIONS
        return SENSITIVITY_FRACTIONS
    try:
        values = sorted({float(f) for f in text.split(",")})
    except ValueError:
        raise EieError(f"--fractions {text!r}: give numbers separated by commas, like 0.5,0.8,0.9") from None
    if not values or values[0] <= 0 or values[-1] >= 1:
        raise EieError(f"--fractions {text!r}: every fraction must lie strictly between 0 and 1")
    return tuple(values)


def _log(message):
    print(message, file=sys.stderr, flush=True)


# -- the run folder ---------------------------------------------------------------------------------------

def _identity(arch, data):
    return {"model": arch, "data": data.identity()}


def dense_network(run, data, model_name, checkpoint, seed):
    """The network pruning starts from: a given checkpoint (with the masks it carries), else the run folder's
    baseline.pt, else a new, untrained one initialized from `seed`. Returns (model, architecture or None, the file it came from or None)."""
    from eie.sw import models, prune
    expect = models.spec(models.build(model_name, data.input_shape, data.classes)) if model_name else None
    if checkpoint is not None and run.has("baseline.pt"):
        raise EieError(f"run folder {run.path} already has a baseline.pt; drop --checkpoint to reuse it "
                       "or pick a new folder")
    source = checkpoint or (run / "baseline.pt" if run.has("baseline.pt") else None)
    if source is None:
        from eie.sw.flow import build_model
        arch = model_name or "lenet-300-100"
        return build_model(arch, data, seed), arch, None
    model, masks, meta = models.load_checkpoint(source, expect)
    models.check_input(model, data)
    prune.apply_masks(model, masks)   # e.g. torch.nn.utils.prune's: pruning goes on from that pattern
    return model, model_name or meta.get("arch"), source


def _baseline(run, data, model, arch, source, training, threads):
    """Train `model` unless it came from a file, keep it as the run's baseline.pt, return its accuracy %."""
    from eie.sw.flow import train
    from eie.sw import models
    from eie.sw.train import evaluate
    if source is None:
        accuracy = train(model, data, training, f"train {arch}", threads=threads, log=_log)
    else:
        _log(f"baseline: {source}")
        accuracy = evaluate(model, data.x_test, data.y_test)
    if not run.has("baseline.pt"):
        models.save_checkpoint(run.output("baseline.pt"), model, arch=arch, data=data.name,
                               training=training.__dict__)
    _log(f"baseline accuracy {accuracy:.2f}%")
    return accuracy


def sensitivity_command(args):
    started = time.perf_counter()
    _torch_threads(args)
    from eie.sw import report
    from eie.sw.pipeline import sensitivity, suggest_quality
    from eie.sw.runs import RunFolder
    fractions = _fractions(args.fractions)
    run = RunFolder(args.run, ["sensitivity.json", "sensitivity.png"], args.force)
    data = run.data_set(args.data, args.data_dir, _log)
    training = _baseline_training(args)
    model, arch, source = dense_network(run, data, args.model, args.checkpoint, training.seed)
    _refuse_pruned(model, source)
    base = _baseline(run, data, model, arch, source, training, args.threads)
    rows = sensitivity(model, data, fractions)
    suggested = suggest_quality(rows, base, args.tolerance)
    run.write_json("sensitivity.json", {"baseline_accuracy": round(base, 2), "tolerance": args.tolerance,
                                        "suggested_quality": suggested, "rows": rows})
    run.save_figure("sensitivity.png", report.sensitivity_figure(rows, base))
    figures = run.update_report(
        **_identity(arch, data), baseline_accuracy=round(base, 2),
        sensitivity={"tolerance": args.tolerance, "suggested_quality": suggested, "rows": rows},
        timings={"sensitivity": round(time.perf_counter() - started, 1)})
    print(f"suggested quality: {figures['sensitivity']['suggested_quality']}; see {run / 'report.md'}")
    return 0


def _refuse_pruned(model, source):
    from eie.sw import prune
    if prune.masks(model):
        raise EieError(f"{source} is already pruned; give the dense network as the baseline")


def _sensitivity_quality(run, model):
    """The quality parameters the run folder's sensitivity analysis suggests."""
    from eie.sw import prune
    names = [n for n, _ in prune.layers(model)]
    suggested = run.report().get("sensitivity", {}).get("suggested_quality")
    if not suggested:
        raise EieError(f"no sensitivity analysis in {run.path}: run 'eie sensitivity {run.path}' first")
    missing = [n for n in names if suggested.get(n) is None]
    if missing:
        raise EieError(f"the sensitivity analysis found no safe threshold for {', '.join(missing)}; "
                       "raise --tolerance there or give --quality by hand")
    return {n: suggested[n] for n in names}


def prune_command(args):
    started = time.perf_counter()
    _torch_threads(args)
    from eie.sw.flow import prune
    from eie.sw.pipeline import Training
    from eie.sw import models, report
    from eie.sw.pipeline import weights_by_layer
    from eie.sw.runs import RunFolder
    training = _baseline_training(args)
    retraining = Training(epochs=args.retrain_epochs, l1=args.l1, batch_size=args.batch_size, seed=args.seed,
                          lr=args.retrain_lr, l2=args.retrain_l2)
    if args.iterations < 1:
        raise EieError(f"--iterations must be at least 1, not {args.iterations}")
    if args.final_epochs is not None and args.final_epochs < 0:
        raise EieError(f"--final-epochs must be >= 0, not {args.final_epochs}")
    from eie.sw.pipeline import check_method
    method = check_method(args.method, args.quality, args.sparsity, args.calibration)   # before any training
    run = RunFolder(args.run, ["pruned.pt", "weights.png"], args.force)
    data = run.data_set(args.data, args.data_dir, _log)
    model, arch, source = dense_network(run, data, args.model, args.checkpoint, training.seed)
    quality = _sensitivity_quality(run, model) if args.quality == "sensitivity" else args.quality
    from eie.sw.methods import check_network
    check_network(model, method)          # Wanda's convolutions, N:M's widths: refused before the baseline's training
    _baseline(run, data, model, arch, source, training, args.threads)
    before = weights_by_layer(model)
    figures = prune(model, data, quality, args.iterations, retraining, args.final_epochs, not args.keep_dead,
                    arch, log=_log, threads=args.threads, method=args.method, sparsity=args.sparsity,
                    calibration=args.calibration)
    run.save_figure("weights.png", report.histogram_figure(before, weights_by_layer(model)))
    models.save_checkpoint(run.output("pruned.pt"), model, arch=arch, data=data.name,
                           quality=figures["prune"]["quality"], method=figures["prune"]["method"])
    figures["prune"]["baseline_training"] = training.__dict__
    figures = run.update_report(**_identity(arch, data), **figures,
                                timings={"prune": round(time.perf_counter() - started, 1)})
    print(f"accuracy {figures['baseline_accuracy']}% -> {figures['pruned_accuracy']}%, pruning ratio "
          f"{figures['pruning_ratio']}x; see {run / 'report.md'}")
    return 0


def _pruned_network(run, checkpoint, model_name, data):
    """The network `eie compress` compresses: `checkpoint` (a state dict of `model_name`), whose architecture
    must be the run's, or the run folder's pruned.pt. Returns (model with its pruning masks applied,
    architecture name or None)."""
    from eie.sw import models, prune
    if checkpoint is None and not run.has("pruned.pt"):
        raise EieError(f"no pruned network in {run.path}: run 'eie prune {run.path}' first, or give --checkpoint")
    expect = models.spec(models.build(model_name, data.input_shape, data.classes)) if model_name else None
    model, masks, meta = models.load_checkpoint(checkpoint or run / "pruned.pt", expect)
    if checkpoint is not None:
        for existing in ("pruned.pt", "baseline.pt"):
            if run.has(existing):
                models.check_same_network(models.load_checkpoint(run / existing)[0], model, run / existing,
                                          checkpoint)
                break
    prune.apply_masks(model, masks)
    return model, meta.get("arch") or model_name or run.report().get("model")


def compress_command(args):
    started = time.perf_counter()
    _torch_threads(args)
    from eie.sw.flow import compress
    from eie.sw.pipeline import Training
    from eie.config import ChipConfig
    from eie.sw.runs import RunFolder
    config = ChipConfig.for_user(pes=args.pes, index_bits=args.index_bits, weight_index_bits=args.weight_index_bits)
    finetuning = Training(epochs=args.finetune_epochs, lr=args.finetune_lr, l2=0.0, seed=args.seed)
    run = RunFolder(args.run, ["compressed.pt", "image.npz", "host.npz"], args.force)
    data = run.data_set(args.data, args.data_dir, _log)
    if args.onnx is not None:
        if args.checkpoint is not None:
            raise EieError("give --onnx or --checkpoint, not both")
        from eie.sw.imports import from_onnx
        model, arch = from_onnx(args.onnx), f"onnx:{args.onnx.name}"
    else:
        model, arch = _pruned_network(run, args.checkpoint, args.model, data)
    cm = compress(model, data, config, args.init, finetuning, args.calibration, args.placement, log=_log,
                  threads=args.threads)
    cm.save(run.path, force=args.force)
    figures = run.update_report(**_identity(arch, data), timings={"compress": round(time.perf_counter() - started, 1)})
    print(f"fixed-point accuracy {figures['compressed_accuracy']}%, storage ratio {figures['storage_ratio']}x "
          f"(1 PE; {figures['storage_ratio_huffman']}x with Huffman-coded entries off-chip); image "
          f"{run / 'image.npz'}; see {run / 'report.md'}")
    return 0
