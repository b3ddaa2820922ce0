"""A small character-level transformer decoder on the chip (issue 22).

Every linear layer of a token's forward pass is a sparse mat-vec on the chip: per block the stacked QKV
projection (3D x D), the attention's output projection (D x D) and the MLP's two layers (M x D with the chip's
ReLU, then D x M), then the LM head (V x D). Attention (ALiBi position biases, softmax), layer norm, the
embedding and the residuals run on the host in float64 (`host_forward`, written once: the reference and the
chip driver both call it, each with its own mat-vec), and every chip input is the host's float quantized to the
chip's fixed point at its calibrated scale, as the MLP and LSTM flows do. Because each chip layer is an
`nn.Linear`, the flow's own steps apply unchanged: magnitude pruning on `torch.nn.utils.prune`'s masks
(`eie.sw.prune`), weight sharing with fine-tuned centroids (`eie.sw.compress`), the chip's fixed point
(`eie.sw.quant`) and the chip image (`eie.sw.image`).

Positions are ALiBi biases (Press et al. 2022) added to the attention scores on the host: no position table,
so generation runs past the trained context with a sliding window of `context` keys and one mat-vec per layer
per token. The key/value cache lives on the host, so the context never sits on the chip; the chip holds one
token's vectors (width, 3 x width, the MLP's width, the vocabulary).

The corpus is the Python standard library's own docstrings (read with `ast` from the interpreter's files,
nothing downloaded), over a fixed 96-character vocabulary (newline and printable ASCII).
"""

from dataclasses import dataclass, field
import math
import sys

import numpy as np
import torch
from torch import nn

from eie.config import ChipConfig
from eie.errors import EieError

__all__ = ["SUPPORTED", "VOCAB", "LINEARS", "check_variant", "check_fits", "stdlib_corpus", "encode", "decode",
           "alibi_bias", "DecoderLM", "train_decoder", "perplexity", "METHODS", "check_method", "prune_decoder",
           "compress_decoder", "CompressedDecoder", "host_forward", "generate", "windows"]

SUPPORTED = ("a pre-LN decoder of multi-head causal self-attention with as many key/value heads as query heads, "
             "ALiBi position biases and a ReLU MLP (attention=multi-head, positions=alibi)")
VOCAB = "\n" + "".join(chr(c) for c in range(32, 127))      # newline and printable ASCII: 96 tokens
LINEARS = ("qkv", "proj", "fc1", "fc2")                    # a block's chip layers, in the order a token uses them
LN_EPS = 1e-5


def _log(message):
    print(message, file=sys.stderr, flush=True)


def check_variant(attention="multi-head", positions="alibi", heads=None, kv_heads=None):
    """Refuse, in one line naming what is supported, an attention the flow does not run (multi-query or
    grouped-query attention, rotary or learned position embeddings, ...)."""
    problems = []
    if str(attention).lower() not in ("multi-head", "mha"):
        problems.append(f"{attention} attention")
    if str(positions).lower() != "alibi":
        problems.append(f"{positions} positions")
    if kv_heads is not None and heads is not None and kv_heads != heads:
        problems.append(f"{kv_heads} key/value heads for {heads} query heads")
    if problems:
        raise EieError(f"unsupported decoder ({', '.join(problems)}): the chip runs {SUPPORTED}")


def check_fits(width, mlp, vocab, config):
    """Refuse, before anything is trained or simulated, a decoder whose token vectors the chip's activation
    register files cannot hold: the QKV rows (3 x width), the MLP's hidden layer and the vocabulary's logits.
    The context does not sit on the chip (the host holds the keys and values), so it is not bounded by it."""
    need = {"3 x width QKV rows": 3 * width, "MLP hidden units": mlp, "vocabulary logits": vocab}
    name, most = max(need.items(), key=lambda kv: kv[1])
    if most > config.max_dim:
        raise EieError(f"a decoder of width {width}, MLP {mlp} and vocabulary {vocab} needs {most} {name} in the "
                       f"activation register files, but this chip holds {config.max_dim} (act_depth "
                       f"{config.act_depth} x {config.pes} PEs): use act_depth >= {-(-most // config.pes)}, more "
                       "PEs, or a narrower decoder")


