"""The routing store's schema: names, dims, dtypes and attributes, fixed in one place.

A routing store is a zarr v3 group that plain ``xarray.open_zarr(path)`` opens as a Dataset with
named dims. Axes are named here, at the storage boundary, and never guessed positionally after that.

Dims
----
token      one row per recorded token (all sequences concatenated, in commit order)
layer      the MoE layers; the coordinate holds the model's real layer index (1..60 for K2)
k          rank in the router's top-k (0 = first choice)
expert     routed expert index (only for ``router_scores``)
sequence   one row per sequence (prompt, transcript, agent episode)
span       one row per segment span (system, user, think, tool call, tool result, answer, ...)

Variables
---------
expert_ids      (token, layer, k)       int16    expert ids in the router's rank order
gate_weights    (token, layer, k)       float16  the weights the MoE applies (after norm and scaling);
                                                 NaN where the capture gives ids only (engines)
router_scores   (token, layer, expert)  float16  optional: full router scores (DeepSeek-V3/K2: the
                                                 sigmoid scores before the selection bias)
token_id        (token)                 int32    the token's id in the tokenizer of attrs["tokenizer"]
position        (token)                 int32    0-based position within its sequence
sequence_index  (token)                 int32    row of the token's sequence along ``sequence``
segment         (token)                 int8     code into SEGMENT_KINDS (attrs["segment_kinds"])
step            (token)                 int32    tool-loop step (0, 1, ...) or -1 outside any step
generated       (token)                 bool     produced by decoding rather than given as input

sequence        (sequence)              str      coordinate: the sequence's id (unique in a store)
sequence_domain (sequence)              str      e.g. "math", "code", "language", "agent"
sequence_source (sequence)              str      where it came from (prompt file, transcript, agent)
sequence_start  (sequence)              int64    first token row of the sequence
sequence_length (sequence)              int64    number of token rows of the sequence

span_sequence   (span)                  int32    row along ``sequence``
span_kind       (span)                  int8     code into SEGMENT_KINDS
span_start      (span)                  int64    first token row (global, along ``token``)
span_stop       (span)                  int64    one past the last token row
span_step       (span)                  int32    tool-loop step or -1
span_label      (span)                  str      e.g. "functions.calculator:0" for a tool call

The per-token variable that names a token's sequence is ``sequence_index`` because ``sequence`` is
the dimension (and id coordinate) of the per-sequence table; xarray cannot hold both under one name.

Fill values (what zarr returns for a chunk that is missing)
---------------------------------------------------------
Every array's fill value is one no recorded value can take (``FILL``): -1 for ids, rows, positions and
codes, the smallest int32 for tool-loop steps (-1 is "outside any step"), -inf for gate weights and
router scores (NaN marks "not captured"), and ``MISSING_STR`` for strings. So a missing chunk never
passes for data, even for a plain ``xarray.open_zarr`` reader; workbench readers refuse it outright
(``integrity.py``). ``generated`` (bool) has no spare value: for it the chunk's existence is the check.

Attributes (root group)
-----------------------
schema_version   int, SCHEMA_VERSION (version 1 stores, written before checksums, are still read)
model            dict: identity and routing config (see ``RoutingConfig``)
routing_signature str: hash of the routing config; appends with another signature are refused
tokenizer        dict: {"name": str, "vocab": [token string by id], "special_tokens": {...}}
segment_kinds    list[str], SEGMENT_KINDS
capture          "hooks" | "vllm" | "sglang"
has_gate_weights bool; has_router_scores bool
rank_order       bool: expert_ids' k axis is the router's rank order (false for engine captures;
                 absent on older stores, read by capture: see ``workbench.rank_order``)
versions         dict of package versions that wrote the store
committed        {"tokens": int, "sequences": int, "spans": int}: what the last commit holds
"""

from __future__ import annotations

from typing import Final

# 2: crc32c on every chunk, fill values that cannot pass for data, every chunk written (even all-fill).
# 1: no checksums, fill 0 / NaN / "" and all-fill chunks left unwritten; read and appended to as they are.
SCHEMA_VERSION: Final = 2
READABLE_VERSIONS: Final = (1, 2)

# Dimension names.
TOKEN: Final = "token"
LAYER: Final = "layer"
K: Final = "k"
EXPERT: Final = "expert"
SEQUENCE: Final = "sequence"
SPAN: Final = "span"

# Per-token routing.
EXPERT_IDS: Final = "expert_ids"
GATE_WEIGHTS: Final = "gate_weights"
ROUTER_SCORES: Final = "router_scores"

# Per-token metadata.
TOKEN_ID: Final = "token_id"
POSITION: Final = "position"
SEQUENCE_INDEX: Final = "sequence_index"
SEGMENT: Final = "segment"
STEP: Final = "step"
GENERATED: Final = "generated"

