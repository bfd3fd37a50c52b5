"""Tool-loop episodes in the OpenAI chat format K2's API uses, with tool results really computed.

An episode is ``{"id", "domain", "messages", "tools"}``: a user question, then assistant turns with
``reasoning_content`` and ``tool_calls`` (ids ``functions.{name}:{idx}``, idx counting calls in the
conversation, as K2 emits them), ``tool`` turns holding what :mod:`tools_runtime` returned, and a
final assistant answer. ``long_episode`` builds 20+ step loops for the example transcripts.
"""

from __future__ import annotations

import json
import random
from typing import Any

from workbench.minik2.tools_runtime import TOOL_SPECS, DictionarySearch, calculator, run_tool

Message = dict[str, Any]

WORDS = [
    "abbey",
    "anchor",
    "badger",
    "beacon",
    "candle",
    "castle",
    "dagger",
    "desert",
    "eagle",
    "ember",
    "falcon",
    "fern",
    "garden",
    "glacier",
    "harbor",
    "hazel",
    "island",
    "ivory",
    "jasmine",
    "jewel",
    "kettle",
    "kingdom",
    "lantern",
    "ledger",
    "marble",
    "meadow",
    "needle",
    "nectar",
    "orchard",
    "oyster",
    "pebble",
    "pilgrim",
    "quarry",
    "quill",
    "raven",
    "river",
    "saddle",
    "scholar",
    "temple",
    "thistle",
    "umbrella",
    "valley",
    "velvet",
    "wagon",
    "willow",
    "yeoman",
    "zephyr",
    "bridge",
    "cloud",
    "forest",
    "honey",
    "lemon",
    "mirror",
    "ocean",
    "pepper",
    "silver",
    "thunder",
    "violin",
    "winter",
]


class EpisodeBuilder:
    """Accumulates one conversation, running every tool call it records."""

    def __init__(self, search: DictionarySearch, question: str) -> None:
        self.search = search
        self.messages: list[Message] = [{"role": "user", "content": question}]
        self.n_calls = 0

    def call(self, reasoning: str, calls: list[tuple[str, dict[str, Any]]]) -> list[str]:
        """Add an assistant turn with ``calls`` (name, arguments) and the tool turns; return the results."""
        tool_calls, results = [], []
        for name, args in calls:
            call_id = f"functions.{name}:{self.n_calls}"
            self.n_calls += 1
            tool_calls.append(
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
            )
            results.append((call_id, run_tool(name, args, self.search)))
        self.messages.append(
            {"role": "assistant", "content": "", "reasoning_content": reasoning, "tool_calls": tool_calls}
        )
        for call_id, result in results:
            self.messages.append({"role": "tool", "tool_call_id": call_id, "content": result})
        return [r for _, r in results]

    def answer(self, reasoning: str, content: str) -> list[Message]:
        self.messages.append({"role": "assistant", "content": content, "reasoning_content": reasoning})
        return self.messages


def _expr(rng: random.Random) -> str:
    a, b, c = rng.randint(11, 999), rng.randint(2, 99), rng.randint(2, 60)
    return rng.choice([f"{a} * {b} + {c}", f"({a} + {b}) * {c}", f"{a} * {b} - {c} * {b}", f"{a} / {c}", f"{a} ** 2"])


PY_TASKS = (
    (
        "How many prime numbers are there below {n}?",
        "print(sum(all(k % d for d in range(2, int(k ** 0.5) + 1)) for k in range(2, {n})))",
    ),
    ("What is the sum of the squares of the integers from 1 to {n}?", "print(sum(i * i for i in range(1, {n} + 1)))"),
    ("What is the {n}th Fibonacci number?", "a, b = 0, 1\nfor _ in range({n}):\n    a, b = b, a + b\nprint(a)"),
    ("What is {n} factorial?", "import math\nprint(math.factorial({n}))"),
    ("What are the digits of {n} in reverse order?", "print(str({n})[::-1])"),
    (
        "How many times does the digit 7 appear in the numbers from 1 to {n}?",
        "print(sum(str(i).count('7') for i in range(1, {n} + 1)))",
    ),
    ("What is {n} written in binary?", "print(bin({n})[2:])"),
    ("What is the greatest common divisor of {n} and {m}?", "import math\nprint(math.gcd({n}, {m}))"),
)


def calculator_episode(rng: random.Random, search: DictionarySearch) -> list[Message]:
    expr = _expr(rng)
    ep = EpisodeBuilder(
        search, rng.choice(["What is {e}?", "Compute {e}.", "Please calculate {e} exactly."]).format(e=expr)
    )
    (res,) = ep.call(
        f"The user wants {expr}. I will use the calculator to get it exactly.", [("calculator", {"expression": expr})]
    )
    return ep.answer(f"The calculator returned {res}.", f"{expr} = {res}.")


