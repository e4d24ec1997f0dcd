"""Issue 20.6 on the newcomer's path: a manual order placed on a demo home fills.

The bundled sample market ends on 2013-03-01. Manual orders (CLI and API) used to be stamped
with today's wall clock, so no stored bar ever started after them and `trading order sync`
left them "accepted" for good. The paper broker's clock on a sample or file-loaded home is
the market's (the newest stored bar): the order waits for the next session, and once that
session is loaded `trading order sync` fills it at the session's open.

Everything is real: `trading demo` (a short one: history from 2013-02-01, two synthetic
symbols), `trading order submit`, `trading ingest` and `trading order sync` as subprocesses on
the same TRADING_HOME; the API order goes through the real app (FastAPI's TestClient).
"""

from __future__ import annotations

import json
import os
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[2]
TRADING = str(ROOT / ".venv" / "bin" / "trading")
# GOOG's next session after the sample's last one (2013-03-01), as a user would load it
NEXT_SESSION = "Date,Open,High,Low,Close,Volume\n2013-03-04,805.30,822.84,805.00,821.50,2775600\n"


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("demo") / "home"
    env = _env(home)
    res = subprocess.run([TRADING, "demo", "--since", "2013-02-01", "--symbols", "2", "--json"], env=env,
                         capture_output=True, text=True, timeout=540)
    assert res.returncode == 0, res.stderr[-3000:]
    return home


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRADING_", "DAGSTER_"))}
    return {**env, "TRADING_HOME": str(home), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            "GX_ANALYTICS_ENABLED": "false"}


def trading(home: Path, *args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([TRADING, *args], env=_env(home), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"trading {' '.join(args)}: {res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    return res


def trading_json(home: Path, *args: str):
    return json.loads(trading(home, *args, "--json").stdout)


def test_manual_cli_and_api_orders_on_a_demo_home_fill_at_the_next_session(demo_home, tmp_path):
    from fastapi.testclient import TestClient

    from trading_api.keys import create_key
    from trading_api.main import create_app
    from trading_pipeline.settings import PROJECT_DIR, Settings
    from trading_pipeline.trading.store import OpsStore

    home = demo_home
    cli_order = trading_json(home, "order", "submit", "GOOG", "buy", "5")
    assert cli_order["action"] == "submitted" and cli_order["order"]["status"] == "accepted", cli_order
    cli_id = cli_order["order"]["client_order_id"]

    # the same through the API (the dashboard's path), in the same home
    settings = Settings(home=home, risk_file=PROJECT_DIR / "risk.yaml", broker="paper")
    store = OpsStore(settings.ops_store_url)
    _record, key = create_key(store, "tests")
    store.close()
    with TestClient(create_app(settings)) as client:
        r = client.post("/orders", json={"symbol": "GOOG", "side": "buy", "quantity": 3},
                        headers={"X-API-Key": key})
        assert r.status_code in (200, 201), r.text
        assert r.json()["order"]["status"] == "accepted", r.json()
        api_id = r.json()["order"]["client_order_id"]
    assert api_id != cli_id

    # no bar after the sample's last session yet: both wait, and sync says why
    synced = trading_json(home, "order", "sync")
    assert synced["changed"] == []
    said = trading(home, "order", "sync").stdout
    assert "wait for a bar after 2013-03-01" in said, said

    def goog_held() -> Decimal:  # the demo's own signal orders may hold GOOG already
        [paper] = [a for a in trading_json(home, "portfolio") if a["account"] == "paper"]
        held = {p["symbol"]: Decimal(str(p["quantity"])) for p in paper["positions"]}
        return held.get("GOOG", Decimal(0))

    before = goog_held()
    # the next session arrives; the next sync fills both at its open
    f = tmp_path / "GOOG.csv"
    f.write_text(NEXT_SESSION)
    trading(home, "ingest", str(f))
    changed = {o["client_order_id"]: o for o in trading_json(home, "order", "sync")["changed"]}
    assert set(changed) >= {cli_id, api_id}, changed
    for oid, qty in ((cli_id, 5), (api_id, 3)):
        o = changed[oid]
        assert o["status"] == "filled" and Decimal(str(o["filled_quantity"])) == qty, o
        assert Decimal(str(o["avg_fill_price"])) == Decimal("805.30"), o
    # the position grew by what filled: our 5 + 3, plus any of the demo's own GOOG orders that
    # were working and filled on the same bar
    filled = sum((Decimal(str(o["filled_quantity"])) * (1 if o["side"] == "buy" else -1)
                  for o in changed.values() if o["symbol"] == "GOOG" and o["status"] == "filled"), Decimal(0))
    assert filled >= 8 and goog_held() == before + filled
