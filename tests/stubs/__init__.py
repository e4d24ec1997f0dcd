"""Local protocol-level stubs of external services (Alpaca, ...) for tests; 127.0.0.1 only."""
