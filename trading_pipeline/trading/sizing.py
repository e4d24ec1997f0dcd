"""Position sizing: how many shares a signal is worth.

Two methods, chosen in config:

- ``fixed_fraction``: put ``fraction`` of equity into the position (10% of 100k at 50 ->
  200 shares). Simple, ignores volatility.
- ``atr``: risk ``risk_fraction`` of equity on a stop ``atr_multiple`` ATRs away (1% of 100k
  with ATR 2 and a 2-ATR stop -> 1000 / 4 = 250 shares): volatile symbols get fewer shares.

Both round DOWN to ``quantity_step`` (whole shares by default) and cap at ``max_fraction``
of equity, so sizing never proposes more than the account can carry; risk still checks.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ZERO = Decimal(0)


class Sizing(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["fixed_fraction", "atr"] = "fixed_fraction"
    fraction: Decimal = Field(default=Decimal("0.10"), gt=0, le=1)
    risk_fraction: Decimal = Field(default=Decimal("0.01"), gt=0, le=1)
    atr_multiple: Decimal = Field(default=Decimal("2"), gt=0)
    max_fraction: Decimal = Field(default=Decimal("0.25"), gt=0, le=1)
    quantity_step: Decimal = Field(default=Decimal("1"), gt=0)

    def _round(self, qty: Decimal) -> Decimal:
        steps = (qty / self.quantity_step).to_integral_value(rounding=ROUND_DOWN)
        return max(steps * self.quantity_step, ZERO)

    def quantity(self, *, equity: Decimal, price: Decimal, atr: Decimal | None = None) -> Decimal:
        """Shares to trade for one signal; 0 means "too small to trade"."""
        if price <= 0:
            raise ValueError(f"price must be > 0 to size an order, got {price}")
        if equity <= 0:
            return ZERO
        cap = equity * self.max_fraction / price
        if self.method == "fixed_fraction":
            qty = equity * self.fraction / price
        else:
            if atr is None or atr <= 0:
                raise ValueError("ATR sizing needs a positive ATR for the symbol (atr_14 in the signal)")
            qty = equity * self.risk_fraction / (atr * self.atr_multiple)
        return self._round(min(qty, cap))