def stdlib_corpus(limit=None) -> str:
    """The docstrings of the Python standard library's top-level modules (their modules, classes and functions),
    read with `ast` (nothing imported or downloaded), in file order, characters outside `VOCAB` dropped; the
    first `limit` characters. The text depends on the interpreter's version, so figures name it."""
    import ast
    import sysconfig
    from pathlib import Path
    keep = set(VOCAB)
    parts, size = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    doc = "".join(ch for ch in doc if ch in keep)
                    parts.append(doc)
                    size += len(doc) + 2
        if limit is not None and size >= limit:
            break
    text = "\n\n".join(parts)
    if not text:
        raise EieError("found no docstrings in the Python standard library to train on")
    return text[:limit] if limit else text


def encode(text: str) -> np.ndarray:
    """Characters -> token ids (`VOCAB`); a character outside it is refused."""
    table = {ch: i for i, ch in enumerate(VOCAB)}
    try:
        return np.array([table[ch] for ch in text], np.int64)
    except KeyError as e:
        raise EieError(f"character {e.args[0]!r} is not in the decoder's vocabulary (newline and printable "
                       "ASCII)") from None


def decode(tokens) -> str:
    return "".join(VOCAB[int(t)] for t in np.asarray(tokens).ravel())


def windows(tokens, context, count=None, seed=None):
    """(count, context + 1) windows of `tokens`: consecutive, non-overlapping ones (`seed` None) or drawn at
    random start positions from `seed`; each window's first `context` tokens are the input, the last `context`
    the targets."""
    tokens = np.asarray(tokens, np.int64)
    if len(tokens) < context + 1:
        raise EieError(f"the text ({len(tokens)} tokens) is shorter than one window of {context + 1}")
    if seed is None:
        n = (len(tokens) - 1) // context
        n = n if count is None else min(n, count)
        starts = np.arange(n) * context
    else:
        starts = np.random.default_rng(seed).integers(0, len(tokens) - context, count)
    return np.stack([tokens[s:s + context + 1] for s in starts])


def alibi_bias(q_pos, k_pos, heads, context):
    """ALiBi's attention bias (heads, queries, keys) in float64: -slope_h x (query - key) for keys at most
    `context` - 1 before the query, -inf for later keys (causal) and older ones (the sliding window). Slopes
    2^(-8(h+1)/heads) as Press et al.; one function for training, the reference and the chip driver."""
    slopes = 2.0 ** (-8.0 * (np.arange(heads) + 1) / heads)
    d = np.asarray(q_pos, np.float64)[:, None] - np.asarray(k_pos, np.float64)[None, :]
    bias = -slopes[:, None, None] * d[None]
    return np.where(((d >= 0) & (d < context))[None], bias, -np.inf)


class Block(nn.Module):
    """A pre-LN transformer block: x + proj(attention(ln1(x))), then x + fc2(relu(fc1(ln2(x))))."""

    def __init__(self, width, mlp):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width, eps=LN_EPS), nn.LayerNorm(width, eps=LN_EPS)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc1, self.fc2 = nn.Linear(width, mlp), nn.Linear(mlp, width)


