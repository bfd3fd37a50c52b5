"""Run the analysis on a dask.distributed cluster: connect, check the workers can do the work, report.

Every metric and graph count in the workbench is a dask graph over the store's token chunks (see
``workbench/analysis/engine.py``); with a ``distributed.Client`` active, ``dask.compute`` sends the
tasks to the cluster's workers, so the same code runs on a laptop thread pool and on a cluster.
Workers read the store themselves, chunk by chunk: the store must be at a path every worker sees
(shared filesystem) or at an object-store URL (``s3://``, ``gs://``, ...), and each worker needs
the workbench installed (analysis only: no torch).

``--scheduler ADDRESS`` in the CLI goes through ``dask_client``:

- ``tcp://host:8786`` (or ``host:8786``): an existing scheduler (``dask scheduler`` + ``dask worker``);
- ``local`` / ``local:N``: a LocalCluster on this machine with N worker processes of 1 thread each.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from distributed import Client


class SchedulerError(WorkbenchError):
    """A dask scheduler cannot be reached, has no workers, or its workers cannot run the analysis."""


def _workbench_importable() -> bool:
    return importlib.util.find_spec("workbench.analysis") is not None


def _store_visible(url: str, storage_options: dict[str, Any] | None) -> bool:
    from workbench.store.location import resolve

    return bool(resolve(url, storage_options, read_only=True).exists())


def parse_local(address: str) -> int | None:
    """``"local"`` -> 2, ``"local:4"`` -> 4, anything else -> None."""
    if address == "local":
        return 2
    if address.startswith("local:"):
        try:
            n = int(address.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise SchedulerError(f"address {address!r}: write local:N with N >= 1 worker processes", param="address")
        return n
    return None


def connect(address: str, *, timeout: float = 20.0) -> Client:
    """A ``distributed.Client`` for ``address`` (see module doc), checked to have working workers."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as err:
        raise SchedulerError(
            "a dask scheduler needs dask.distributed: pip install 'k2-routing-workbench[engines]'"
        ) from err
    n_local = parse_local(address)
    if n_local is not None:
        cluster = LocalCluster(
            n_workers=n_local, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
        )
        return Client(cluster)
    target = address if "://" in address else f"tcp://{address}"
    try:
        client = Client(target, timeout=timeout)
    except (OSError, TimeoutError) as err:
        raise SchedulerError(
            f"cannot reach the dask scheduler at {target} within {timeout:g} s: start one with `dask scheduler` "
            f"and workers with `dask worker {target}`, or use the address local:2 (local worker processes)"
        ) from err
    try:
        client.wait_for_workers(1, timeout=timeout)
        missing = [w for w, ok in client.run(_workbench_importable).items() if not ok]
    except (OSError, TimeoutError) as err:
        client.close()
        raise SchedulerError(f"the dask scheduler at {target} has no workers: start some with `dask worker`") from err
    if missing:
        client.close()
        raise SchedulerError(
            f"{len(missing)} dask worker(s) cannot import the workbench (e.g. {missing[0]}): install "
            "k2-routing-workbench in the workers' environment"
        )
    return client


@contextmanager
def dask_client(address: str | None, *, timeout: float = 20.0) -> Iterator[Client | None]:
    """Context manager: a connected Client for ``address`` (closed on exit), or None for in-process dask.

    Examples
    --------
    >>> with dask_client("local:2") as client:  # doctest: +SKIP
    ...     load = expert_load(open_store("runs/k2.zarr"))  # computed by the two worker processes
    """
    if address is None:
        yield None
        return
    client = connect(address, timeout=timeout)
    cluster = client.cluster if parse_local(address) is not None else None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def check_store_visible(client: Client, path_or_url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Refuse (one line) when some worker cannot see the store the client opened."""
    seen = client.run(_store_visible, str(path_or_url), storage_options)
    blind = [w for w, ok in seen.items() if not ok]
    if blind:
        raise SchedulerError(
            f"{len(blind)} dask worker(s) cannot see the store {path_or_url} (e.g. {blind[0]}): put it on a "
            "filesystem shared with the workers or at an object-store URL (s3://...)"
        )


def cluster_summary(client: Client | None) -> dict[str, Any]:
    """{"scheduler", "workers", "threads"} for reports and benchmark JSON; in-process dask when None."""
    if client is None:
        import dask

        return {"scheduler": f"in-process ({dask.config.get('scheduler', 'threads')})", "workers": 0, "threads": 0}
    info = client.scheduler_info()
    workers = info.get("workers", {})
    return {
        "scheduler": info.get("address", ""),
        "workers": len(workers),
        "threads": int(sum(w.get("nthreads", 0) for w in workers.values())),
    }
