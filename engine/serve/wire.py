"""The Docker Engine API's wire format, as pure functions: API versions in paths, the
``X-Registry-Auth`` and ``X-Registry-Config`` headers, error bodies, and the ``_ping``,
``/version`` and ``/info`` payloads.

No I/O and no event loop: ``app`` (asyncio, aiohttp) calls these and the unit tests call them
directly.
"""

from __future__ import annotations

import fnmatch
import json
import os
import platform
import re
import socket
import struct
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from engine import reference
from engine.errors import (
    DigestReferenceError,
    HoistError,
    ImageNotFoundError,
    ImageSourceError,
    InvalidReferenceError,
    StoreError,
    UnauthorizedError,
    UsageError,
)
from engine.host import go_arch
from engine.push.compression import Compression
from engine.registry.auth_config import (
    AuthConfig,
    from_json,
    from_registry_auth,
    from_registry_config,
)
from engine.registry.login import login_domain
from engine.store import ImageDetails, ImageSummary
from engine.version import VERSION

#: The newest API version served: Docker 28.0's. Clients negotiate down to it from ``_ping``.
API_VERSION = "1.48"
#: The oldest version dockerd still accepts.
MIN_API_VERSION = "1.24"

_VERSIONED = re.compile(r"^/v(\d+\.\d+)(/.*)$")

JSONObject = dict[str, Any]


class WireError(Exception):
    """A request the API refuses: its HTTP status and Docker's one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def split_version(path: str) -> tuple[str | None, str]:
    """``/v1.47/images/json`` → ``("1.47", "/images/json")``; an unversioned path keeps None."""
    match = _VERSIONED.match(path)
    if match is None:
        return None, path
    return match.group(1), match.group(2)


def check_version(version: str | None) -> None:
    """Refuse, as dockerd does, a version outside ``MIN_API_VERSION``..``API_VERSION``."""
    if version is None:
        return
    if _ordinal(version) > _ordinal(API_VERSION):
        raise WireError(
            400,
            f"client version {version} is too new. Maximum supported API version is {API_VERSION}",
        )
    if _ordinal(version) < _ordinal(MIN_API_VERSION):
        raise WireError(
            400,
            f"client version {version} is too old. Minimum supported API version is "
            f"{MIN_API_VERSION}, please upgrade your client to a newer version",
        )


def _ordinal(version: str) -> tuple[int, int]:
    major, _, minor = version.partition(".")
    return int(major), int(minor)


def error_body(message: str) -> JSONObject:
    """Docker's error reply: ``{"message": …}``."""
    return {"message": message}


def decode_registry_auth(header: str | None) -> AuthConfig:
    """``X-Registry-Auth`` as credentials; a header that cannot be read is a 400."""
    try:
        return from_registry_auth(header)
    except ValueError as exc:
        raise WireError(400, str(exc)) from exc


def decode_registry_config(header: str | None) -> dict[str, AuthConfig]:
    """``X-Registry-Config`` as credentials by the domain a reference names (the docker CLI keys
    it as ``config.json`` does: Docker Hub's index URL, hosts with a scheme); a header that
    cannot be read is a 400."""
    try:
        by_key = from_registry_config(header)
    except ValueError as exc:
        raise WireError(400, str(exc)) from exc
    return {login_domain(key): auth for key, auth in by_key.items()}


def batch_refs(document: object) -> list[str]:
    """The images of ``POST /hoist/push``: its JSON body's ``Refs``, at least one; each is
    refused, if it must be, by its own push."""
    refs = document.get("Refs") if isinstance(document, dict) else None
    if not isinstance(refs, list) or not all(isinstance(ref, str) for ref in refs):
        raise WireError(400, 'the body must be a JSON object {"Refs": [image, …]}')
    if not refs:
        raise WireError(400, "Refs names no image to push")
    return refs


def auth_config_of(document: object) -> AuthConfig:
    """The JSON body of ``POST /auth`` (Docker's AuthConfig) as credentials."""
    try:
        return from_json(document, "JSON body")
    except ValueError as exc:
        raise WireError(400, str(exc)) from exc


