"""DuckDB's extensions from the installed ``duckdb-extension-*`` wheels, never a download.

DuckDB looks for an extension at ``<extension_directory>/v<version>/<platform>/<name>.duckdb_extension``
and, by default, downloads it when it is missing. The project pins the extension wheels beside
duckdb (``uv.lock``), lays their files out in that shape once (symlinks into the wheels, under the
environment's prefix), and opens every connection with that directory and auto-install off, so
``ducklake:``, ``sqlite``, ``postgres`` and ``httpfs`` load offline, and a missing one fails with a
clear error instead of trying the network.

A folder of extensions the user provides (``TRADING_DUCKDB_EXTENSIONS``, ``Settings.duckdb_extensions``:
an air-gapped mirror, a build of their own) is used as it is instead: nothing is linked into it,
and an extension missing there is an error naming the file, not a fall-back to the wheels.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from functools import lru_cache
from pathlib import Path

import duckdb

# wheel module suffix -> the file name DuckDB loads (the sqlite extension's canonical name)
EXTENSIONS: dict[str, str] = {
    "ducklake": "ducklake",
    "sqlite": "sqlite_scanner",
    "postgres": "postgres_scanner",
    "httpfs": "httpfs",
    "json": "json",
    "icu": "icu",
    "parquet": "parquet",
}
PLATFORM = "linux_amd64"


class ExtensionMissing(RuntimeError):
    """An extension the warehouse needs is not installed (its wheel is missing)."""


def version_tag() -> str:
    return f"v{duckdb.__version__}"


@lru_cache(maxsize=1)
def _platform() -> str:
    try:
        return duckdb.sql("PRAGMA platform").fetchone()[0]  # type: ignore[index]
    except duckdb.Error:
        return PLATFORM


def _wheel_file(name: str) -> Path | None:
    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "extensions" / version_tag() / f"{name}.duckdb_extension"
    return path if path.exists() else None


def chosen_directory() -> Path | None:
    """The extension folder the user provides (``TRADING_DUCKDB_EXTENSIONS``), else None (the wheels)."""
    from trading_pipeline.settings import get_settings  # like warehouse._settings_data_path

    return get_settings().duckdb_extensions


def _candidates() -> list[Path]:
    out = [Path(sys.prefix) / "share" / "trading-pipeline" / "duckdb_extensions"]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    out.append(cache / "trading-pipeline" / "duckdb_extensions")
    return out


def extension_directory() -> Path:
    """The folder DuckDB loads extensions from: the user's (:func:`chosen_directory`), as it is,
    or the wheels' files laid out (on first use; idempotent, safe to race)."""
    return chosen_directory() or _wheel_directory()


@lru_cache(maxsize=1)
def _wheel_directory() -> Path:
    errors = []
    for base in _candidates():
        target = base / version_tag() / _platform()
        try:
            target.mkdir(parents=True, exist_ok=True)
            for wheel_name, file_name in EXTENSIONS.items():
                src = _wheel_file(wheel_name)
                dst = target / f"{file_name}.duckdb_extension"
                if src is None:
                    continue
                if dst.is_symlink() and dst.resolve() == src.resolve():
                    continue
                tmp = target / f".{file_name}.{os.getpid()}.tmp"
                tmp.unlink(missing_ok=True)
                tmp.symlink_to(src)
                os.replace(tmp, dst)
            return base
        except OSError as exc:
            errors.append(f"{base}: {exc}")
    raise ExtensionMissing("cannot lay out DuckDB's extensions in any of: " + "; ".join(errors))


def require(name: str) -> None:
    """A clear error when extension ``name`` is not installed: not in the user's folder, or (by
    default) its wheel is missing."""
    chosen = chosen_directory()
    if chosen is not None:
        path = chosen / version_tag() / _platform() / f"{EXTENSIONS.get(name, name)}.duckdb_extension"
        if not path.is_file():
            raise ExtensionMissing(
                f"DuckDB's {name!r} extension is not in the extension folder TRADING_DUCKDB_EXTENSIONS="
                f"{chosen} (no {path}); put the file for duckdb {duckdb.__version__} there, or unset "
                "TRADING_DUCKDB_EXTENSIONS to use the locked duckdb-extension-* wheels"
            )
        return
    if _wheel_file(name) is None:
        raise ExtensionMissing(
            f"DuckDB's {name!r} extension is not installed (no duckdb-extension-{name} "
            f"{duckdb.__version__} wheel in this environment); run `make env` (uv sync) to install "
            "the locked dependencies"
        )


def config() -> dict[str, str]:
    """``duckdb.connect(config=...)`` entries: the wheel extensions, never a download."""
    return {
        "extension_directory": str(extension_directory()),
        "autoinstall_known_extensions": "false",
        "autoload_known_extensions": "true",
    }


def connect(database: str = ":memory:", **kwargs) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect`` with :func:`config` merged into ``config``."""
    cfg = {**config(), **kwargs.pop("config", {})}
    return duckdb.connect(database, config=cfg, **kwargs)
