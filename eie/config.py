"""`ChipConfig`: the one description of a chip that RTL, encoder, reference and performance model all read.

Arithmetic contract (what "bit-exact" means; `eie.sw.reference` implements it, the RTL must match):

* Activations are signed ``act_bits`` integers; codebook values are signed ``weight_bits`` integers.
  Codebook index 0 is reserved: its value is zero and an entry with index 0 is padding.
* Each output row starts its accumulator at ``bias << shift`` (the bias is an activation-format value at the
  layer's output scale), then adds ``codebook[v] * a_j`` for every stored entry of a non-zero activation.
  The accumulator is ``acc_bits`` wide two's complement and wraps.
* The result is rounded half-up and shifted: ``(acc + (1 << (shift - 1))) >> shift`` (arithmetic shift, no
  rounding when ``shift == 0``), saturated to the ``act_bits`` range, then ReLU'd if the layer asks for it.

Storage layout per processing element (PE); row ``i`` of a layer belongs to PE ``i % pes`` as local row
``i // pes``:

* sparse-matrix SRAM: ``matrix_words`` words of ``entries_per_word`` entries; an entry is ``v`` (weight index,
  low ``weight_index_bits``) and ``z`` (zeros skipped before it in its column, ``index_bits``);
* pointer SRAM: ``ptr_words`` words, each covering ``cols_per_ptr_word`` columns as one base entry address
  plus one ``count_bits`` entry count per column. EIE stores a 16-bit pointer per column; a base plus small
  counts stores the same spans in far fewer bits and is still read in one cycle (prefix sum within the word);
* the non-zero detector broadcasts ``acts_per_cycle`` activations per cycle: 1 as EIE, or 2, pairing two
  non-zero activations of one source word whose columns share a pointer word (one pointer read serves both,
  and the PE reads their entries back to back). Dense inputs (EIE's NT layers: 4,096 inputs at 64 PEs, about
  one entry per column and PE) are bound by the broadcast at one per cycle, not by the PEs' work;
* the output pass requantizes ``outputs_per_cycle`` local rows per PE per cycle: 1 as EIE, or 2 (a second
  accumulator and bias read, a second requantizer per PE, a second write port on the activation register
  files), which halves the pass that follows every layer: 64 cycles for a 4,096-row layer at 64 PEs;
* per PE, an activation queue of ``queue_depth`` (8, as EIE) and a FIFO of ``jobs_depth`` column spans
  between the pointer read and the matrix read: empty columns pass without stalling the matrix read, and
  together the two absorb a PE's bursts of heavy columns (at 64 PEs, 16 spans bring the cycles from 10% to
  4.4% above the busiest PE's work on EIE's reference workload, where 4 left them);
* activation register files: two banks (source/destination) of ``act_depth`` values, so a layer has at most
  ``act_depth * pes`` rows and columns;
* accumulators: ``act_depth`` registers; codebooks and biases for ``max_layers`` layers.
"""

from dataclasses import dataclass, asdict, fields
import hashlib
import json

from eie.errors import ConfigTypeError, ConfigValueError

__all__ = ["ChipConfig", "OUTPUT_LATENCY", "QUEUE_SLACK", "JOBS_SLACK", "PREFIX_STAGES", "WORD_FIFO_DEPTH",
           "REQUANT_LATENCY"]

# The pipeline's fixed depths, read by the RTL (`eie.hw`) and the cycle model (`eie.sw.perf`) alike.
REQUANT_LATENCY = 7           # output arithmetic, O3..O9 (`eie.hw.requant`)
OUTPUT_LATENCY = 2 + REQUANT_LATENCY   # output pass: a row asked for at O1 is in `out_data` this much later
QUEUE_SLACK = 3               # broadcasts in flight that the detector's view of the queues (2 cycles old) misses
PREFIX_STAGES = 3             # P2..P4: the span's start, an adder tree over the pointer word, a level a stage
JOBS_SLACK = PREFIX_STAGES    # spans in P2..P4 beyond EIE's one stage (P1) between the queue and the jobs FIFO
WORD_FIFO_DEPTH = 4           # source words the detector fetches ahead (its head word included)


def _bits_for(n):
    """Bits to hold unsigned values 0..n."""
    return max(1, int(n).bit_length())


