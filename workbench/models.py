"""Loading a model to record: names to paths, checks before the (slow) load, tokenizer attrs for stores.

``load_model`` refuses anything that is not a loadable MoE checkpoint of a supported family with one
``WorkbenchError`` line, so ``workbench record`` never starts a run it cannot finish.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.errors import ParameterError, WorkbenchError
from workbench.model_checks import require_trust_remote_code
from workbench.paths import BUNDLED_MODELS, bundled, bundled_model
from workbench.routing_config import RoutingConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# Bundled model names -> folders (workbench/paths.py finds the data in a checkout or an installed package).
BUNDLED = {name: path for name in BUNDLED_MODELS if (path := bundled_model(name)) is not None}
DTYPES = ("fp32", "bf16")
# config.json fields that mark an MoE (any one present and > 0).
_MOE_KEYS = ("n_routed_experts", "num_local_experts", "num_experts")


# CLI users pass the flag, Python users the parameter; the hint is raised before a CLI could map it
_REMOTE_CODE_HINT = " (remote-code checkpoints need trust_remote_code=True, --trust-remote-code)"


def resolve_model_path(name_or_path: str | Path) -> Path:
    """A bundled name ("k2-mini" -> <data>/models/k2-mini, see workbench/paths.py) or a local checkpoint directory.

    Raises WorkbenchError when the directory or its config.json does not exist (nothing is fetched
    from a model hub: the workbench records local checkpoints).
    """
    raw = str(name_or_path)
    path = bundled(BUNDLED_MODELS[raw]) if raw in BUNDLED_MODELS else Path(raw).expanduser()
    if not path.is_dir():
        raise WorkbenchError(f"model {raw!r}: no such directory {path}; pass a local checkpoint directory")
    if not (path / "config.json").is_file():
        raise WorkbenchError(f"model {raw!r}: {path} has no config.json; pass a transformers checkpoint directory")
    return path


def read_model_config(path: Path) -> dict[str, Any]:
    """config.json as a dict, with a clear error if it is not JSON."""
    try:
        data = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise WorkbenchError(f"model {path}: config.json is unreadable ({err}); fix or replace the checkpoint") from err
    if not isinstance(data, dict):
        raise WorkbenchError(f"model {path}: config.json is not a JSON object")
    return data


def check_moe_config(path: Path, config: dict[str, Any]) -> None:
    """Refuse a checkpoint that has no routed experts before any weight is read."""
    if not any(int(config.get(key) or 0) > 0 for key in _MOE_KEYS):
        raise WorkbenchError(
            f"model {path} (model_type {config.get('model_type')!r}) is not a Mixture-of-Experts model: its "
            f"config.json sets none of {', '.join(_MOE_KEYS)}; record an MoE checkpoint such as k2-mini"
        )


def _torch_dtype(dtype: str) -> Any:
    import torch

    if dtype not in DTYPES:
        raise ParameterError(f"unknown {{dtype}} {dtype!r}; use one of {', '.join(DTYPES)}", "dtype")
    return torch.float32 if dtype == "fp32" else torch.bfloat16


def resolve_device_map(device_map: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    """A device map as given, or read from a JSON file (``{"model.layers.3": 0, ...}``) when it names one.

    The per-layer placement of ``workbench.engines.placement.layer_device_map`` is saved that way so
    the CLI's ``--device-map k2_map.json`` can use it.
    """
    if not isinstance(device_map, str) or not device_map.endswith(".json"):
        return device_map
    path = Path(device_map).expanduser()
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ParameterError(
            f"{{device_map}} {device_map}: cannot read it as JSON ({err}); give a file with a module -> device map",
            "device_map",
        ) from err
    if not isinstance(data, dict) or not data:
        raise ParameterError(
            f"{{device_map}} {device_map}: expected a JSON object of module name -> device", "device_map"
        )
    return data


def load_model(
    name_or_path: str | Path,
    *,
    dtype: str = "fp32",
    device_map: str | dict[str, Any] | None = None,
    trust_remote_code: bool = False,
    offload_folder: str | Path | None = None,
    stream_int4: bool = True,
    tokenizer: PreTrainedTokenizerBase | None = None,
    experts_impl: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer for recording, in eval mode.

    Parameters
    ----------
    name_or_path
        "k2-mini" or a local checkpoint directory.
    dtype
        "fp32" or "bf16" (the router and its bias stay fp32 where the model class keeps them so).
    device_map
        Passed to transformers/accelerate, e.g. "auto" or {"model.layers.3": "cpu", ...}, or the path
        of a JSON file holding such a dict (``resolve_device_map``).
    trust_remote_code
        Load the checkpoint's own modeling code (K2's remote DeepSeek code).
    stream_int4
        For compressed-tensors checkpoints loaded packed (K2 Thinking with its remote code), decompress
        each INT4 projection only while it runs (``workbench.hooks.int4_stream``) instead of letting
        compressed-tensors decompress the whole model on the first forward. The installed
        ``StreamDecompression`` is ``model.workbench_int4_stream``.
    tokenizer
        A tokenizer already loaded with ``load_tokenizer`` (not loaded again).
    experts_impl
        transformers' experts implementation to run the routed experts with ("eager", "batched_mm",
        "grouped_mm", "padded_bmm"); None or "auto" (the default, or ``$WORKBENCH_EXPERTS_IMPL``): the
        fastest on this device, measured once and cached (``workbench.experts_kernel``; the choice is
        ``model.workbench_experts``). Implementations differ only in floating-point summation order.

    Raises
    ------
    WorkbenchError
        Missing path, not an MoE, a truncated or unreadable weights file, or no supported router family
        (``workbench.hooks.find_adapter``).
    """
    path = resolve_model_path(name_or_path)
    check_moe_config(path, read_model_config(path))
    require_trust_remote_code(path, trust_remote_code=trust_remote_code)  # K2's kimi_k2 needs its own code
    torch_dtype = _torch_dtype(dtype)
    check_weights(path)
    if tokenizer is None:
        tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    from workbench.hooks import find_adapter

    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    device_map = resolve_device_map(device_map)
    if device_map is not None:
        kwargs["device_map"] = device_map
        if offload_folder is not None:
            kwargs["offload_folder"] = str(offload_folder)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except SafetensorError as err:
        raise WorkbenchError(f"cannot load model {path}: a weights file is damaged ({err}); replace it") from err
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = _REMOTE_CODE_HINT if "trust_remote_code" in str(err) else ""
        raise WorkbenchError(f"cannot load model {path}: {first}{hint}") from err
    model.eval()
    find_adapter(model)  # refuse families the hooks cannot record, before any work starts
    if stream_int4:
        from workbench.hooks.int4_stream import StreamDecompression

        stream = StreamDecompression(model)
        if stream.stats.packed_modules:
            model.workbench_int4_stream = stream.install()
    from workbench.experts_kernel import choose

    choose(model, experts_impl)
    return model, tokenizer


