"""Train the mini K2's byte-level BPE tokenizer (HF ``tokenizers``) and wrap it for ``AutoTokenizer``.

- byte-level BPE, about 8k entries, digits split one per token (so arithmetic is learnable by a tiny
  model, as in the DeepSeek-V3 / K2 pre-tokenizers that cap digit runs);
- K2's special tokens (:data:`chat_template.SPECIAL_TOKENS`) as single, never-split tokens;
- the K2 chat template saved with the tokenizer, so ``AutoTokenizer.from_pretrained(dir)`` followed by
  ``apply_chat_template`` works offline.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from workbench.minik2.chat_template import CHAT_TEMPLATE, SPECIAL_TOKENS
from workbench.minik2.corpus import read_documents

VOCAB_SIZE = 8192


def _training_texts(corpus: Path, max_docs: int = 6000) -> Iterator[str]:
    """The first ``max_docs`` training documents of each domain (enough text to fit 8k merges)."""
    for domain in ("math", "code", "language"):
        for doc in read_documents(corpus, "train", domain)[:max_docs]:
            yield doc["text"]
    for ep in read_documents(corpus, "train", "tools")[:max_docs]:
        # message bodies and call arguments as they will appear between the special tokens
        for m in ep["messages"]:
            yield m.get("reasoning_content") or ""
            yield m.get("content") or ""
            for call in m.get("tool_calls") or []:
                yield f"{call['id']}{call['function']['arguments']}"
        yield json.dumps(ep["tools"], separators=(",", ":"))


def train_bpe(corpus: Path, vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """Train the BPE on the corpus' training split (all four domains)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=True,
    )
    tok.train_from_iterator(_training_texts(corpus), trainer=trainer)
    return tok


def wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    """The transformers tokenizer around ``tok``, with K2's special-token roles and chat template."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="[BOS]",
        eos_token="[EOS]",
        unk_token="[UNK]",
        pad_token="[PAD]",
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )


def build_tokenizer(corpus: Path, out: Path, vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train, wrap and save the tokenizer files into ``out`` (the model directory)."""
    hf = wrap(train_bpe(corpus, vocab_size))
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(out)
    return hf
