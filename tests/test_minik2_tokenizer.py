"""Tokenizer and chat template of the mini K2: K2's special tokens, K2's turn structure, offline loading."""

from __future__ import annotations

import json

import pytest
from minik2_helpers import write_tiny_corpus

from workbench.minik2.chat_template import DEFAULT_SYSTEM, SPECIAL_TOKENS, render_training_text
from workbench.minik2.tokenizer import build_tokenizer
from workbench.minik2.tools_runtime import TOOL_SPECS

K2_TOKENS = [
    "<|im_system|>",
    "<|im_user|>",
    "<|im_assistant|>",
    "<|im_middle|>",
    "<|im_end|>",
    "<|tool_calls_section_begin|>",
    "<|tool_calls_section_end|>",
    "<|tool_call_begin|>",
    "<|tool_call_argument_begin|>",
    "<|tool_call_end|>",
    "<think>",
    "</think>",
]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("minik2tok")
    corpus = write_tiny_corpus(root / "corpus")
    build_tokenizer(corpus, root / "model", vocab_size=700)
    return root / "model"


@pytest.fixture(scope="module")
def tok(tok_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)


LOOP = [
    {"role": "user", "content": "What is 2+3?"},
    {
        "role": "assistant",
        "content": "",
        "reasoning_content": "use the calculator",
        "tool_calls": [
            {
                "id": "functions.calculator:0",
                "type": "function",
                "function": {"name": "calculator", "arguments": '{"expression": "2+3"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "functions.calculator:0", "content": "5"},
    {"role": "assistant", "content": "2+3 = 5.", "reasoning_content": "got 5"},
]


def test_special_tokens_are_single_tokens(tok):
    assert set(K2_TOKENS) <= set(SPECIAL_TOKENS)
    for t in K2_TOKENS:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, t
        assert tok.convert_ids_to_tokens(ids) == [t]
    # inside running text too, and never produced by merges of ordinary text
    ids = tok("a<|im_end|>b<think>c", add_special_tokens=False)["input_ids"]
    assert tok.convert_tokens_to_ids("<|im_end|>") in ids and tok.convert_tokens_to_ids("<think>") in ids
    assert tok.convert_tokens_to_ids("<|im_end|>") not in tok("im_end |> <| im", add_special_tokens=False)["input_ids"]


def test_digits_are_split(tok):
    pieces = tok.convert_ids_to_tokens(tok("12345", add_special_tokens=False)["input_ids"])
    assert pieces == ["1", "2", "3", "4", "5"]


def test_template_has_k2_structure(tok):
    decl = json.dumps(TOOL_SPECS, separators=(",", ":"))
    call = '<|tool_call_begin|>functions.calculator:0<|tool_call_argument_begin|>{"expression": "2+3"}<|tool_call_end|>'
    head = (
        f"<|im_system|>tool_declare<|im_middle|>{decl}<|im_end|>"
        f"<|im_system|>system<|im_middle|>{DEFAULT_SYSTEM}<|im_end|>"
        "<|im_user|>user<|im_middle|>What is 2+3?<|im_end|>"
    )
    # a finished loop: K2 Thinking drops reasoning before the last plain assistant turn
    full = tok.apply_chat_template(LOOP, tools=TOOL_SPECS, tokenize=False)
    assert full == (
        head + "<|im_assistant|>assistant<|im_middle|><think></think>"
        f"<|tool_calls_section_begin|>{call}<|tool_calls_section_end|><|im_end|>"
        "<|im_system|>tool<|im_middle|>## Return of functions.calculator:0\n5<|im_end|>"
        "<|im_assistant|>assistant<|im_middle|><think></think>2+3 = 5.<|im_end|>"
    )
    # an open loop keeps the reasoning of the pending turns, and the generation prompt opens a turn
    open_loop = tok.apply_chat_template(LOOP[:3], tools=TOOL_SPECS, tokenize=False, add_generation_prompt=True)
    assert "<think>use the calculator</think>" in open_loop
    assert open_loop.endswith("## Return of functions.calculator:0\n5<|im_end|><|im_assistant|>assistant<|im_middle|>")
    # the training rendering keeps every turn's reasoning and extends the generation prompt
    train = render_training_text(tok, LOOP, TOOL_SPECS)
    assert train == open_loop + "<think>got 5</think>2+3 = 5.<|im_end|>"


def test_system_message_and_names(tok):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "name": "ada", "content": "hi"}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_system|>system<|im_middle|>Be brief.<|im_end|><|im_user|>ada<|im_middle|>hi<|im_end|>"
        "<|im_assistant|>assistant<|im_middle|>"
    )


def test_saved_files_load_offline(tok_dir, monkeypatch):
    from transformers import AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = AutoTokenizer.from_pretrained(str(tok_dir))
    assert (tok_dir / "chat_template.jinja").exists() or t.chat_template
    assert t.eos_token == "[EOS]" and t.pad_token == "[PAD]"
    assert t.decode(t("def f(x):\n    return 42", add_special_tokens=False)["input_ids"]) == "def f(x):\n    return 42"