class DecoderLM(nn.Module):
    """A character-level decoder: token embedding (no position table: ALiBi), `layers` pre-LN blocks of `heads`
    heads, a final layer norm and a Linear LM head. Its Linear layers are the chip's (`linears`)."""

    def __init__(self, vocab=len(VOCAB), width=64, layers=2, heads=4, mlp=None, context=64):
        super().__init__()
        mlp = 4 * width if mlp is None else mlp
        for name, value in (("vocab", vocab), ("width", width), ("layers", layers), ("heads", heads),
                            ("mlp", mlp), ("context", context)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise EieError(f"decoder {name} must be a positive integer, not {value!r}")
        if width % heads:
            raise EieError(f"the width ({width}) must be a multiple of the heads ({heads})")
        self.shape = {"vocab": vocab, "width": width, "layers": layers, "heads": heads, "mlp": mlp,
                      "context": context}
        self.embed = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList(Block(width, mlp) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width, eps=LN_EPS)
        self.head = nn.Linear(width, vocab)

    def linears(self):
        """[(name, nn.Linear)] of the layers the chip runs, in a token's order: block{i}.qkv ... head."""
        return [(f"block{i}.{n}", getattr(b, n)) for i, b in enumerate(self.blocks) for n in LINEARS] + \
            [("head", self.head)]

    def forward(self, tokens, trace=None):
        """Logits (batch, T, vocab) of tokens (batch, T); `trace`, a dict, receives every chip layer's input."""
        b, t = tokens.shape
        s = self.shape
        h, dh = s["heads"], s["width"] // s["heads"]
        bias = torch.from_numpy(alibi_bias(np.arange(t), np.arange(t), h, s["context"])).float()
        x = self.embed(tokens)

        def linear(name, layer, v):
            if trace is not None:
                trace.setdefault(name, []).append(v.detach().reshape(-1, v.shape[-1]))
            return layer(v)
        for i, blk in enumerate(self.blocks):
            q, k, v = linear(f"block{i}.qkv", blk.qkv, blk.ln1(x)).view(b, t, 3, h, dh).permute(2, 0, 3, 1, 4)
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh) + bias, dim=-1)
            y = (att @ v).transpose(1, 2).reshape(b, t, s["width"])
            x = x + linear(f"block{i}.proj", blk.proj, y)
            u = torch.relu(linear(f"block{i}.fc1", blk.fc1, blk.ln2(x)))
            x = x + linear(f"block{i}.fc2", blk.fc2, u)
        return linear("head", self.head, self.ln_f(x))


