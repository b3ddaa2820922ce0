"""`eie sensitivity`, `eie prune` and `eie compress`: the steps of Han et al. 2015 and Deep Compression, each
writing into a run folder (see `eie.sw.pipeline`). torch is imported only when a command runs."""

from pathlib import Path
import time

__all__ = ["register"]

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
    p.add_argument("--seed", type=int, default=0, help="seed for initialization, shuffling and dropout (default 0)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for torch (default 1: networks this small gain little from more, a busy "
                        "machine loses a lot, and a fixed count gives the same numbers on every machine)")
    if training:
        p.add_argument("--model", metavar="NAME", help="lenet-300-100 (default) or lenet-5")
        p.add_argument("--checkpoint", type=Path, metavar="FILE",
                       help="trained dense network to start from instead of training one: an eie checkpoint, "
                            "torch.save() of an nn.Sequential (Linear/ReLU/Dropout/Flatten, Conv2d/MaxPool2d), "
                            "or a state dict of --model")
        g = p.add_argument_group("baseline training (when the run folder has no baseline.pt)")
        g.add_argument("--epochs", type=int, default=20, help="epochs (default 20)")
        g.add_argument("--lr", type=float, default=0.05, help="SGD learning rate, cosine-decayed (default 0.05)")
        g.add_argument("--l2", type=float, default=1e-4, help="L2 weight decay (default 1e-4)")
        g.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")


def _torch_threads(args):
    import torch
    from eie.errors import EieError
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
        "prune", help="iterative magnitude pruning with retraining (Han et al. 2015)",
        description="Train (or load) a dense network, then prune and retrain it in steps: each layer drops "
                    "weights below quality x std of its dense weights, masks keep them at zero, survivors "
                    "retrain from their current values at a reduced learning rate. Writes baseline.pt, "
                    "pruned.pt, weights.png and report.json / report.md (a table like Table 2 of the paper).")
    _common(p)
    g = p.add_argument_group("pruning")
    g.add_argument("--quality", metavar="Q|LAYER=Q,...|sensitivity",
                   help="quality parameters: one number for every layer, per layer (fc1=2,fc2=1.8; unnamed "
                        "layers keep their defaults), or 'sensitivity' to use the run folder's sensitivity "
                        "analysis (defaults: tuned per architecture; 1.0 for other networks)")
    g.add_argument("--iterations", type=int, default=5,
                   help="prune/retrain steps; the threshold ramps up linearly over them (default 5)")
    g.add_argument("--retrain-epochs", type=int, default=5, help="retraining epochs per step (default 5)")
    g.add_argument("--final-epochs", type=int, default=15, help="retraining epochs after the last step (default 15)")
    g.add_argument("--retrain-lr", type=float, default=0.02,
                   help="retraining learning rate (default 0.02; the paper retrains at a tenth of the original "
                        "rate, here each retraining decays its rate to zero on a cosine and the defaults were "
                        "tuned with 0.4x the baseline's peak)")
    g.add_argument("--retrain-l2", type=float, default=5e-4,
                   help="L2 weight decay while retraining (default 5e-4: it pulls weights the network no longer "
                        "needs under the threshold, so later steps prune them at little cost)")
    g.add_argument("--l1", type=float, default=0.0, help="L1 regularization while retraining (default 0)")
    g.add_argument("--keep-dead", action="store_true",
                   help="keep neurons left with no inputs or no outputs (default: remove them; exact)")
    p.set_defaults(func=prune_command)

    p = sub.add_parser(
        "compress", help="weight sharing, fixed point and the chip image (Deep Compression)",
        description="Share each fully connected layer's weights through a k-means codebook (entry 0 fixed at "
                    "zero), fine-tune the centroids, convert to the chip's fixed point and write image.npz (the "
                    "fully connected layers), host.npz (convolutions before them, run by the host), compressed.pt and "
                    "storage tables (4- and 5-bit indices; 1, 16 and 64 PEs) into report.md. Reads pruned.pt "
                    "from the run folder; the data set is the one recorded there unless given.")
    _common(p, training=False)
    p.add_argument("--checkpoint", type=Path, metavar="FILE",
                   help="pruned network to compress instead of the run folder's pruned.pt")
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
    p.set_defaults(func=compress_command)


def _fractions(text):
    from eie.errors import EieError
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


def sensitivity_command(args):
    started = time.perf_counter()
    _torch_threads(args)
    from eie.sw.pipeline import load_data, run_sensitivity
    from eie.sw.runs import RunFolder
    fractions = _fractions(args.fractions)
    run = RunFolder(args.run, ["sensitivity.json", "sensitivity.png"], args.force)
    data = load_data(run, args.data, args.data_dir)
    report = run_sensitivity(run, data, args.model, args.checkpoint, _baseline_training(args), fractions,
                             args.tolerance, started)
    print(f"suggested quality: {report['sensitivity']['suggested_quality']}; see {run / 'report.md'}")
    return 0


def prune_command(args):
    started = time.perf_counter()
    _torch_threads(args)
    from eie.sw.pipeline import Training, load_data, run_prune
    from eie.sw.runs import RunFolder
    training = _baseline_training(args)
    retraining = Training(epochs=args.retrain_epochs, l1=args.l1, batch_size=args.batch_size, seed=args.seed,
                          lr=args.retrain_lr,
                          l2=args.retrain_l2)
    from eie.errors import EieError
    if args.iterations < 1:
        raise EieError(f"--iterations must be at least 1, not {args.iterations}")
    if args.final_epochs < 0:
        raise EieError(f"--final-epochs must be >= 0, not {args.final_epochs}")
    run = RunFolder(args.run, ["pruned.pt", "weights.png"], args.force)
    data = load_data(run, args.data, args.data_dir)
    report = run_prune(run, data, args.model, args.checkpoint, training, args.quality, args.iterations,
                       retraining, args.final_epochs, not args.keep_dead, started)
    print(f"accuracy {report['baseline_accuracy']}% -> {report['pruned_accuracy']}%, pruning ratio "
          f"{report['pruning_ratio']}x; see {run / 'report.md'}")
    return 0


def compress_command(args):
    started = time.perf_counter()
    _torch_threads(args)
    from eie.config import ChipConfig
    from eie.errors import EieError
    from eie.sw.compress import INITS
    from eie.sw.pipeline import Training, load_data, run_compress
    from eie.sw.runs import RunFolder
    if args.init not in INITS:
        raise EieError(f"unknown --init {args.init!r}: choose one of {', '.join(INITS)}")
    if args.calibration < 1:
        raise EieError(f"--calibration must be at least 1 image, not {args.calibration}")
    config = ChipConfig.for_user(pes=args.pes, index_bits=args.index_bits)
    finetuning = Training(epochs=args.finetune_epochs, lr=args.finetune_lr, l2=0.0, seed=args.seed)
    run = RunFolder(args.run, ["compressed.pt", "image.npz", "host.npz"], args.force)
    data = load_data(run, args.data, args.data_dir)
    report = run_compress(run, data, args.checkpoint, args.init, finetuning, config, args.calibration, started)
    print(f"fixed-point accuracy {report['compressed_accuracy']}%, storage ratio {report['storage_ratio']}x "
          f"(1 PE); image {run / 'image.npz'}; see {run / 'report.md'}")
    return 0
