"""CPU wall-clock of a fully connected network's inference, in the kernels a CPU offers: dense torch (BLAS),
torch's sparse CSR and scipy's CSR. Times come from `torch.utils.benchmark.Timer.blocked_autorange` (blocks of
repeated calls, the fastest block's time per call) at a stated thread count. `kernel_benchmark` times single
layers of EIE's benchmark shapes and finds the density below which the sparse kernels beat dense BLAS (the
reviewers' point).
"""

import warnings

import numpy as np
import torch

from eie.errors import EieError

__all__ = ["KERNELS", "EIE_LAYERS", "time_call", "network_kernels", "time_network", "kernel_benchmark",
           "crossover_density", "kernel_table"]

KERNELS = ("torch-dense", "torch-csr", "scipy-csr")

# EIE's benchmark layers (Han et al. 2016, ISCA, Table III): name, inputs, outputs, weights kept.
EIE_LAYERS = (("Alex-6", 9216, 4096, 0.09), ("Alex-7", 4096, 4096, 0.09), ("Alex-8", 4096, 1000, 0.25),
              ("VGG-6", 25088, 4096, 0.04), ("VGG-7", 4096, 4096, 0.04), ("VGG-8", 4096, 1000, 0.23))


def time_call(fn, threads=1, min_run_time=0.2):
    """Seconds per call of `fn()` with torch at `threads` threads, from `blocked_autorange`'s blocks of repeated
    calls: the fastest block (as `timeit` advises: on a shared machine the slower blocks measure the other
    jobs) and the median. Returns {"seconds", "median_seconds", "calls", "threads"}."""
    from torch.utils.benchmark import Timer
    if threads < 1:
        raise EieError(f"thread count must be at least 1, not {threads}")
    m = Timer("fn()", globals={"fn": fn}, num_threads=threads).blocked_autorange(min_run_time=min_run_time)
    return {"seconds": min(m.times), "median_seconds": m.median, "calls": len(m.times) * m.number_per_run,
            "threads": threads}


def network_kernels(layers, batches, kernels=KERNELS, seed=0):
    """{batch: {kernel: fn}}: each fn computes the network `layers` ([(W (out x in) float32 array, bias, relu)])
    on a random batch of inputs. Weights are converted once for all batches. Dense torch works on
    (batch, features) rows as nn.Linear does; the CSR kernels on (features, batch) columns, the layout in which
    a sparse matrix multiplies a dense one."""
    import scipy.sparse
    unknown = [k for k in kernels if k not in KERNELS]
    if unknown:
        raise EieError(f"unknown kernel {unknown[0]!r}: choose from {', '.join(KERNELS)}")
    weights = {
        "torch-dense": lambda w, b: (torch.from_numpy(np.ascontiguousarray(w, np.float32)),
                                     torch.from_numpy(np.asarray(b, np.float32))),
        "torch-csr": lambda w, b: (torch.from_numpy(np.asarray(w, np.float32)).to_sparse_csr(),
                                   torch.from_numpy(np.asarray(b, np.float32))[:, None]),
        "scipy-csr": lambda w, b: (scipy.sparse.csr_matrix(np.asarray(w, np.float32)), np.asarray(b, np.float32)[:, None]),
    }
    with warnings.catch_warnings():   # torch's "sparse CSR support is in beta" notice, once per process
        warnings.simplefilter("ignore", UserWarning)
        converted = {k: [(*weights[k](w, b), relu) for w, b, relu in layers] for k in kernels}

    def torch_dense(x, net):
        with torch.no_grad():
            for w, b, relu in net:
                x = torch.nn.functional.linear(x, w, b)
                if relu:
                    x = torch.relu(x)
            return x

    def torch_csr(x, net):
        with torch.no_grad():
            for w, b, relu in net:
                x = torch.mm(w, x) + b
                if relu:
                    x = torch.relu(x)
            return x

    def scipy_csr(x, net):
        for w, b, relu in net:
            x = w @ x + b
            if relu:
                np.maximum(x, 0, out=x)
        return x
    run = {"torch-dense": torch_dense, "torch-csr": torch_csr, "scipy-csr": scipy_csr}
    out = {}
    for batch in batches:
        x = torch.from_numpy(np.random.default_rng(seed).random((batch, layers[0][0].shape[1]), np.float32))
        inputs = {"torch-dense": x, "torch-csr": x.T.contiguous(), "scipy-csr": x.T.contiguous().numpy()}
        out[batch] = {k: (lambda f=run[k], x=inputs[k], net=converted[k]: f(x, net)) for k in kernels}
    return out


