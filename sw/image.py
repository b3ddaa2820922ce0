"""Chip image: the exact contents of every on-chip memory for a chain of layers, for one `ChipConfig`.

Layers are placed one after another: layer ``l``'s entries start at word ``entry_base`` of every PE's
sparse-matrix SRAM, its pointer words at ``ptr_base``; codebook ``l`` and biases ``l`` have fixed slots.
An image is saved as ``.npz`` with a header naming its config and a digest of its contents, so an image made
for another chip, or a truncated or edited file, is refused before any simulation starts.
"""

from dataclasses import dataclass, replace
import hashlib
import io
import json
from pathlib import Path

import numpy as np

from eie.config import ChipConfig
from eie.errors import EieError
from eie.sw.archive import read_npz
from eie.sw.encode import EncodedLayer, PeSlice, check_index_matrix, encode_layer, decode_layer
from eie.sw.placement import place_layers
from eie.sw.quant import QuantLayer
from eie.sw.runs import atomic_write

__all__ = ["LayerDesc", "ChipImage", "build_image", "SIZED_FIELDS", "fit_config", "fit_image", "chip_image",
           "load_image"]

FORMAT = "eie-image-1"


@dataclass(frozen=True)
class LayerDesc:
    """One row of the chip's layer table."""
    rows: int
    cols: int
    entry_base: int   # first sparse-matrix word
    ptr_base: int     # first pointer word
    shift: int
    relu: bool
    order: tuple = None   # row placement: position p holds the model's row order[p]; None = interleaved (identity)
    paired: bool = False  # PEs g and g + pes/2 share their rows (`eie.sw.encode`)

    def __post_init__(self):
        if self.order is not None:
            order = tuple(int(i) for i in self.order)
            if sorted(order) != list(range(self.rows)):
                raise ValueError(f"layer row order is not a permutation of its {self.rows} rows")
            object.__setattr__(self, "order", order)


