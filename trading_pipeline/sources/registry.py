"""Pick a bar source by name (``TRADING_DATA_SOURCE`` or an ingest run's config)."""

from __future__ import annotations

from trading_pipeline.settings import Settings
from trading_pipeline.sources.base import BarSource, SourceError

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
        from trading_pipeline.sources.sample import SampleBarSource

        return SampleBarSource(settings.sample_symbols if synthetic_symbols is None else synthetic_symbols)
    if name == "synthetic":
        from trading_pipeline.sources.synthetic import SyntheticBarSource

        return SyntheticBarSource(synthetic_symbols or settings.sample_symbols or 20)
    if name == "files":
        if not path:
            raise SourceError("the files source needs a path: `trading ingest PATH`")
        from trading_pipeline.sources.files import FileBarSource

        return FileBarSource(path, **(file_options or {}))
    if name == "alpaca":
        from trading_pipeline.sources.alpaca import AlpacaBarSource

        return AlpacaBarSource.from_settings(settings)
    if name == "ib":
        from trading_pipeline.sources.ib import IBBarSource

        return IBBarSource.from_settings(settings)
    raise SourceError(f"unknown data source {name!r}; choose one of {', '.join(SOURCES)}")
