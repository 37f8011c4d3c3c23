"""Push OCI layout images with python-dxf: ``dxf_push.py LAYOUT REF TARGET [REF TARGET ...]``.

python-dxf is synchronous (requests) and has no concurrency of its own, so blobs go one after
the other, as its README shows: ``push_blob(filename)`` (which hashes the file, then HEADs the
blob and uploads it only if missing), then ``set_manifest(tag, manifest)``.
"""

from __future__ import annotations

import sys

from dxf import DXF
from layout import parse_jobs, read_image


def main() -> None:
    layout, jobs = parse_jobs(sys.argv[1:])
    for job in jobs:
        image = read_image(layout, job.ref)
        # insecure: plain http, as the loopback registry serves.
        with DXF(job.host, job.repository, insecure=True) as dxf:
            for blob in image.blobs:
                dxf.push_blob(str(blob.path))
            dxf.set_manifest(job.tag, image.manifest.decode())


if __name__ == "__main__":
    main()
