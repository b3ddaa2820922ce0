"""`eie verify`: a verification campaign of random layers and layer chains on a pool of chips, every output
compared bit for bit with the reference (issue 12's campaign).

Case `i` of seed `S` is drawn from ``numpy.random.default_rng([S, i])`` alone, so any case is replayed from
its two numbers and the pool (``eie verify --seed S --case I --cases 1`` with the same chip flags). Its first
draw picks the chip from the pool: every combination of the PE counts, relative-index bits, weight-index bits
and entries per word asked for, each one Verilator build (cached), so a campaign covers chips of several
shapes while its builds stay few. A share of the cases is steered towards what a sparse datapath gets wrong:
outputs that saturate both ways, padding runs (long zero runs in a PE's rows), back-to-back updates of one row
(dense short layers), chains of layers, all-zero inputs and columns, negative values; every other case scales
its outputs into the middle of the 16-bit range so that they are not all zero. The cases of one chip run many
per simulator start (the chip is reloaded between them, back to back, without a reset), and every other start
randomizes the host port's timing (idle cycles before writes, a restart the cycle after ``done``): nothing the
chip computes may change. A failing case (the first few of a campaign) is shrunk (fewer samples, fewer
layers, fewer weights, while it still fails) and saved as a replayable file set: the chip image, the inputs
and a JSON note with the seed, the case number and the pool.
"""

from dataclasses import dataclass, field, fields
import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from eie.config import ChipConfig
from eie.errors import EieError

__all__ = ["KINDS", "POOLED", "DEFAULT_POOL", "config_pool", "pool_of", "chip_label", "case_chip", "random_case",
           "case_pairs", "plan", "run_cases", "verify", "VerifyReport", "register"]

KINDS = ("plain", "saturating", "padding", "back-to-back", "chain", "sparse-input")
SAVED_AT_MOST = 3     # failing cases shrunk and saved per campaign (a broken chip fails them all)
# Chip fields a campaign varies, and `eie verify`'s pool: 1 PE, a PE count that is no power of two and 16 PEs;
# the narrowest and widest relative indices; 4- and 16-entry codebooks. Twelve builds, cached after first use.
POOLED = ("pes", "index_bits", "weight_index_bits", "entries_per_word", "acts_per_cycle", "outputs_per_cycle")
DEFAULT_POOL = {"pes": (1, 3, 16), "index_bits": (2, 8), "weight_index_bits": (2, 4)}


def config_pool(base, **values):
    """Every combination of `values` (a POOLED field -> its values) on top of `base`, in the order given."""
    unknown = sorted(set(values) - set(POOLED))
    if unknown:
        raise EieError(f"a pool varies only {', '.join(POOLED)}, not {', '.join(unknown)}")
    names = [f for f in POOLED if values.get(f)]
    return tuple(base.replace(**dict(zip(names, combo)))
                 for combo in itertools.product(*(dict.fromkeys(values[f]) for f in names)))


def _draw_chip(rng, pool):
    """Index in `pool` of a case's chip: the first draw of its generator (none from a pool of one, whose cases
    are those of the campaigns before pools)."""
    return int(rng.integers(len(pool))) if len(pool) > 1 else 0


def case_chip(seed, case, pool):
    """Index in `pool` of the chip of case `case` of campaign `seed`, without drawing the rest of the case."""
    return _draw_chip(np.random.default_rng([seed, case]), pool)


def _layer(rng, rows, cols, density, config, a_scale, relu, saturate=False):
    """A random QuantLayer for inputs of about `a_scale` in magnitude: its shift puts the outputs near 2**11,
    or, with `saturate`, far beyond the activation range."""
    from eie.sw.quant import QuantLayer
    c = config
    w = rng.integers(1, c.codebook_size, (rows, cols)) * (rng.random((rows, cols)) < density)
    w_max = (1 << (c.weight_bits - 1)) - 1
    cb_scale = w_max if saturate else min(int(rng.choice([3, 100, 3000, w_max])), w_max)
    cb = np.concatenate([[0], rng.integers(-cb_scale, cb_scale + 1, c.codebook_size - 1)])
    spread = np.log2(np.sqrt(max(1.0, density * cols)) * cb_scale * max(a_scale, 1) + 1)
    shift = int(rng.integers(0, 3)) if saturate else round(spread - 11)
    shift = int(np.clip(shift, 0, c.acc_bits - c.act_bits - 1))
    return QuantLayer(w, cb, rng.integers(-300, 301, rows), shift, relu)


