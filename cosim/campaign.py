"""Campaigns larger than one simulator process, on Dask distributed: a local cluster of worker processes by
default, or any running cluster given its scheduler address. Tasks are whole simulator runs (a chunk of
samples, a design point), so the scheduler's overhead is small beside them.

A worker that dies takes its tasks with it; Dask runs them again on another worker, and a task that kills
`ALLOWED_FAILURES` workers is reported by name, never dropped.

Local workers are spawned processes, and a spawned process re-runs the parent's main script unless it sits
under ``if __name__ == "__main__":``. A notebook-style script has no such guard, so `cluster` hides the main
script from the workers it starts (`_main_hidden`): the tasks are library functions and need none of it.
The workers start with Ctrl-C ignored (`_sigint_ignored`): it stops the parent, which closes the cluster,
rather than printing every worker's traceback.
"""

import contextlib
import os
import signal
import sys
import threading
import warnings

from eie.errors import EieError

__all__ = ["ALLOWED_FAILURES", "SIM_CHUNK", "MIN_CHUNK", "cores", "check_jobs", "workers_for", "cluster", "run_tasks"]

ALLOWED_FAILURES = 3
SIM_CHUNK = 1000     # samples per simulator start, at most (so progress shows)
MIN_CHUNK = 2000     # fewer samples than this per process are not worth a process of their own: starting
                     # one costs about 3 s, in which one simulator runs about 2,000 images of a small model


def cores():
    """The cores this process may use: the default number of simulator processes."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def check_jobs(jobs):
    """A number of simulator processes: an integer >= 1 (zero is refused, never taken as a default)."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise EieError(f"the number of simulator processes (jobs) must be at least 1, not {jobs}")
    return jobs


def workers_for(samples, jobs=None):
    """How many of `jobs` processes (default: the cores) `samples` images are worth: one per `MIN_CHUNK`, at
    least one."""
    return max(1, min(cores() if jobs is None else check_jobs(jobs), samples // MIN_CHUNK))


@contextlib.contextmanager
def _main_hidden():
    """Hide the main script (its path and module name) from processes spawned meanwhile, so that they do not
    run it again: multiprocessing's spawn re-executes `__main__` from them, and without a `__name__` guard
    the script would start its own cluster inside each worker."""
    main = sys.modules.get("__main__")
    saved = {k: v for k, v in vars(main).items() if k in ("__file__", "__spec__")} if main else {}
    if "__file__" in saved:
        del main.__file__
    if "__spec__" in saved:
        main.__spec__ = None
    try:
        yield
    finally:
        for key, value in saved.items():
            setattr(main, key, value)


@contextlib.contextmanager
def _sigint_ignored():
    """Ignore SIGINT while worker processes start: they inherit it, so Python installs no KeyboardInterrupt
    handler in them. The parent's handler comes back at once. Only the main thread may change signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


@contextlib.contextmanager
def cluster(workers=None, scheduler=None):
    """A Dask client: connected to `scheduler` (e.g. "tcp://10.0.0.5:8786") or to a new local cluster of
    `workers` single-threaded processes (default: the cores)."""
    import dask
    from distributed import Client, LocalCluster
    if workers is not None:
        check_jobs(workers)
    with contextlib.ExitStack() as stack:
        stack.enter_context(dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES - 1,
                                             "distributed.logging.distributed": "error"}))
        if scheduler:
            try:
                client = Client(scheduler, timeout="10s")
            except (OSError, TimeoutError) as e:
                raise EieError(f"cannot reach the Dask scheduler at {scheduler} ({type(e).__name__}): start one "
                               "with 'dask scheduler' or drop --scheduler to run on this machine") from None
        else:
            stack.enter_context(_main_hidden())   # for the cluster's life: a dead worker's replacement too
            with _sigint_ignored():
                local = LocalCluster(n_workers=workers or cores(), threads_per_worker=1, processes=True,
                                     dashboard_address=":0", silence_logs=50)
            client = Client(stack.enter_context(local))
        with client:
            yield client


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
