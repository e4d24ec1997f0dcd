"""Postgres through its own binaries (pg_dump, pg_restore, psql: Debian's postgresql-15 client):
the password goes in the environment, never in argv, and a restore is one transaction."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from trading_pipeline.backup.manifest import BackupError


def pg_binary(name: str) -> str:
    """pg_dump / pg_restore: on PATH, else the newest Debian /usr/lib/postgresql/<major>/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if candidates:
        return str(candidates[-1])
    raise BackupError(f"{name} not found (needed for a Postgres ops store or lake catalog)",
                      "install PostgreSQL's client binaries (Debian: apt-get install postgresql-client-15)")


def run(args: list[str], env: dict[str, str], what: str) -> None:
    """Run a pg binary; its stderr in a :class:`BackupError` when it fails."""
    proc = subprocess.run(args, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BackupError(f"{what} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")


def url_env(url: str) -> dict[str, str]:
    """libpq's environment for a SQLAlchemy Postgres URL: the password never appears in argv (ps)."""
    import sqlalchemy as sa

    u = sa.engine.make_url(url)
    env = {**os.environ, "PGDATABASE": u.database or "", "PGHOST": u.host or "", "PGUSER": u.username or ""}
    if u.port:
        env["PGPORT"] = str(u.port)
    if u.password:
        env["PGPASSWORD"] = str(u.password)
    return env


def conninfo_env(conninfo: str) -> dict[str, str]:
    """libpq's environment for a conninfo (``host=... dbname=...``): no password in argv."""
    from psycopg.conninfo import conninfo_to_dict

    env = dict(os.environ)
    for key, value in conninfo_to_dict(conninfo).items():
        env["PGDATABASE" if key == "dbname" else f"PG{key.upper()}"] = str(value)
    return env


def restore_dump(dump: Path, env: dict[str, str], drop_sql: str, after_sql: str, what: str) -> None:
    """Replace the tables a dump holds in one transaction (psql --single-transaction): first
    ``drop_sql`` (every table of ours, also those a newer revision added since the backup, which
    ``pg_restore --clean`` would leave behind), then the dump, then ``after_sql``. A failure
    rolls it all back: the database is as it was."""
    script = subprocess.run([pg_binary("pg_restore"), "--no-owner", "--no-privileges", "-f", "-", str(dump)],
                            env=env, capture_output=True, text=True)
    if script.returncode != 0:
        raise BackupError(f"pg_restore could not read {dump}: {script.stderr.strip()[-2000:]}")
    fd, name = tempfile.mkstemp(prefix="trading-restore-", suffix=".sql")  # mode 600: it holds the rows
    sql = Path(name)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{drop_sql}\n{script.stdout}\n{after_sql}\n")
        run([pg_binary("psql"), "-X", "-q", "--single-transaction", "-v", "ON_ERROR_STOP=1", "-f", str(sql)],
            env, f"{what} (rolled back: nothing changed)")
    finally:
        sql.unlink(missing_ok=True)


def drop_tables_sql(like: str | None = None, names: list[str] | None = None) -> str:
    """SQL dropping the tables of the current schema named ``names`` (our own, fixed names) or
    matching ``like`` (DuckLake's ``ducklake_%``), whichever of them exist."""
    cond = f"tablename LIKE '{like}'" if like else "tablename IN (" + ", ".join(f"'{n}'" for n in names or []) + ")"
    return ("DO $$ DECLARE r record; BEGIN FOR r IN SELECT tablename FROM pg_tables WHERE schemaname = "
            f"current_schema() AND {cond} LOOP EXECUTE format('DROP TABLE %I CASCADE', r.tablename); END LOOP; END $$;")
