"""The calculator tool, the one the live agent and the mini K2 corpus both use: exact arithmetic on a parse tree.

Never ``eval``: the expression is parsed with :mod:`ast` and only numbers, ``+ - * / // % **``, unary
``+ -``, the constants ``pi``, ``e``, ``tau`` and the functions in ``FUNCTIONS`` are evaluated. Integers stay
exact (Python ints); ``/`` of two ints whose quotient is an int stays an int.

Result format (what the mini K2 was trained on, so kept as it is): an int as its digits; a float that is
a whole number below 1e15 as an int; any other float rounded to 6 decimals (``1/3`` -> ``0.333333``);
errors as ``Error: ...`` text. Ints of 10**4000 or more are written in scientific notation.

Bounds, so that no expression can hang the agent or exhaust its memory:

- every intermediate int is at most ``MAX_BITS`` bits; a ``**``, ``*`` or ``factorial`` whose result would
  be larger is refused *before* it is computed (``((2**4096)**4096)**4096`` is refused at once);
- the expression is at most ``MAX_CHARS`` characters and ``MAX_DEPTH`` levels deep (no RecursionError);
- ``calculate`` returns ``Error: ...`` for any input, including non-text; it never raises.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from decimal import Decimal
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
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs, "round": round, "min": min, "max": max, "sqrt": math.sqrt, "exp": math.exp, "log": math.log,
    "log2": math.log2, "log10": math.log10, "sin": math.sin, "cos": math.cos, "tan": math.tan,
    "floor": math.floor, "ceil": math.ceil, "factorial": math.factorial, "gcd": math.gcd,
}  # fmt: skip
_CONSTS = {"pi": math.pi, "e": math.e, "tau": math.tau}
MAX_BITS = 1 << 16  # 65,536 bits: about 19,700 decimal digits
MAX_DIGITS = 4000  # ints >= 10**MAX_DIGITS are written as 1.234568e+4000
MAX_CHARS = 2000
MAX_DEPTH = 200
DECIMALS = 6


class CalculatorError(ValueError):
    """An expression the calculator refuses; the message becomes the ``Error: ...`` result."""


def _bits(x: Any) -> int:
    return abs(x).bit_length() if isinstance(x, int) else 0


def _check_size(op: type, left: Any, right: Any) -> None:
    """Refuse an int operation whose result would exceed MAX_BITS, from the operands' sizes alone."""
    if not (isinstance(left, int) and isinstance(right, int)):
        return
    if op is ast.Pow and right > 0 and abs(left) > 1:
        if right > MAX_BITS or _bits(left) * right > MAX_BITS:
            raise CalculatorError(f"the result of ** would have more than {MAX_BITS} bits")
    elif op is ast.Mult and _bits(left) + _bits(right) > MAX_BITS + 1:
        raise CalculatorError(f"the result of * would have more than {MAX_BITS} bits")


def _eval(node: ast.AST, depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise CalculatorError(f"the expression is nested more than {MAX_DEPTH} levels deep")
    if isinstance(node, ast.Expression):
        return _eval(node.body, depth + 1)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        if _bits(node.value) > MAX_BITS:
            raise CalculatorError(f"a number has more than {MAX_BITS} bits")
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTS:
        return _CONSTS[node.id]
    if isinstance(node, ast.Name):
        raise CalculatorError(f"unknown name {node.id!r}; constants: {', '.join(_CONSTS)}")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        v = _eval(node.operand, depth + 1)
        return -v if isinstance(node.op, ast.USub) else +v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left, depth + 1), _eval(node.right, depth + 1)
        _check_size(type(node.op), left, right)
        value = _BINOPS[type(node.op)](left, right)
        if isinstance(node.op, ast.Div) and isinstance(left, int) and isinstance(right, int) and left % right == 0:
            value = left // right
        return value
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in FUNCTIONS
        and not node.keywords
    ):
        args = [_eval(a, depth + 1) for a in node.args]
        if node.func.id == "factorial" and args and isinstance(args[0], int) and abs(args[0]) > 5000:
            raise CalculatorError("factorial argument too large (limit 5000)")
        return FUNCTIONS[node.func.id](*args)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        raise CalculatorError(f"unknown function {node.func.id!r}; available: {', '.join(sorted(FUNCTIONS))}")
    raise CalculatorError(f"unsupported syntax {type(node).__name__}")


def format_number(value: Any) -> str:
    """The result text: see the module docstring (ints exact, floats to 6 decimals, huge ints as 1.2e+N)."""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return str(round(value, DECIMALS))
    if isinstance(value, int) and not isinstance(value, bool):
        if abs(value) < 10**MAX_DIGITS:
            return str(value)
        return f"{Decimal(value):.{DECIMALS}e}"  # Decimal: exact, no float overflow, no str-digits limit
    raise CalculatorError(f"the result is not a number ({type(value).__name__})")


def calculate(expression: Any) -> str:
    """Evaluate ``expression`` and return the result as text, or ``Error: ...`` (never raises).

    >>> calculate("3*(4+5) + 2**10")
    '1051'
    >>> calculate("1/3")
    '0.333333'
    """
    if not isinstance(expression, str):
        return f"Error: the expression must be text, not {type(expression).__name__}"
    text = expression.strip()
    if len(text) > MAX_CHARS:
        return f"Error: the expression is longer than {MAX_CHARS} characters"
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):  # ValueError: a NUL byte in the source
        return f"Error: {expression[:200]!r} is not an arithmetic expression"
    except (RecursionError, MemoryError):
        return f"Error: the expression is nested more than {MAX_DEPTH} levels deep"
    try:
        return format_number(_eval(tree))
    except RecursionError:
        return f"Error: the expression is nested more than {MAX_DEPTH} levels deep"
    except MemoryError:
        return "Error: the result is too large"
    except (ArithmeticError, ValueError, TypeError) as err:  # ZeroDivision, Overflow, math domain, bad args
        return f"Error: {err}"