def python_episode(rng: random.Random, search: DictionarySearch) -> list[Message]:
    question, code = rng.choice(PY_TASKS)
    n, m = rng.randint(10, 400), rng.randint(10, 400)
    question, code = question.format(n=n, m=m), code.format(n=n, m=m)
    ep = EpisodeBuilder(search, question)
    (res,) = ep.call("This is easiest to compute with a short Python program.", [("python", {"code": code})])
    return ep.answer(f"The program printed {res.strip()}.", f"The answer is {res.strip()}.")


def search_episode(rng: random.Random, search: DictionarySearch) -> list[Message]:
    word = rng.choice(search.headwords) if search.headwords and rng.random() < 0.7 else rng.choice(WORDS)
    ep = EpisodeBuilder(
        search,
        rng.choice(["What does the word {w} mean?", "Define {w}.", "Look up the meaning of {w}."]).format(w=word),
    )
    (res,) = ep.call(f"I should look up {word} in the dictionary.", [("search", {"query": word})])
    first = res.split("\n")[0].removeprefix("[1] ")[:200]
    return ep.answer(f"The dictionary has an entry for {word}.", f"According to the dictionary: {first}")


def multi_episode(rng: random.Random, search: DictionarySearch) -> list[Message]:
    """Two or three dependent steps: compute, then check with Python, or look up two words."""
    if rng.random() < 0.5:
        a, b = rng.sample(WORDS, 2)
        ep = EpisodeBuilder(search, f"Compare the meanings of {a} and {b}.")
        res = ep.call(
            f"I need both definitions; I will search for {a} and {b}.",
            [("search", {"query": a}), ("search", {"query": b})],
        )
        return ep.answer(
            "I have both entries.",
            f"{a}: {res[0].split(chr(10))[0][4:150]}\n{b}: {res[1].split(chr(10))[0][4:150]}",
        )
    x, y = rng.randint(100, 9999), rng.randint(3, 97)
    ep = EpisodeBuilder(search, f"What is {x} divided by {y}, rounded to two decimals, and what is the remainder?")
    (q,) = ep.call("First the quotient with the calculator.", [("calculator", {"expression": f"round({x} / {y}, 2)"})])
    (r,) = ep.call(f"The quotient is {q}. Now the remainder with Python.", [("python", {"code": f"print({x} % {y})"})])
    return ep.answer(
        f"Quotient {q}, remainder {r.strip()}.", f"{x} / {y} is about {q}, and the remainder is {r.strip()}."
    )


EPISODE_KINDS = (calculator_episode, python_episode, search_episode, multi_episode)


def episode(rng: random.Random, search: DictionarySearch, ident: str) -> dict[str, Any]:
    """One short episode (1-3 tool calls) of a random kind."""
    kind = rng.choice(EPISODE_KINDS)
    return {"id": ident, "domain": "tools", "messages": kind(rng, search), "tools": TOOL_SPECS}


def long_episode(rng: random.Random, search: DictionarySearch, ident: str, steps: int) -> dict[str, Any]:
    """A loop of ``steps`` sequential tool turns (running totals, word lookups, program checks)."""
    kind = rng.randrange(3)
    if kind == 0:
        nums = [rng.randint(10, 999) for _ in range(steps)]
        ep = EpisodeBuilder(
            search, f"Add up these numbers one at a time and report each running total: {', '.join(map(str, nums))}."
        )
        total = "0"
        for i, n in enumerate(nums):
            (total,) = ep.call(
                f"Step {i + 1}: add {n} to the running total {total}.",
                [("calculator", {"expression": f"{total} + {n}"})],
            )
        check = calculator(" + ".join(map(str, nums)))
        messages = ep.answer(
            f"The running total ends at {total}; a direct sum gives {check}.", f"The total is {total}."
        )
    elif kind == 1:
        words = rng.sample(WORDS, min(steps, len(WORDS)))
        ep = EpisodeBuilder(search, f"Look up each of these words and give a one-line meaning: {', '.join(words)}.")
        lines = []
        for w in words:
            (res,) = ep.call(f"Next word: {w}.", [("search", {"query": w})])
            lines.append(f"{w}: {res.split(chr(10))[0][4:120]}")
        messages = ep.answer("All words looked up.", "\n".join(lines))
    else:
        ep = EpisodeBuilder(
            search, f"For n from 1 to {steps}, compute n squared plus n plus 41 and say whether each is prime."
        )
        found = []
        for n in range(1, steps + 1):
            code = f"v = {n} * {n} + {n} + 41\nprint(v, all(v % d for d in range(2, int(v ** 0.5) + 1)))"
            (res,) = ep.call(f"Check n = {n}.", [("python", {"code": code})])
            found.append(res.strip())
        messages = ep.answer("Each value was checked by running the program.", "; ".join(found))
    return {"id": ident, "domain": "tools", "messages": messages, "tools": TOOL_SPECS}


def tool_prompt(rng: random.Random) -> str:
    """A held-out tool question (the user turn of a fresh episode) for the tool-use eval."""
    search = DictionarySearch([])
    return str(rng.choice(EPISODE_KINDS)(rng, search)[0]["content"])
