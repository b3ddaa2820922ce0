"""A transformer decoder on the simulated chip, token by token (issue 22), and `eie decoder`: the flow as a command.

Every chip layer of a token's forward pass (per block QKV, the output projection, the MLP's two layers; then the
LM head) is one simulator start, its inputs those the host computed from the chip's previous outputs
(`eie.sw.decoder.host_forward`, the reference's own host code): the loop is closed on the host, as the LSTM's
(`eie.cosim.lstm`). The reference runs the same text first and records every mat-vec's output; every chip
output is compared with it, integer for integer, and the performance model predicts every mat-vec's cycles
beside the RTL's. Held-out perplexity is measured on the chip too: the windows teacher-forced, one start per
layer for all of their positions.
"""

from dataclasses import dataclass
import json
import sys
import time
from pathlib import Path

import numpy as np

from eie.errors import EieError

__all__ = ["ChipMatvec", "DecoderRun", "simulate_generation", "chip_perplexity", "decoder_flow", "register"]


def _log(message):
    print(message, file=sys.stderr, flush=True)


class _Recorder:
    """The reference's mat-vec, recording (name, output) of every call in order: the trace the chip must match."""

    def __init__(self, cd):
        self.cd, self.trace = cd, []

    def __call__(self, name, x_int):
        y = self.cd.reference_matvec(name, x_int)
        self.trace.append((name, y))
        return y


class ChipMatvec:
    """The chip's mat-vec for `host_forward`: each call one simulator start of that layer's image (`images`,
    default the model's), its outputs compared with call k of the reference's `expected` trace, its cycles
    (RTL, per input vector) beside the performance model's on the first `model_samples` vectors, and the model's
    energy. `unit` tags the calls (the token a call belongs to)."""

    def __init__(self, cd, expected, images=None, model_samples=20, harness="cocotb", log=None):
        self.cd, self.expected, self.images = cd, expected, images or cd.images
        self.model_samples, self.harness, self.log = model_samples, harness, log
        self.encoded = {n: img.encoded_layers()[0] for n, img in self.images.items()}
        self.calls, self.unit, self.first = [], None, None
        self.sim_s, self.sim_cycles = 0.0, 0

    def __call__(self, name, x_int):
        from eie.cosim.lstm import _energy
        from eie.cosim.sim import simulate
        from eie.sw.perf import layer_perf
        image, config = self.images[name], self.cd.config
        run = simulate(image, x_int, layer_cycles=True, log=self.log, harness=self.harness)
        y = image.unpermute(run.outputs)
        k = len(self.calls)
        ref_name, ref = self.expected[k] if k < len(self.expected) else (None, None)
        differ = ref is None or ref_name != name or ref.shape != y.shape or bool((ref != y).any())
        if differ and self.first is None:
            where = None if ref is None or ref.shape != y.shape else np.argwhere(ref != y)[0]
            self.first = {"call": k, "layer": name, "unit": self.unit, "reference_layer": ref_name}
            if where is not None:
                self.first.update(vector=int(where[0]), row=int(where[1]), chip=int(y[tuple(where)]),
                                  reference=int(ref[tuple(where)]))
        m = min(self.model_samples, len(x_int))
        perf = layer_perf(self.encoded[name], x_int, config, m)
        self.calls.append({"layer": name, "unit": self.unit, "vectors": len(x_int), "differ": differ,
                           "rtl": run.layer_cycles[:, 0].astype(np.int64), "model": np.asarray(perf.model_cycles),
                           "energy_pj": _energy(perf, config)})
        self.sim_s, self.sim_cycles = self.sim_s + run.sim_seconds, self.sim_cycles + run.sim_cycles
        return y

    @property
    def mismatches(self):
        return sum(c["differ"] for c in self.calls)

    def model_equals_rtl(self):
        return all((c["model"] == c["rtl"][:len(c["model"])]).all() for c in self.calls)