def time_network(layers, batches=(1, 64), kernels=KERNELS, threads=1, min_run_time=0.2):
    """{batch: {"kernels": {kernel: seconds per inference}, "best": kernel, "seconds": its time, "threads"}}.
    Per inference = per call / batch, so batch 64 shows throughput and batch 1 latency."""
    out = {}
    for batch, fns in network_kernels(layers, batches, kernels).items():
        times = {k: time_call(fn, threads, min_run_time)["seconds"] / batch for k, fn in fns.items()}
        best = min(times, key=times.get)
        out[batch] = {"kernels": times, "best": best, "seconds": times[best], "threads": threads}
    return out


def _random_sparse(rows, cols, density, rng):
    """(dense float32 matrix, nnz) with a random `density` of non-zeros, built row block by row block so that
    the large layers need no float64 temporaries."""
    w = np.zeros((rows, cols), np.float32)
    for start in range(0, rows, 256):
        block = w[start:start + 256]
        keep = rng.random(block.shape, dtype=np.float32) < density
        block[keep] = rng.standard_normal(int(keep.sum()), dtype=np.float32)
    return w


def crossover_density(densities, dense_seconds, sparse_seconds):
    """The density at which the best sparse kernel's time meets dense BLAS's, interpolated on log density
    between the densest point where sparse wins and its neighbour where it loses; None if sparse never wins,
    the largest density tried if it always does. `densities` in decreasing order."""
    wins = [s < dense_seconds for s in sparse_seconds]
    if not any(wins):
        return None
    first = wins.index(True)
    if first == 0:
        return densities[0]
    d0, d1 = densities[first - 1], densities[first]          # loses at d0, wins at d1
    t0, t1 = sparse_seconds[first - 1], sparse_seconds[first]
    f = (np.log(t0) - np.log(dense_seconds)) / (np.log(t0) - np.log(t1))
    return float(np.exp(np.log(d0) + f * (np.log(d1) - np.log(d0))))


def kernel_benchmark(layers=EIE_LAYERS, batches=(1, 64), densities=(0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01),
                     threads=1, min_run_time=0.2, seed=0, log=None):
    """Single-layer mat-vec (batch 1) and mat-mat (batch 64) on each benchmark shape: dense torch at the layer's
    own density (dense time does not depend on it), the sparse kernels at its published density and across
    `densities`, and the crossover density per batch. Returns one row per (layer, batch)."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, inputs, outputs, kept in layers:
        sweep = sorted(set(densities) | {kept}, reverse=True)
        timed = {}
        for d in sweep:
            if log:
                log(f"{name} at density {d:g}")
            w = _random_sparse(outputs, inputs, d, rng)
            kernels = KERNELS if d == sweep[0] else KERNELS[1:]
            fns = network_kernels([(w, np.zeros(outputs, np.float32), False)], batches, kernels, seed)
            del w
            for batch in batches:
                for k, fn in fns[batch].items():
                    timed[(d, batch, k)] = time_call(fn, threads, min_run_time)["seconds"]
            del fns
        for batch in batches:
            dense = timed[(sweep[0], batch, "torch-dense")]
            best = [min(timed[(d, batch, k)] for k in KERNELS[1:]) for d in sweep]
            rows.append({"layer": name, "shape": f"{outputs}x{inputs}", "density": kept, "batch": batch,
                         "threads": threads, "torch_dense_s": dense,
                         "torch_csr_s": timed[(kept, batch, "torch-csr")], "scipy_csr_s": timed[(kept, batch, "scipy-csr")],
                         "speedup": dense / min(timed[(kept, batch, k)] for k in KERNELS[1:]),
                         "crossover_density": crossover_density(sweep, dense, best),
                         "sweep": {str(d): {k: timed[(d, batch, k)] for k in KERNELS[1:]} for d in sweep}})
    return rows


def kernel_table(rows):
    """Markdown table of `kernel_benchmark` rows, times in microseconds per call (a whole batch)."""
    head = ("| layer | W (out x in) | density | batch | threads | dense torch (us/call) | torch CSR (us/call) "
            "| scipy CSR (us/call) | best sparse speed-up | sparse wins below |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cross = "never" if r["crossover_density"] is None else f"{100 * r['crossover_density']:.1f}%"
        lines.append(f"| {r['layer']} | {r['shape']} | {100 * r['density']:g}% | {r['batch']} | {r['threads']} | "
                     f"{1e6 * r['torch_dense_s']:.0f} | {1e6 * r['torch_csr_s']:.0f} | {1e6 * r['scipy_csr_s']:.0f} | "
                     f"{r['speedup']:.2f}x | {cross} |")
    return "\n".join(lines)
