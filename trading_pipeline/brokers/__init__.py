"""Brokers behind one protocol; see :mod:`trading_pipeline.brokers.base`."""
