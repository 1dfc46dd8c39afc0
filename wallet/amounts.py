"""Money as integer minor units: parse and format decimal strings, never floats."""

from __future__ import annotations

import re

from wallet.encoding import AMOUNT_MAX
from wallet.errors import WalletError

_AMOUNT = re.compile(r"^(\d+)(?:\.(\d+))?$")


def parse_amount(text: str, decimals: int) -> int:
    """``"12.50"`` with 2 decimals → 1250; refuse more decimals than the currency has."""
    m = _AMOUNT.match(text.strip())
    if not m:
        raise WalletError(f"amount {text!r} is not a decimal number like 12.50")
    whole, frac = m.group(1), m.group(2) or ""
    if len(frac) > decimals:
        raise WalletError(
            f"amount {text!r} has {len(frac)} decimals; this currency has {decimals}"
        )
    minor = int(whole) * 10**decimals + int((frac or "0").ljust(decimals, "0") or "0")
    if not 0 < minor <= AMOUNT_MAX:
        raise WalletError(f"amount {text!r} must be more than 0 and less than 2^63 minor units")
    return minor


def format_amount(minor: int, decimals: int) -> str:
    """1250 with 2 decimals → ``"12.50"`` (negative amounts keep their sign)."""
    sign = "-" if minor < 0 else ""
    minor = abs(minor)
    if decimals == 0:
        return f"{sign}{minor}"
    q, r = divmod(minor, 10**decimals)
    return f"{sign}{q}.{r:0{decimals}d}"