def _loss(model, batch):
    x, y = batch[:, :-1], batch[:, 1:]
    logits = model(x)
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def train_decoder(model, tokens, steps, lr=3e-3, batch=32, seed=0, desc="train", parameters=None, log=_log):
    """Adam on next-character cross-entropy over random windows of `tokens`, cosine-decayed learning rate,
    deterministic for `seed`. Pruned weights stay zero (torch's pruning masks their gradients; Adam without
    weight decay never moves a weight whose gradient is always zero). Returns the last 50 steps' mean loss."""
    if steps < 0:
        raise EieError(f"training steps must be >= 0, not {steps}")
    if not steps:
        return None
    context = model.shape["context"]
    data = torch.from_numpy(windows(tokens, context, steps * batch, seed=seed))
    opt = torch.optim.Adam([p for p in (parameters or model.parameters()) if p.requires_grad], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * k / steps)))
    model.train()
    losses = []
    for k in range(steps):
        loss = _loss(model, data[k * batch:(k + 1) * batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if log and (k + 1) % max(1, steps // 4) == 0:
            log(f"{desc}: step {k + 1}/{steps}, loss {np.mean(losses[-50:]):.3f}")
    model.eval()
    return float(np.mean(losses[-50:]))


@torch.no_grad()
def perplexity(model, held_out, batch=64):
    """exp(mean cross-entropy per character) of the float model over `held_out` windows (count, context + 1)."""
    model.eval()
    total, n = 0.0, 0
    for i in range(0, len(held_out), batch):
        w = torch.from_numpy(held_out[i:i + batch])
        total += _loss(model, w).item() * w[:, 1:].numel()
        n += w[:, 1:].numel()
    return math.exp(total / n)


def _kept(model):
    layers = {n: {"kept": int(l.weight.count_nonzero()), "weights": l.weight.numel()} for n, l in model.linears()}
    for v in layers.values():
        v["kept_percent"] = round(100 * v["kept"] / v["weights"], 2)
    return layers


METHODS = ("magnitude", "wanda", "N:M")


def check_method(method, sparsity=None):
    """The decoder's pruning method as `eie.sw.methods.parse_method` gives it ("magnitude", "wanda" or (n, m)),
    refused in one line if unknown, or if it is N:M and a `sparsity` is given too (N:M fixes its own)."""
    from eie.sw.methods import parse_method
    method = parse_method(method)
    if isinstance(method, tuple) and sparsity is not None:
        raise EieError(f"{method[0]}:{method[1]} sparsity fixes the pruned fraction ({1 - method[0] / method[1]:g}):"
                       " give no sparsity")
    return method


def prune_decoder(model, tokens, held_out, sparsity=0.5, iterations=3, steps=300, final_steps=300, lr=1e-3,
                  seed=0, method="magnitude", calibration=64, log=_log):
    """Prune every chip layer to `sparsity`, in place. "magnitude": Han et al. with retraining: at step k of
    `iterations` each layer's smallest weights go until k/iterations of `sparsity` is gone (thresholds as
    quality x the dense weights' std, `eie.sw.prune`), then `steps` of retraining, `final_steps` more at the end.
    "wanda" (Sun et al. 2023, `eie.sw.methods.wanda_prune`): each row's lowest |W| x ||X||_2 on `calibration`
    training windows, the layers in a token's order each seeing those pruned before it; "N:M" such as "2:4"
    (`eie.sw.methods.nm_prune`, `sparsity` ignored: 1 - N/M): the N largest of every M consecutive inputs of a
    row. Both then retrain `final_steps` (0: none, Wanda as published). Returns figures."""
    from eie.sw import methods, prune
    method = check_method(method)
    name = methods.method_name(method)
    if isinstance(method, tuple):
        sparsity = 1 - method[0] / method[1]
    if not 0 < sparsity < 1:
        raise EieError(f"sparsity {sparsity} is out of range: the pruned fraction must lie strictly between 0 and 1")
    if iterations < 1:
        raise EieError(f"pruning iterations must be >= 1, not {iterations}")
    dense = perplexity(model, held_out)
    stds = {n: layer.weight.detach().std().item() for n, layer in model.linears()}
    if method != "magnitude":
        if method == "wanda":
            x = torch.from_numpy(windows(tokens, model.shape["context"], calibration, seed=seed + 300)[:, :-1])
            methods.wanda_prune(model, x, sparsity, model.linears())
        else:
            methods.nm_prune(model, *method, layers=model.linears())
        log(f"{name}: {sparsity:.0%} of every row pruned, perplexity {perplexity(model, held_out):.3f}")
        train_decoder(model, tokens, final_steps, lr, seed=seed + 1, desc="retrain", log=log)
        iterations = steps = 0
    for k in range(1, iterations + 1):
        for name, layer in model.linears():
            q = prune.quality_for_fraction(layer, sparsity * k / iterations, stds[name])
            prune.prune_by_std(layer, q, stds[name], name)
        log(f"prune step {k}/{iterations}: {sparsity * k / iterations:.0%} of each layer pruned, "
            f"perplexity {perplexity(model, held_out):.3f}")
        train_decoder(model, tokens, steps + (final_steps if k == iterations else 0), lr, seed=seed + k,
                      desc=f"retrain {k}", log=log)
    pruned = perplexity(model, held_out)
    kept = _kept(model)
    total, weights = sum(v["kept"] for v in kept.values()), sum(v["weights"] for v in kept.values())
    log(f"pruned: {weights} -> {total} weights, perplexity {dense:.3f} -> {pruned:.3f}")
    return {"dense_perplexity": round(dense, 4), "pruned_perplexity": round(pruned, 4), "dense_weights": weights,
            "kept_weights": total, "layers": kept,
            "prune": {"method": methods.method_name(method), "sparsity": sparsity, "iterations": iterations,
                      "steps": steps, "final_steps": final_steps, "lr": lr, **({"calibration": calibration} if method == "wanda"
                                                               else {})}}


def _plain_copy(model):
    """A copy of `model` with pruning masks folded into zero weights (deepcopy fails on torch's pruning)."""
    twin = DecoderLM(**model.shape)
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("weight_mask"):
            continue
        if key.endswith("weight_orig"):
            key, value = key[:-len("_orig")], value * model.state_dict()[key[:-len("orig")] + "mask"]
        state[key] = value
    twin.load_state_dict(state)
    return twin.eval()


def _common_images(layers, config, keep, placement):
    """{name: chip image} of one-layer chips, all for ONE configuration (one simulator build, one start per
    token's layer): the standard chip like `config` if every layer fits it, else the largest fitted memories."""
    from eie.sw.image import build_image, chip_image
    images = {n: chip_image([q], config, keep, placement)[0] for n, q in layers.items()}
    configs = {img.config for img in images.values()}
    if len(configs) > 1:
        from eie.sw.image import SIZED_FIELDS
        first = next(iter(configs))
        common = first.replace(**{f: max(getattr(c, f) for c in configs) for f in SIZED_FIELDS})
        images = {n: build_image([q], common, placement) for n, q in layers.items()}
    return images


@torch.no_grad()
def _calibrate(model, held):
    model.eval()
    trace = {}
    model(torch.from_numpy(held[:, :-1]), trace)
    return {n: torch.cat(v).double().numpy() for n, v in trace.items()}


def compress_decoder(model, tokens, held_out, config=None, finetune_steps=200, calibration=64, placement="balanced",
                     keep=(), init="linear", seed=0, headroom=1.25, log=_log):
    """Deep Compression of a (pruned) `DecoderLM` for the chip `config`: weight sharing per chip layer
    (2^weight_index_bits-entry codebook, entry 0 the pruned zero), `finetune_steps` of fine-tuning (centroids,
    embeddings, layer norms, biases), the chip's fixed point with every chip input's scale calibrated on
    `calibration` training windows (largest |value| x `headroom`), one chip image per layer, all for one chip.
    `model` is left as it is. Returns a `CompressedDecoder`."""
    from eie.sw import compress, pipeline
    from eie.sw.quant import frac_for, quantize_network
    config = config or ChipConfig()
    if not isinstance(model, DecoderLM):
        raise EieError(f"compress_decoder takes a DecoderLM, not {type(model).__name__}")
    s = model.shape
    if "act_depth" in keep:
        check_fits(s["width"], s["mlp"], s["vocab"], config)
    if calibration < 1:
        raise EieError(f"calibration needs at least 1 window, not {calibration}")
    model = _plain_copy(model)
    pruned = perplexity(model, held_out)
    for _, layer in model.linears():
        compress.share_weights(layer, config.codebook_size, init, seed=seed)
    shared = perplexity(model, held_out)
    log(f"weight sharing ({config.codebook_size - 1} values + zero per layer): perplexity {pruned:.3f} -> {shared:.3f}")
    train_decoder(model, tokens, finetune_steps, 1e-3, seed=seed + 100, desc="fine-tune", log=log)
    tuned = perplexity(model, held_out)
    log(f"fine-tuned: perplexity {tuned:.3f}")
    x = _calibrate(model, windows(tokens, s["context"], calibration, seed=seed + 200))
    layers = {}
    for i, blk in enumerate(model.blocks):
        p = f"block{i}."
        for names, seq in (((p + "qkv",), nn.Sequential(blk.qkv)), ((p + "proj",), nn.Sequential(blk.proj)),
                           ((p + "fc1", p + "fc2"), nn.Sequential(blk.fc1, nn.ReLU(), blk.fc2))):
            floats = pipeline._chip_layers(seq, config.codebook_size)
            frac = frac_for(np.abs(x[names[0]]).max() * headroom, config.act_bits)
            for name, q in zip(names, quantize_network(floats, x[names[0]], config, frac, headroom)):
                layers[name] = q
    head = pipeline._chip_layers(nn.Sequential(model.head), config.codebook_size)
    layers["head"] = quantize_network(head, x["head"], config,
                                      frac_for(np.abs(x["head"]).max() * headroom, config.act_bits), headroom)[0]
    images = _common_images(layers, config, keep, placement)
    host = {k: v.detach().double().numpy() for k, v in model.state_dict().items()
            if k.startswith("embed") or ".ln" in k or k.startswith("ln_f")}
    figures = {"init": init, "codebook_size": config.codebook_size, "finetune_steps": finetune_steps,
               "pruned_perplexity": round(pruned, 4), "shared_perplexity": round(shared, 4),
               "finetuned_perplexity": round(tuned, 4), "calibration_windows": calibration, "headroom": headroom,
               "placement": placement,
               "fracs": {n: {"in": q.in_frac, "w": q.w_frac, "out": q.out_frac} for n, q in layers.items()}}
    cd = CompressedDecoder(images, host, dict(s), model, figures)
    cd.figures["fixed_point_perplexity"] = round(cd.perplexity(held_out), 4)
    log(f"fixed point (as chip and host compute) perplexity {cd.figures['fixed_point_perplexity']:.3f}")
    return cd


def _layer_norm(x, g, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + LN_EPS) * g + b


def host_forward(cd, tokens, matvec, cache=None):
    """The decoder on new tokens (batch, T) as the host and chip compute it: every chip layer through
    `matvec(name, x_int) -> y_int` ((n, cols) -> (n, rows) ints; the reference's `layer_forward` or the chip),
    the rest on the host in float64. `cache` (from the previous call) holds the keys and values of the last
    `context` positions. Returns (logits as ints at the head's out_frac (batch, T, vocab), the new cache).
    Written once: the reference and the chip driver differ only in `matvec`, so equal chip outputs give equal
    floats, tokens and logits."""
    from eie.sw.quant import from_fixed, to_fixed
    s, p, layers, bits = cd.shape, cd.host, cd.layers, cd.config.act_bits
    tokens = np.asarray(tokens, np.int64)
    b, t = tokens.shape
    h, dh, ctx = s["heads"], s["width"] // s["heads"], s["context"]
    past = 0 if cache is None else cache["pos"]
    q_pos = past + np.arange(t)
    x = p["embed.weight"][tokens]

    def chip(name, v):
        layer = layers[name]
        return matvec(name, to_fixed(v.reshape(b * t, -1), layer.in_frac, bits))
    new = {"pos": past + t, "kv": []}
    for i in range(s["layers"]):
        n = f"blocks.{i}."
        a = _layer_norm(x, p[n + "ln1.weight"], p[n + "ln1.bias"])
        qkv = from_fixed(chip(f"block{i}.qkv", a), layers[f"block{i}.qkv"].out_frac)
        q, k, v = qkv.reshape(b, t, 3, h, dh).transpose(2, 0, 3, 1, 4)
        if cache is not None:
            k = np.concatenate([cache["kv"][i][0], k], axis=2)
            v = np.concatenate([cache["kv"][i][1], v], axis=2)
        k_pos = np.arange(new["pos"] - k.shape[2], new["pos"])
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dh) + alibi_bias(q_pos, k_pos, h, ctx)[None]
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        y = ((scores / scores.sum(-1, keepdims=True)) @ v).transpose(0, 2, 1, 3).reshape(b, t, s["width"])
        new["kv"].append((k[:, :, -(ctx - 1):], v[:, :, -(ctx - 1):]) if ctx > 1 else (k[:, :, :0], v[:, :, :0]))
        x = x + from_fixed(chip(f"block{i}.proj", y), layers[f"block{i}.proj"].out_frac).reshape(b, t, -1)
        a = _layer_norm(x, p[n + "ln2.weight"], p[n + "ln2.bias"])
        u = chip(f"block{i}.fc1", a)                       # the chip's ReLU; fc2 reads it at the same scale
        x = x + from_fixed(matvec(f"block{i}.fc2", u), layers[f"block{i}.fc2"].out_frac).reshape(b, t, -1)
    a = _layer_norm(x, p["ln_f.weight"], p["ln_f.bias"])
    return chip("head", a).reshape(b, t, -1), new


def _softmax(z):
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def generate(cd, prompt, tokens, matvec, seed=0, temperature=0.8, on_token=None):
    """`tokens` characters after `prompt` ((batch, P) ids, fed as one chunk), one `host_forward` per character,
    each sampled from softmax(logits / `temperature`) with a generator seeded by `seed` (0 temperature: the
    most likely). `on_token(k)` is called before the forward pass of generated character k. Returns the
    generated ids (batch, tokens)."""
    from eie.sw.quant import from_fixed
    rng = np.random.default_rng(seed)
    prompt = np.asarray(prompt, np.int64)
    if on_token:
        on_token(-1)
    logits, cache = host_forward(cd, prompt, matvec)
    out = []
    frac = cd.layers["head"].out_frac
    for k in range(tokens):
        z = from_fixed(logits[:, -1], frac)
        if temperature > 0:
            cdf = np.cumsum(_softmax(z / temperature), axis=-1)
            nxt = np.minimum((cdf < rng.random(len(z))[:, None] * cdf[:, -1:]).sum(-1), z.shape[-1] - 1)
        else:
            nxt = z.argmax(-1)
        out.append(nxt)
        if k + 1 < tokens:
            if on_token:
                on_token(k)
            logits, cache = host_forward(cd, nxt[:, None], matvec, cache)
    return np.stack(out, 1)


@dataclass(repr=False)
class CompressedDecoder:
    """A compressed decoder as chip and host run it: one one-layer chip image per chip layer (all for one chip),
    the host's float parameters (embedding, layer norms), the shape, the weight-shared float network and the
    figures. The reference runs on the layers decoded from the images."""
    images: dict
    host: dict
    shape: dict
    network: object = None
    figures: dict = field(default_factory=dict)

    def __repr__(self):
        s = self.shape
        return (f"CompressedDecoder({s['layers']} layers, width {s['width']}, {s['heads']} heads, context "
                f"{s['context']} on a {self.config.pes}-PE chip, fixed-point perplexity "
                f"{self.figures.get('fixed_point_perplexity')})")

    @property
    def config(self):
        return next(iter(self.images.values())).config

    @property
    def layers(self):
        """{name: QuantLayer} in the model's row order, decoded from what the chip holds."""
        if getattr(self, "_layers", None) is None:
            self._layers = {n: img.model_layers()[0] for n, img in self.images.items()}
        return self._layers

    def reference_matvec(self, name, x_int):
        from eie.sw.reference import layer_forward
        return layer_forward(self.layers[name], x_int, self.config)

    def perplexity(self, held_out, matvec=None, batch=64):
        """exp(mean cross-entropy per character) over `held_out` windows, every chip layer through `matvec`
        (default the bit-exact reference), the windows `batch` at a time as one chunk each."""
        from eie.sw.quant import from_fixed
        held_out = np.asarray(held_out, np.int64)
        total, n = 0.0, 0
        frac = self.layers["head"].out_frac
        for i in range(0, len(held_out), batch):
            w = held_out[i:i + batch]
            z = from_fixed(host_forward(self, w[:, :-1], matvec or self.reference_matvec)[0], frac)
            z = z - z.max(-1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
            total -= float(np.take_along_axis(logp, w[:, 1:, None], -1).sum())
            n += w[:, 1:].size
        return math.exp(total / n)

    def generate(self, prompt, tokens, seed=0, temperature=0.8):
        """Text after `prompt` (a string) as the chip computes it (the bit-exact reference)."""
        return decode(generate(self, encode(prompt)[None], tokens, self.reference_matvec, seed, temperature)[0])

    def storage(self):
        """Bytes by part of every chip layer (`eie.sw.storage.storage`, summed) on the chip's PE count."""
        from eie.sw.storage import storage
        parts = {}
        for q in self.layers.values():
            for part, n in storage([q], self.config, placement=self.figures.get("placement", "balanced")).items():
                parts[part] = parts.get(part, 0) + n
        return parts
