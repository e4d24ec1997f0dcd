"""GET /me: the name and scopes of the key a request carries.

Clients cannot read their scope anywhere else; the dashboard asks once on load to decide
what to show (order entry for ``trade``, the kill switch toggle for ``admin``). The server
still checks every route: hiding a control is a courtesy, not the protection.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from trading_api.deps import require_scope
from trading_api.keys import implied_scopes
from trading_api.schemas import READ_RESPONSES, Me

router = APIRouter(tags=["auth"], responses=READ_RESPONSES)


@router.get("/me", response_model=Me, summary="The calling API key: name and scopes")
async def me(record: Annotated[dict, Depends(require_scope("read"))]) -> Me:
    return Me(id=record["id"], name=record["name"], scope=record["scope"], scopes=implied_scopes(record["scope"]))
