"""Push OCI layout images with oras-py: ``oras_push.py LAYOUT REF TARGET [REF TARGET ...]``.

oras-py reads an OCI layout itself: ``oras.layout.NewLayout(path).push_to_registry(provider,
target, tag)`` uploads the blobs in dependency order, one at a time (the library has no
concurrency), each after a HEAD, then puts the manifest under the target's tag.
"""

from __future__ import annotations

import sys

import oras.layout
import oras.provider
from layout import parse_jobs


def main() -> None:
    layout_path, jobs = parse_jobs(sys.argv[1:])
    layout = oras.layout.NewLayout(str(layout_path))
    registry = oras.provider.Registry(jobs[0].host, insecure=True)
    for job in jobs:
        layout.push_to_registry(registry, job.target, tag=job.ref)


if __name__ == "__main__":
    main()