def load_tokenizer(name_or_path: str | Path, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer alone (seconds at most), so prompts can be measured before weights load."""
    path = resolve_model_path(name_or_path)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = _REMOTE_CODE_HINT if "trust_remote_code" in str(err) else ""
        raise WorkbenchError(f"cannot load the tokenizer of {path}: {first}{hint}") from err


def check_weights(path: Path) -> None:
    """Refuse a checkpoint whose ``*.safetensors`` files are truncated or not safetensors, naming the file.

    Reads each file's header only (8-byte little-endian length, then JSON with every tensor's
    ``data_offsets``) and checks the file holds the bytes the header promises: milliseconds, no weight read.
    """
    for file in sorted(path.glob("*.safetensors")):
        try:
            size = file.stat().st_size
            with file.open("rb") as fh:
                head = fh.read(8)
                n = int.from_bytes(head, "little") if len(head) == 8 else -1
                if n < 2 or 8 + n > size:
                    raise ValueError("its header is cut off")
                header = json.loads(fh.read(n))
            ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
            why = str(err) if isinstance(err, ValueError) and "cut off" in str(err) else "not a safetensors file"
            raise WorkbenchError(f"model weights {file}: {why}; the download or copy is damaged, replace it") from None
        need = 8 + n + max(ends, default=0)
        if size < need:
            raise WorkbenchError(
                f"model weights {file}: truncated ({size:,} of {need:,} bytes); the download or copy is incomplete, "
                "replace it"
            )


def context_length(name_or_path: str | Path) -> int | None:
    """The model's context window in tokens (config.json's ``max_position_embeddings``), None if it sets none."""
    config = read_model_config(resolve_model_path(name_or_path))
    nested = config.get("text_config")
    text: dict[str, Any] = nested if isinstance(nested, dict) else config
    value = text.get("max_position_embeddings") or config.get("max_position_embeddings")
    return int(value) if isinstance(value, int | float) and value > 0 else None


def tokenizer_attrs(tokenizer: PreTrainedTokenizerBase, name: str | None = None) -> dict[str, Any]:
    """The store's ``tokenizer`` attribute: name, vocabulary by id, special tokens.

    ``vocab`` has one string per id (length = the tokenizer's full size, added tokens included;
    ids without a token get ""), so a store decodes on a machine with no model.
    """
    vocab_map = tokenizer.get_vocab()
    size = max(len(tokenizer), max(vocab_map.values(), default=-1) + 1)
    vocab = [""] * size
    for token, idx in vocab_map.items():
        if 0 <= idx < size:
            vocab[idx] = token if isinstance(token, str) else token.decode("utf-8", "replace")
    special: dict[str, int] = {}
    for token in tokenizer.all_special_tokens:
        tid = tokenizer.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid >= 0:
            special[str(token)] = tid
    label = name or Path(str(getattr(tokenizer, "name_or_path", "") or "tokenizer")).name
    return {"name": label, "vocab": vocab, "special_tokens": special}


def planned_routing_config(name_or_path: str | Path, *, trust_remote_code: bool = False) -> RoutingConfig:
    """The RoutingConfig a recording of this checkpoint will have, without reading any weight.

    The model is built from its config.json on the meta device (no memory, well under a second even
    for K2's 61 layers), so a CLI can check the store before the slow load.
    """
    path = resolve_model_path(name_or_path)
    check_moe_config(path, read_model_config(path))
    require_trust_remote_code(path, trust_remote_code=trust_remote_code)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from workbench.hooks import find_adapter, routing_config

    try:
        config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = _REMOTE_CODE_HINT if "trust_remote_code" in str(err) else ""
        raise WorkbenchError(f"cannot read model {path}: {first}{hint}") from err
    return routing_config(model, find_adapter(model))
