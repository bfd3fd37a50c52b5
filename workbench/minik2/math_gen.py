"""Generated math documents with worked solutions: arithmetic, fractions, linear algebra, word problems.

Every answer is computed (``fractions.Fraction`` arithmetic), never typed in, so the corpus teaches
correct worked solutions. Generation is a pure function of a ``random.Random`` seed, which keeps the
train and held-out splits reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from fractions import Fraction

NAMES = ("Ada", "Bruno", "Chen", "Dara", "Emeka", "Farah", "Goran", "Hana", "Ivan", "Juno", "Kofi", "Lena")
ITEMS = ("apples", "books", "marbles", "pencils", "stamps", "cookies", "tickets", "coins", "shells", "cards")


def _frac(f: Fraction) -> str:
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


def arithmetic(rng: random.Random) -> str:
    """Multi-step integer arithmetic with operator precedence, solved step by step."""
    a, b, c, d = (rng.randint(2, 99) for _ in range(4))
    op1, op2 = rng.choice("+-"), rng.choice("+-")
    prod = b * c
    first = a + prod if op1 == "+" else a - prod
    result = first + d if op2 == "+" else first - d
    return (
        f"Problem: Compute {a} {op1} {b} * {c} {op2} {d}.\n"
        f"Solution: Multiplication comes first: {b} * {c} = {prod}.\n"
        f"Then {a} {op1} {prod} = {first}.\n"
        f"Then {first} {op2} {d} = {result}.\n"
        f"Answer: {result}\n"
    )


def long_multiplication(rng: random.Random) -> str:
    """Two-digit by multi-digit multiplication split into place values."""
    a, b = rng.randint(12, 999), rng.randint(11, 99)
    tens, ones = divmod(b, 10)
    p1, p2 = a * tens * 10, a * ones
    return (
        f"Problem: What is {a} * {b}?\n"
        f"Solution: Split {b} = {tens * 10} + {ones}.\n"
        f"{a} * {tens * 10} = {p1}.\n"
        f"{a} * {ones} = {p2}.\n"
        f"{p1} + {p2} = {p1 + p2}.\n"
        f"Answer: {a * b}\n"
    )


def fractions_sum(rng: random.Random) -> str:
    """Adding or subtracting two fractions via a common denominator, then simplifying."""
    x = Fraction(rng.randint(1, 9), rng.randint(2, 12))
    y = Fraction(rng.randint(1, 9), rng.randint(2, 12))
    op = rng.choice("+-")
    den = x.denominator * y.denominator // _gcd(x.denominator, y.denominator)
    xn, yn = x.numerator * (den // x.denominator), y.numerator * (den // y.denominator)
    num = xn + yn if op == "+" else xn - yn
    res = x + y if op == "+" else x - y
    return (
        f"Problem: Compute {_frac(x)} {op} {_frac(y)}.\n"
        f"Solution: The common denominator is {den}.\n"
        f"{_frac(x)} = {xn}/{den} and {_frac(y)} = {yn}/{den}.\n"
        f"{xn}/{den} {op} {yn}/{den} = {num}/{den}.\n"
        f"Simplified: {_frac(res)}.\n"
        f"Answer: {_frac(res)}\n"
    )


def fraction_product(rng: random.Random) -> str:
    """Multiplying two fractions and reducing by the greatest common divisor."""
    x = Fraction(rng.randint(1, 12), rng.randint(2, 15))
    y = Fraction(rng.randint(1, 12), rng.randint(2, 15))
    n, d = x.numerator * y.numerator, x.denominator * y.denominator
    g = _gcd(n, d)
    return (
        f"Problem: Compute {_frac(x)} * {_frac(y)}.\n"
        f"Solution: Multiply numerators and denominators: {n}/{d}.\n"
        f"The greatest common divisor of {n} and {d} is {g}, so the result is {_frac(x * y)}.\n"
        f"Answer: {_frac(x * y)}\n"
    )


def linear_equation(rng: random.Random) -> str:
    """Solving a*x + b = c for x, isolating x in two steps."""
    x = rng.randint(-20, 20)
    a = rng.choice([i for i in range(-9, 10) if i not in (0, 1)])
    b = rng.randint(-50, 50)
    c = a * x + b
    sign = "+" if b >= 0 else "-"
    return (
        f"Problem: Solve {a}x {sign} {abs(b)} = {c} for x.\n"
        f"Solution: Subtract {b} from both sides: {a}x = {c - b}.\n"
        f"Divide both sides by {a}: x = {c - b}/{a} = {x}.\n"
        f"Check: {a} * {x} {sign} {abs(b)} = {c}.\n"
        f"Answer: x = {x}\n"
    )


def linear_system(rng: random.Random) -> str:
    """A 2x2 linear system solved by elimination (Cramer's determinant shown)."""
    x, y = rng.randint(-9, 9), rng.randint(-9, 9)
    while True:
        a, b, c, d = (rng.randint(-6, 6) or 1 for _ in range(4))
        det = a * d - b * c
        if det != 0:
            break
    e, f = a * x + b * y, c * x + d * y
    return (
        f"Problem: Solve the system {a}x + {b}y = {e} and {c}x + {d}y = {f}.\n"
        f"Solution: The determinant is {a}*{d} - {b}*{c} = {det}.\n"
        f"x = ({e}*{d} - {b}*{f}) / {det} = {e * d - b * f}/{det} = {x}.\n"
        f"y = ({a}*{f} - {e}*{c}) / {det} = {a * f - e * c}/{det} = {y}.\n"
        f"Answer: x = {x}, y = {y}\n"
    )


def quadratic(rng: random.Random) -> str:
    """A monic quadratic with integer roots, solved by factoring."""
    r1, r2 = rng.randint(-12, 12), rng.randint(-12, 12)
    b, c = -(r1 + r2), r1 * r2
    return (
        f"Problem: Solve x^2 {'+' if b >= 0 else '-'} {abs(b)}x {'+' if c >= 0 else '-'} {abs(c)} = 0.\n"
        f"Solution: Look for two numbers with sum {-b} and product {c}: {r1} and {r2}.\n"
        f"So (x {'-' if r1 >= 0 else '+'} {abs(r1)})(x {'-' if r2 >= 0 else '+'} {abs(r2)}) = 0.\n"
        f"Answer: x = {min(r1, r2)} or x = {max(r1, r2)}\n"
    )


def word_problem(rng: random.Random) -> str:
    """A shopping / sharing word problem with a two-step worked solution."""
    who, other = rng.sample(NAMES, 2)
    item = rng.choice(ITEMS)
    n, k, price = rng.randint(3, 40), rng.randint(2, 9), rng.randint(2, 25)
    kind = rng.randrange(3)
    if kind == 0:
        total = n * k
        return (
            f"Problem: {who} buys {k} boxes of {item}. Each box holds {n} {item}. "
            f"How many {item} does {who} have?\n"
            f"Solution: {k} boxes * {n} {item} per box = {total} {item}.\n"
            f"Answer: {total}\n"
        )
    if kind == 1:
        total = n * k + rng.randint(0, k - 1)
        each, left = divmod(total, k)
        return (
            f"Problem: {who} shares {total} {item} equally among {k} friends. "
            f"How many does each friend get, and how many are left over?\n"
            f"Solution: {total} / {k} = {each} remainder {left}.\n"
            f"Answer: {each} each, {left} left over\n"
        )
    cost = n * price
    paid = (cost // 50 + 1) * 50
    return (
        f"Problem: {who} buys {n} {item} at {price} dollars each and pays with {paid} dollars. "
        f"How much change does {other} hand back?\n"
        f"Solution: The cost is {n} * {price} = {cost} dollars.\n"
        f"The change is {paid} - {cost} = {paid - cost} dollars.\n"
        f"Answer: {paid - cost}\n"
    )


def percent(rng: random.Random) -> str:
    """Percentages of a quantity and percentage change."""
    base, p = rng.randint(20, 900), rng.choice([5, 10, 12, 15, 20, 25, 30, 40, 50, 75])
    part = Fraction(base * p, 100)
    return (
        f"Problem: What is {p}% of {base}?\n"
        f"Solution: {p}% = {p}/100, and {base} * {p} / 100 = {_frac(part)}.\n"
        f"Answer: {_frac(part) if part.denominator == 1 else f'{float(part):.2f}'}\n"
    )


def _gcd(a: int, b: int) -> int:
    a, b = abs(a), abs(b)
    while b:
        a, b = b, a % b
    return a


GENERATORS: tuple[Callable[[random.Random], str], ...] = (
    arithmetic,
    long_multiplication,
    fractions_sum,
    fraction_product,
    linear_equation,
    linear_system,
    quadratic,
    word_problem,
    percent,
)


def math_documents(seed: int, n_docs: int, problems_per_doc: tuple[int, int] = (3, 6)) -> Iterator[str]:
    """Yield ``n_docs`` documents, each a few worked problems separated by blank lines.

    Parameters
    ----------
    seed : the ``random.Random`` seed; the same seed yields the same documents.
    n_docs : number of documents.
    problems_per_doc : inclusive range of problems per document.
    """
    rng = random.Random(seed)
    for _ in range(n_docs):
        k = rng.randint(*problems_per_doc)
        yield "\n".join(rng.choice(GENERATORS)(rng) for _ in range(k))


def math_prompt(rng: random.Random) -> str:
    """One problem statement without its solution (for the held-out prompt suite)."""
    text = rng.choice(GENERATORS)(rng)
    return text.split("\nSolution:")[0].removeprefix("Problem: ")
