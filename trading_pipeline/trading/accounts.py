"""Trading accounts: which broker each account trades at, its paper cash, its risk limits and
which scans' signals it takes, from an accounts file (``TRADING_ACCOUNTS_FILE``, see
``accounts.example.yaml``).

Without a file there is one implicit account, ``TRADING_ACCOUNT`` at ``TRADING_BROKER`` with
``risk.yaml``'s limits, taking every scan, and any other account name a person types (an order
from the CLI or the API) is opened at ``TRADING_BROKER`` as before. With a file, the accounts it
names are the only ones: an order for another name is refused with the list of known names.

Secrets never go into the file: an Alpaca account names the environment variables that hold its
keys (``api_key_env``, ``secret_key_env``); an IB account names its gateway (host, port, client
id). Everything is validated when the file is read; an error names the file, the account and
the key.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trading_pipeline.trading.risk import RiskLimits

ACCOUNT_NAME = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$"


class AccountsError(ValueError):
    """The accounts file cannot be used (unreadable, not YAML, or an invalid account)."""


class UnknownAccount(LookupError):
    """An account that the accounts file does not name."""


class AlpacaAccess(BaseModel):
    """Where an Alpaca account's keys are: the names of environment variables, never the keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    secret_key_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    paper: bool = True
    url_override: str | None = None


class IBAccess(BaseModel):
    """The TWS / IB Gateway session an IB account trades through."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=7497, gt=0, lt=65536)
    client_id: int = Field(default=17, ge=0)


class Account(BaseModel):
    """One account as the file gives it (``name`` is its key in the file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=ACCOUNT_NAME)
    broker: Literal["paper", "alpaca", "ib"] = "paper"
    description: str = ""
    starting_cash: Decimal = Field(default=Decimal("100000"), gt=0, le=Decimal("1e12"),
                                   description="Paper accounts: the cash the account opens with.")
    scans: Literal["all"] | tuple[str, ...] = Field(
        default="all", description="Which scans' signals become orders here: 'all', or a list of scan names ([] for none: manual orders only).")
    risk: dict[str, Any] = Field(default_factory=dict, description="Overrides of risk.yaml's limits for this account.")
    alpaca: AlpacaAccess | None = None
    ib: IBAccess | None = None

    @field_validator("starting_cash", mode="before")
    @classmethod
    def _cash(cls, v: Any) -> Any:
        return Decimal(str(v)) if isinstance(v, int | float) and not isinstance(v, bool) else v

    @field_validator("scans", mode="before")
    @classmethod
    def _scans(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not all(isinstance(s, str) and s for s in v):
                raise ValueError("scans: a list of scan names")
            return tuple(v)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Account:
        if self.broker != "alpaca" and self.alpaca is not None:
            raise ValueError(f"`alpaca:` settings on a {self.broker} account")
        if self.broker != "ib" and self.ib is not None:
            raise ValueError(f"`ib:` settings on a {self.broker} account")
        unknown = sorted(set(self.risk) - set(RiskLimits.model_fields))
        if unknown:
            raise ValueError(f"unknown risk limit(s) {unknown}; known: {sorted(RiskLimits.model_fields)}")
        return self

    def takes(self, scan: str) -> bool:
        """Whether this account trades ``scan``'s signals."""
        return self.scans == "all" or scan in self.scans

    def limits(self, base: RiskLimits) -> RiskLimits:
        """risk.yaml's limits with this account's overrides, validated as the file is."""
        return RiskLimits.model_validate({**base.model_dump(), **self.risk}) if self.risk else base

    def public(self) -> dict[str, Any]:
        """What may be shown (the API, the CLI): no keys, only the names of their variables."""
        d = self.model_dump(mode="json", exclude={"alpaca", "ib"})
        d["scans"] = "all" if self.scans == "all" else list(self.scans)
        if self.alpaca:
            d["alpaca"] = {"paper": self.alpaca.paper, "api_key_env": self.alpaca.api_key_env,
                           "keys_set": bool(os.environ.get(self.alpaca.api_key_env) and os.environ.get(self.alpaca.secret_key_env))}
        if self.ib:
            d["ib"] = self.ib.model_dump()
        return d


class Accounts:
    """The accounts in force: the file's, or the one implicit account (:func:`load`)."""

    def __init__(self, accounts: Iterable[Account], *, source: Path | None, default: str, broker: str = "paper") -> None:
        self.by_name = {a.name: a for a in accounts}
        self.source = source
        self.default = default
        self.broker = broker  # without a file: the broker of any account name

    @property
    def configured(self) -> bool:
        """Whether an accounts file names the accounts (else any name is allowed)."""
        return self.source is not None

    def names(self) -> list[str]:
        return sorted(self.by_name)

    def get(self, name: str) -> Account:
        """The account ``name``; without a file, an account at ``TRADING_BROKER`` for any name."""
        if name in self.by_name:
            return self.by_name[name]
        if self.configured:
            raise UnknownAccount(f"no account {name!r} in {self.source}; known: {', '.join(self.names()) or 'none'}")
        return Account(name=name, broker=self.broker)  # type: ignore[arg-type]

    def trading(self, scan: str) -> list[Account]:
        """The accounts that trade ``scan``'s signals, by name."""
        return [self.by_name[n] for n in self.names() if self.by_name[n].takes(scan)]


def read_file(path: Path | str) -> list[Account]:
    """Parse and validate an accounts file (``accounts:`` mapping name -> settings)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise AccountsError(f"{path}: cannot read the accounts file ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise AccountsError(f"{path}: not valid YAML ({exc})") from exc
    entries = data.get("accounts") if isinstance(data, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise AccountsError(f"{path}: expected `accounts:` mapping account names to their settings")
    out = []
    for name, body in entries.items():
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise AccountsError(f"{path}: account {name!r}: expected a mapping of settings")
        try:
            acct = Account.model_validate({**body, "name": str(name)})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'account'}: {e['msg']}" for e in exc.errors())
            raise AccountsError(f"{path}: account {name!r}: {problems}") from exc
        if acct.broker == "alpaca" and acct.alpaca is None:  # (the implicit account uses TRADING_ALPACA_*)
            raise AccountsError(f"{path}: account {name!r}: an alpaca account needs `alpaca: {{api_key_env: ..., "
                                "secret_key_env: ...}` (the names of the environment variables that hold its keys)")
        out.append(acct)
    return out


@functools.lru_cache(maxsize=8)
def _read_cached(path: str, _mtime_ns: int, _size: int) -> tuple[Account, ...]:
    return tuple(read_file(path))


def load(settings: Any) -> Accounts:
    """The accounts of ``settings``: ``TRADING_ACCOUNTS_FILE`` if set, else the implicit one. The
    file is read again when it changes (the API and the order job see an edit without a restart)."""
    path = getattr(settings, "accounts_file", None)
    if path:
        try:
            st = Path(path).stat()
        except OSError as exc:
            raise AccountsError(f"{path}: cannot read the accounts file ({exc.strerror or exc}); "
                                "TRADING_ACCOUNTS_FILE names it") from exc
        return Accounts(_read_cached(str(path), st.st_mtime_ns, st.st_size), source=Path(path), default=settings.account)
    implicit = Account(name=settings.account, broker=settings.broker)
    return Accounts([implicit], source=None, default=settings.account, broker=settings.broker)