@dataclass(repr=False)
class DecoderRun:
    """What `simulate_generation` returns: the characters the chip generated and the reference's, and figures."""
    tokens: np.ndarray       # (batch, tokens) generated on the chip, closed loop
    reference: np.ndarray    # the same from the reference
    figures: dict

    def __repr__(self):
        f = self.figures
        return (f"DecoderRun({self.tokens.shape[1]} tokens x {len(self.tokens)}, {f['mismatched_matvecs']} "
                f"mismatched mat-vecs, {f['cycles_per_token']} cycles per token)")


def simulate_generation(cd, prompt, tokens, seed=0, temperature=0.8, images=None, harness="cocotb", log=None):
    """Generate `tokens` characters after `prompt` ((batch, P) ids, or a string) with every chip layer on the
    Verilator chip, closed loop, and compare every mat-vec with the reference's generation of the same text.
    `images`: chip images to run instead of the model's (a test's perturbed copy; the reference stays the
    model's). Cycles per token are those of one generated character's mat-vecs, per sequence of the batch."""
    from eie.cosim.build import build
    from eie.cosim.timing import entry
    from eie.sw.decoder import encode, generate
    log = log or _log
    prompt = encode(prompt)[None] if isinstance(prompt, str) else np.asarray(prompt, np.int64)
    if prompt.ndim != 2 or not prompt.size:
        raise EieError(f"the prompt must be a string or (batch, length) token ids, not shape {prompt.shape}")
    if not isinstance(tokens, int) or tokens < 1:
        raise EieError(f"tokens must be a positive integer, not {tokens!r}")
    build(cd.config, log=log)
    recorder = _Recorder(cd)
    expected = generate(cd, prompt, tokens, recorder, seed, temperature)
    chip = ChipMatvec(cd, recorder.trace, images, len(prompt), harness, log)
    t0 = time.perf_counter()

    def on_token(k):
        chip.unit = k
        if k >= 0 and (k + 1) % max(1, tokens // 10) == 0:
            log(f"token {k + 1}/{tokens}: {chip.mismatches} mismatched mat-vecs so far")
    out = generate(cd, prompt, tokens, chip, seed, temperature, on_token)
    wall = time.perf_counter() - t0
    per_token = [c for c in chip.calls if c["unit"] is not None and c["unit"] >= 0]
    rtl = sum(c["rtl"] for c in per_token) / (tokens - 1) if tokens > 1 else None
    model = sum(c["model"] for c in per_token) / (tokens - 1) if tokens > 1 else None
    energy = sum(c["energy_pj"] for c in per_token) / (tokens - 1) if tokens > 1 else None
    by_layer = {}
    for c in per_token:
        by_layer[c["layer"]] = by_layer.get(c["layer"], 0) + float(c["rtl"].mean()) / (tokens - 1)
    cycles = None if rtl is None else round(float(rtl.mean()), 1)
    figures = {
        "batch": len(prompt), "prompt_tokens": prompt.shape[1], "tokens": tokens, "chip": cd.config.to_dict(),
        "harness": harness, "matvecs_compared": len(chip.calls), "mismatched_matvecs": chip.mismatches,
        "outputs_compared": int(sum(c["vectors"] * cd.layers[c["layer"]].rows for c in chip.calls)),
        "tokens_equal": bool((out == expected).all()),
        "cycles_per_token": cycles, "model_cycles_per_token": None if model is None else round(float(model.mean()), 1),
        "cycles_per_token_by_layer": {k: round(v, 1) for k, v in by_layer.items()},
        "prompt_cycles": int(sum(c["rtl"].sum() for c in chip.calls if c["unit"] == -1)),
        "model_equals_rtl": chip.model_equals_rtl(),
        "model_max_abs_error_cycles": int(max(np.abs(c["model"] - c["rtl"][:len(c["model"])]).max(initial=0)
                                              for c in chip.calls)),
        "energy_pj_per_token": None if energy is None else round(float(energy), 1),
        "time": None if cycles is None else entry(cd.config, cycles, cycles_from="rtl"),
        "sim_seconds": round(chip.sim_s, 1), "sim_cycles_per_s": round(chip.sim_cycles / chip.sim_s) if chip.sim_s
        else None, "sim_wall_seconds": round(wall, 1), "tokens_per_s": round(tokens / wall, 2),
    }
    if chip.first is not None:
        figures["first_mismatch"] = chip.first
    return DecoderRun(out, expected, figures)


def chip_perplexity(cd, held_out, images=None, harness="cocotb", model_samples=20, log=None):
    """Perplexity of `held_out` windows (count, context + 1) as the Verilator chip computes it: the windows
    teacher-forced as one chunk, one simulator start per chip layer for all their positions, each output
    compared with the reference's on the same windows. Returns figures."""
    from eie.cosim.build import build
    log = log or _log
    held_out = np.asarray(held_out, np.int64)
    build(cd.config, log=log)
    recorder = _Recorder(cd)
    ref = cd.perplexity(held_out, recorder, batch=len(held_out))
    chip = ChipMatvec(cd, recorder.trace, images, model_samples, harness, log)
    t0 = time.perf_counter()
    got = cd.perplexity(held_out, chip, batch=len(held_out))
    return {"windows": len(held_out), "positions": int(held_out[:, 1:].size), "chip_perplexity": round(got, 4),
            "reference_perplexity": round(ref, 4), "matvecs_compared": len(chip.calls),
            "mismatched_matvecs": chip.mismatches, "model_equals_rtl": chip.model_equals_rtl(),
            "cycles_per_position": round(sum(float(c["rtl"].mean()) for c in chip.calls), 1),
            "sim_wall_seconds": round(time.perf_counter() - t0, 1),
            **({"first_mismatch": chip.first} if chip.first else {})}


# The flow's settings: `quick` is a tiny decoder on 2 PEs for `make test`; the full one is 2 layers of width 64
# on the 16-PE standard chip, 200 generated characters.
SETTINGS = {
    False: {"width": 64, "layers": 2, "heads": 4, "context": 64, "corpus": None, "steps": 1500, "lr": 3e-3,
            "sparsity": 0.5, "iterations": 3, "retrain_steps": 300, "final_steps": 300, "finetune_steps": 300,
            "calibration": 64, "held_out": 200, "chip_windows": 16, "pes": 16, "tokens": 200},
    True: {"width": 32, "layers": 1, "heads": 2, "context": 16, "corpus": 200_000, "steps": 400, "lr": 3e-3,
           "sparsity": 0.5, "iterations": 2, "retrain_steps": 100, "final_steps": 100, "finetune_steps": 100,
           "calibration": 32, "held_out": 64, "chip_windows": 4, "pes": 2, "tokens": 6},
}
PROMPT = "Return the "


def decoder_flow(run_dir, quick=False, tokens=None, config=None, keep=(), seed=0, width=None, layers=None,
                 heads=None, context=None, sparsity=None, prompt=PROMPT, temperature=0.8, harness="cocotb",
                 method="magnitude", force=False, log=_log, final_steps=None):
    """The whole decoder flow into `run_dir`: the standard library's docstrings (90% to train, the last 10%
    held out), a dense decoder trained, pruned (magnitude with retraining) to `sparsity`, compressed, its
    held-out perplexity on the chip `config` (teacher-forced windows), then `tokens` characters generated after
    `prompt` on the chip, every mat-vec compared (`method` "wanda" or N:M such as "2:4": that instead, with
    `final_steps` of retraining, default none; magnitude's default is the settings'). Writes
    decoder.json and decoder.md; returns (figures, the `CompressedDecoder`). Bad settings, and an earlier
    decoder.json (unless `force`), are refused before any training."""
    from eie.config import ChipConfig
    from eie.sw import decoder as dec
    from eie.sw import train
    from eie.sw.runs import RunFolder
    s = dict(SETTINGS[bool(quick)])
    method = dec.check_method(method, sparsity)
    if final_steps is None:
        final_steps = s["final_steps"] if method == "magnitude" else 0
    if not isinstance(final_steps, int) or final_steps < 0:
        raise EieError(f"final steps must be an integer >= 0, not {final_steps!r}")
    s["final_steps"] = final_steps
    for k, v in (("width", width), ("layers", layers), ("heads", heads), ("context", context),
                 ("sparsity", sparsity), ("tokens", tokens)):
        if v is not None:
            s[k] = v
    config = config or ChipConfig.standard(s["pes"])
    folder = RunFolder(run_dir, ["decoder.json", "decoder.md"], force)
    dec.DecoderLM(width=s["width"], layers=s["layers"], heads=s["heads"], context=s["context"])   # refuses bad sizes
    if "act_depth" in keep:
        dec.check_fits(s["width"], 4 * s["width"], len(dec.VOCAB), config)
    if not 0 < s["sparsity"] < 1:
        raise EieError(f"sparsity {s['sparsity']} is out of range: it must lie strictly between 0 and 1")
    if not isinstance(s["tokens"], int) or s["tokens"] < 2:
        raise EieError(f"tokens must be an integer of at least 2, not {s['tokens']!r}")
    dec.encode(prompt)
    if isinstance(method, tuple):
        from eie.sw.methods import check_nm
        probe = dec.DecoderLM(width=s["width"], layers=s["layers"], heads=s["heads"], context=s["context"])
        check_nm(probe, *method, probe.linears())
        s["sparsity"] = 1 - method[0] / method[1]
    started, timings = time.perf_counter(), {}
    text = dec.stdlib_corpus(s["corpus"])
    ids = dec.encode(text)
    split = int(0.9 * len(ids))
    train_ids, held = ids[:split], dec.windows(ids[split:], s["context"], s["held_out"])
    with train.torch_threads(1):
        t = time.perf_counter()
        train.seed_everything(seed)
        model = dec.DecoderLM(width=s["width"], layers=s["layers"], heads=s["heads"], context=s["context"])
        log(f"== train a decoder ({s['layers']} layers, width {s['width']}, {s['heads']} heads, context "
            f"{s['context']}) on {len(ids)} characters of docstrings")
        dec.train_decoder(model, train_ids, s["steps"], s["lr"], seed=seed, log=log)
        timings["train"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        name = method if isinstance(method, str) else f"{method[0]}:{method[1]}"
        retrained = ", with retraining" if method == "magnitude" or final_steps else ""
        log(f"== prune every chip layer ({name}{retrained})")
        pruning = dec.prune_decoder(model, train_ids, held, s["sparsity"], s["iterations"], s["retrain_steps"],
                                    final_steps, seed=seed, method=method, calibration=s["calibration"], log=log)
        timings["prune"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        log("== compress (Deep Compression)")
        cd = dec.compress_decoder(model, train_ids, held, config, s["finetune_steps"], s["calibration"], keep=keep,
                                  seed=seed, log=log)
        timings["compress"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    log(f"== held-out perplexity on the {cd.config.pes}-PE chip ({s['chip_windows']} windows)")
    ppl = chip_perplexity(cd, held[:s["chip_windows"]], harness=harness, log=log)
    timings["chip_perplexity"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    log(f"== {s['tokens']} characters generated on the chip after {prompt!r}")
    run = simulate_generation(cd, prompt, s["tokens"], seed, temperature, harness=harness, log=log)
    timings["chip_generation"] = round(time.perf_counter() - t, 1)
    storage = cd.storage()
    dense_bytes = 4 * sum(layer.weight.numel() + layer.bias.numel() for _, layer in model.linears())
    results = {
        "corpus": {"what": "Python standard library docstrings", "python": sys.version.split()[0],
                   "characters": len(ids), "held_out_windows": len(held)},
        "shape": cd.shape, "settings": s, **{k: v for k, v in pruning.items() if k != "prune"},
        "prune": pruning["prune"], "compress": cd.figures,
        "weights_kept_fraction": round(pruning["kept_weights"] / pruning["dense_weights"], 4),
        "perplexity": {"dense": pruning["dense_perplexity"], "pruned": pruning["pruned_perplexity"],
                       "fixed_point": cd.figures["fixed_point_perplexity"],
                       "chip_over_dense": round(cd.figures["fixed_point_perplexity"] / pruning["dense_perplexity"],
                                                4)},
        "chip_perplexity": ppl, "storage_bytes": storage, "dense_bytes": dense_bytes,
        "storage_ratio": round(dense_bytes / storage["total"], 2),
        "prompt": prompt, "temperature": temperature, "sample": dec.decode(run.tokens[0]),
        "run": run.figures, "timings": {**timings, "total": round(time.perf_counter() - started, 1)},
    }
    folder.write_json("decoder.json", results)
    folder.write_text("decoder.md", summary(results) + "\n")
    return results, cd


def summary(r):
    """The flow's figures as a few lines of text (what `eie decoder` prints and decoder.md holds)."""
    from eie.cosim.timing import REFERENCE, us
    f, p, s, c = r["run"], r["perplexity"], r["shape"], r["chip_perplexity"]
    us_token = us(f["time"], REFERENCE)
    lines = [
        f"decoder: {s['layers']} layers, width {s['width']}, {s['heads']} heads, context {s['context']}, "
        f"{s['vocab']} characters; {r['corpus']['characters']} characters of Python {r['corpus']['python']} "
        f"docstrings; a {f['chip']['pes']}-PE chip",
        f"  held-out perplexity: dense {p['dense']}, pruned {p['pruned']}, weight-shared + fixed point (as the chip "
        f"computes it) {p['fixed_point']} ({100 * (p['chip_over_dense'] - 1):+.1f}% over dense); on the chip, "
        f"{c['windows']} windows: {c['chip_perplexity']} = reference {c['reference_perplexity']}, "
        f"{c['mismatched_matvecs']} of {c['matvecs_compared']} mat-vecs differ",
        f"  weights kept {r['kept_weights']} of {r['dense_weights']} ({100 * r['weights_kept_fraction']:.1f}%, "
        f"{r['prune']['method']}); "
        f"storage {r['dense_bytes']} -> {r['storage_bytes']['total']:.0f} bytes ({r['storage_ratio']}x)",
        f"  generated {f['tokens']} characters after {r['prompt']!r} closed loop on the chip: {f['matvecs_compared']}"
        f" mat-vecs ({f['outputs_compared']} outputs) compared, {f['mismatched_matvecs']} differ; "
        f"characters {'equal to' if f['tokens_equal'] else 'NOT equal to'} the reference's",
        f"  cycles per token {f['cycles_per_token']} (RTL), model {f['model_cycles_per_token']}, every mat-vec "
        f"{'equal' if f['model_equals_rtl'] else 'NOT equal'}; {us_token} us per token at EIE's 800 MHz; energy "
        f"{f['energy_pj_per_token'] / 1e3:.2f} nJ per token (model)",
        f"  simulation {f['sim_wall_seconds']} s ({f['tokens_per_s']} tokens/s, {f['harness']}); times {r['timings']}",
        "  sample: " + json.dumps(r["sample"]),
    ]
    for what, fig in (("GENERATION", f), ("PERPLEXITY", c)):
        if "first_mismatch" in fig:
            lines.append(f"  FIRST {what} MISMATCH: {fig['first_mismatch']}")
    return "\n".join(lines)


def decoder_command(args):
    from eie.sw.decoder import check_variant
    check_variant(args.attention, args.positions, args.heads or SETTINGS[args.quick]["heads"], args.kv_heads)
    from eie.cosim.commands import stamped_run, standard_chip
    config, keep = standard_chip(args, SETTINGS[args.quick]["pes"])
    run = stamped_run(args, "decoder")
    results, _ = decoder_flow(run, args.quick, args.tokens, config, keep, args.seed, args.width, args.layers,
                              args.heads, args.context, args.sparsity, harness=args.harness, method=args.method,
                              force=args.force, final_steps=args.final_steps)
    print(json.dumps(results) if args.json else summary(results) + f"\neverything is in {run} (decoder.json)")
    bad = results["run"]["mismatched_matvecs"] or results["chip_perplexity"]["mismatched_matvecs"]
    return 1 if bad or not results["run"]["model_equals_rtl"] else 0


def register(sub):
    p = sub.add_parser("decoder", help="a character-level transformer decoder on the chip, every linear layer per "
                                       "token, checked bit-exact",
                       description="Train a small decoder on the Python standard library's docstrings, prune every "
                                   "linear layer (magnitude with retraining, or --method wanda or 2:4), compress it, measure held-out "
                                   "perplexity on the simulated chip and generate text with QKV, the output "
                                   "projection, both MLP layers and the LM head on the chip per token (attention, "
                                   "softmax, layer norm and residuals on the host in float64); every mat-vec is "
                                   "compared with the reference. --quick: 1 layer of width 32, a 2-PE chip, 6 "
                                   "characters. Exit status 1 on any mismatch.")
    p.add_argument("--quick", action="store_true", help="1 layer, width 32, context 16, a 2-PE chip, 6 characters")
    p.add_argument("--tokens", type=int, help="characters to generate (default 200; 6 with --quick)")
    p.add_argument("--width", type=int, help="model width (default 64; 32 with --quick)")
    p.add_argument("--layers", type=int, help="decoder blocks (default 2; 1 with --quick)")
    p.add_argument("--heads", type=int, help="attention heads (default 4; 2 with --quick)")
    p.add_argument("--kv-heads", type=int, help="key/value heads: only as many as --heads run (named to say so)")
    p.add_argument("--attention", default="multi-head", help="attention: only multi-head runs (named to say so)")
    p.add_argument("--positions", default="alibi", help="position encoding: only alibi runs (named to say so)")
    p.add_argument("--context", type=int, help="attention window in characters (default 64; 16 with --quick)")
    p.add_argument("--sparsity", type=float, help="fraction of every chip layer's weights pruned (default 0.5; not for N:M)")
    p.add_argument("--method", default="magnitude", metavar="magnitude|wanda|N:M",
                   help="magnitude pruning with retraining (default), Wanda (|W| x input norm per row, no "
                        "retraining) or N:M such as 2:4 (the N largest of every M inputs of a row; no --sparsity)")
    p.add_argument("--final-steps", type=int, metavar="K",
                   help="retraining steps after pruning (default 300, 100 with --quick, after magnitude's ramped "
                        "steps; 0 for wanda and N:M)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialization, batches and sampling (default 0)")
    p.add_argument("--harness", choices=("cocotb", "raw"), default="cocotb",
                   help="the Verilated chip under cocotb (default) or the raw C++ harness (the same program and "
                        "model, about 25x less per simulator start)")
    p.add_argument("--run-dir", type=Path, metavar="DIR", help="run folder (default runs/decoder-<time>)")
    p.add_argument("--force", action="store_true", help="replace the decoder.json and decoder.md of an earlier run")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    p.add_argument("--pes", type=int, help="processing elements of the standard chip (default 16; 2 with --quick)")
    p.add_argument("--index-bits", type=int, default=4, help="relative row index bits (default 4)")
    p.add_argument("--act-depth", type=int, help="activations per PE and bank (default: the standard chip's); a "
                                                 "decoder whose vectors do not fit is refused before any training")
    p.set_defaults(func=decoder_command)
