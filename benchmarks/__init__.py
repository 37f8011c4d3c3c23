"""Benchmarks: Hoist against its peers on a real registry; run by hand, see README.md."""