def ping_headers() -> dict[str, str]:
    return {
        "Api-Version": API_VERSION,
        "Docker-Experimental": "false",
        "OSType": "linux",
        "Cache-Control": "no-cache, no-store, must-revalidate",
        "Pragma": "no-cache",
    }


def version_payload() -> JSONObject:
    """``GET /version``: what ``docker version`` prints as the server's part."""
    details = {
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "Os": "linux",
        "Arch": go_arch(),
        "GoVersion": f"python{platform.python_version()}",
        "GitCommit": "",
        "BuildTime": "",
        "KernelVersion": platform.release(),
        "Experimental": "false",
    }
    return {
        "Platform": {"Name": "Hoist"},
        "Components": [{"Name": "Engine", "Version": VERSION, "Details": details}],
        "Version": VERSION,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": f"python{platform.python_version()}",
        "Os": "linux",
        "Arch": go_arch(),
        "KernelVersion": platform.release(),
        "BuildTime": "",
    }


def info_payload(root: str, images: int) -> JSONObject:
    """``GET /info``, minimal: no containers, ever."""
    return {
        "ID": "",
        "Containers": 0,
        "ContainersRunning": 0,
        "ContainersPaused": 0,
        "ContainersStopped": 0,
        "Images": images,
        "Driver": "hoist",
        "DockerRootDir": root,
        "OSType": "linux",
        "OperatingSystem": "Hoist",
        "Architecture": platform.machine(),
        "KernelVersion": platform.release(),
        "NCPU": os.cpu_count() or 1,
        "Name": platform.node(),
        "ServerVersion": VERSION,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "ExperimentalBuild": False,
    }


def status_of(error: HoistError) -> int:
    """The HTTP status dockerd gives the same failure."""
    if isinstance(error, ImageNotFoundError):
        return 404
    if isinstance(error, InvalidReferenceError | DigestReferenceError | UsageError):
        return 400
    if isinstance(error, ImageSourceError):
        return 400
    if isinstance(error, UnauthorizedError):
        return 401
    if isinstance(error, StoreError) and str(error).startswith("conflict:"):
        return 409
    return 500


def peer_uid(sock: socket.socket | None) -> int | None:
    """The user id of the process at the other end of a unix socket; None for any other."""
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    uid: int = struct.unpack("3i", credentials)[1]
    return uid


def check_source(source: str, peer: int | None, *, all_tags: bool) -> str:
    """``from``: an absolute path, from a client of the daemon's own user (or root)."""
    if peer is None or peer not in (0, os.getuid()):
        raise WireError(
            403, "from is served only to clients of the daemon's own user, on its unix socket"
        )
    if all_tags:
        raise WireError(400, "from pushes one tag: it cannot go with --all-tags")
    if not os.path.isabs(source):
        raise WireError(400, f"from must be an absolute path, not {source!r}")
    return source


def compression_of(query: Mapping[str, str]) -> Compression:
    """Hoist's ``compression`` and ``compressionLevel`` (``hoist push --compression``); absent,
    Hoist's default, as for the docker CLI, which sends neither."""
    level = query.get("compressionLevel")
    if level is not None and not level.lstrip("-").isdigit():
        raise WireError(400, f"compressionLevel must be an integer, not {level!r}")
    try:
        return Compression.of(query.get("compression", "gzip"), int(level) if level else None)
    except UsageError as exc:
        raise WireError(400, str(exc)) from exc


def quiet_of(query: Mapping[str, str]) -> bool:
    """Hoist's ``quiet`` (``hoist push -q`` through the daemon): no layer's progress in the
    stream, which its client would not draw. Docker's clients send no such parameter."""
    return query.get("quiet", "") in ("1", "true")


def removal_record(line: str) -> dict[str, str]:
    """``Untagged: app:v1`` → ``{"Untagged": "app:v1"}`` (``DELETE /images/{name}``)."""
    key, _, value = line.partition(": ")
    return {key: value}


