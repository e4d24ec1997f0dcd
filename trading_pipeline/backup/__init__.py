"""Backups that restore: the ops store (every order and fill) and the warehouse (a DuckLake),
with a manifest that lets a restore prove what it is about to put back.

Its own package, not part of ``trading/`` or ``marketdata/``: a backup is of the whole home,
both stores at once, and a restore swaps both or refuses before touching either. The CLI
(``trading backup create|restore``) and the ``backup`` Dagster job (defs/backup.py, schedule
``backup_nightly`` OFF by default) call what is exported here.

A backup is a folder (``manifest``)::

    manifest.json               tool version, ops-store revision, catalog version, counts, files
    ops/ops.sqlite              SQLite's online backup API (a consistent copy while writers run)
    ops/ops.pgdump              or pg_dump -Fc of a Postgres store, in an exported snapshot
    warehouse/catalog.sqlite    the lake's SQLite catalog, by the online backup API
    warehouse/catalog.pgdump    or pg_dump -Fc of a Postgres catalog, in an exported snapshot
    warehouse/data/...          every data/delete file the copied catalog references, by its
                                path under the lake's data path

One module per part: ``manifest`` (layout, errors, checksums, verify), ``ops_store`` and
``lake`` (each store's copy and staging), ``postgres`` (the pg binaries), ``files`` (SQLite
copies, WAL, clean-up), ``running`` (is the home running, stopping its writers) and ``home``
(create, restore, the nightly backup and its retention).

Restore refuses (:class:`Refused`, the CLI exits 2, nothing overwritten) a backup whose files
are missing or differ from their sha256, from a newer schema revision than this code knows, of
another kind than the home (a Postgres dump onto a SQLite home and back), and a running home
unless forced. It stages everything beside the targets, checks the staged copies open and hold
the manifest's row counts, then swaps: Postgres parts in one psql transaction each, then
renames. The restored store starts with the kill switch ON: fills the broker made after the
backup are not in it, so reconcile first.
"""

from trading_pipeline.backup.home import backup_dir, counts_of, create, nightly, restore
from trading_pipeline.backup.manifest import BackupError, Refused, sha256, verify
from trading_pipeline.backup.running import running, stop_writers

__all__ = ["BackupError", "Refused", "backup_dir", "counts_of", "create", "nightly", "restore", "running", "sha256",
           "stop_writers", "verify"]
