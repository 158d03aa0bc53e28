"""Alembic revisions of the call store schema (a package so installs ship them)."""
