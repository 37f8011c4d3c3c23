"""Hoist: push container images to any Docker/OCI registry, without a Docker daemon."""
