"""Real components for the demo, the tests and the benchmarks (a registry on loopback)."""
