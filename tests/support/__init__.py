"""What the tests and the benchmarks share and a user never installs: the registry variants, the
token server, the CA, the fault proxy, the sample images beyond the demo's, fast retry policies."""
