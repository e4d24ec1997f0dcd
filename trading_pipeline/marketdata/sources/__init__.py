"""Market-data sources behind one protocol; see :mod:`trading_pipeline.marketdata.sources.base`."""
