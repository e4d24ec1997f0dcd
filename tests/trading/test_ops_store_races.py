"""Concurrent writers on the ops store's read-modify-write paths, on SQLite and Postgres.

SQLite serialises every write transaction (``BEGIN IMMEDIATE``), so check-then-write code
is safe there by construction. Postgres runs transactions side by side (READ COMMITTED):
a row that does not exist yet cannot be locked, and a row read without ``FOR UPDATE`` can
change before the write. Each test here failed on Postgres before the fix it names.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
import sqlalchemy as sa

from trading_pipeline.trading.brokers.base import BrokerError, BrokerFill, BrokerOrder
from trading_pipeline.trading.brokers.paper import PaperBroker
from trading_pipeline.trading.model import OrderRequest, OrderStatus, Side
from trading_pipeline.trading.orders import Order
from trading_pipeline.trading.store.schema import paper_orders

from .conftest import T0

D = Decimal
THREADS = 8


def together(fn, n: int = THREADS) -> list:
    """Run fn(i) in n threads released at the same instant; the results (or exceptions)."""
    barrier = threading.Barrier(n)

    def call(i):
        barrier.wait()
        try:
            return fn(i)
        except Exception as exc:  # noqa: BLE001 - the test asserts on it
            return exc

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(call, range(n)))


@pytest.mark.parametrize("attempt", range(3))
def test_first_write_of_a_cursor_and_the_kill_switch_from_many_writers(store, attempt) -> None:
    """set_cursor / set_kill_switch on a row nobody wrote yet (was: UPDATE 0 rows, then two INSERTs)."""
    results = together(lambda i: store.set_cursor(f"new-{attempt}", f"v{i}"))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert store.get_cursor(f"new-{attempt}") in {f"v{i}" for i in range(THREADS)}
    results = together(lambda i: store.set_kill_switch(i % 2 == 0, f"r{i}", "t"))
    assert not [r for r in results if isinstance(r, Exception)], results
    ks = store.kill_switch()
    assert ks.reason in {f"r{i}" for i in range(THREADS)} and ks.active == (int(ks.reason[1:]) % 2 == 0)
    with store.reading() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM kill_switch")).scalar() == 1


def test_first_fill_of_an_account_nobody_created(store) -> None:
    """Fills for one new account booked at once (was: two INSERTs of the account row)."""

    def book(i):
        coid = f"o{i}"
        store.insert_order(Order(coid, "fresh", "AAA", Side.BUY, D(1)))
        fill = BrokerFill(f"{coid}-f", coid, D(1), D(10), D(0), T0)
        return store.sync_from_broker(
            coid, BrokerOrder(coid, f"b{coid}", "AAA", Side.BUY, D(1), D(1), OrderStatus.FILLED, D(10), fills=(fill,))
        )

    results = together(book)
    assert not [r for r in results if isinstance(r, Exception)], results
    pf = store.portfolio("fresh")
    assert pf.quantity("AAA") == D(THREADS) and pf.cash == D(-10 * THREADS)
    assert store.rebuild_portfolio("fresh").cash == pf.cash


def test_paper_brokers_opening_one_new_account_together(store, feed, clock) -> None:
    """Several processes' PaperBroker on one new account (was: two INSERTs of paper_accounts)."""
    results = together(lambda i: PaperBroker(store, feed, account="acct", clock=clock))
    assert not [r for r in results if isinstance(r, Exception)], results
    with store.reading() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM paper_accounts")).scalar() == 1


@pytest.mark.parametrize("action", ["cancel", "modify"])
def test_cancel_or_modify_racing_a_fill_never_overwrites_it(store, broker, action) -> None:
    """A fill commits while a cancel/modify waits for the row: the cancel must see FILLED.

    Was: the paper broker read the row without a lock, so on Postgres the cancel's UPDATE
    waited for the fill's row lock and then overwrote FILLED with CANCELLED.
    """
    broker.submit(OrderRequest("o1", "acct", "AAA", Side.BUY, D(10)))
    outcome: list = []

    def act():
        try:
            outcome.append(broker.cancel("o1") if action == "cancel" else broker.modify("o1", quantity=D(20)))
        except BrokerError as exc:
            outcome.append(exc)

    with store.transaction() as conn:  # the fill (what process_bars writes), not yet committed
        conn.execute(
            paper_orders.update()
            .where(paper_orders.c.client_order_id == "o1")
            .values(status=OrderStatus.FILLED.value, filled_quantity=D(10), avg_fill_price=D(100))
        )
        t = threading.Thread(target=act)
        t.start()
        time.sleep(0.5)  # the cancel is now waiting on the row (Postgres) or the write lock (SQLite)
        assert t.is_alive()
    t.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], BrokerError), outcome
    assert "order is filled" in str(outcome[0])
    o = broker.order_status("o1")
    assert o.status == OrderStatus.FILLED and o.quantity == D(10)
