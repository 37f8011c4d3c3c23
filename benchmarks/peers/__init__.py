"""The peers' push drivers: small scripts, each pushing OCI layouts with one client library (or
curl) as its documentation shows. They run in the harness's own virtual environment
(``benchmarks.venv``), import nothing of Hoist's, and are timed as whole processes."""
