"""Filtered, paginated reads of one snapshot table (signals, alerts, scan results)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trading_api.snapshot import SnapshotReader, clean


@dataclass
class Filters:
    """WHERE clauses over columns that exist; a filter on a missing column matches nothing."""

    columns: tuple[str, ...]
    where: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)

    def add(self, column: str, op: str, value: Any) -> None:
        if value is None:
            return
        if column not in self.columns:
            self.where.append("FALSE")
            return
        self.where.append(f'"{column}" {op} ?')
        self.params.append(value)

    def sql(self) -> str:
        return (" WHERE " + " AND ".join(self.where)) if self.where else ""


def page(
    reader: SnapshotReader,
    table: str,
    build: Any,
    order: list[str],
    limit: int,
    offset: int,
) -> tuple[int, list[dict[str, Any]]]:
    """(total, rows) of ``table`` filtered by ``build(Filters)``; (0, []) if not published.

    One query returns the page and the filtered total (``count(*) OVER ()``); results are
    cached per snapshot generation (see :meth:`SnapshotReader.cached`).
    """

    def compute(gen: Any, cur: Any) -> tuple[int, list[dict[str, Any]]]:
        if not gen.has(table):
            return 0, []
        cols = gen.columns[table]
        f = Filters(cols)
        build(f)
        order_sql = ", ".join(o for o in order if o.split()[0].strip('"') in cols) or "1"
        rel = cur.sql(
            f"SELECT *, count(*) OVER () AS __total FROM {table}{f.sql()} ORDER BY {order_sql} LIMIT ? OFFSET ?",
            params=[*f.params, limit, offset],
        )
        names = rel.columns
        raw = rel.fetchall()
        if raw:
            total = raw[0][-1]
        else:
            total = cur.sql(f"SELECT count(*) FROM {table}{f.sql()}", params=f.params).fetchall()[0][0]
        rows = [{c: clean(v) for c, v in zip(names[:-1], r[:-1], strict=True)} for r in raw]
        return int(total), rows

    probe = Filters(tuple())
    build(_Recorder(probe))
    return reader.cached(("page", table, tuple(probe.params), tuple(order), limit, offset), compute)


class _Recorder:
    """Stands in for Filters to capture the filter values (the cache key) without a schema."""

    def __init__(self, target: Filters) -> None:
        self.target = target

    def add(self, column: str, op: str, value: Any) -> None:
        self.target.params.append((column, op, value))
