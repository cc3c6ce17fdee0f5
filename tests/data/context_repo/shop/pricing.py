"""Prices and discounts."""

TAX_RATE = 0.2


def apply_discount(amount: float, percent: float) -> float:
    """Return amount reduced by percent (0-100)."""
    return amount * (1 - percent / 100)


def with_tax(amount: float, rate: float = TAX_RATE) -> float:
    """Add the sales tax to a net amount."""
    return amount * (1 + rate)