def random_case(seed, case, pool):
    """(config, kind, layers, inputs) of case `case` of campaign `seed`, on a chip drawn from `pool`."""
    rng = np.random.default_rng([seed, case])
    c = pool[_draw_chip(rng, pool)]
    kind = KINDS[int(rng.integers(len(KINDS)))]
    limit = min(c.max_dim, 128)

    def dim():
        return int(np.clip(np.exp(rng.uniform(0, np.log(limit + 1))), 1, limit))

    relu = bool(rng.random() < 0.5)
    if kind == "padding":
        # more than max_zero_run + 1 rows in every PE (when the chip holds that many), a few weights each
        rows = min(c.max_dim, c.pes * int(rng.integers(c.max_zero_run + 2, 2 * c.max_zero_run + 4)))
        cols, density = dim(), 0.03
    elif kind == "back-to-back":
        rows, cols, density = int(rng.integers(1, c.pes + 1)), dim(), 1.0
    elif kind == "saturating":
        rows, cols, density = dim(), dim(), rng.uniform(0.3, 1.0)
    else:
        rows, cols, density = dim(), dim(), float(rng.choice([0.0, 0.02, 0.1, 0.3, 0.7, 1.0]))
    a_scale = int(rng.choice([50, 2000, c.act_max]))
    x = rng.integers(-a_scale, a_scale + 1, (int(rng.integers(1, 4)), cols))
    x *= rng.random(x.shape) < (0.05 if kind == "sparse-input" else rng.uniform(0.2, 1.0))
    if kind == "chain" and c.max_layers > 1:
        dims = [cols] + [dim() for _ in range(int(rng.integers(2, min(c.max_layers, 3) + 1)))]
        layers = [_layer(rng, dims[i + 1], dims[i], rng.uniform(0.05, 0.8), c, a_scale if i == 0 else 1 << 11,
                         relu or i + 2 < len(dims)) for i in range(len(dims) - 1)]
    else:
        layers = [_layer(rng, rows, cols, density, c, a_scale, relu, saturate=kind == "saturating")]
    if kind == "sparse-input":
        x[0] = 0                                       # an all-zero input vector
        layers[0].w_index[:, ::3] = 0                  # and all-zero columns
    return c, kind, layers, x


def case_pairs(seed, case, layers, config):
    """Whether case `case` of campaign `seed` runs paired (`eie.sw.encode`): half of the cases whose layers all
    fit pairing on their chip, drawn apart from the case, so that a seed's cases stay what they were."""
    from eie.sw.encode import fits_pairs
    return (all(fits_pairs(layer.rows, config) for layer in layers)
            and bool(np.random.default_rng([seed, case, 2]).random() < 0.5))


