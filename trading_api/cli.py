"""`trading api` (the server) and `trading api-key create [--scope read|trade|admin]|list|revoke`.

Wire into the `trading` app with ``register(app)``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from enum import StrEnum
from typing import Annotated, Any

import typer

from trading_pipeline.logs import FIELDS_ATTR

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


class KeyScope(StrEnum):
    """An API key's scope; each implies the ones before it (trading_api/keys.py)."""

    read = "read"
    trade = "trade"
    admin = "admin"


def _store() -> Any:
    from trading_pipeline.settings import get_settings
    from trading_pipeline.trading.store import OpsStore

    return OpsStore.from_settings(get_settings())


def _key_dict(k: Any) -> dict[str, Any]:
    return {
        "id": k.id,
        "name": k.name,
        "created_at": k.created_at.isoformat() if k.created_at else None,
        "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
        "scope": k.scope,
        "scopes": k.scopes,
    }


_SECRET = re.compile(r"(api_key=)[^&\s\"']+")


class RedactKeys(logging.Filter):
    """Keep API keys passed as ?api_key=... (WebSocket clients) out of the logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(_SECRET.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str) and "api_key=" in record.msg:
            record.msg = _SECRET.sub(r"\1***", record.msg)
        fields = getattr(record, FIELDS_ATTR, None)  # our structured events (trading_pipeline.logs)
        if isinstance(fields, dict):
            setattr(record, FIELDS_ATTR, {k: _SECRET.sub(r"\1***", v) if isinstance(v, str) else v for k, v in fields.items()})
        return True


def configure_logging(level: str = "info", log_format: str | None = None) -> None:
    """One line per event to stderr (uvicorn's own loggers included): key=value text, or
    JSON with the event's fields as keys when TRADING_LOG_FORMAT=json (``trading_pipeline.logs``)."""
    from trading_pipeline.logs import formatter
    from trading_pipeline.settings import get_settings

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format or get_settings().log_format))
    handler.addFilter(RedactKeys())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def register(app: typer.Typer) -> None:
    """Add `api` and `api-key` to the `trading` CLI."""
    key_app = typer.Typer(help="Create, list or revoke API keys (stored hashed in the ops store).", no_args_is_help=True)
    app.add_typer(key_app, name="api-key")

    @app.command("api")
    def api_cmd(
        host: Annotated[str | None, typer.Option(help="Bind address (default TRADING_API_HOST, 127.0.0.1).")] = None,
        port: Annotated[int | None, typer.Option(help="Port (default TRADING_API_PORT, 8000).")] = None,
        workers: Annotated[int, typer.Option(help="Worker processes (each reads the snapshot on its own).")] = 1,
        timeout_graceful_shutdown: Annotated[
            int, typer.Option("--timeout-graceful-shutdown", help="Seconds to wait for open connections on shutdown.")
        ] = 5,
        log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
        timeout_keep_alive: Annotated[
            int,
            typer.Option(
                "--timeout-keep-alive",
                help="Seconds an idle keep-alive connection stays open. Longer than clients' own idle "
                "expiry (httpx 5 s), so a client never reuses a connection the server is closing.",
            ),
        ] = 75,
    ) -> None:
        """Serve the REST + WebSocket API over the serving snapshot (never the warehouse)."""
        import uvicorn

        from trading_pipeline.settings import get_settings

        settings = get_settings()
        settings.ensure_dirs()
        configure_logging(log_level)
        if workers > 1:
            from trading_api.routers.metrics import prepare_multiprocess_dir

            prepare_multiprocess_dir(settings.home / "prometheus")
        uvicorn.run(
            "trading_api.main:app",
            host=host or settings.api_host,
            port=port or settings.api_port,
            workers=workers,
            timeout_graceful_shutdown=timeout_graceful_shutdown,
            timeout_keep_alive=timeout_keep_alive,
            access_log=False,  # the app logs one line per request with its request id
            log_config=None,
            log_level=log_level,
            proxy_headers=True,
        )

    @key_app.command("create")
    def create_cmd(
        name: Annotated[str, typer.Argument(help="Who or what the key is for, e.g. dashboard.")],
        scope: Annotated[
            KeyScope,
            typer.Option(
                help="read: GET routes and the live feed. trade: also place, modify and cancel orders. "
                "admin: also the kill switch. Default trade: what every key could do before scopes, "
                "so scripts and the README's dashboard key keep working; admin is only ever given on purpose.",
            ),
        ] = KeyScope.trade,
        json_out: JsonOpt = False,
    ) -> None:
        """Create a key and print it ONCE (only its hash is stored)."""
        from trading_api.keys import create_key

        try:
            record, key = create_key(_store(), name, scope.value)
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        if json_out:
            sys.stdout.write(json.dumps({**_key_dict(record), "key": key}) + "\n")
            return
        typer.echo(key)
        typer.echo(
            f"created API key {record.id} ({record.name}, scope {record.scope}); it is shown only now, store it safely",
            err=True,
        )

    @key_app.command("list")
    def list_cmd(
        all_keys: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
        json_out: JsonOpt = False,
    ) -> None:
        """Keys by id, name and scope (never the key itself)."""
        from trading_api.keys import list_keys

        keys = [_key_dict(k) for k in list_keys(_store(), include_revoked=all_keys)]
        if json_out:
            sys.stdout.write(json.dumps(keys) + "\n")
            return
        if not keys:
            typer.echo("no API keys: `trading api-key create NAME`")
            return
        from rich.table import Table

        from trading_pipeline.cli.output import console

        table = Table(title=f"API keys ({len(keys)})", title_justify="left")
        for col in ("id", "name", "scope", "created (UTC)", "state"):
            table.add_column(col, justify="right" if col == "id" else "left")
        for k in keys:
            state = f"revoked {k['revoked_at'][:19]}" if k["revoked_at"] else "[green]active[/]"
            table.add_row(str(k["id"]), k["name"], k["scope"], (k["created_at"] or "")[:19], state)
        console.print(table)

    @key_app.command("revoke")
    def revoke_cmd(
        key_id: Annotated[int, typer.Argument(help="The key's id (see `trading api-key list`).")],
        json_out: JsonOpt = False,
    ) -> None:
        """Revoke a key (takes effect within 5 s in running API workers)."""
        from trading_api.keys import revoke_key

        ok = revoke_key(_store(), key_id)
        if json_out:
            sys.stdout.write(json.dumps({"id": key_id, "revoked": ok}) + "\n")
        else:
            typer.echo(f"revoked key {key_id}" if ok else f"no active key {key_id}", err=not ok)
        if not ok:
            raise typer.Exit(1)
