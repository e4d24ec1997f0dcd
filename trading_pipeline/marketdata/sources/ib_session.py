"""One connection to TWS / IB Gateway, shared by the IB bar source and the IB broker.

ib_async is asyncio-based and its blocking helpers spin the *calling thread's* event loop, which
fails inside a running loop (FastAPI) and ties the connection to one thread (Dagster ops). So
:class:`IBSession` owns a private event loop in a daemon thread; every IB call is a coroutine
submitted to that loop with ``run_coroutine_threadsafe`` and awaited with a timeout, serialised
per session. It lives in market data because the broker (trading) may import market data, never
the reverse. One TWS client id allows one connection: give each process its own ``client_id``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from ib_async import IB

log = logging.getLogger(__name__)

T = TypeVar("T")


def connection_help(host: str, port: int, client_id: int) -> str:
    return (
        f"cannot reach TWS/IB Gateway at {host}:{port} (client id {client_id}). Start TWS or "
        "IB Gateway, enable 'ActiveX and Socket Clients' in its API settings, and check "
        "TRADING_IB_HOST / TRADING_IB_PORT (TWS paper 7497, live 7496; Gateway paper 4002, "
        "live 4001) and that no other process uses TRADING_IB_CLIENT_ID"
    )


class IBUnavailable(ConnectionError):
    """TWS could not be reached or the connection was lost (retrying may help).

    ``dropped`` is True when an established connection broke mid-call: reconnecting at once
    is reasonable then, unlike after a refused connection or a timeout.
    """

    def __init__(self, message: str, *, dropped: bool = False) -> None:
        super().__init__(message)
        self.dropped = dropped


class IBSession:
    """One ib_async ``IB`` client driven by a private event loop in a daemon thread.

    Connects on demand (and reconnects after a drop) at the start of every :meth:`run`;
    after :meth:`close` the next ``run`` starts over. Use :meth:`shared` so that several
    brokers or sources in one process reuse one connection per client id (TWS refuses a
    second connection with the same id).
    """

    _registry: dict[tuple[str, int, int], IBSession] = {}
    _registry_lock = threading.Lock()

    @classmethod
    def shared(cls, host: str, port: int, client_id: int, **kwargs: Any) -> IBSession:
        """The process-wide session for this TWS and client id (the first caller's options win)."""
        with cls._registry_lock:
            key = (host, port, client_id)
            if key not in cls._registry:
                cls._registry[key] = cls(host, port, client_id, **kwargs)
            return cls._registry[key]

    def __init__(
        self,
        host: str,
        port: int,
        client_id: int,
        *,
        readonly: bool = False,
        timeout: float = 10.0,
    ) -> None:
        self.host, self.port, self.client_id = host, port, client_id
        self.readonly = readonly
        self.timeout = timeout
        self._ib: IB | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._serial: asyncio.Lock | None = None

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def main() -> None:
                    asyncio.set_event_loop(loop)  # eventkit looks the loop up through the policy
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=main, name="ib-session", daemon=True)
                self._thread.start()
                ready.wait(5)
                self._loop = loop
            return self._loop

    async def _connected(self) -> IB:
        if self._ib is None:
            self._ib = IB()
            self._ib.RaiseRequestErrors = True
        ib = self._ib
        if not ib.isConnected():
            if ib.client.isConnected():  # half-open after a drop: clear it first
                ib.disconnect()
            connect = asyncio.ensure_future(
                ib.connectAsync(
                    self.host,
                    self.port,
                    self.client_id,
                    timeout=self.timeout,
                    readonly=self.readonly,
                )
            )
            refused: list[str] = []

            def on_error(req_id: int, code: int, message: str, contract: Any) -> None:
                if (
                    code == 326
                ):  # client id already in use: TWS hangs up, don't wait for the timeout
                    refused.append(message)
                    connect.cancel()

            ib.errorEvent += on_error
            try:
                await connect
            except asyncio.CancelledError:
                if not refused:
                    raise
                raise IBUnavailable(
                    f"TWS at {self.host}:{self.port} refused client id {self.client_id}: "
                    f"{refused[0]} Set TRADING_IB_CLIENT_ID (or client_id=) to an id no other "
                    "process uses"
                ) from None
            except (OSError, TimeoutError) as e:
                raise IBUnavailable(
                    f"{connection_help(self.host, self.port, self.client_id)}: {e!r}"
                ) from e
            finally:
                ib.errorEvent -= on_error
            if not ib.isConnected():
                raise IBUnavailable(connection_help(self.host, self.port, self.client_id))
        return ib

    def run(self, fn: Callable[[IB], Awaitable[T]], timeout: float | None = None) -> T:
        """Connect if needed, then run ``await fn(ib)`` on the session loop; raise IBUnavailable
        when TWS cannot be reached, the connection drops, or ``timeout`` passes."""
        loop = self._ensure_loop()

        async def call() -> T:
            # one operation at a time: ib_async keys some requests by a fixed name
            # ("openOrders", "positions"), so overlapping calls would steal each other's replies
            if self._serial is None:
                self._serial = asyncio.Lock()
            async with self._serial:
                return await fn(await self._connected())

        budget = (timeout or self.timeout) + self.timeout  # connecting has its own timeout
        future = asyncio.run_coroutine_threadsafe(call(), loop)
        try:
            return future.result(budget)
        except (FutureTimeout, TimeoutError) as e:
            future.cancel()
            raise IBUnavailable(f"TWS at {self.host}:{self.port} did not answer in time") from e
        except ConnectionError as e:  # includes ib_async's "Socket disconnect" on pending requests
            if isinstance(e, IBUnavailable):
                raise
            raise IBUnavailable(
                f"connection to TWS at {self.host}:{self.port} lost: {e}", dropped=True
            ) from e

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None:
            return
        if self._ib is not None:
            ib = self._ib

            async def disconnect() -> None:
                ib.disconnect()

            try:
                asyncio.run_coroutine_threadsafe(disconnect(), loop).result(5)
            except Exception:  # closing must not fail the caller
                log.debug("ib disconnect failed", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(5)
        loop.close()
        self._loop = self._thread = self._ib = None
        self._serial = None


