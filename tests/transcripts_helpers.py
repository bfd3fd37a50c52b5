"""Test tokenizers for the transcript tests: a small byte-level BPE with K2's special tokens and a chat
template with the structure of K2 Thinking's published ``chat_template.jinja`` (written here from its
documented structure: tool_declare turn with compact JSON, default system prompt, ``<|im_{role}|>{name}
<|im_middle|>{body}<|im_end|>`` turns, ``<think>…</think>`` kept only for turns after the last final
answer (or for all turns with ``preserve_thinking``, as K2.6's template does), tool calls
``<|tool_call_begin|>{id}<|tool_call_argument_begin|>{args}<|tool_call_end|>`` in a
section,
tool results as ``## Return of {id}\\n{content}``)."""

from __future__ import annotations

from functools import cache

K2_SPECIAL_TOKENS = [
    "[BOS]",
    "[EOS]",
    "<|im_end|>",
    "<|im_user|>",
    "<|im_assistant|>",
    "<|im_system|>",
    "<|im_middle|>",
    "<|tool_calls_section_begin|>",
    "<|tool_calls_section_end|>",
    "<|tool_call_begin|>",
    "<|tool_call_argument_begin|>",
    "<|tool_call_end|>",
    "<think>",
    "</think>",
]

K2_THINKING_TEMPLATE = r"""
{%- macro role_open(message) -%}
{%- set name = message.get('name') or message['role'] -%}
{%- if message['role'] == 'user' -%}<|im_user|>{{ name }}<|im_middle|>
{%- elif message['role'] == 'assistant' -%}<|im_assistant|>{{ name }}<|im_middle|>
{%- else -%}<|im_system|>{{ name }}<|im_middle|>{%- endif -%}
{%- endmacro -%}
{%- macro content_of(message) -%}
{%- if message['content'] is string -%}{{ message['content'] }}
{%- elif message['content'] -%}{%- for part in message['content'] -%}{{ part['text'] }}{%- endfor -%}{%- endif -%}
{%- endmacro -%}
{%- macro calls_of(message) -%}
<|tool_calls_section_begin|>
{%- for call in message['tool_calls'] -%}
<|tool_call_begin|>{{ call['id'] }}<|tool_call_argument_begin|>
{%- if call['function']['arguments'] is string -%}{{ call['function']['arguments'] }}
{%- else -%}{{ call['function']['arguments'] | tojson }}{%- endif -%}
<|tool_call_end|>
{%- endfor -%}
<|tool_calls_section_end|>
{%- endmacro -%}
{%- macro body(message, keep_thinking) -%}
{%- if message['role'] == 'assistant' -%}
<think>{% if keep_thinking %}{{ message.get('reasoning_content') or '' }}{% endif %}</think>{{ content_of(message) }}
{%- if message.get('tool_calls') -%}{{ calls_of(message) }}{%- endif -%}
{%- elif message['role'] == 'tool' -%}
## Return of {{ message['tool_call_id'] }}
{{ content_of(message) }}
{%- else -%}{{ content_of(message) }}{%- endif -%}
{%- endmacro -%}
{%- set preserve_thinking = preserve_thinking | default(false) -%}
{%- set ns = namespace(last_answer=-1) -%}
{%- for i in range(messages | length - 1, -1, -1) -%}
{%- if ns.last_answer < 0 and messages[i]['role'] == 'assistant' and not messages[i].get('tool_calls') -%}
{%- set ns.last_answer = i -%}
{%- endif -%}
{%- endfor -%}
{%- if tools -%}<|im_system|>tool_declare<|im_middle|>{{ tools | tojson(separators=(',', ':')) }}<|im_end|>{%- endif -%}
{%- if messages | length == 0 or messages[0]['role'] != 'system' -%}
<|im_system|>system<|im_middle|>You are Kimi, an AI assistant created by Moonshot AI.<|im_end|>
{%- endif -%}
{%- for message in messages -%}
{{ role_open(message) }}{{ body(message, preserve_thinking or loop.index0 > ns.last_answer) }}<|im_end|>
{%- endfor -%}
{%- if add_generation_prompt -%}<|im_assistant|>assistant<|im_middle|>{%- endif -%}
"""

_CORPUS = [
    "The quick brown fox jumps over the lazy dog. 12 + 30 = 42, and 6 * 7 = 42 as well.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n",
    'Call the calculator with {"expression": "3*(4+5)"} and read the result 27.',
    "Search the docs for routing entropy; the results list documents with scores.",
    "Thinking: first compute the sum, then check it with python. Final answer: 42.",
]


@cache
def k2_test_tokenizer(template: str = K2_THINKING_TEMPLATE):  # -> PreTrainedTokenizerFast
    """A fast byte-level BPE (~400 entries) with K2's special tokens as single tokens and ``template``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=K2_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="[BOS]", eos_token="[EOS]")
    fast.add_special_tokens({"additional_special_tokens": K2_SPECIAL_TOKENS[2:]})
    fast.chat_template = template
    return fast


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "calculator",
            "description": "Evaluate an arithmetic expression.",
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string"}},
                "required": ["expression"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "python",
            "description": "Run Python code in a sandbox and return stdout.",
            "parameters": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]},
        },
    },
]


def tool_loop_transcript(n_steps: int = 2, *, final: bool = True) -> dict:
    """A K2-API-shaped transcript dict with ``n_steps`` tool steps (two parallel calls in step 0)."""
    messages: list[dict] = [
        {"role": "system", "content": "You are a careful assistant."},
        {"role": "user", "content": "What is 3*(4+5) plus 15?"},
    ]
    for s in range(n_steps):
        calls = [
            {
                "id": f"functions.calculator:{j}",
                "type": "function",
                "function": {"name": "calculator", "arguments": f'{{"expression": "3*(4+{5 + s + j})"}}'},
            }
            for j in range(2 if s == 0 else 1)
        ]
        messages.append(
            {
                "role": "assistant",
                "reasoning_content": f"Step {s}: compute with the calculator.",
                "content": "" if s else "Let me compute.",
                "tool_calls": calls,
            }
        )
        for j, call in enumerate(calls):
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": call["id"],
                    "name": "calculator",
                    "content": str(3 * (4 + 5 + s + j)),
                }
            )
    if final:
        messages.append({"role": "assistant", "reasoning_content": "27 + 15 = 42.", "content": "The answer is 42."})
    return {"id": "t1", "domain": "agent", "messages": messages, "tools": TOOLS}
