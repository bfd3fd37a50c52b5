"""K2's chat format: special tokens and the Jinja chat template, mirrored from Kimi K2 Thinking.

The structure follows the ``chat_template.jinja`` published with moonshotai/Kimi-K2-Thinking:

- every turn is ``<|im_{role}|>{name}<|im_middle|>{body}<|im_end|>`` (``im_user`` / ``im_assistant``;
  system and tool turns use ``im_system``), where ``name`` is the message's ``name`` or its role;
- tool declarations come first as a system turn named ``tool_declare`` holding the OpenAI tool list as
  compact JSON; a default system prompt follows when the conversation has none;
- assistant turns open with ``<think>{reasoning_content}</think>``; reasoning is kept only after the last
  assistant turn without tool calls (earlier turns render an empty ``<think></think>``), as in K2 Thinking;
- tool calls sit in a ``<|tool_calls_section_begin|>`` … ``<|tool_calls_section_end|>`` section, one
  ``<|tool_call_begin|>{id}<|tool_call_argument_begin|>{json}<|tool_call_end|>`` each, where ``id`` is
  ``functions.{name}:{idx}``;
- tool results are ``## Return of {tool_call_id}`` then the content.

So the transcript code of the workbench serves the mini model and real K2 alike.
"""

from __future__ import annotations

from typing import Any

DEFAULT_SYSTEM = "You are Kimi, an AI assistant created by Moonshot AI."

# K2's special tokens (tokenizer_config.json of moonshotai/Kimi-K2-Instruct), plus the think tags of K2 Thinking.
SPECIAL_TOKENS: tuple[str, ...] = (
    "[BOS]",
    "[EOS]",
    "[UNK]",
    "[PAD]",
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
)

CHAT_TEMPLATE = (
    """\
{%- macro render_content(msg) -%}
  {%- set c = msg.get('content') -%}
  {%- if c is string -%}
    {{ c }}
  {%- elif c is not none -%}
    {%- for part in c -%}{{ part['text'] if part['text'] is defined else '' }}{%- endfor -%}
  {%- endif -%}
{%- endmacro -%}
{%- macro set_roles(message) -%}
  {%- set role_name = message.get('name') or message['role'] -%}
  {%- if message['role'] == 'user' -%}
    <|im_user|>{{ role_name }}<|im_middle|>
  {%- elif message['role'] == 'assistant' -%}
    <|im_assistant|>{{ role_name }}<|im_middle|>
  {%- else -%}
    <|im_system|>{{ role_name }}<|im_middle|>
  {%- endif -%}
{%- endmacro -%}
{%- macro render_toolcalls(message) -%}
  <|tool_calls_section_begin|>
  {%- for tool_call in message['tool_calls'] -%}
    <|tool_call_begin|>{{ tool_call['id'] }}<|tool_call_argument_begin|>
    {%- if tool_call['function']['arguments'] is string -%}
      {{ tool_call['function']['arguments'] }}
    {%- else -%}
      {{ tool_call['function']['arguments'] | tojson }}
    {%- endif -%}
    <|tool_call_end|>
  {%- endfor -%}
  <|tool_calls_section_end|>
{%- endmacro -%}
{%- macro render_message(message, keep_reasoning) -%}
  {{- set_roles(message) -}}
  {%- if message['role'] == 'assistant' -%}
    <think>{{ message.get('reasoning_content') or '' if keep_reasoning else '' }}</think>{{ render_content(message) }}
    {%- if message.get('tool_calls') -%}{{ render_toolcalls(message) }}{%- endif -%}
  {%- elif message['role'] == 'tool' -%}
    ## Return of {{ message['tool_call_id'] }}
{{ render_content(message) }}
  {%- elif message.get('content') is not none -%}
    {{ render_content(message) }}
  {%- endif -%}
  <|im_end|>
{%- endmacro -%}
{%- set ns = namespace(last_plain_assistant=-1) -%}
{%- for idx in range(messages | length - 1, -1, -1) -%}
  {%- set m = messages[idx] -%}
  {%- if ns.last_plain_assistant == -1 and m['role'] == 'assistant' and not m.get('tool_calls') -%}
    {%- set ns.last_plain_assistant = idx -%}
  {%- endif -%}
{%- endfor -%}
{%- if tools -%}
  <|im_system|>tool_declare<|im_middle|>{{ tools | tojson(separators=(',', ':')) }}<|im_end|>
{%- endif -%}
{%- if messages | length == 0 or messages[0]['role'] != 'system' -%}
  <|im_system|>system<|im_middle|>"""
    + DEFAULT_SYSTEM
    + """<|im_end|>
{%- endif -%}
{%- for message in messages -%}
  {{- render_message(message, loop.index0 > ns.last_plain_assistant) -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  <|im_assistant|>assistant<|im_middle|>
{%- endif -%}
"""
)


def render_training_text(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
    """Render a whole episode with the reasoning of *every* assistant turn kept.

    K2's template drops reasoning before the last plain assistant turn (that is what the model sees
    when a conversation continues). For training, each step should be learned the way the model
    produces it, so the conversation up to the final answer is rendered by the template (all reasoning
    kept, because no plain assistant turn precedes it) and the final answer is rendered with its own
    reasoning, exactly as the template's generation prompt continues.
    """
    last = messages[-1]
    if last["role"] != "assistant" or last.get("tool_calls"):
        head = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)
        return str(head)
    head = tokenizer.apply_chat_template(messages[:-1], tools=tools, tokenize=False, add_generation_prompt=True)
    return f"{head}<think>{last.get('reasoning_content') or ''}</think>{last.get('content') or ''}<|im_end|>"