# Per-sequence table.
SEQUENCE_DOMAIN: Final = "sequence_domain"
SEQUENCE_SOURCE: Final = "sequence_source"
SEQUENCE_START: Final = "sequence_start"
SEQUENCE_LENGTH: Final = "sequence_length"

# Per-span table.
SPAN_SEQUENCE: Final = "span_sequence"
SPAN_KIND: Final = "span_kind"
SPAN_START: Final = "span_start"
SPAN_STOP: Final = "span_stop"
SPAN_STEP: Final = "span_step"
SPAN_LABEL: Final = "span_label"

# Segment kinds; the code of a kind is its index. Append only: codes are stored on disk.
SEGMENT_KINDS: Final[tuple[str, ...]] = (
    "text",  # a plain prompt given as input
    "completion",  # tokens generated after a plain prompt
    "template",  # chat-template scaffolding: role markers, separators, special tokens
    "system",
    "user",
    "think",  # reasoning inside <think>...</think> (K2 Thinking's reasoning_content)
    "tool_call",
    "tool_result",
    "answer",  # the assistant's visible content
    "tool_declare",  # the tool declarations message
)
SEGMENT_CODE: Final[dict[str, int]] = {name: code for code, name in enumerate(SEGMENT_KINDS)}

TOKEN_VARS: Final = (TOKEN_ID, POSITION, SEQUENCE_INDEX, SEGMENT, STEP, GENERATED)
SEQUENCE_VARS: Final = (SEQUENCE_DOMAIN, SEQUENCE_SOURCE, SEQUENCE_START, SEQUENCE_LENGTH)
SPAN_VARS: Final = (SPAN_SEQUENCE, SPAN_KIND, SPAN_START, SPAN_STOP, SPAN_STEP, SPAN_LABEL)

DTYPES: Final[dict[str, str]] = {
    EXPERT_IDS: "int16",
    GATE_WEIGHTS: "float16",
    ROUTER_SCORES: "float16",
    TOKEN_ID: "int32",
    POSITION: "int32",
    SEQUENCE_INDEX: "int32",
    SEGMENT: "int8",
    STEP: "int32",
    GENERATED: "bool",
    SEQUENCE_START: "int64",
    SEQUENCE_LENGTH: "int64",
    SPAN_SEQUENCE: "int32",
    SPAN_KIND: "int8",
    SPAN_START: "int64",
    SPAN_STOP: "int64",
    SPAN_STEP: "int32",
}

DIMS: Final[dict[str, tuple[str, ...]]] = {
    EXPERT_IDS: (TOKEN, LAYER, K),
    GATE_WEIGHTS: (TOKEN, LAYER, K),
    ROUTER_SCORES: (TOKEN, LAYER, EXPERT),
    **{name: (TOKEN,) for name in TOKEN_VARS},
    SEQUENCE: (SEQUENCE,),
    **{name: (SEQUENCE,) for name in SEQUENCE_VARS},
    **{name: (SPAN,) for name in SPAN_VARS},
    LAYER: (LAYER,),
}


def token_chunk(n_layers: int, k: int, target_bytes: int = 8 << 20) -> int:
    """Tokens per chunk so one ``expert_ids`` chunk holds about ``target_bytes`` raw (int16).

    K2 (60 layers x 8) gets 8192 tokens (7.9 MB raw); the mini K2 (6 x 8) gets 65536.
    """
    per_token = max(1, n_layers * k * 2)
    n = max(1024, target_bytes // per_token)
    return 1 << (n.bit_length() - 1)  # a power of two, so chunks line up across variables


# The fill value of every array (see "Fill values" in the module docstring).
MISSING_STR: Final = "\x00<missing chunk>"
_INT32_MIN: Final = -(2**31)
FILL: Final[dict[str, object]] = {
    EXPERT_IDS: -1,
    GATE_WEIGHTS: float("-inf"),
    ROUTER_SCORES: float("-inf"),
    TOKEN_ID: -1,
    POSITION: -1,
    SEQUENCE_INDEX: -1,
    SEGMENT: -1,
    STEP: _INT32_MIN,
    GENERATED: False,
    SEQUENCE: MISSING_STR,
    SEQUENCE_DOMAIN: MISSING_STR,
    SEQUENCE_SOURCE: MISSING_STR,
    SEQUENCE_START: -1,
    SEQUENCE_LENGTH: -1,
    SPAN_SEQUENCE: -1,
    SPAN_KIND: -1,
    SPAN_START: -1,
    SPAN_STOP: -1,
    SPAN_STEP: _INT32_MIN,
    SPAN_LABEL: MISSING_STR,
    LAYER: -1,
}