def plan(pool, seed, first, cases, batch):
    """The simulator starts of a campaign: [(index in pool, case numbers, gaps)], the cases of one chip `batch`
    at most per start. Every other start of each chip (alternating between chips, so that a campaign of one
    start per chip has both) gets `gaps`, the seed of random host timing; the rest None. Chips take turns, so
    that the first starts build different chips in parallel."""
    numbers = [[] for _ in pool]
    for n in range(first, first + cases):
        numbers[case_chip(seed, n, pool)].append(n)
    starts = [[(k, nums[i:i + batch], [seed, nums[i], 1] if (k + i // batch) % 2 else None)
               for i in range(0, len(nums), batch)] for k, nums in enumerate(numbers)]
    return [s for turn in itertools.zip_longest(*starts) for s in turn if s is not None]


def _simulate(jobs, engine, gaps):
    if engine == "amaranth":
        from eie.cosim.hostport import simulate_in_amaranth
        return simulate_in_amaranth(jobs, gaps=gaps)
    from eie.cosim.sim import simulate_many
    return simulate_many(jobs, gaps=gaps)


def run_cases(cases, config, engine, images=None, gaps=None, pairs=False):
    """Simulate (layers, inputs) cases (their chip `images`, if built already; else built with every layer
    paired or none, as `pairs` says) in one simulator start, with random host timing from seed `gaps` if given;
    a list of (chip outputs, reference outputs)."""
    from eie.sw.image import build_image
    from eie.sw.reference import forward
    images = images or [build_image(layers, config, pairs=pairs) for layers, _ in cases]
    results = _simulate([(image, x) for image, (_, x) in zip(images, cases)], engine, gaps)
    return [(r.outputs, forward(layers, x, config)[-1]) for r, (layers, x) in zip(results, cases)]


def _fails(got_expect):
    got, expect = got_expect
    return got.shape != expect.shape or bool((got != expect).any())


def shrink(layers, x, config, engine, gaps=None, rounds=12, pairs=False):
    """A smaller (layers, inputs) that still fails: each round simulates every candidate in one start (with
    the host timing of seed `gaps`, and paired or not, as the failing start had it)."""
    for _ in range(rounds):
        candidates = []
        if len(x) > 1:
            candidates += [(layers, x[s:s + 1]) for s in range(len(x))]
        if len(layers) > 1:
            candidates.append((layers[:-1], x))
        nz = np.argwhere(layers[0].w_index != 0)
        if len(nz) > 1:
            for half in (nz[:len(nz) // 2], nz[len(nz) // 2:]):
                first = _replace_weights(layers[0], half)
                candidates.append(([first, *layers[1:]], x))
        if x.any():
            keep = x.copy()
            keep[:, np.flatnonzero(keep.any(axis=0))[::2]] = 0
            candidates.append((layers, keep))
        if not candidates:
            break
        outcomes = run_cases(candidates, config, engine, gaps=gaps, pairs=pairs)
        smaller = next((cand for cand, out in zip(candidates, outcomes) if _fails(out)), None)
        if smaller is None:
            break
        layers, x = smaller
    return layers, x


def _replace_weights(layer, drop):
    from dataclasses import replace
    w = layer.w_index.copy()
    w[drop[:, 0], drop[:, 1]] = 0
    return replace(layer, w_index=w)


def chip_label(config):
    """What a pool varies about `config`, for the counts per chip."""
    c = config
    return (f"{c.pes} PE{'s' if c.pes > 1 else ''}, z{c.index_bits} v{c.weight_index_bits}, "
            f"{c.entries_per_word} entries/word" + c.per_cycle_suffix())


@dataclass
class VerifyReport:
    pool: tuple                                           # the chips the cases are drawn from
    seed: int
    cases: int = 0
    samples: int = 0
    outputs: int = 0
    mismatched_cases: list = field(default_factory=list)   # case numbers
    mismatch_gaps: dict = field(default_factory=dict)      # mismatching case -> host-timing seed of its start
    skipped: int = 0                                      # drawn cases that did not fit their chip
    kinds: dict = field(default_factory=dict)
    chips: dict = field(default_factory=dict)             # chip_label -> {cases, mismatches, skipped, timed}
    timed_cases: int = 0                                  # cases run with random host timing
    saturated_cases: int = 0
    negative_cases: int = 0
    zero_output_vectors: int = 0
    padded_cases: int = 0
    paired_cases: int = 0
    seconds: float = 0.0
    saved: list = field(default_factory=list)
    failed_chunks: dict = field(default_factory=dict)     # "N cases of <chip> from case A" -> why: not run

    @property
    def cases_per_s(self):
        return self.cases / self.seconds if self.seconds else 0.0

    def add(self, part):
        """Fold in the counts of `part` (another chunk of the same campaign)."""
        for name in ("cases", "samples", "outputs", "skipped", "timed_cases", "saturated_cases", "negative_cases",
                     "zero_output_vectors", "padded_cases", "paired_cases"):
            setattr(self, name, getattr(self, name) + getattr(part, name))
        self.mismatched_cases += part.mismatched_cases
        self.mismatch_gaps.update(part.mismatch_gaps)
        for kind, n in part.kinds.items():
            self.kinds[kind] = self.kinds.get(kind, 0) + n
        for label, counts in part.chips.items():
            mine = self.chips.setdefault(label, dict.fromkeys(counts, 0))
            for name, n in counts.items():
                mine[name] += n


def _chunk(task):
    """One simulator start of a campaign: (pool, index of its chip, seed, case numbers, engine, host-timing seed
    or None) -> VerifyReport."""
    from eie.sw.image import build_image
    pool, k, seed, numbers, engine, gaps = task
    config = pool[k]
    report = VerifyReport(pool, seed)
    drawn, images = [], []
    for n in numbers:
        _, kind, layers, x = random_case(seed, n, pool)
        try:
            images.append(build_image(layers, config, pairs=case_pairs(seed, n, layers, config)))
        except EieError:       # too large for this chip's memories or counts
            report.skipped += 1
            continue
        drawn.append((n, kind, layers, x))
    outcomes = run_cases([(layers, x) for _, _, layers, x in drawn], config, engine, images, gaps) if drawn else []
    for (n, kind, layers, x), image, (got, expect) in zip(drawn, images, outcomes):
        report.cases += 1
        report.samples += len(x)
        report.outputs += expect.size
        report.kinds[kind] = report.kinds.get(kind, 0) + 1
        report.saturated_cases += bool(((expect == config.act_max) | (expect == config.act_min)).any())
        report.negative_cases += bool((expect < 0).any())
        report.zero_output_vectors += int((~expect.any(axis=1)).sum())
        report.padded_cases += any(pe.n_padding for enc in image.encoded_layers() for pe in enc.pes)
        report.paired_cases += image.layers[0].paired
        if _fails((got, expect)):
            report.mismatched_cases.append(n)
            report.mismatch_gaps[n] = gaps
    report.timed_cases = report.cases if gaps is not None else 0
    report.chips[chip_label(config)] = {"cases": report.cases, "mismatches": len(report.mismatched_cases),
                                        "skipped": report.skipped, "timed": report.timed_cases}
    return report


def verify(pool, cases, seed=0, engine="verilator", batch=100, first=0, out=None, log=None, jobs=1,
           scheduler=None):
    """Run cases `first` .. `first + cases - 1` of campaign `seed`, each on a chip drawn from `pool` (a sequence
    of ChipConfigs, or one), the cases of a chip `batch` at most per simulator start (`plan`); a VerifyReport.
    With `jobs` > 1 or a Dask `scheduler` address the starts spread over simulator processes
    (`eie.cosim.campaign`), with the same results. The first `SAVED_AT_MOST` failing cases are shrunk and saved
    under `out` (when given); all are counted."""
    pool = (pool,) if isinstance(pool, ChipConfig) else tuple(pool)
    if engine not in ("verilator", "amaranth"):
        raise EieError(f"engine must be 'verilator' or 'amaranth', not {engine!r}")
    if cases < 1 or seed < 0 or first < 0 or batch < 1:
        raise EieError(f"--cases and --batch must be positive and --seed, --case at least 0 "
                       f"(got {cases}, {batch}, {seed}, {first})")
    if not pool or not all(isinstance(c, ChipConfig) for c in pool):
        raise EieError("a campaign needs a pool of one or more ChipConfigs")
    blank = dict.fromkeys(("cases", "mismatches", "skipped", "timed"), 0)
    report = VerifyReport(pool, seed, chips={chip_label(c): dict(blank) for c in pool})
    t0 = time.perf_counter()
    tasks = [(pool, k, seed, numbers, engine, gaps) for k, numbers, gaps in plan(pool, seed, first, cases, batch)]

    def progress():
        if log:
            log(f"{report.cases} cases, {len(report.mismatched_cases)} mismatches, "
                f"{report.cases / (time.perf_counter() - t0):.1f} cases/s")

    if jobs == 1 and not scheduler:
        for task in tasks:
            report.add(_chunk(task))
            progress()
    else:
        from eie.cosim.campaign import run_tasks
        done = [0]

        def chunk_done(i):      # the counts come back at the end; meanwhile, how far it got at each tenth
            tenth = done[0] * 10 // cases
            done[0] += len(tasks[i][3])
            if log and done[0] * 10 // cases > tenth:
                log(f"{done[0]} of {cases} cases run, {done[0] / (time.perf_counter() - t0):.1f} cases/s")
        parts, failed = run_tasks(_chunk, tasks, jobs, scheduler, chunk_done)
        for part in parts:
            if part is not None:
                report.add(part)
        report.failed_chunks = {f"{len(tasks[i][3])} cases of {chip_label(pool[tasks[i][1]])} from case "
                                f"{tasks[i][3][0]}": why for i, why in failed.items()}
        progress()
    report.mismatched_cases.sort()
    for n in report.mismatched_cases[:SAVED_AT_MOST] if out is not None else []:
        config, kind, layers, x = random_case(seed, n, pool)
        gaps = report.mismatch_gaps[n]
        if log:
            log(f"case {n} ({kind}, {chip_label(config)}) MISMATCH: shrinking ...")
        pairs = case_pairs(seed, n, layers, config)
        saved = save_case(out, seed, n, kind, *shrink(layers, x, config, engine, gaps, pairs=pairs),
                          pool.index(config), pool, gaps, engine, pairs)
        report.saved.append(saved)
        if log:
            log(f"  saved {saved} (replay: {json.loads(saved.read_text())['replay']})")
    report.seconds = time.perf_counter() - t0
    return report


def replay_flags(pool):
    """`eie verify` chip flags that name `pool` (as `config_pool` makes them): the pooled fields as lists, every
    other field that differs from the default."""
    default, flags = ChipConfig(), []
    for f in fields(ChipConfig):
        values = list(dict.fromkeys(getattr(c, f.name) for c in pool))
        if f.name in POOLED or values != [getattr(default, f.name)]:
            flags += [f"--{f.name.replace('_', '-')}", ",".join(map(str, values))]
    return flags


def save_case(out, seed, case, kind, layers, x, k, pool, gaps, engine, pairs=False):
    """A failing case (on chip `k` of `pool`, in a start with host-timing seed `gaps`) as files:
    `<stem>.image.npz` (chip image), `<stem>.inputs.npy`, `<stem>.json` (how to replay it); returns the JSON
    path."""
    from eie.sw.image import build_image
    from eie.sw.runs import atomic_write
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"fail-{seed}-{case}"
    build_image(layers, pool[k], pairs=pairs).save(stem.with_suffix(".image.npz"))
    atomic_write(stem.with_suffix(".inputs.npy"), lambda f: np.save(f, np.asarray(x, np.int64)))
    replay = ["eie", "verify", "--seed", seed, "--case", case, "--cases", 1, "--engine", engine, *replay_flags(pool)]
    note = {"seed": seed, "case": case, "kind": kind, "config": pool[k].to_dict(), "gaps": gaps,
            "pool": [c.to_dict() for c in pool],
            "image": stem.with_suffix(".image.npz").name, "inputs": stem.with_suffix(".inputs.npy").name,
            "replay": " ".join(map(str, replay))}
    atomic_write(stem.with_suffix(".json"), lambda f: f.write(json.dumps(note, indent=1) + "\n"), binary=False)
    return stem.with_suffix(".json")


# -- eie verify -------------------------------------------------------------------------------------------------

def _values(text):
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give integers separated by commas, like 1,3,16") from None


def pool_of(args):
    """The pool `eie verify`'s arguments name: the pooled flags' combinations on the chip the others name."""
    from eie.cosim.commands import chip_config
    base = chip_config(argparse.Namespace(**{**vars(args), **dict.fromkeys(POOLED)}))
    return config_pool(base, **{f: getattr(args, f) for f in POOLED})


def verify_command(args):
    from eie.cosim.campaign import cores
    pool = pool_of(args)
    log = lambda s: print(s, flush=True)   # noqa: E731
    if args.jobs is None:
        args.jobs = cores()
    r = verify(pool, args.cases, args.seed, args.engine, args.batch, args.case, args.out, log, args.jobs,
               args.scheduler)
    chips = pool[0].describe() if len(pool) == 1 else f"{len(pool)} chips"
    print(f"seed {r.seed}: {r.cases} cases ({r.samples} samples, {r.outputs} outputs) on {chips}, "
          f"{args.engine}: {len(r.mismatched_cases)} mismatching cases"
          + (f" ({', '.join(map(str, r.mismatched_cases[:10]))})" if r.mismatched_cases else "")
          + f"; {r.cases_per_s:.1f} cases/s")
    print(f"  kinds {r.kinds}; {r.skipped} drawn cases did not fit their chip")
    print(f"  cases with saturated outputs {r.saturated_cases}, negative outputs {r.negative_cases}, padding "
          f"{r.padded_cases}, paired PEs {r.paired_cases}; all-zero output vectors {r.zero_output_vectors} of "
          f"{r.samples}; "
          f"random host timing {r.timed_cases}")
    if len(pool) > 1:
        for label, n in r.chips.items():
            print(f"  {label}: {n['cases']} case{'' if n['cases'] == 1 else 's'} ({n['timed']} with random host "
                  f"timing), {n['mismatches']} mismatching, {n['skipped']} did not fit")
    for chunk, why in r.failed_chunks.items():
        print(f"  NOT RUN: {chunk} ({why})")
    return 1 if r.mismatched_cases or r.failed_chunks else 0


def register(sub):
    from eie.cosim.commands import add_chip_args
    # "resolve": the pooled chip flags below take lists and replace add_chip_args' single values
    p = sub.add_parser("verify", help="verification campaign: random layers on a pool of chips against the reference",
                       conflict_handler="resolve",
                       description="Random layers and layer chains (steered towards saturation, padding, "
                                   "back-to-back row updates, zero inputs) on simulated chips drawn per case from a "
                                   "pool (every combination of the values of --pes, --index-bits, "
                                   "--weight-index-bits and --entries-per-word: one Verilator build each, cached), "
                                   "every output compared bit for bit with the reference. The cases of a chip run "
                                   "--batch at most per simulator start; every other start randomizes the host "
                                   "port's timing. Case I of seed S is replayed by --seed S --case I --cases 1 with "
                                   "the same chip flags. Exit status 1 on any mismatch.")
    p.add_argument("--cases", type=int, default=100, help="number of cases (default 100)")
    p.add_argument("--seed", type=int, default=0, help="campaign seed, >= 0 (default 0)")
    p.add_argument("--case", type=int, default=0, help="first case number (default 0)")
    p.add_argument("--batch", type=int, default=100, help="cases per simulator start, at most (default 100)")
    p.add_argument("--jobs", type=int, default=None,
                   help="simulator processes on this machine (default: the cores; 1 runs in this process)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler to spread the chunks over")
    p.add_argument("--engine", choices=["verilator", "amaranth"], default="verilator",
                   help="Verilator co-simulation (default) or Amaranth's simulator (no build; small chips)")
    p.add_argument("--out", type=Path, default=Path("verify-failures"),
                   help="folder for shrunk failing cases (default verify-failures)")
    add_chip_args(p)
    g = p.add_argument_group("the pool of chips (a case draws one; one value gives a single chip)")
    for name, help_ in (("pes", "processing elements, 1..64"), ("index-bits", "relative row index bits z, 2..8"),
                        ("weight-index-bits", "codebook index bits v, 2..8"),
                        ("entries-per-word", "entries per sparse-matrix SRAM word, a power of two"),
                        ("acts-per-cycle", "non-zero activations broadcast per cycle, 1 or 2"),
                        ("outputs-per-cycle", "rows each PE puts out per cycle in the output pass, 1 or 2")):
        f = name.replace("-", "_")
        default = DEFAULT_POOL.get(f, (getattr(ChipConfig(), f),))
        g.add_argument(f"--{name}", type=_values, metavar="N,N,...", default=default,
                       help=f"{help_} (default {','.join(map(str, default))})")
    p.set_defaults(func=verify_command)