def push_reference(name: str, tag: str) -> str:
    """The reference ``POST /images/{name}/push?tag=`` asks for; a digest is refused (400)."""
    if "@" in name or ":" in tag:
        raise WireError(400, "cannot push a digest reference")
    try:
        reference.parse_normalized_named(name)
    except InvalidReferenceError as exc:
        raise WireError(400, str(exc)) from exc
    return f"{name}:{tag}" if tag else name


def familiar_name(ref: str) -> str:
    """``docker.io/library/app:v1`` as Docker names its repository: ``app``."""
    return reference.familiar_name(reference.parse_normalized_named(ref))


def reference_filters(filters: str | None) -> list[str]:
    """The ``reference`` patterns of ``GET /images/json?filters=`` (``docker images app``):
    ``{"reference": {"app": true}}``, or the older ``{"reference": ["app"]}``."""
    if not filters:
        return []
    try:
        document = json.loads(filters)
    except ValueError as exc:
        raise WireError(400, "invalid filter: not JSON") from exc
    if not isinstance(document, dict):
        raise WireError(400, "invalid filter: not a JSON object")
    found = document.get("reference") or []
    patterns = list(found) if isinstance(found, dict | list) else []
    if not all(isinstance(pattern, str) for pattern in patterns):
        raise WireError(400, "invalid filter: a reference pattern is not a string")
    return patterns


def _matches(repository: str, tag: str, patterns: list[str]) -> bool:
    # As dockerd: a pattern matches the familiar name, or the familiar name and tag.
    return not patterns or any(
        fnmatch.fnmatchcase(repository, p) or fnmatch.fnmatchcase(f"{repository}:{tag}", p)
        for p in patterns
    )


def images_json(rows: list[ImageSummary], patterns: list[str] | None = None) -> list[JSONObject]:
    """``GET /images/json``: one entry per image (its tags together), as dockerd groups them;
    with ``patterns``, only the tags that match them, and the images that keep one."""
    grouped: dict[str, JSONObject] = {}
    for row in rows:
        if not _matches(row.repository, row.tag, patterns or []):
            continue
        entry = grouped.setdefault(
            str(row.image_id),
            {
                "Id": str(row.image_id),
                "ParentId": "",
                "RepoTags": [],
                "RepoDigests": [],
                "Created": _unix_time(row.created),
                "Size": row.size,
                "SharedSize": -1,
                "VirtualSize": row.size,
                "Labels": {},
                "Containers": -1,
            },
        )
        if row.repository != "<none>" and row.tag != "<none>":
            entry["RepoTags"].append(f"{row.repository}:{row.tag}")
    return list(grouped.values())


def _unix_time(created: str | None) -> int:
    if not created:
        return 0
    try:
        return int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


def inspect_json(details: ImageDetails) -> JSONObject:
    """``GET /images/{name}/json``: what the stored config and references say."""
    try:
        config = json.loads(details.config)
    except ValueError:
        config = {}
    if not isinstance(config, dict):
        config = {}
    found = config.get("rootfs")
    rootfs: dict[str, Any] = found if isinstance(found, dict) else {}
    shown: JSONObject = {
        "Id": str(details.image_id),
        "RepoTags": list(details.tags),
        "RepoDigests": list(details.digests),
        "Parent": "",
        "Comment": config.get("comment", ""),
        "Created": config.get("created", ""),
        "DockerVersion": config.get("docker_version", ""),
        "Author": config.get("author", ""),
        "Config": config.get("config"),
        "Architecture": config.get("architecture", ""),
        "Os": config.get("os", ""),
        "Size": details.size,
        "GraphDriver": {"Name": "hoist", "Data": None},
        "RootFS": {"Type": rootfs.get("type", "layers"), "Layers": rootfs.get("diff_ids", [])},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    }
    if config.get("variant"):
        shown["Variant"] = config["variant"]
    return shown
