"""Several accounts: the accounts file, its errors, and what each account gets (its broker, its
paper cash, its risk limits, the scans it trades), with real ops stores and paper brokers."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from trading_pipeline.settings import PROJECT_DIR, Settings
from trading_pipeline.trading.accounts import AccountsError, UnknownAccount, read_file
from trading_pipeline.trading.accounts import load as load_accounts
from trading_pipeline.trading.brokers.base import BrokerError
from trading_pipeline.trading.brokers.paper import PaperBroker, PolarsBarFeed
from trading_pipeline.trading.services import (
    account_overview,
    make_broker,
    place_order,
    risk_engine,
)
from trading_pipeline.trading.store import OpsStore

from .conftest import daily_bars

FILE = """
accounts:
  main:
    broker: paper
    starting_cash: 50000
  small:
    broker: paper
    starting_cash: 5000.50
    scans: [crp_daily]
    risk: {max_order_notional: 1000, max_open_orders: 2}
  manual:
    scans: []
  live:
    broker: alpaca
    scans: [breakout_daily]
    alpaca: {api_key_env: TEST_LIVE_KEY, secret_key_env: TEST_LIVE_SECRET}
"""


def _settings(tmp_path: Path, text: str | None = FILE, **kw) -> Settings:
    path = None
    if text is not None:
        path = tmp_path / "accounts.yaml"
        path.write_text(text)
    return Settings(home=tmp_path / "home", accounts_file=path, risk_file=PROJECT_DIR / "risk.yaml", **kw)


def test_the_file_names_each_accounts_broker_cash_scans_and_overrides(tmp_path):
    accts = load_accounts(_settings(tmp_path))
    assert accts.configured and accts.names() == ["live", "main", "manual", "small"]
    assert accts.get("small").starting_cash == Decimal("5000.50")
    assert accts.get("main").starting_cash == Decimal("50000") and accts.get("main").scans == "all"
    assert [a.name for a in accts.trading("crp_daily")] == ["main", "small"]
    assert [a.name for a in accts.trading("breakout_daily")] == ["live", "main"]
    assert accts.trading("cpr_narrow_daily")[0].name == "main" and not accts.get("manual").takes("crp_daily")
    with pytest.raises(UnknownAccount, match=r"no account 'other' in .*accounts.yaml; known: live, main, manual, small"):
        accts.get("other")


def test_without_a_file_any_account_trades_at_trading_broker(tmp_path):
    accts = load_accounts(_settings(tmp_path, None, broker="ib", account="acct1"))
    assert not accts.configured and accts.names() == ["acct1"]
    assert accts.get("anything").broker == "ib" and accts.get("anything").takes("crp_daily")


@pytest.mark.parametrize(("text", "message"), [
    ("accounts: [a, b]", "expected `accounts:` mapping account names"),
    ("accounts: {}", "expected `accounts:` mapping"),
    ("accounts:\n  a: {broker: schwab}", r"account 'a': broker: Input should be 'paper', 'alpaca' or 'ib'"),
    ("accounts:\n  a: {starting_cash: -5}", "account 'a': starting_cash: Input should be greater than 0"),
    ("accounts:\n  a: {risk: {max_order_notionl: 5}}", r"unknown risk limit\(s\) \['max_order_notionl'\]"),
    ("accounts:\n  a: {broker: alpaca}", "an alpaca account needs `alpaca: {api_key_env"),
    ("accounts:\n  a: {broker: paper, ib: {port: 4001}}", "`ib:` settings on a paper account"),
    ("accounts:\n  a: {scans: [crp_daily, 3]}", "scans"),
    ("accounts:\n  'bad name!': {}", "account 'bad name!': name: String should match pattern"),
    ("accounts:\n  a: {api_key: abc}", "api_key: Extra inputs are not permitted"),
    ("accounts: [", "not valid YAML"),
])
def test_a_bad_file_names_the_file_the_account_and_the_key(tmp_path, text, message):
    path = tmp_path / "accounts.yaml"
    path.write_text(text)
    with pytest.raises(AccountsError, match=message) as err:
        read_file(path)
    assert str(path) in str(err.value)


def test_a_missing_file_says_which_setting_names_it(tmp_path):
    s = Settings(home=tmp_path, accounts_file=tmp_path / "nope.yaml")
    with pytest.raises(AccountsError, match="nope.yaml: cannot read the accounts file .*TRADING_ACCOUNTS_FILE"):
        load_accounts(s)


def test_an_edited_file_is_read_again(tmp_path):
    s = _settings(tmp_path)
    assert "extra" not in load_accounts(s).names()
    (tmp_path / "accounts.yaml").write_text(FILE + "  extra: {starting_cash: 7}\n")
    assert load_accounts(s).get("extra").starting_cash == 7


def test_paper_accounts_open_with_their_own_cash(tmp_path):
    s = _settings(tmp_path)
    store = OpsStore(f"sqlite:///{tmp_path / 'ops.sqlite'}")
    feed = PolarsBarFeed(daily_bars("AAA", [(10, 10, 10, 10)]))
    for name, cash in (("main", Decimal("50000")), ("small", Decimal("5000.50"))):
        broker = make_broker(s, store, name, feed=feed)
        assert isinstance(broker, PaperBroker) and broker.account().cash == cash
    with pytest.raises(UnknownAccount):
        make_broker(s, store, "nobody", feed=feed)


def test_an_alpaca_account_without_its_keys_names_the_variables(tmp_path, monkeypatch):
    monkeypatch.delenv("TEST_LIVE_KEY", raising=False)
    s = _settings(tmp_path)
    store = OpsStore(f"sqlite:///{tmp_path / 'ops.sqlite'}")
    with pytest.raises(BrokerError, match="account 'live' \\(alpaca\\) needs its keys in the environment variables "
                                          "TEST_LIVE_KEY and TEST_LIVE_SECRET"):
        make_broker(s, store, "live")


def test_each_account_is_checked_against_its_own_limits(tmp_path):
    s = _settings(tmp_path)
    store = OpsStore(f"sqlite:///{tmp_path / 'ops.sqlite'}")
    feed = PolarsBarFeed(daily_bars("AAA", [(100, 101, 99, 100)]))
    assert risk_engine(s, store, "small").limits.max_order_notional == 1000
    assert risk_engine(s, store, "main").limits.max_order_notional == 50000  # risk.yaml's
    common = dict(store=store, feed=feed, symbol="AAA", side="buy", quantity=Decimal("20"))
    small = place_order(broker=make_broker(s, store, "small", feed=feed), risk_engine=risk_engine(s, store, "small"),
                        account="small", **common)
    main = place_order(broker=make_broker(s, store, "main", feed=feed), risk_engine=risk_engine(s, store, "main"),
                       account="main", **common)
    assert small.result.action == "denied" and "max_order_notional" in small.result.reason
    assert main.result.action == "submitted"
    assert [e.account for e in store.list_risk_events()] == ["small"]


def test_the_overview_lists_file_accounts_and_store_only_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_LIVE_KEY", "k")
    monkeypatch.setenv("TEST_LIVE_SECRET", "s")
    s = _settings(tmp_path)
    store = OpsStore(f"sqlite:///{tmp_path / 'ops.sqlite'}")
    feed = PolarsBarFeed(daily_bars("AAA", [(100, 101, 99, 100)]))
    store.ensure_account("small", make_broker(s, store, "small", feed=feed).account().cash)  # as a first order does
    store.ensure_account("retired", Decimal("1000"))  # from before the file: still shown, takes nothing new
    view = account_overview(s, store, feed)
    rows = {a["name"]: a for a in view["accounts"]}
    assert view["source"].endswith("accounts.yaml") and view["default"] == "paper"
    assert set(rows) == {"live", "main", "manual", "small", "retired"}
    assert rows["small"]["cash"] == Decimal("5000.50") and rows["small"]["limits"]["max_order_notional"] == "1000"
    assert rows["main"]["cash"] is None  # no order yet: nothing in the ops store
    assert rows["retired"]["configured"] is False and rows["retired"]["broker"] is None
    assert rows["live"]["alpaca"] == {"paper": True, "api_key_env": "TEST_LIVE_KEY", "keys_set": True}
    assert "'s'" not in repr(rows["live"]) and "'k'" not in repr(rows["live"])  # never the keys themselves


def test_without_a_file_trading_broker_alpaca_uses_the_trading_alpaca_settings(tmp_path):
    s = _settings(tmp_path, None, broker="alpaca", alpaca_api_key="k", alpaca_secret_key="s")
    acct = load_accounts(s).get("paper")
    assert acct.broker == "alpaca" and acct.alpaca is None
    from trading_pipeline.trading.brokers.alpaca import AlpacaBroker

    assert isinstance(make_broker(s, OpsStore(f"sqlite:///{tmp_path / 'ops.sqlite'}"), "paper"), AlpacaBroker)
