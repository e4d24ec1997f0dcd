"""A throwaway PostgreSQL cluster for tests: Debian's server binaries, loopback only.

``make test`` installs them (``make postgres``: apt-get ``postgresql-15``). The cluster
lives in a fresh directory under the system temp dir, listens on a unix socket there and
on a free TCP port on 127.0.0.1, trusts every local connection (superuser ``postgres``),
runs with ``fsync=off`` and is stopped (``pg_ctl stop -m fast``) and deleted afterwards.

initdb and postgres refuse to run as root: as root they run as the ``postgres`` OS user
(which the Debian package creates) through ``runuser``, and the directory is chowned to it.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

SUPERUSER = "postgres"
MISSING = (
    "PostgreSQL server binaries not found (looked for /usr/lib/postgresql/*/bin/initdb). "
    "`make test` installs them (`make postgres`: apt-get install postgresql-15); "
    "or run: sudo apt-get install -y postgresql-15"
)


def find_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/<major>/bin holding initdb, pg_ctl and postgres."""
    found = []
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        bindir = Path(initdb).parent
        major = bindir.parent.name
        if (bindir / "pg_ctl").exists() and (bindir / "postgres").exists() and major.isdigit():
            found.append((int(major), bindir))
    return max(found)[1] if found else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgCluster:
    bindir: Path
    root: Path  # everything lives here: data/, sock/, server.log
    port: int = 0
    host: str = "127.0.0.1"
    user: str = SUPERUSER
    _as_postgres: list[str] = field(default_factory=list)  # ["runuser", "-u", "postgres", "--"] as root
    _names: itertools.count = field(default_factory=itertools.count)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def sockdir(self) -> Path:
        return self.root / "sock"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    # ---- URLs and connections --------------------------------------------------------------
    def url(self, db: str, driver: str = "psycopg") -> str:
        """SQLAlchemy URL over TCP, e.g. ``postgresql+psycopg://postgres@127.0.0.1:PORT/DB``."""
        return f"postgresql+{driver}://{self.user}@{self.host}:{self.port}/{db}"

    def dsn(self, db: str) -> str:
        """libpq connection string for psycopg.connect."""
        return f"host={self.host} port={self.port} user={self.user} dbname={db}"

    def connect(self, db: str = "postgres", autocommit: bool = True):
        import psycopg

        return psycopg.connect(self.dsn(db), autocommit=autocommit)

    def create_database(self, prefix: str = "t", template: str | None = None) -> str:
        """A new, empty (or copied from ``template``) database with a unique name."""
        name = f"{prefix}_{next(self._names)}_{uuid.uuid4().hex[:8]}"
        tmpl = f' TEMPLATE "{template}"' if template else ""
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"{tmpl}')
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, closing whatever sessions tests left open on it."""
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # ---- lifecycle -------------------------------------------------------------------------
    def _run(self, *args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [*self._as_postgres, *args], cwd=self.root, capture_output=True, text=True, timeout=120
        )
        if proc.returncode != 0:
            log = self.log.read_text()[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{log}")
        return proc

    def init(self) -> None:
        self.sockdir.mkdir()
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam(SUPERUSER)
            except KeyError:
                raise RuntimeError(
                    "running as root, and initdb/postgres refuse root: they run as the `postgres` "
                    "OS user, which does not exist. " + MISSING
                ) from None
            for p in (self.root, self.sockdir):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            self._as_postgres = ["runuser", "-u", SUPERUSER, "--"]
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", SUPERUSER, "-A", "trust",
            "-E", "UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions",
        )

    def start(self, attempts: int = 3) -> None:
        for attempt in range(attempts):
            self.port = free_port()
            opts = (
                f"-k {self.sockdir} -p {self.port} -c listen_addresses={self.host} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            try:
                self._run(str(self.bindir / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(self.datadir),
                          "-l", str(self.log), "-o", opts)
                return
            except RuntimeError:
                if attempt == attempts - 1:  # the port was taken between choosing and binding it?
                    raise

    def stop(self) -> None:
        if (self.datadir / "postmaster.pid").exists():
            self._run(str(self.bindir / "pg_ctl"), "stop", "-w", "-D", str(self.datadir), "-m", "fast")

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster() -> PgCluster:
    """Create and start a cluster; the caller stops it (``stop()``) and ``remove()``s it."""
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError(MISSING)
    # not under pytest's basetemp: that is mode 0700 and root's, unreachable for `postgres`
    root = Path(tempfile.mkdtemp(prefix="trading-pg-"))
    cluster = PgCluster(bindir, root)
    try:
        cluster.init()
        cluster.start()
    except BaseException:
        try:
            cluster.stop()
        finally:
            cluster.remove()
        raise
    return cluster
