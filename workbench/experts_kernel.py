"""Pick the fastest experts implementation for a loaded model on its device, by measuring once.

transformers 5.x runs an MoE layer's routed experts through one of several implementations of the same
function (``config._experts_implementation``): ``eager`` (a loop over the experts hit), ``batched_mm``
(each token's k experts gathered, one batched matmul), ``grouped_mm`` (assignments sorted by expert, one
grouped matmul; transformers' default), and the workbench's ``padded_bmm``
(``workbench.minik2.fast_experts``). They differ only in floating-point summation order, and their
speed depends on the device and on the number of tokens per forward: on a 2-core CPU, ``grouped_mm``
was 1.5x slower than ``eager`` for a 4 x 256 forward of the mini K2, while ``eager`` (a Python loop
over up to E experts) is the slowest for decode steps of a few tokens.

So ``choose`` times one MoE layer's experts under every candidate at two sizes, a decode step (``DECODE``
rows of one token) and a small prefill (``PREFILL``), on random top-k routing (the fastest of
``REPEATS`` calls, well under a second in all on a CPU), and installs the winner of each. When they differ, a
dispatching implementation (registered as ``"SMALL<=N|LARGE"``) sends forwards of at most N tokens to
the decode winner and the rest to the prefill winner. The result is cached per (device, software,
model config, dtype) in memory and in ``<cache>/experts_kernel.json`` (``$WORKBENCH_CACHE_DIR``, else
``$XDG_CACHE_HOME/k2-workbench``, else ``~/.cache/k2-workbench``), so each machine measures once.
``WORKBENCH_EXPERTS_IMPL`` (or ``load_model(experts_impl=...)``) overrides the choice.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import ParameterError

ENV = "WORKBENCH_EXPERTS_IMPL"
CANDIDATES = ("eager", "batched_mm", "grouped_mm", "padded_bmm")
DECODE = (8, 1)  # (rows, tokens): one decode step of a batch of 8
PREFILL = (4, 256)  # a small prefill
REPEATS = 5
_MEMORY: dict[str, Choice] = {}


@dataclass
class Choice:
    """The experts implementation installed on a model, and why.

    ``implementation`` is what ``config._experts_implementation`` holds; ``decode`` / ``prefill`` the
    winner at each measured size; ``seconds`` the median forward time of every candidate per size
    (``{"decode": {"eager": 0.004, ...}, "prefill": {...}}``); ``source`` one of "measured", "cache",
    "override", or "default (...)" where nothing was measured (and why).
    """

    implementation: str | None
    source: str
    decode: str | None = None
    prefill: str | None = None
    threshold: int = DECODE[0] * DECODE[1] * 8  # tokens per forward up to which the decode winner runs
    seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    device: str = ""

    def describe(self) -> str:
        """One line: what runs, and the measured medians."""
        if not self.seconds:
            return f"{self.implementation} ({self.source})"
        parts = []
        for size, times in self.seconds.items():
            shown = ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in sorted(times.items(), key=lambda kv: kv[1]))
            parts.append(f"{size} {shown}")
        return f"{self.implementation} on {self.device} ({self.source}; {'; '.join(parts)})"


def cache_path() -> Path:
    """Where measured choices are kept (see the module docstring)."""
    root = os.environ.get("WORKBENCH_CACHE_DIR")
    if root:
        return Path(root) / "experts_kernel.json"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "k2-workbench" / "experts_kernel.json"


def _device_of(model: Any) -> Any:
    devices = {p.device for p in model.parameters()}
    return next(iter(devices)) if len(devices) == 1 else None


def _key(model: Any, device: Any) -> str:
    import torch
    import transformers

    from workbench.hooks.adapters import config_sha256

    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{platform.machine()} {platform.processor()} x{torch.get_num_threads()}"
    dtype = str(next(model.parameters()).dtype)
    return (
        f"{device.type}|{where}|torch {torch.__version__}|transformers {transformers.__version__}|{dtype}|"
        + (config_sha256(model)[:16])
    )


def register_dispatch(small: str, large: str, threshold: int) -> str:
    """Register (idempotent) an implementation sending <= ``threshold`` tokens to ``small``, more to ``large``."""
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    from workbench.minik2 import fast_experts

    fast_experts.register(prefer_grouped=False)  # padded_bmm, if it is one of the two
    name = f"{small}<={threshold}|{large}"
    if name in ALL_EXPERTS_FUNCTIONS:
        return name

    def pick(impl: str) -> Callable[..., Any]:
        if impl == "eager":
            return lambda self, *a, **k: type(self).forward.__wrapped__(self, *a, **k)  # the class's own loop
        return ALL_EXPERTS_FUNCTIONS[impl]  # type: ignore[no-any-return]

    fn_small, fn_large = pick(small), pick(large)

    def dispatch(self: Any, hidden_states: Any, top_k_index: Any, top_k_weights: Any) -> Any:
        fn = fn_small if hidden_states.shape[0] <= threshold else fn_large
        return fn(self, hidden_states, top_k_index, top_k_weights)

    ALL_EXPERTS_FUNCTIONS.register(name, dispatch)
    return name


def _install(model: Any, impl: str) -> None:
    if impl == "padded_bmm":
        from workbench.minik2 import fast_experts

        fast_experts.register(prefer_grouped=False)
    model.set_experts_implementation(impl)


def _experts_module(model: Any) -> Any:
    """The first routed-experts module whose forward dispatches on ``config._experts_implementation``."""
    for module in model.modules():
        forward = getattr(type(module), "forward", None)
        if hasattr(forward, "__wrapped__") and hasattr(module, "gate_up_proj") and hasattr(module, "num_experts"):
            return module
    return None


def _time_experts(experts: Any, tokens: int, top_k: int, device: Any, dtype: Any) -> float:
    """Fastest of ``REPEATS`` calls of ``experts`` on ``tokens`` random tokens routed to random top-k sets.

    The fastest run, not the median: on a shared machine the slow runs measure the neighbours.
    """
    import torch

    gen = torch.Generator().manual_seed(0)
    hidden = (torch.randn(tokens, int(experts.hidden_dim), generator=gen) * 0.1).to(device=device, dtype=dtype)
    ids = torch.rand(tokens, int(experts.num_experts), generator=gen).topk(top_k, dim=-1).indices.to(device)
    weights = torch.rand(tokens, top_k, generator=gen).to(device=device, dtype=dtype)
    times = []
    with torch.no_grad():
        for i in range(REPEATS + 1):  # the first is a warm-up (allocator, kernels)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            experts(hidden, ids, weights)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i:
                times.append(time.perf_counter() - t0)
    return min(times)


def measure(model: Any, candidates: tuple[str, ...] = CANDIDATES) -> dict[str, dict[str, float]]:
    """Seconds of one MoE layer's experts per candidate at the decode and prefill sizes (fastest of
    ``REPEATS``); a candidate that fails on this device is left out. The rest of the model runs the same
    code whatever the candidate, so one layer's experts is what differs."""
    device = _device_of(model)
    experts = _experts_module(model)
    out: dict[str, dict[str, float]] = {"decode": {}, "prefill": {}}
    if experts is None:
        return out
    top_k = int(getattr(model.config, "num_experts_per_tok", 0) or 2)
    dtype = experts.gate_up_proj.dtype
    before = getattr(model.config, "_experts_implementation", None)
    try:
        for impl in candidates:
            try:
                _install(model, impl)
                for size, (b, t) in (("decode", DECODE), ("prefill", PREFILL)):
                    out[size][impl] = _time_experts(experts, b * t, top_k, device, dtype)
            except (RuntimeError, ValueError, NotImplementedError, KeyError, TypeError, IndexError):
                out["decode"].pop(impl, None)  # this build cannot run it here
                out["prefill"].pop(impl, None)
    finally:
        if before is not None:
            model.set_experts_implementation(before)
    return out