@dataclass(frozen=True)
class ChipConfig:
    """One chip: PEs, widths and memory depths (the module's docstring gives each field's meaning). Every
    field is checked here, so RTL, encoder, reference and performance model can trust it; a bad value raises
    `EieError` (also a ValueError or TypeError). `ChipConfig.standard(pes)` is the chip models are compressed
    for; `replace(**changes)` another like it."""
    pes: int = 16
    queue_depth: int = 8
    jobs_depth: int = 16
    index_bits: int = 4
    weight_index_bits: int = 4
    weight_bits: int = 16
    act_bits: int = 16
    acc_bits: int = 40
    entries_per_word: int = 8
    matrix_words: int = 2048
    cols_per_ptr_word: int = 8
    count_bits: int = 6
    ptr_words: int = 512
    act_depth: int = 64
    max_layers: int = 4
    acts_per_cycle: int = 1
    outputs_per_cycle: int = 1

    # (minimum, maximum) for each parameter; checked once here so every consumer can trust the values.
    _RANGES = {
        "pes": (1, 64),
        "queue_depth": (2, 64),
        "jobs_depth": (2, 64),
        "index_bits": (2, 8),
        "weight_index_bits": (2, 8),
        "weight_bits": (2, 32),
        "act_bits": (2, 32),
        "acc_bits": (4, 64),
        "entries_per_word": (1, 64),
        "matrix_words": (1, 1 << 20),
        "cols_per_ptr_word": (1, 64),
        "count_bits": (1, 16),
        "ptr_words": (1, 1 << 20),
        "act_depth": (1, 1 << 16),
        "max_layers": (1, 64),
        "acts_per_cycle": (1, 2),
        "outputs_per_cycle": (1, 2),
    }
    _POWERS_OF_TWO = ("entries_per_word", "cols_per_ptr_word")

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigTypeError(f"ChipConfig.{f.name} must be an int, not {type(value).__name__}")
            lo, hi = self._RANGES[f.name]
            if not lo <= value <= hi:
                raise ConfigValueError(f"ChipConfig.{f.name} must be in {lo}..{hi}, not {value}")
        for name in self._POWERS_OF_TWO:
            value = getattr(self, name)
            if value & (value - 1):
                raise ConfigValueError(f"ChipConfig.{name} must be a power of two, not {value}")
        if self.acts_per_cycle > 1 and self.cols_per_ptr_word < 2:
            raise ConfigValueError("ChipConfig.acts_per_cycle=2 pairs columns that share a pointer word: "
                             "it needs cols_per_ptr_word >= 2")
        if self.acc_bits < self.act_bits + self.weight_bits:
            raise ConfigValueError(f"ChipConfig.acc_bits ({self.acc_bits}) must hold a full product: "
                             f"at least act_bits + weight_bits = {self.act_bits + self.weight_bits}")

    # -- derived widths -----------------------------------------------------------------------------------
    @property
    def codebook_size(self):
        return 1 << self.weight_index_bits

    @property
    def entry_bits(self):
        return self.weight_index_bits + self.index_bits

    @property
    def matrix_word_bits(self):
        return self.entry_bits * self.entries_per_word

    @property
    def max_zero_run(self):
        """Zeros one entry can skip; a longer run needs a padding entry."""
        return (1 << self.index_bits) - 1

    @property
    def max_count(self):
        return (1 << self.count_bits) - 1

    @property
    def entry_addr_bits(self):
        return _bits_for(self.matrix_words * self.entries_per_word)

    @property
    def ptr_word_bits(self):
        return self.entry_addr_bits + self.cols_per_ptr_word * self.count_bits

    @property
    def max_dim(self):
        """Most rows or columns a layer may have."""
        return self.act_depth * self.pes

    @property
    def dim_bits(self):
        return _bits_for(self.max_dim)

    @property
    def shift_bits(self):
        return _bits_for(self.acc_bits)

    @property
    def act_min(self):
        return -(1 << (self.act_bits - 1))

    @property
    def act_max(self):
        return (1 << (self.act_bits - 1)) - 1

    @classmethod
    def for_user(cls, **fields):
        """Like the constructor, but an unknown field name is an `EieError` too (a one-line message)."""
        from eie.errors import EieError
        try:
            return cls(**fields)
        except (TypeError, ValueError) as e:
            raise EieError(str(e)) from None

    @classmethod
    def standard(cls, pes=16, **fields):
        """The chip of `pes` PEs whose memories are fixed, not sized to a model, so that one Verilator build
        serves every model that fits: EIE's SRAM per PE (128 KB sparse matrix, 32 KB pointers; EIE, ISCA 2016),
        8-bit column counts, and activation register files for layers of max(1024, 64 x pes) rows. `fields`
        set the rest (index widths, queue depth ...)."""
        base = cls.for_user(pes=pes, **fields)
        act_depth = max(64, -(-1024 // pes))
        probe = base.replace(act_depth=act_depth, count_bits=8, matrix_words=1)
        matrix_words = 128 * 1024 * 8 // probe.matrix_word_bits
        probe = probe.replace(matrix_words=matrix_words)
        return probe.replace(ptr_words=32 * 1024 * 8 // probe.ptr_word_bits)

    def replace(self, **changes):
        """A copy with `changes`, checked like `for_user`."""
        return self.for_user(**{**self.to_dict(), **changes})

    # -- identity -------------------------------------------------------------------------------------------
    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigValueError(f"unknown ChipConfig field(s): {', '.join(unknown)}")
        return cls(**d)

    def key(self):
        """Short stable hash: names a Verilator build and ties an image to the chip it was made for."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def describe(self):
        return (f"{self.pes} PEs, {self.entry_bits}-bit entries (v{self.weight_index_bits}+z{self.index_bits}), "
                f"{self.matrix_words}x{self.entries_per_word} entries/PE, act depth {self.act_depth}, "
                f"queue {self.queue_depth}" + self.per_cycle_suffix())

    def per_cycle_suffix(self):
        """What this chip does more of per cycle than EIE, as in ``", 2 activations/cycle, 2 outputs/cycle"``."""
        return ((f", {self.acts_per_cycle} activations/cycle" if self.acts_per_cycle > 1 else "")
                + (f", {self.outputs_per_cycle} outputs/cycle" if self.outputs_per_cycle > 1 else ""))
