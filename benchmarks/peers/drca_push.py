"""Push OCI layout images with docker-registry-client-async:
``drca_push.py LAYOUT REF TARGET [REF TARGET ...]``.

The library is asyncio (aiohttp): an image's blobs go concurrently (``asyncio.gather``, with
aiohttp's default connection pool of 100), each a ``head_blob`` and, if missing, ``post_blob``
then ``put_blob_upload_from_disk`` streaming the file (aiofiles); then ``put_manifest``. Images
go one after the other.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiofiles
from docker_registry_client_async import (
    DockerRegistryClientAsync,
    FormattedSHA256,
    ImageName,
    Manifest,
)
from layout import Blob, Job, parse_jobs, read_image

PROTOCOL = "http"


async def push_blob(client: DockerRegistryClientAsync, name: ImageName, blob: Blob) -> None:
    digest = FormattedSHA256.parse(blob.digest)
    if (await client.head_blob(name, digest, protocol=PROTOCOL)).result:
        return
    upload = await client.post_blob(name, protocol=PROTOCOL)
    async with aiofiles.open(blob.path, "rb") as file:
        await client.put_blob_upload_from_disk(upload.location, digest, file)


async def push_image(client: DockerRegistryClientAsync, layout: Path, job: Job) -> None:
    image = read_image(layout, job.ref)
    name = ImageName.parse(job.target)
    await asyncio.gather(*(push_blob(client, name, blob) for blob in image.blobs))
    manifest = Manifest(image.manifest, media_type=image.media_type)
    await client.put_manifest(name, manifest, protocol=PROTOCOL)


async def main() -> None:
    layout, jobs = parse_jobs(sys.argv[1:])
    async with DockerRegistryClientAsync() as client:
        for job in jobs:
            await push_image(client, layout, job)


if __name__ == "__main__":
    asyncio.run(main())
