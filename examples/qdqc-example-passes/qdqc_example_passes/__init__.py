"""Example qdqc pass plugin: each module registers passes (listed as entry points in pyproject.toml)."""
