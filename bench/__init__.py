"""Benchmarks: ``make bench`` runs them and records the figures in docs/benchmarks.md."""
