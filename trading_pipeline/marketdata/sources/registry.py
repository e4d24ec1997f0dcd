"""Pick a bar source by name (``TRADING_DATA_SOURCE`` or an ingest run's config)."""

from __future__ import annotations

from trading_pipeline.marketdata.sources.base import BarSource, SourceError
from trading_pipeline.settings import Settings

SOURCES = ("sample", "synthetic", "files", "alpaca", "ib")


def make_source(
    name: str,
    settings: Settings,
    *,
    path: str | None = None,
    synthetic_symbols: int | None = None,
    file_options: dict | None = None,
) -> BarSource:
    if name == "sample":
        from trading_pipeline.marketdata.sources.sample import SampleBarSource

        return SampleBarSource(settings.sample_symbols if synthetic_symbols is None else synthetic_symbols)
    if name == "synthetic":
        from trading_pipeline.marketdata.sources.synthetic import SyntheticBarSource

        return SyntheticBarSource(synthetic_symbols or settings.sample_symbols or 20)
    if name == "files":
        if not path:
            raise SourceError("the files source needs a path: `trading ingest PATH`")
        from trading_pipeline.marketdata.sources.files import FileBarSource

        return FileBarSource(path, **(file_options or {}))
    if name == "alpaca":
        from trading_pipeline.marketdata.sources.alpaca import AlpacaBarSource

        return AlpacaBarSource.from_settings(settings)
    if name == "ib":
        from trading_pipeline.marketdata.sources.ib import IBBarSource

        return IBBarSource.from_settings(settings)
    raise SourceError(f"unknown data source {name!r}; choose one of {', '.join(SOURCES)}")


# ---- a home's data source ------------------------------------------------------------
#
# A home's bars come from one place: the bundled sample (the demo), a market-data source
# (alpaca, ib), or files the user loaded (`trading ingest`). The first load records it in
# TRADING_HOME/source.json; a scan then fetches from that source only (from none for a
# file-loaded home: it scans the stored bars), so the sample never mixes into a user's home.

HOME_SOURCE_FILE = "source.json"
FETCHING = ("sample", "synthetic", "alpaca", "ib")


def recorded_source(settings: Settings) -> str | None:
    import json

    try:
        return json.loads((settings.home / HOME_SOURCE_FILE).read_text())["source"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record_source(settings: Settings, name: str) -> bool:
    """Record ``name`` as the home's source unless one is recorded already; True if written."""
    import json
    import os
    from datetime import UTC, datetime

    if recorded_source(settings) is not None:
        return False
    settings.home.mkdir(parents=True, exist_ok=True)
    tmp = settings.home / f".{HOME_SOURCE_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps({"source": name, "recorded_at": datetime.now(UTC).isoformat(timespec="seconds")}))
    os.replace(tmp, settings.home / HOME_SOURCE_FILE)
    return True


def source_of_label(label: str) -> str:
    """The source of a stored bar's ``source`` label (``sample:1d``, ``alpaca:1d``, ``AAPL.csv``)."""
    head = label.split(":", 1)[0] if ":" in label else ""
    return head if head in FETCHING else "files"


def home_source(settings: Settings, stored_labels: list[str] | None = None) -> tuple[str | None, str]:
    """(the source a scan of this home fetches from, or None for its stored bars only; why).

    In order: an explicit ``TRADING_DATA_SOURCE``; the source recorded at the home's first
    load; for a home loaded before sources were recorded, the source its stored bars name;
    for an empty home, the default (the bundled sample: the demo).
    """
    if "data_source" in settings.model_fields_set:
        name = settings.data_source
        return (None if name == "files" else name), f"TRADING_DATA_SOURCE={name}"
    rec = recorded_source(settings)
    if rec is not None:
        return (None if rec == "files" else rec), f"this home's source ({rec}, recorded at its first load)"
    if stored_labels:
        found = {source_of_label(x) for x in stored_labels}
        if found == {"sample"} or found == {"synthetic"}:
            name = found.pop()
            return name, f"the source of this home's bars ({name})"
        return None, "this home's bars were loaded from files"
    return settings.data_source, f"the default source ({settings.data_source}) for an empty home"
