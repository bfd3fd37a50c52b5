"""Every metric and the reasoning graph on a real 2-worker dask cluster (processes, 1 thread each)
give numbers identical to the in-process run over the same dask-backed store."""

from __future__ import annotations

import networkx as nx
import pytest
import xarray as xr

from workbench import analysis as A
from workbench.distributed import SchedulerError, cluster_summary, dask_client, parse_local
from workbench.graph import reasoning_graph
from workbench.store.io import open_store
from workbench.store.select import parse_where
from workbench.store.synthetic import synthetic_store

pytestmark = pytest.mark.slow

N_TOKENS, LAYERS, EXPERTS, K = 12_000, 5, 24, 4


def _run_all(ds: xr.Dataset) -> dict:
    """Every analysis function of workbench.analysis plus graph building, on one dataset."""
    math = parse_where("domain=math")
    return {
        "expert_load": A.expert_load(ds, by="domain", weighted=True),
        "routing_entropy": A.routing_entropy(ds, by="domain"),
        "coactivation": A.coactivation(ds, math),
        "consecutive_agreement": A.consecutive_agreement(ds, by="domain"),
        "transitions": A.transitions(ds),
        "domain_specialization": A.domain_specialization(ds),
        "vocab_specialization": A.vocab_specialization(ds, min_count=2),
        "domain_divergence": A.domain_divergence(ds, n_boot=50, n_perm=50, seed=3),
        "specific_experts": A.specific_experts(ds, top=3),
        "graph": reasoning_graph(ds, math),
        # block-wise counting (workbench.graph.chunked): its map-reduce tasks run on the workers
        "graph_blocks": reasoning_graph(ds, chunked=True, top_edges=30),
        # blocks of a selection (rows with gaps, a layer range): workers read only the selected rows
        "graph_blocks_selection": reasoning_graph(
            ds, parse_where(["domain=code", "layers=2:4"]), chunked=True, flow=0.5
        ),
    }


def _assert_same(a: object, b: object, name: str) -> None:
    if isinstance(a, xr.Dataset):
        xr.testing.assert_identical(a, b)  # exact: same counts, same floats
    elif isinstance(a, nx.DiGraph):
        assert isinstance(b, nx.DiGraph)
        assert dict(a.nodes(data=True)) == dict(b.nodes(data=True)), name
        assert {(u, v): d for u, v, d in a.edges(data=True)} == {(u, v): d for u, v, d in b.edges(data=True)}, name
    else:  # pandas
        assert a.equals(b), name  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("dist") / "syn.zarr"
    synthetic_store(path, N_TOKENS, LAYERS, EXPERTS, K, seed=1, mean_length=200, progress=False)
    return str(path)


def test_two_worker_cluster_matches_in_process(store, monkeypatch):
    import workbench.graph.chunked as chunked

    monkeypatch.setattr(chunked, "BLOCK_TOKENS", 1000)  # 12 blocks, reduced by the same tree in both modes
    ds = open_store(store, chunks={"token": 1500})  # 8 token chunks -> many tasks to spread
    assert ds.expert_ids.data.npartitions >= 8
    local = _run_all(ds)
    from distributed import get_task_stream

    with dask_client("local:2") as client:
        assert client is not None
        summary = cluster_summary(client)
        assert summary["workers"] == 2 and summary["threads"] == 2
        with get_task_stream(client) as stream:
            remote = _run_all(open_store(store, chunks={"token": 1500}))
        workers = {t["worker"] for t in stream.data}
    assert len(stream.data) > 0 and len(workers) == 2  # the work really ran on both worker processes
    for name in local:
        _assert_same(local[name], remote[name], name)


def test_scheduler_addresses_and_errors():
    assert parse_local("local") == 2 and parse_local("local:3") == 3 and parse_local("tcp://h:1") is None
    with pytest.raises(SchedulerError, match="local:N with N >= 1"):
        parse_local("local:zero")
    with (
        pytest.raises(SchedulerError, match=r"cannot reach the dask scheduler at tcp://127\.0\.0\.1:9"),
        dask_client("127.0.0.1:9", timeout=2),
    ):
        pass
    with dask_client(None) as client:
        assert client is None and cluster_summary(None)["workers"] == 0
