"""Library errors name Python parameters, never CLI flags; the CLI words them as its flags.

Each site is called with a bad value through the library, then (for a few) through ``workbench.cli.app.main``
exactly as the entry point runs it, where the same mistake must read with the CLI's flag.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from workbench.ablation import AblationError, parse_experts
from workbench.cli.app import main
from workbench.cli.params import cli_flags
from workbench.distributed import SchedulerError, parse_local
from workbench.engines.client import EngineClient, EngineError
from workbench.engines.model_info import resolve_model_dir
from workbench.engines.record import record_from_engine
from workbench.errors import ParameterError, SelectionError, WorkbenchError
from workbench.store.select import parse_where
from workbench.store.synthetic import synthetic_store


def _named(err: WorkbenchError, param: str) -> str:
    """The library's message, checked to name ``param`` and no flag at all."""
    text = str(err)
    assert param in text and "--" not in text, text
    return text


def test_selection_where_names_the_parameter() -> None:
    with pytest.raises(SelectionError) as err:
        parse_where(["domain=math", "domain"])
    assert _named(err.value, "where").startswith("where needs KEY=VALUE")
    assert err.value.for_cli().startswith("--where needs KEY=VALUE")
    with pytest.raises(WorkbenchError, match=r"^--diff needs KEY=VALUE"), cli_flags(where="--diff"):
        parse_where("segment")


def test_ablation_experts_names_the_parameter() -> None:
    for bad, start in (("3-17", "experts takes LAYER:EXPERT"), (" , ", "experts is empty")):
        with pytest.raises(AblationError) as err:
            parse_experts(bad)
        assert _named(err.value, "experts").startswith(start)
        assert err.value.for_cli().startswith("--" + start)


def test_scheduler_address_is_mapped_to_the_scheduler_flag() -> None:
    with pytest.raises(SchedulerError) as err:
        parse_local("local:0")
    assert _named(err.value, "address").startswith("address 'local:0': write local:N")
    with (
        pytest.raises(WorkbenchError, match=r"^--scheduler 'local:0': write local:N"),
        cli_flags(address="--scheduler"),
    ):
        parse_local("local:0")
    # an error about a parameter the CLI does not rename passes through unchanged (main() words it)
    with pytest.raises(AblationError, match=r"^experts takes"), cli_flags(address="--scheduler"):
        parse_experts("x")


def test_engine_parameters_are_named(tmp_path: Path) -> None:
    with pytest.raises(EngineError) as err:
        EngineClient("127.0.0.1:8000", "vllm")
    assert _named(err.value, "url").startswith("url '127.0.0.1:8000' is not an HTTP URL")
    assert err.value.for_cli().startswith("--url '127.0.0.1:8000'")
    with pytest.raises(EngineError) as err:
        record_from_engine("tgi", "http://127.0.0.1:9", [], str(tmp_path / "o.zarr"), model="k2-mini")
    assert _named(err.value, "engine").startswith("engine 'tgi': choose one of vllm, sglang")
    with pytest.raises(EngineError) as err:
        record_from_engine(
            "vllm", "http://127.0.0.1:9", [], str(tmp_path / "o.zarr"), model="k2-mini", max_new_tokens=-1
        )
    assert isinstance(err.value, ParameterError)
    assert _named(err.value, "max_new_tokens").startswith("max_new_tokens must be >= 0 and concurrency >= 1")
    assert err.value.for_cli().startswith("--max-new-tokens must be >= 0 and --concurrency >= 1")
    with pytest.raises(EngineError) as err:
        resolve_model_dir(str(tmp_path / "nope"))
    assert _named(err.value, "model").startswith("model ")
    assert err.value.for_cli().startswith("--model ")
    assert not (tmp_path / "o.zarr").exists()


def test_agent_loop_names_its_parameters() -> None:
    from workbench.agent.loop import run_agent
    from workbench.agent.tools import ToolBox

    with pytest.raises(ParameterError) as err:
        run_agent(None, None, "  ", ToolBox([]))
    assert _named(err.value, "task").startswith("task is empty")
    with pytest.raises(ParameterError) as err:
        run_agent(None, None, "2+2?", ToolBox([]), max_steps=0)
    assert _named(err.value, "max_steps").startswith("max_steps must be at least 1, got 0")
    assert err.value.for_cli().startswith("--max-steps must be")


def _cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    """``workbench ARGS`` through ``main`` as the entry point runs it; the one error line it printed."""
    monkeypatch.setattr(sys, "argv", ["workbench", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1, err
    return err[0]


def test_the_cli_words_the_same_errors_with_its_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "s.zarr"
    synthetic_store(store, n_tokens=600, n_layers=3, n_experts=8, k=2, mean_length=100, progress=False)
    line = _cli(["compare", str(store), "--out", str(tmp_path / "r"), "--scheduler", "local:0"], monkeypatch, capsys)
    assert line.startswith("error: --scheduler 'local:0': write local:N"), line
    line = _cli(["graph", str(store), "--diff", "segment", "-o", str(tmp_path / "g.graphml")], monkeypatch, capsys)
    assert line.startswith("error: --diff needs KEY=VALUE"), line
    line = _cli(["graph", str(store), "--where", "domain", "-o", str(tmp_path / "g.graphml")], monkeypatch, capsys)
    assert line.startswith("error: --where needs KEY=VALUE"), line
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "p1", "domain": "math", "text": "2+2?"}\n')
    engine = ["--engine", "vllm", "--url", "localhost:8000", "--model", "k2-mini", "--prompts", str(prompts)]
    line = _cli(["record", *engine, "--out", str(tmp_path / "o.zarr")], monkeypatch, capsys)
    assert line.startswith("error: --url 'localhost:8000' is not an HTTP URL"), line
