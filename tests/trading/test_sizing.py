"""Position sizing from a signal."""

from __future__ import annotations

from decimal import Decimal

import pytest

from trading_pipeline.trading.sizing import Sizing

D = Decimal


def test_fixed_fraction_rounds_down() -> None:
    s = Sizing(method="fixed_fraction", fraction=D("0.10"))
    assert s.quantity(equity=D(100000), price=D(50)) == D(200)
    assert s.quantity(equity=D(100000), price=D(3000)) == D(3)  # 3.33 -> 3


def test_atr_sizing_gives_volatile_symbols_fewer_shares() -> None:
    s = Sizing(method="atr", risk_fraction=D("0.01"), atr_multiple=D(2), max_fraction=D(1))
    assert s.quantity(equity=D(100000), price=D(50), atr=D(2)) == D(250)
    assert s.quantity(equity=D(100000), price=D(50), atr=D(5)) == D(100)
    with pytest.raises(ValueError, match="needs a positive ATR"):
        s.quantity(equity=D(100000), price=D(50))


def test_cap_and_steps() -> None:
    s = Sizing(method="atr", risk_fraction=D("0.05"), atr_multiple=D(1), max_fraction=D("0.2"))
    # uncapped 5000 / 0.1 = 50000 shares; capped at 20% of equity / price = 400
    assert s.quantity(equity=D(100000), price=D(50), atr=D("0.1")) == D(400)
    fx = Sizing(fraction=D("0.1"), quantity_step=D("0.01"))
    assert fx.quantity(equity=D(1000), price=D(3)) == D("33.33")
    assert Sizing().quantity(equity=D(0), price=D(10)) == 0
    with pytest.raises(ValueError):
        Sizing().quantity(equity=D(1), price=D(0))
