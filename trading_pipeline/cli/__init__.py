"""The `trading` command-line interface (Typer + Rich)."""
