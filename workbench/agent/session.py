"""The agent's token stream with the model's KV cache kept across steps, and the routing of every token.

A chat API server without prefix caching re-reads the whole conversation at every step, so a tool loop
of *n* steps costs O(n²) token forwards. Here the KV cache of everything the model has read is kept:
each step feeds only the tokens the cache does not hold yet (the tool results, the next turn's opener,
the last token of the previous turn) and then decodes the new turn on top of the cache. Every token
is fed exactly once, so its routing is recorded exactly once, by the forward that read it (prefill or
decode), and the pieces are stitched into one sequence.

When the chat template renders history differently from what was fed (a non-canonical tokenization
the model wrote, K2 Thinking dropping the reasoning of an answer once the user speaks again), the
stream keeps the longest common prefix, crops the KV cache to it (``DynamicCache.crop``) and feeds the
re-rendered tokens from there, so what is recorded is always what the model's later steps read;
``rerouted`` counts the replaced tokens.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from workbench.errors import WorkbenchError
from workbench.hooks.batch import cache_kwarg
from workbench.hooks.routing import Routing


class CachedStream:
    """The episode's tokens, the KV cache of those fed so far, and their recorded routing.

    Parameters
    ----------
    model
        A loaded transformers causal LM.
    recorder
        An *active* ``RoutingRecorder`` on ``model`` (``eos_token_id=[]``: the stream decides what ends a turn).
    """

    def __init__(self, model: Any, recorder: Any) -> None:
        import torch

        self.model, self.rec = model, recorder
        self.device = next((p.device for p in model.parameters() if not p.is_meta), torch.device("cpu"))
        self.cache_name = cache_kwarg(model)
        self.cache: Any = None
        self.ids = np.zeros(0, np.int64)  # (T,) every token of the stream, the last generated one maybe not fed yet
        self.generated = np.zeros(0, bool)  # (T,) decoded by the model (True) or given to it (False)
        self.blocks: list[Routing] = []  # routing of ids[:fed], in order
        self.fed = 0  # tokens whose keys and values the cache holds
        self.rerouted = 0  # tokens replaced because a re-render differed from what was fed
        self.forwards = 0

    # ------------------------------------------------------------------ alignment
    def _align(self, ids: np.ndarray, leave: int) -> None:
        """Make the stream a prefix of ``ids``: keep the common prefix, crop the cache (keeping ``leave`` unfed)."""
        n = min(len(ids), len(self.ids))
        diff = np.nonzero(ids[:n] != self.ids[:n])[0]
        c = int(diff[0]) if len(diff) else n
        self.rerouted += len(self.ids) - c
        self.ids, self.generated = self.ids[:c], self.generated[:c]
        keep = min(c, len(ids) - leave)
        if self.fed > keep:
            # a negative count removes that many tokens in every transformers version (5.x refuses a positive one)
            self.cache.crop(-(self.fed - keep))
            self.blocks = _cut(self.blocks, keep)
            self.fed = keep
        self.ids = np.concatenate([self.ids, ids[c:]])
        self.generated = np.concatenate([self.generated, np.zeros(len(ids) - c, bool)])

    def _collect(self, expect: np.ndarray) -> None:
        """Take the routing the recorder saw since the last call; it must be exactly the tokens ``expect``."""
        routes = [r for r in self.rec.routing(reset=True) if r.n_tokens]
        got = Routing.concat(routes) if routes else None
        if len(expect) == 0 and got is None:
            return
        if len(routes) != 1 or got is None or not np.array_equal(got.token_ids, expect):
            n = 0 if got is None else got.n_tokens
            raise WorkbenchError(
                f"the recorder saw {n} tokens in {len(routes)} rows where {len(expect)} were fed; "
                "nothing was recorded for this episode"
            )
        self.blocks.append(got)
        self.fed += len(expect)

    # ------------------------------------------------------------------ feeding
    def generate(self, prompt: np.ndarray, stop: list[int], pad: int, **gen: Any) -> np.ndarray:
        """Decode one turn after ``prompt`` (ids (T,)) on top of the cache; returns the new ids (n,).

        The turn ends at the first id in ``stop`` (kept) or at ``max_new_tokens``. Its last token is in the
        stream but not fed yet (``generate`` never reads its own last token): the next call feeds it.
        """
        import torch

        self._align(np.asarray(prompt, np.int64), leave=1)
        x = torch.as_tensor(self.ids, dtype=torch.long, device=self.device)[None]  # (1, T)
        cache = {self.cache_name: self.cache} if self.cache is not None else {}
        with torch.no_grad():
            out = self.model.generate(
                input_ids=x, attention_mask=torch.ones_like(x), eos_token_id=stop, pad_token_id=pad,
                return_dict_in_generate=True, use_cache=True, **cache, **gen,
            )  # fmt: skip
        self.cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        if self.cache is None:
            raise WorkbenchError("this model's generate returned no KV cache; the agent loop needs one")
        new = out.sequences[0, x.shape[1] :].cpu().numpy().astype(np.int64)  # (n,)
        stops = np.nonzero(np.isin(new, stop))[0]
        if len(stops):
            new = new[: stops[0] + 1]
        self._collect(np.concatenate([self.ids[self.fed :], new[:-1]]))  # one row stops at its first stop id
        self.ids = np.concatenate([self.ids, new])
        self.generated = np.concatenate([self.generated, np.ones(len(new), bool)])
        self.forwards += len(new)
        return new

    def feed(self, ids: np.ndarray, chunk_tokens: int = 2048) -> None:
        """Make the stream exactly ``ids`` and read every token not read yet (teacher forced, in chunks)."""
        import torch

        self._align(np.asarray(ids, np.int64), leave=0)
        rest = torch.as_tensor(self.ids[self.fed :], dtype=torch.long, device=self.device)[None]  # (1, R)
        with torch.no_grad():
            for a in range(0, rest.shape[1], chunk_tokens):
                cache = {self.cache_name: self.cache} if self.cache is not None else {}
                out = self.model(input_ids=rest[:, a : a + chunk_tokens], use_cache=True, **cache)
                self.cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
                self.forwards += 1
        self._collect(self.ids[self.fed :])

    # ------------------------------------------------------------------ result
    def routing(self) -> Routing:
        """The routing of the whole stream (every token fed): ids (T, L, k), weights (T, L, k), scores or None."""
        if self.fed != len(self.ids):
            raise WorkbenchError(f"internal: {len(self.ids) - self.fed} tokens of the stream were never fed")
        r = Routing.concat(self.blocks)
        return Routing(r.expert_ids, r.gate_weights, r.router_scores, self.ids.copy(), self.generated.copy(), r.layers)


def _cut(blocks: list[Routing], n: int) -> list[Routing]:
    """The first ``n`` tokens of consecutive routing blocks."""
    out, pos = [], 0
    for b in blocks:
        if pos >= n:
            break
        out.append(b if pos + b.n_tokens <= n else b.window(0, n - pos))
        pos += b.n_tokens
    return out
