"""Brokers behind one protocol; see :mod:`trading_pipeline.trading.brokers.base`."""
