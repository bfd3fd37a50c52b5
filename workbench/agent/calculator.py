"""The calculator tool: exact arithmetic on a parsed expression tree (never ``eval``).

Integers stay exact (Python ints), ``/`` gives a float unless the division is exact, ``**`` is bounded so
``9**9**9`` cannot hang the loop; functions from ``math`` that take numbers (sqrt, log, sin, ...) and
the constants pi, e. Errors come back as ``Error: ...`` text, as a tool result should.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_FUNCS: dict[str, Callable[..., Any]] = {
    "abs": abs, "round": round, "min": min, "max": max, "sqrt": math.sqrt, "exp": math.exp, "log": math.log,
    "log2": math.log2, "log10": math.log10, "sin": math.sin, "cos": math.cos, "tan": math.tan,
    "floor": math.floor, "ceil": math.ceil, "factorial": math.factorial, "gcd": math.gcd,
}  # fmt: skip
_CONSTS = {"pi": math.pi, "e": math.e, "tau": math.tau}
MAX_EXPONENT = 4096
MAX_DIGITS = 4000


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTS:
        return _CONSTS[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        v = _eval(node.operand)
        return -v if isinstance(node.op, ast.USub) else +v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ValueError(f"exponent {right} is too large (limit {MAX_EXPONENT})")
        value = _BINOPS[type(node.op)](left, right)
        if isinstance(node.op, ast.Div) and isinstance(left, int) and isinstance(right, int) and left % right == 0:
            value = left // right
        return value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS and not node.keywords:
        args = [_eval(a) for a in node.args]
        if node.func.id == "factorial" and args and abs(args[0]) > 1000:
            raise ValueError("factorial argument too large (limit 1000)")
        return _FUNCS[node.func.id](*args)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        raise ValueError(f"unknown function {node.func.id!r}; available: {', '.join(sorted(_FUNCS))}")
    raise ValueError(f"unsupported syntax {type(node).__name__}")


def calculate(expression: str) -> str:
    """Evaluate ``expression`` and return the result as text, or ``Error: ...``.

    >>> calculate("3*(4+5) + 2**10")
    '1051'
    >>> calculate("7/2")
    '3.5'
    """
    try:
        value = _eval(ast.parse(expression.strip(), mode="eval"))
    except SyntaxError:
        return f"Error: {expression!r} is not an arithmetic expression"
    except (ValueError, ZeroDivisionError, OverflowError, TypeError) as err:
        return f"Error: {err}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(round(value, 10))
    text = str(value) if abs(value) < 10**MAX_DIGITS else f"{value:.6e}"
    return text