def _apply(model: Any, choice: Choice) -> Choice:
    if choice.decode and choice.prefill:
        same = choice.decode == choice.prefill
        choice.implementation = (
            choice.decode if same else register_dispatch(choice.decode, choice.prefill, choice.threshold)
        )
    _install(model, str(choice.implementation))
    model.workbench_experts = choice
    return choice


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(key: str, choice: Choice) -> None:
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_cache() | {key: asdict(choice)}
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)  # atomic: a concurrent reader sees the old file or the new one
    except OSError:
        pass  # a read-only home: the choice is still kept in memory for this process


def choose(model: Any, override: str | None = None, *, remeasure: bool = False) -> Choice:
    """Install the fastest experts implementation on ``model`` (see the module docstring) and return it.

    ``override`` (else ``$WORKBENCH_EXPERTS_IMPL``; "auto" or empty = measure) names one implementation
    to install as is. Models whose experts have no selectable implementation (K2's remote code), or whose
    weights span several devices or are offloaded, keep what they have (``source`` says why).
    """
    override = override if override is not None else os.environ.get(ENV) or None
    current = getattr(getattr(model, "config", None), "_experts_implementation", None)
    can_set = getattr(type(model), "_can_set_experts_implementation", None)
    if not callable(can_set) or not can_set():
        choice = Choice(current, "default (this model's experts have no selectable implementation)")
        model.workbench_experts = choice
        return choice
    if override and override != "auto":
        known = set(CANDIDATES) | _registered()
        if override not in known:
            raise ParameterError(
                f"unknown {{experts_impl}} {override!r}; use auto or one of {', '.join(sorted(known))}", "experts_impl"
            )
        return _apply(model, Choice(override, "override", device=str(_device_of(model) or "")))
    device = _device_of(model)
    if device is None or device.type == "meta" or getattr(model, "hf_device_map", None):
        choice = Choice(current, "default (weights split across devices or offloaded: not measured)")
        model.workbench_experts = choice
        return choice
    key = _key(model, device)
    cached = _MEMORY.get(key) or (None if remeasure else _from_dict(_read_cache().get(key)))
    if cached is not None and not remeasure:
        return _apply(model, Choice(**{**asdict(cached), "source": "cache"}))
    seconds = measure(model)
    if not seconds["decode"] or not seconds["prefill"]:
        choice = Choice(current, "default (no candidate implementation ran on this device)", seconds=seconds)
        model.workbench_experts = choice
        return choice
    decode = min(seconds["decode"], key=seconds["decode"].__getitem__)
    prefill = min(seconds["prefill"], key=seconds["prefill"].__getitem__)
    choice = _apply(model, Choice(None, "measured", decode, prefill, seconds=seconds, device=str(device)))
    _MEMORY[key] = choice
    _write_cache(key, choice)
    return choice


def installed(model: Any) -> Choice:
    """The ``Choice`` ``load_model`` / ``choose`` installed on ``model`` (measured now if none was)."""
    choice = getattr(model, "workbench_experts", None)
    return choice if isinstance(choice, Choice) else choose(model)


def _from_dict(data: Any) -> Choice | None:
    if not isinstance(data, dict):
        return None
    try:
        return Choice(**data)
    except TypeError:
        return None  # written by another version


def _registered() -> set[str]:
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    return set(ALL_EXPERTS_FUNCTIONS.keys())
