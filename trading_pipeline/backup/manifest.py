"""What a backup is: its folder layout, its manifest (every file with size and sha256), the errors
a backup or restore raises, and :func:`verify`, which every restore runs first."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

FORMAT = 1
MANIFEST = "manifest.json"
OPS_SQLITE, OPS_PGDUMP = "ops/ops.sqlite", "ops/ops.pgdump"
CATALOG, CATALOG_PGDUMP, DATA = "warehouse/catalog.sqlite", "warehouse/catalog.pgdump", "warehouse/data"
COUNTED = ("orders", "fills", "positions")  # the ops tables whose rows the manifest counts
BAR_TABLES = ("raw.bars_daily", "raw.bars_intraday")

Step = Callable[[str], None]  # told what is happening (progress bars, run logs)


class BackupError(RuntimeError):
    """A backup or restore could not be done; ``hint`` says what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


class Refused(BackupError):
    """A restore refused before anything was overwritten (the CLI's exit code 2)."""


def noop(_: str) -> None:
    pass


def tool_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("trading-pipeline")
    except PackageNotFoundError:  # pragma: no cover - run from a checkout without install
        return "0+unknown"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path) -> dict[str, Any]:
    """The backup's manifest, once every file it lists is there with its size and sha256;
    :class:`Refused` otherwise (saying which file)."""
    path = path.expanduser().resolve()
    if not (path / MANIFEST).is_file():
        raise Refused(f"{path} is not a backup: no {MANIFEST}", "give the folder `trading backup create` wrote")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files = manifest["files"]
        fmt = int(manifest["format"])
        if not all(isinstance(f["path"], str) and isinstance(f["bytes"], int) and isinstance(f["sha256"], str)
                   for f in files):
            raise TypeError("a file entry lacks its path, bytes or sha256")
    except (ValueError, KeyError, TypeError) as exc:
        raise Refused(f"{path / MANIFEST} is unreadable ({exc})", "the backup is damaged: use another one") from None
    if fmt > FORMAT:
        raise Refused(f"the backup's format {fmt} is newer than this release reads ({FORMAT})",
                      f"restore it with trading-pipeline {manifest.get('tool_version')} or newer")
    missing = [f["path"] for f in files if not (path / f["path"]).is_file()]
    if missing:
        raise Refused(f"the backup is incomplete: {len(missing)} file(s) missing, e.g. {missing[0]}",
                      "nothing was restored; use another backup")
    for f in files:
        p = path / f["path"]
        if p.stat().st_size != f["bytes"] or sha256(p) != f["sha256"]:
            raise Refused(f"the backup is corrupt: {f['path']} does not match its sha256 in the manifest",
                          "nothing was restored; use another backup")
    return manifest
