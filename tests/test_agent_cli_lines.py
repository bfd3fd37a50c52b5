"""What `workbench agent` prints per step: one or two short lines per item, user and model text literal."""

from __future__ import annotations

from workbench.agent.loop import StepLog
from workbench.cli.agent import WIDTH, step_lines


def test_call_step_lines():
    log = StepLog(
        0, "", 59, [{"function": {"name": "python", "arguments": '{"code": "print(1)"}'}}], ["0\n1\n2\n3\n"],
        reasoning="I  will\nrun [bold]python[/bold] " + "x" * 300,
    )  # fmt: skip
    lines = step_lines(log)
    assert lines[0] == "step 0 (59 tokens)"
    assert lines[1].startswith("  thinking: I will run [bold]python[/bold] xx") and lines[1].endswith("…")
    assert len(lines[1]) == len("  thinking: ") + WIDTH
    assert lines[2] == '  call python: {"code": "print(1)"}'
    assert lines[3:] == ["    -> 0", "       1 (+2 lines)"]


def test_answer_and_malformed_steps():
    assert step_lines(StepLog(3, "", 9, content="The answer\nis 42.")) == [
        "step 3 (9 tokens)",
        "  answer: The answer is 42.",
    ]
    bad = step_lines(StepLog(1, "", 20, error="arguments are not JSON", reasoning="try"))
    assert bad == ["step 1 (20 tokens)", "  thinking: try", "  malformed tool call: arguments are not JSON"]
    assert step_lines(StepLog(2, "", 5, [{"function": {"name": "calculator", "arguments": "{}"}}], [""]))[-1] == (
        "    -> (empty)"
    )
