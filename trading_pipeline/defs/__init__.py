"""Dagster wiring only: assets, checks, jobs, schedules and sensors by domain.

``trading_pipeline.definitions`` autoloads this folder; the domain logic these modules call
lives in plain modules beside it (``ingest``, ``quality``, ``risk``, ``brokers``...).
"""
