"""What the tests and the benchmarks share and a user never installs: the registry variants, the
token server, the CA, the fault proxy, the sample images beyond the demo's, fast retry policies,
a private dockerd and ``hoist serve`` for the docker CLI to push through, and that CLI's output read
back."""