@dataclass
class ChipImage:
    config: ChipConfig
    layers: list          # LayerDesc per layer
    entries: list         # per PE: (n, 2) int array of (v, z), word-aligned per layer
    ptr_base: np.ndarray  # (pes, ptr_words_used) base entry address of each pointer word
    ptr_counts: np.ndarray  # (pes, ptr_words_used, cols_per_ptr_word) entries per column
    codebooks: np.ndarray   # (layers, codebook_size)
    biases: np.ndarray      # (layers, pes, act_depth) by accumulator (local row; paired: own row s at 2s)
    fracs: list             # per layer (in_frac, w_frac, out_frac), for reading results as numbers

    # -- what the chip loads -----------------------------------------------------------------------------
    def matrix_words(self, pe):
        """Packed sparse-matrix SRAM words of PE `pe` (entry k of a word at bits k*entry_bits; v low, z high)."""
        c = self.config
        e = self.entries[pe]
        n = -(-len(e) // c.entries_per_word) * c.entries_per_word
        fields = np.zeros((n, 2), np.int64)
        fields[:len(e)] = e
        return pack_fields(fields.reshape(-1, 2 * c.entries_per_word),
                           [c.weight_index_bits, c.index_bits] * c.entries_per_word)

    def pointer_words(self, pe):
        """Packed pointer SRAM words of PE `pe`: the base entry address low, then one count per column."""
        c = self.config
        fields = np.concatenate([self.ptr_base[pe][:, None], self.ptr_counts[pe]], axis=1)
        return pack_fields(fields, [c.entry_addr_bits] + [c.count_bits] * c.cols_per_ptr_word)

    @property
    def matrix_words_used(self):
        c = self.config
        return max(-(-len(e) // c.entries_per_word) for e in self.entries)

    # -- what it means ---------------------------------------------------------------------------------------
    def encoded_layers(self):
        """Each layer's `EncodedLayer` as the memories hold it: what the performance model times."""
        c = self.config
        out = []
        for d in self.layers:
            pes = []
            words = -(-d.cols // c.cols_per_ptr_word)
            for k in range(c.pes):
                counts = self.ptr_counts[k, d.ptr_base:d.ptr_base + words].reshape(-1)[:d.cols]
                first = int(self.ptr_base[k, d.ptr_base])
                e = self.entries[k][first:first + int(counts.sum())]
                pes.append(PeSlice(e[:, 0], e[:, 1], counts))
            out.append(EncodedLayer(d.rows, d.cols, tuple(pes), d.paired))
        return out

    def quant_layers(self):
        """Decode the memories back into QuantLayers: the reference runs on exactly what the chip holds."""
        c = self.config
        out = []
        for l, (d, enc) in enumerate(zip(self.layers, self.encoded_layers())):
            held = self.biases[l][:, own_accumulators(-(-d.rows // c.pes), d.paired)]
            bias = held.T.reshape(-1)[:d.rows].copy()   # row i = PE i % pes, local i // pes
            out.append(QuantLayer(decode_layer(enc, c), self.codebooks[l].copy(), bias, d.shift, d.relu,
                                  *self.fracs[l]))
        return out

    def model_layers(self):
        """The layers in the model's row order (`quant_layers` with each placement undone): what to rebuild
        an image from, for another chip or another placement."""
        out, prev = [], None
        for d, q in zip(self.layers, self.quant_layers()):
            rows = np.arange(d.rows) if d.order is None else np.asarray(d.order)
            cols = np.arange(d.cols) if prev is None else prev
            w = np.empty_like(q.w_index)
            w[np.ix_(rows, cols)] = q.w_index
            bias = np.empty_like(q.bias)
            bias[rows] = q.bias
            out.append(replace(q, w_index=w, bias=bias))
            prev = None if d.order is None else rows
        return out

    def unpermute(self, outputs, layer=-1):
        """Outputs of `layer` (default the last; ``(..., rows)``) from the chip's row order to the model's."""
        out = np.asarray(outputs)
        order = self.layers[layer].order
        if order is None:
            return out
        back = np.empty_like(out)
        back[..., np.asarray(order)] = out
        return back

    # -- files ---------------------------------------------------------------------------------------------
    def _arrays(self):
        arrays = {"ptr_base": self.ptr_base, "ptr_counts": self.ptr_counts,
                  "codebooks": self.codebooks, "biases": self.biases}
        for k, e in enumerate(self.entries):
            arrays[f"entries_{k}"] = e
        return arrays

    def _digest(self, header):
        h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
        for name, a in sorted(self._arrays().items()):
            h.update(name.encode())
            h.update(np.ascontiguousarray(a, np.int64).tobytes())
        return h.hexdigest()

    def _header(self):
        return {"format": FORMAT, "config": self.config.to_dict(),
                "layers": [d.__dict__ for d in self.layers], "fracs": self.fracs}

    def save(self, path):
        header = self._header()
        header["digest"] = self._digest(header)
        buf = io.BytesIO()
        np.savez_compressed(buf, header=np.array(json.dumps(header)), **self._arrays())
        atomic_write(path, lambda f: f.write(buf.getvalue()))


def load_image(path, config=None):
    """Read an image; with `config`, refuse one made for another chip. Every damage (a truncated file, a
    flipped bit anywhere, members missing, added or of the wrong type or shape, an edited value) is an
    `EieError` of one line."""
    fix = "rebuild it with 'eie compress'"
    if not Path(path).exists():
        raise EieError(f"{path}: no such image file")
    arrays = read_npz(path, "chip image", fix)

    def bad(problem):
        return EieError(f"{path}: {problem}; {fix}")

    header = arrays.pop("header", None)
    if header is None or header.shape != () or header.dtype.kind != "U":
        raise bad("no image header")
    try:
        header = json.loads(str(header[()]))
    except ValueError:
        raise bad("the image header is not JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else None
        raise EieError(f"{path}: unknown image format {found!r}, expected {FORMAT!r}")
    try:
        made_for = ChipConfig.from_dict(header["config"])
        layers = [LayerDesc(**d) for d in header["layers"]]
        fracs = [tuple(f) for f in header["fracs"]]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise bad(f"damaged image header ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if config is not None and made_for != config:
        diff = ", ".join(f"{k}={v} (chip has {getattr(config, k)})"
                         for k, v in made_for.to_dict().items() if getattr(config, k) != v)
        raise EieError(f"{path}: image was built for another chip configuration: {diff}; "
                       f"rebuild the image for this chip or run with the image's configuration")
    c, n = made_for, len(layers)
    expect = {"ptr_base": 2, "ptr_counts": 3, "codebooks": 2, "biases": 3, **{f"entries_{k}": 2 for k in range(c.pes)}}
    if set(arrays) != set(expect):
        missing, extra = sorted(set(expect) - set(arrays)), sorted(set(arrays) - set(expect))
        raise bad("image members " + "; ".join(f"{what}: {', '.join(names)}" for what, names in
                                                (("missing", missing), ("unexpected", extra)) if names))
    for name, ndim in expect.items():
        a = arrays[name]
        if a.dtype.kind not in "iu" or a.ndim != ndim:
            raise bad(f"image member {name} is {a.dtype} {a.shape}, not {ndim}-D integers")
    words = arrays["ptr_base"].shape[1]
    shapes = {"ptr_base": (c.pes, words), "ptr_counts": (c.pes, words, c.cols_per_ptr_word),
              "codebooks": (n, c.codebook_size), "biases": (n, c.pes, c.act_depth)}
    for name, shape in shapes.items():
        if arrays[name].shape != shape:
            raise bad(f"image member {name} has shape {arrays[name].shape}, expected {shape}")
    if any(arrays[f"entries_{k}"].shape[1] != 2 for k in range(c.pes)):
        raise bad("image entries are not (v, z) pairs")
    image = ChipImage(made_for, layers, [arrays[f"entries_{k}"] for k in range(c.pes)],
                      arrays["ptr_base"], arrays["ptr_counts"], arrays["codebooks"], arrays["biases"], fracs)
    digest = header.pop("digest", None)
    if digest != image._digest(header):
        raise EieError(f"{path}: image contents do not match their digest (edited or corrupted); rebuild it")
    return image


def build_image(layers, config, placement="interleaved", calibration=None, pairs=None):
    """Encode a chain of QuantLayers for `config`; raise EieError if it does not fit the chip.

    `placement`: "interleaved" (EIE's row i -> PE i % pes) or "balanced" (`eie.sw.placement`: rows placed to
    balance the PEs' expected work, each layer's row order recorded in the image, the next layer's columns
    permuted to match; `quant_layers` returns the permuted layers the chip holds and `unpermute` puts outputs
    back in the model's order). `calibration`: int inputs of the first layer (samples x cols) that weigh the
    columns for "balanced" by how often each input is non-zero; without them every column counts the same.
    `pairs`: which layers share rows between pairs of PEs (`eie.sw.placement.place_layers`)."""
    if not isinstance(config, ChipConfig):
        raise TypeError(f"config must be a ChipConfig, not {type(config).__name__}")
    if not layers:
        raise EieError("a chip image needs at least one layer")
    if len(layers) > config.max_layers:
        raise EieError(f"{len(layers)} layers but the chip's layer table holds {config.max_layers}: "
                       f"use a chip with max_layers >= {len(layers)}")
    c = config
    descs, entries, bases, counts = [], [[] for _ in range(c.pes)], [], []
    codebooks = np.zeros((len(layers), c.codebook_size), np.int64)
    biases = np.zeros((len(layers), c.pes, c.act_depth), np.int64)
    entry_base = ptr_base = 0
    for l, layer in enumerate(layers):
        what = f"layer {l}"
        if not isinstance(layer, QuantLayer):
            raise TypeError(f"{what} must be a QuantLayer, not {type(layer).__name__}")
        layer.check(c, what)
        if l and layer.cols != layers[l - 1].rows:
            raise EieError(f"{what} takes {layer.cols} inputs but layer {l - 1} gives {layers[l - 1].rows}")
        check_index_matrix(layer.w_index, c, what)     # fits the register files, before placement works on it
    fracs = [(l.in_frac, l.w_frac, l.out_frac) for l in layers]
    layers, orders, pairs = place_layers(layers, c, placement, calibration, pairs)
    for l, layer in enumerate(layers):
        what = f"layer {l}"
        enc = encode_layer(layer.w_index, c, what, pairs[l])
        words = -(-layer.cols // c.cols_per_ptr_word)
        padded = np.zeros((c.pes, words * c.cols_per_ptr_word), np.int64)
        padded[:, :layer.cols] = enc.counts
        block_counts = padded.reshape(c.pes, words, c.cols_per_ptr_word)
        starts = np.concatenate([np.zeros((c.pes, 1), np.int64), np.cumsum(padded, axis=1)], axis=1)
        bases.append(entry_base * c.entries_per_word + starts[:, :-1:c.cols_per_ptr_word])
        counts.append(block_counts)
        layer_words = max(-(-pe.n_entries // c.entries_per_word) for pe in enc.pes)
        for k, pe in enumerate(enc.pes):
            e = np.stack([pe.v, pe.z], axis=1)
            fill = layer_words * c.entries_per_word - len(e)
            entries[k].append(np.concatenate([e, np.zeros((fill, 2), np.int64)]))
            local = layer.bias[k::c.pes]
            biases[l, k, own_accumulators(len(local), pairs[l])] = local   # the partner's rows start at 0
        codebooks[l] = layer.codebook
        descs.append(LayerDesc(layer.rows, layer.cols, entry_base, ptr_base, layer.shift, layer.relu, orders[l],
                               pairs[l]))
        entry_base += layer_words
        ptr_base += words
    if entry_base > c.matrix_words:
        raise EieError(f"model needs {entry_base} sparse-matrix words per PE (its busiest PE's share) but the "
                       f"chip has {c.matrix_words}: use more PEs or matrix_words >= {entry_base}")
    if ptr_base > c.ptr_words:
        raise EieError(f"model needs {ptr_base} pointer words per PE but the chip has {c.ptr_words}: "
                       f"use ptr_words >= {ptr_base}")
    return ChipImage(c, descs,
                     [np.concatenate(e) for e in entries],
                     np.concatenate(bases, axis=1), np.concatenate(counts, axis=1),
                     codebooks, biases, fracs)


def own_accumulators(local_rows, paired):
    """The accumulators (and bias slots) of a PE's own `local_rows` rows: 0, 1, ..., or in a paired layer 0, 2,
    4, ... (own row s in accumulator 2s, `eie.sw.encode`)."""
    step = 2 if paired else 1
    return slice(0, step * local_rows, step)


def pack_fields(fields, widths):
    """One Python int per row of `fields` (non-negative, each below 2**width), field i starting at the sum
    of the widths before it: the memory words the host writes, however wide, without a Python loop per field."""
    fields = np.asarray(fields, np.int64)
    bits = np.concatenate([(fields[:, i:i + 1] >> np.arange(w)) & 1 for i, w in enumerate(widths)], axis=1)
    packed = np.packbits(bits.astype(np.uint8), axis=1, bitorder="little")
    data, size = packed.tobytes(), packed.shape[1]
    return [int.from_bytes(data[i:i + size], "little") for i in range(0, len(data), size)]


def _pow2(n):
    return 1 << max(0, int(n) - 1).bit_length()


SIZED_FIELDS = ("act_depth", "matrix_words", "ptr_words", "count_bits")


def fit_config(layers, config, keep=(), exact=False, placement="interleaved", pairs=None):
    """The chip like `config` that holds `layers` with the least memory: the one rule for "the smallest chip
    for this model". act_depth, matrix_words and ptr_words become the depths the model needs and count_bits
    grows if a column needs more; fields named in `keep` stay as they are. Depths are rounded up to powers of
    two unless `exact` (storage accounting wants the model's own sizes; simulators want few distinct chips,
    so few Verilator builds); the layer table grows to the model's layers. `placement` and `pairs` are the
    image's (`build_image`: they move padding)."""
    grow = (lambda n: max(1, int(n))) if exact else _pow2
    fields = config.to_dict()
    if "max_layers" not in keep:
        fields["max_layers"] = max(config.max_layers, len(layers))
    if "act_depth" not in keep:
        dim = max(max(layer.rows, layer.cols) for layer in layers)
        fields["act_depth"] = grow(-(-dim // config.pes))
    roomy = {**fields, **{f: 1 << 20 for f in ("matrix_words", "ptr_words") if f not in keep}}
    if "count_bits" not in keep:
        roomy["count_bits"] = 16
    probe = build_image(layers, ChipConfig.for_user(**roomy), placement, pairs=pairs)
    if "count_bits" not in keep:
        most = int(probe.ptr_counts.max(initial=0)).bit_length()
        fields["count_bits"] = max(1, most) if exact else max(config.count_bits, most)
    if "matrix_words" not in keep:
        fields["matrix_words"] = grow(max(probe.matrix_words_used, 1))
    if "ptr_words" not in keep:
        fields["ptr_words"] = grow(max(probe.ptr_base.shape[1], 1))
    return ChipConfig.for_user(**fields)


def fit_image(layers, config, keep=(), placement="interleaved", pairs=None):
    """`build_image` on `fit_config(layers, config, keep, placement=placement, pairs=pairs)`."""
    return build_image(layers, fit_config(layers, config, keep, placement=placement, pairs=pairs), placement,
                       pairs=pairs)


def chip_image(layers, config, keep=(), placement="interleaved"):
    """The image of `layers` for the standard chip like `config` (`ChipConfig.standard`: memories fixed, so
    models share one simulator build), memory fields named in `keep` as `config` has them; when the model does
    not fit that chip, for the chip fitted to it (`fit_image`). Returns (image, True if standard)."""
    fixed = {f: getattr(config, f) for f in SIZED_FIELDS if f in keep}
    others = {k: v for k, v in config.to_dict().items() if k not in SIZED_FIELDS and k != "pes"}
    standard = ChipConfig.standard(config.pes, **others).replace(**fixed)
    try:
        return build_image(layers, standard, placement), True
    except EieError:
        return fit_image(layers, config, keep, placement), False
