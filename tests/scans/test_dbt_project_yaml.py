"""The dbt project's YAML says what it means.

A description with a comma in a flow mapping (``{name: macd, description: MACD(close, 12,
26, 9)}``) silently becomes extra keys, some of them integers; dbt then cannot read back its
own partial-parse file ("int is not allowed for map key") and re-parses the whole project on
every build, seconds per scan.
"""

from pathlib import Path

import yaml

from trading_pipeline.settings import DBT_PROJECT_DIR

COLUMN_KEYS = {"name", "description", "data_tests", "tests", "data_type", "meta", "config", "constraints", "quote"}


def _columns():
    for path in sorted(Path(DBT_PROJECT_DIR, "models").rglob("*.yml")):
        doc = yaml.safe_load(path.read_text()) or {}
        tables = doc.get("models", []) + [t for s in doc.get("sources", []) for t in s.get("tables", [])]
        for table in tables:
            for column in table.get("columns", []):
                yield path.name, table["name"], column


def test_every_column_has_only_known_keys() -> None:
    seen = 0
    for file, table, column in _columns():
        seen += 1
        unknown = [k for k in column if k not in COLUMN_KEYS]
        assert not unknown, f"{file}: {table}.{column.get('name')} has keys {unknown!r} (quote its description)"
    assert seen > 30  # the project's columns were read


def test_the_check_sees_an_unquoted_comma() -> None:
    column = yaml.safe_load("{name: macd, description: talib.MACD(close, 12, 26, 9) line.}")
    assert set(column) - COLUMN_KEYS == {12, 26, "9) line."}
