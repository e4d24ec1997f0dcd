"""GET and PUT /kill-switch: the same switch as `trading kill-switch on|off`, from the API.

Stored in the ops store's ``kill_switch`` row that the risk engine reads before every order
(trading_pipeline/trading/risk.py), so engaging it here refuses the next order from the API,
a signal run or the CLI alike. Reading it needs ``read``; setting it needs ``admin``, and the
key's name is recorded as ``api:<name>`` beside the CLI's ``cli:<user>``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from trading_api.deps import Store, require_scope
from trading_api.schemas import (
    FORBIDDEN,
    READ_RESPONSES,
    ErrorDetail,
    KillSwitchStatus,
    KillSwitchUpdate,
)
from trading_pipeline import logs
from trading_pipeline.trading.store.risk import KillSwitch

router = APIRouter(tags=["risk"], responses=READ_RESPONSES)
log = logs.get_logger(__name__)


def _status(ks: KillSwitch) -> KillSwitchStatus:
    return KillSwitchStatus(engaged=bool(ks.active), reason=ks.reason, updated_by=ks.updated_by, updated_at=ks.updated_at)


@router.get(
    "/kill-switch",
    response_model=KillSwitchStatus,
    dependencies=[Depends(require_scope("read"))],
    summary="The kill switch: engaged (no new orders anywhere) or not, why, by whom",
)
def get_kill_switch(store: Store) -> KillSwitchStatus:
    return _status(store.kill_switch())


@router.put(
    "/kill-switch",
    response_model=KillSwitchStatus,
    responses={**FORBIDDEN,
               400: {"model": ErrorDetail, "description": "The body could not be read as text (e.g. not UTF-8)."}},
    summary="Engage or release the kill switch (admin keys)",
    description="`{\"engaged\": true, \"reason\": \"...\"}` blocks every new order (API, signals, CLI) until "
    "released with `{\"engaged\": false, \"reason\": \"...\"}`. Orders already working stay at the broker: "
    "cancel them if they must not fill.",
)
def put_kill_switch(
    record: Annotated[dict, Depends(require_scope("admin"))], store: Store, body: KillSwitchUpdate
) -> KillSwitchStatus:
    ks = store.set_kill_switch(body.engaged, reason=body.reason, updated_by=f"api:{record['name']}"[:64])
    log.warning("kill_switch_set", engaged=body.engaged, reason=body.reason, key_id=record["id"], key_name=record["name"])
    return _status(ks)
