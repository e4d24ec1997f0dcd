"""Files a restore stages and swaps: consistent SQLite copies, and cleaning up after itself."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path


def sqlite_copy(src: Path, dst: Path) -> None:
    """A consistent copy of a live SQLite file (the online backup API), self-contained (no WAL)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=60)
    target = sqlite3.connect(str(dst))
    try:
        source.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")
    finally:
        target.close()
        source.close()


def drop_wal(db: Path) -> None:
    """A replaced SQLite file must not meet the old file's WAL (SQLite would replay it onto the new one)."""
    for suffix in ("-wal", "-shm", "-journal"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def discard(*paths: Path | None) -> None:
    """Remove staged files or folders (a refused or failed restore leaves nothing behind)."""
    for p in paths:
        if p is None:
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
