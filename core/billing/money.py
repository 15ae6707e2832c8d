"""Money: the one place dollars are parsed, rounded and formatted.

imagegate keeps every amount as integer micro-dollars (1 USD = 1_000_000 micro-dollars); unit
prices and markups are :class:`~decimal.Decimal` on the way. There is one rounding rule, used for
every conversion to micro-dollars: **half up** (a tie goes away from zero: 2.5 -> 3, -2.5 -> -3),
applied once, at the end of a computation, never to intermediate values.

- :func:`to_micros` rounds an exact amount *in micro-dollars* to a whole micro-dollar;
- :func:`parse_usd` reads an amount of dollars an operator typed ("25", "12.50", 0.3) strictly:
  finite, not negative, at most :data:`MAX_USD`, rounded half up to the micro-dollar;
- :func:`format_usd` writes micro-dollars as an exact decimal string with six places
  (``38700`` -> ``"0.038700"``), which is how every API answer and report shows money.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation, localcontext

MICROS_PER_USD = 1_000_000
MAX_USD = Decimal(1_000_000_000_000)
"""The largest amount an operator may set (a trillion dollars): far above any budget, far below
what a 64-bit micro-dollar column holds."""

EXACT = Context(prec=60, rounding=ROUND_HALF_UP)
"""Arithmetic context for money: more digits than any price has, so nothing rounds before the
final :func:`to_micros`."""


class MoneyError(ValueError):
    """An amount of money that cannot be taken (not a number, infinite, negative, too large)."""


def to_micros(amount_micros: Decimal) -> int:
    """An exact amount in micro-dollars, rounded half up to a whole micro-dollar."""
    return int(amount_micros.quantize(Decimal(1), rounding=ROUND_HALF_UP, context=EXACT))


def parse_decimal(value: object, *, what: str = "an amount") -> Decimal:
    """A finite, non-negative decimal from a string, an int, a Decimal or a float (through its
    shortest repr: 0.3 is 0.3, not 0.2999...). Booleans are refused."""
    if isinstance(value, bool):
        raise MoneyError(f"{what} must be a number, not a boolean")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, float):
        result = Decimal(repr(value))
    elif isinstance(value, int | str):
        try:
            result = Decimal(str(value).strip())
        except InvalidOperation:
            raise MoneyError(f"{what} must be a number, got {value!r}: not a decimal number") from None
    else:
        raise MoneyError(f"{what} must be a number, got {value!r}")
    if not result.is_finite() or result < 0:
        raise MoneyError(f"{what} must be a finite, non-negative number, got {value!r}")
    return result


def parse_usd(value: object, *, what: str = "the amount") -> int:
    """Dollars as integer micro-dollars, strictly (see the module docstring)."""
    dollars = parse_decimal(value, what=what)
    if dollars > MAX_USD:
        raise MoneyError(f"{what} must be at most {MAX_USD} dollars, got {value!r}")
    with localcontext(EXACT):
        return to_micros(dollars * MICROS_PER_USD)


def usd_to_micros(dollars: Decimal) -> int:
    """An exact dollar amount (a price table threshold) in micro-dollars, rounded half up."""
    with localcontext(EXACT):
        return to_micros(dollars * MICROS_PER_USD)


def format_usd(micros: int) -> str:
    """Micro-dollars as an exact decimal string with six places: 38700 -> "0.038700"."""
    sign = "-" if micros < 0 else ""
    whole, fraction = divmod(abs(micros), MICROS_PER_USD)
    return f"{sign}{whole}.{fraction:06d}"


def format_usd_brief(micros: int) -> str:
    """Micro-dollars as an exact decimal string without the zeros past the cents that say nothing:
    150000 -> "0.15", 38700 -> "0.0387", 12_000_000 -> "12.00" (for chart axes; never rounded)."""
    exact = format_usd(micros)
    whole, fraction = exact.split(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"
