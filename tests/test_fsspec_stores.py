"""Routing stores at fsspec URLs (file:// and memory://): written, appended and read like local paths."""

from __future__ import annotations

import fsspec
import numpy as np
import pytest
import xarray as xr
from engines_helpers import fake_engine, make_model_dir

from workbench.analysis import expert_load
from workbench.distributed import SchedulerError, check_store_visible, dask_client
from workbench.engines import record_from_engine
from workbench.errors import StoreError
from workbench.store import schema as S
from workbench.store.io import check_appendable, open_store
from workbench.store.synthetic import synthetic_config, synthetic_records, synthetic_tokenizer
from workbench.store.writer import StoreWriter

LAYERS, EXPERTS, K = 4, 16, 2


def _write(where: str, records: list, **kw) -> None:
    with StoreWriter(where, synthetic_config(LAYERS, EXPERTS, K), synthetic_tokenizer(512), capture="hooks", **kw) as w:
        for rec in records:
            w.add(rec)


@pytest.fixture(scope="module")
def records():
    return list(synthetic_records(3000, LAYERS, EXPERTS, K, seed=5, vocab_size=512, mean_length=150))


@pytest.fixture
def memory_url(request):
    url = f"memory://wb-{request.node.name}/routing.zarr"
    yield url
    fsspec.filesystem("memory").rm(url.removeprefix("memory://").split("/")[0], recursive=True)


def test_file_and_memory_urls_hold_the_same_store_as_a_path(tmp_path, records, memory_url):
    path = str(tmp_path / "plain.zarr")
    file_url = (tmp_path / "via-url.zarr").as_uri()  # file:///...
    half = len(records) // 2
    for where in (path, file_url, memory_url):
        _write(where, records[:half])
        _write(where, records[half:])  # an append through the URL too
    ref = open_store(path).load()
    for where in (file_url, memory_url):
        got = open_store(where)
        assert got.attrs["committed"] == ref.attrs["committed"]
        xr.testing.assert_equal(got.load(), ref)  # same variables, coords and values (timestamps differ)
        stamps = ("created", "updated")
        assert {k: v for k, v in got.attrs.items() if k not in stamps} == {
            k: v for k, v in ref.attrs.items() if k not in stamps
        }
        # analysis reads URL stores chunk by chunk like any other
        xr.testing.assert_identical(
            expert_load(open_store(where), by="domain"), expert_load(open_store(path), by="domain")
        )
    assert fsspec.filesystem("memory").exists(memory_url.removeprefix("memory://") + "/zarr.json")


def test_url_store_refuses_other_config_before_writing(records, memory_url):
    _write(memory_url, records[:2])
    other = synthetic_config(LAYERS, EXPERTS + 1, K)
    with pytest.raises(StoreError):
        check_appendable(memory_url, other)
    before = open_store(memory_url).attrs["committed"]
    with pytest.raises(StoreError):
        StoreWriter(memory_url, other, synthetic_tokenizer(512))
    assert open_store(memory_url).attrs["committed"] == before


def test_engine_capture_into_a_memory_url(tmp_path, memory_url):
    model = make_model_dir(tmp_path / "tiny-k2", n_experts=16)
    prompts = [{"id": f"p{i}", "domain": "math", "text": f"w{i} w{i + 1} w{i + 2}"} for i in range(3)]
    with fake_engine("vllm", 16) as srv:
        out = record_from_engine(
            "vllm", srv.url, prompts, memory_url, model=str(model), max_new_tokens=2, progress=False
        )
    ds = open_store(memory_url)
    assert ds.attrs["capture"] == "vllm" and ds.sizes[S.SEQUENCE] == 3 and ds.sizes[S.TOKEN] == out["tokens"]
    assert np.isnan(ds[S.GATE_WEIGHTS].values.astype(np.float32)).all()


@pytest.mark.slow
def test_workers_that_cannot_see_the_store_are_named(tmp_path, records, memory_url):
    file_url = (tmp_path / "shared.zarr").as_uri()
    _write(file_url, records[:3])
    _write(memory_url, records[:3])
    with dask_client("local:1") as client:
        assert client is not None
        check_store_visible(client, file_url)  # a filesystem the worker shares: fine
        with pytest.raises(SchedulerError, match="cannot see the store memory://"):
            check_store_visible(client, memory_url)  # memory:// lives in this process only
