"""Campaigns larger than one simulator process, on Dask distributed: a local cluster of worker processes by
default, or any running cluster given its scheduler address. Tasks are whole simulator runs (a chunk of
samples, a design point), so the scheduler's overhead is small beside them.

A worker that dies takes its tasks with it; Dask runs them again on another worker, and a task that kills
`ALLOWED_FAILURES` workers is reported by name, never dropped.
"""

import contextlib
import os
import warnings

from eie.errors import EieError

__all__ = ["ALLOWED_FAILURES", "SIM_CHUNK", "MIN_CHUNK", "cores", "check_jobs", "cluster", "run_tasks"]

ALLOWED_FAILURES = 3
SIM_CHUNK = 1000     # samples per simulator start, at most (so progress shows)
MIN_CHUNK = 100      # fewer samples than this per process are not worth a process of their own


def cores():
    """The cores this process may use: the default number of simulator processes."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def check_jobs(jobs):
    """A number of simulator processes: an integer >= 1 (zero is refused, never taken as a default)."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise EieError(f"the number of simulator processes (--jobs) must be at least 1, not {jobs}")
    return jobs


@contextlib.contextmanager
def cluster(workers=None, scheduler=None):
    """A Dask client: connected to `scheduler` (e.g. "tcp://10.0.0.5:8786") or to a new local cluster of
    `workers` single-threaded processes (default: the cores)."""
    import dask
    from distributed import Client, LocalCluster
    if workers is not None:
        check_jobs(workers)
    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES - 1,
                          "distributed.logging.distributed": "error"}):
        if scheduler:
            try:
                client = Client(scheduler, timeout="10s")
            except (OSError, TimeoutError) as e:
                raise EieError(f"cannot reach the Dask scheduler at {scheduler} ({type(e).__name__}): start one "
                               "with 'dask scheduler' or drop --scheduler to run on this machine") from None
            local = None
        else:
            local = LocalCluster(n_workers=workers or cores(), threads_per_worker=1, processes=True,
                                 dashboard_address=":0", silence_logs=50)
            client = Client(local)
        try:
            yield client
        finally:
            client.close()
            if local is not None:
                local.close()


def run_tasks(fn, tasks, workers=None, scheduler=None, progress=None):
    """`fn(task)` for every task, the calls spread over a cluster (see `cluster`). Returns (results in task
    order, {task index: why it failed}); a failed task's result is None, and the others are all there.
    `progress(index)` is called as each task finishes."""
    with cluster(workers, scheduler) as client:
        # Tasks carry their data (images, inputs) inside the graph, so a task whose worker died can run again
        # elsewhere (scattered data would die with its worker); Dask's warning about large graphs says no more.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sending large graph")
            futures = client.map(fn, tasks, pure=False)
        index = {f.key: n for n, f in enumerate(futures)}
        results, failed = [None] * len(futures), {}
        from distributed import as_completed
        for future in as_completed(futures):
            n = index[future.key]
            try:
                results[n] = future.result()
            except Exception as e:   # a task's own error, or KilledWorker after ALLOWED_FAILURES deaths
                failed[n] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            if progress:
                progress(n)
        return results, failed
