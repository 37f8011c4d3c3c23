"""Bad input at the CLI: each case gives one ``Error: …`` line, exit code 1, and no manifest.

Every case runs ``hoist`` as a user does (a subprocess with its own store) and checks the same
three things: exactly one line on stderr, starting with ``Error: `` and naming the problem (no
traceback, no log noise); exit code 1; and, for a push, that the registry has no manifest under
the target tag, asked of the registry itself with skopeo. A blob may have been committed before the
failure was found; only manifests make an image visible, so only they are checked.

Inputs are damaged the way they are in the wild: archives cut short or overwritten with garbage,
layers whose bytes no longer match their digests, entries that try to leave the archive, blobs
missing from a layout, malformed JSON in every document Hoist reads, registries that answer with
HTML or garbage, oversized manifests and malformed references, sizes and platforms.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import re
import subprocess
import tarfile
import threading
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.clients import Hoist, Skopeo
from tests.support.proxy import Fault, FaultPlan, running_proxy
from tests.support.registry import LocalRegistry
from tests.support.sample import (
    DockerArchiveStyle,
    LayerSpec,
    make_config,
    write_docker_archive,
    write_layer_tar,
    write_oci_archive,
    write_oci_index_layout,
    write_oci_layout,
)

pytestmark = pytest.mark.integration

KiB = 1024
MiB = 1024 * KiB
#: Small layers: every case here fails long before size matters.
LAYERS = [LayerSpec(size=96 * KiB, seed=501), LayerSpec(size=48 * KiB, seed=502)]
#: The two ways a source reaches Hoist: ``load -i SOURCE`` and ``push --from SOURCE``.
COMMANDS = ["load", "push"]
#: Where a gzip member keeps its mtime: bytes no checksum of the member covers.
GZIP_MTIME_OFFSET = 4


# --- running and judging ------------------------------------------------------------------------

Result = subprocess.CompletedProcess[str]


@pytest.fixture
def target(registry: LocalRegistry, request: pytest.FixtureRequest) -> str:
    """A tag of its own in the registry for each test (and each parameter)."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    return f"{registry.host}/bad-input/{name}:v1"


def assert_one_error(result: Result, *fragments: str) -> str:
    """Exit code 1 and exactly one ``Error: …`` line on stderr that contains every fragment."""
    assert result.returncode == 1, f"exit {result.returncode}\n{result.stderr}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    line = lines[0]
    assert line.startswith("Error: "), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def run_source(hoist: Hoist, command: str, source: Path, target: str, *extra: str) -> Result:
    """``load -i SOURCE`` or ``push --from SOURCE TARGET`` (no retries), not checked."""
    if command == "load":
        return hoist("load", "-i", str(source), *extra, check=False)
    return hoist(
        "push",
        "--from",
        str(source),
        "--max-upload-attempts",
        "1",
        "--progress",
        "plain",
        *extra,
        target,
        check=False,
    )


def assert_nothing_came_of_it(hoist_root: Path, skopeo: Skopeo, command: str, target: str) -> None:
    """A failed load stored no image config and no layer, not even a staged one; a failed push
    put no manifest."""
    if command == "push":
        assert not skopeo.manifest_exists(target), f"{target} reached the registry"
        return
    for directory in ("imagedb/content/sha256", "layerdb/sha256"):
        left = sorted(p.name for p in (hoist_root / directory).glob("*"))
        assert left == [], f"{directory} holds {left}"


# --- building damaged sources -------------------------------------------------------------------


def _info(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.type = kind
    info.mode = 0o644
    return info


#: A tar entry to write: a regular file with its bytes, or a link (bytes None) to ``linkname``.
Entry = tuple[tarfile.TarInfo, bytes | None]


def file_entry(name: str, data: bytes) -> Entry:
    return _info(name, len(data)), data


def link_entry(name: str, target: str, *, hard: bool = False) -> Entry:
    info = _info(name, kind=tarfile.LNKTYPE if hard else tarfile.SYMTYPE)
    info.linkname = target
    return info, None


def write_tar(path: Path, entries: Sequence[Entry]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def docker_archive_entries(
    tmp_path: Path,
    repo_tags: Sequence[str],
    *,
    config: bytes | None = None,
    manifest: bytes | None = None,
    layer_names: Sequence[str] | None = None,
) -> list[Entry]:
    """The entries of a classic ``docker save`` archive, any part of which may be replaced."""
    work = tmp_path / "layers"
    work.mkdir(exist_ok=True)
    tars = [work / f"{spec.seed}.tar" for spec in LAYERS]
    diff_ids = [write_layer_tar(path, spec) for path, spec in zip(tars, LAYERS, strict=True)]
    config = config if config is not None else make_config(diff_ids)
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    names = list(layer_names or [f"layer{i}/layer.tar" for i in range(len(tars))])
    entries = [file_entry(config_name, config)]
    entries += [file_entry(name, path.read_bytes()) for name, path in zip(names, tars, strict=True)]
    listing = [{"Config": config_name, "RepoTags": list(repo_tags), "Layers": names}]
    entries.append(file_entry("manifest.json", manifest or json.dumps(listing).encode()))
    return entries


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def find_member(archive: Path, predicate: Callable[[tarfile.TarInfo], bool]) -> tarfile.TarInfo:
    """The first regular member of ``archive`` that ``predicate`` accepts."""
    with tarfile.open(archive) as tar:
        return next(m for m in tar if m.isreg() and predicate(m))


def blob_path(layout: Path, digest: str) -> Path:
    algorithm, _, hex_ = digest.partition(":")
    return layout / "blobs" / algorithm / hex_


def layout_parts(layout: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``index.json`` and the (only) image manifest of an OCI layout, as JSON."""
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(blob_path(layout, index["manifests"][0]["digest"]).read_bytes())
    return index, manifest


def write_blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blob_path(layout, digest).write_bytes(data)
    return digest, len(data)


def replace_manifest(layout: Path, manifest_bytes: bytes) -> None:
    """Point the layout's only index entry at new manifest bytes (stored as a proper blob)."""
    index, _ = layout_parts(layout)
    digest, size = write_blob(layout, manifest_bytes)
    index["manifests"][0].update(digest=digest, size=size)
    (layout / "index.json").write_text(json.dumps(index))


def replace_config(layout: Path, config_bytes: bytes) -> None:
    """Give the layout's manifest new config bytes; the manifest and index follow."""
    _, manifest = layout_parts(layout)
    digest, size = write_blob(layout, config_bytes)
    manifest["config"].update(digest=digest, size=size)
    replace_manifest(layout, json.dumps(manifest).encode())


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """A sound OCI layout of one image tagged ``v1``; tests damage it."""
    path = tmp_path / "layout"
    write_oci_layout(path, LAYERS, ref_name="v1")
    return path


# --- archives cut short or overwritten ----------------------------------------------------------


def _truncated(tmp_path: Path, kind: str, target: str) -> Path:
    if kind == "oci-archive":
        write_oci_layout(tmp_path / "layout", LAYERS, ref_name=target)
        write_oci_archive(tmp_path / "whole.tar", tmp_path / "layout")
    else:
        write_docker_archive(tmp_path / "whole.tar", LAYERS, [target], tmp_path / "work")
    data = (tmp_path / "whole.tar").read_bytes()
    if kind == "docker-archive.gz":
        data = gzip.compress(data, compresslevel=1)
    cut = tmp_path / "cut.tar"
    # Past the first entries' headers, well before the end: tar and gzip both end too early.
    cut.write_bytes(data[: len(data) * 3 // 5])
    return cut


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", ["docker-archive", "docker-archive.gz", "oci-archive"])
def test_truncated_archive(
    hoist: Hoist,
    hoist_root: Path,
    skopeo: Skopeo,
    tmp_path: Path,
    target: str,
    kind: str,
    command: str,
) -> None:
    archive = _truncated(tmp_path, kind, target)

    result = run_source(hoist, command, archive, target)

    assert_one_error(result, str(archive), "truncated")
    assert_nothing_came_of_it(hoist_root, skopeo, command, target)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("head", [b"", b"\x1f\x8b\x08\x00"], ids=["garbage", "gzip-garbage"])
def test_corrupt_archive(
    hoist: Hoist,
    hoist_root: Path,
    skopeo: Skopeo,
    tmp_path: Path,
    target: str,
    head: bytes,
    command: str,
) -> None:
    archive = tmp_path / "garbage.tar"
    archive.write_bytes(head + random.Random(5).randbytes(200 * KiB))

    result = run_source(hoist, command, archive, target)

    assert_one_error(result, str(archive))
    assert_nothing_came_of_it(hoist_root, skopeo, command, target)


# --- content that does not match its digest -----------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("style", ["legacy", "blobs"])
def test_docker_archive_layer_does_not_match_its_diff_id(
    hoist: Hoist,
    hoist_root: Path,
    skopeo: Skopeo,
    tmp_path: Path,
    target: str,
    style: DockerArchiveStyle,
    command: str,
) -> None:
    archive = tmp_path / "app.tar"
    image = write_docker_archive(archive, LAYERS, [target], tmp_path / "work", style=style)
    last_layer = image.layer_paths[-1].stat().st_size
    member = find_member(archive, lambda m: m.size == last_layer and "json" not in m.name)
    flip_byte(archive, member.offset_data + member.size // 2)

    result = run_source(hoist, command, archive, target)

    assert_one_error(result, "digest mismatch", str(image.diff_ids[-1]))
    assert_nothing_came_of_it(hoist_root, skopeo, command, target)


@pytest.mark.parametrize("command", COMMANDS)
def test_docker_archive_config_lists_other_diff_ids(
    hoist: Hoist, hoist_root: Path, skopeo: Skopeo, tmp_path: Path, target: str, command: str
) -> None:
    # The first diff ID names a layer that is not in the archive; the config itself is sound.
    stranger = write_layer_tar(tmp_path / "stranger.tar", LayerSpec(size=4 * KiB, seed=599))
    second = write_layer_tar(tmp_path / "second.tar", LAYERS[1])
    config = make_config([stranger, second])
    archive = write_tar(
        tmp_path / "app.tar", docker_archive_entries(tmp_path, [target], config=config)
    )

    result = run_source(hoist, command, archive, target)

    assert_one_error(result, "digest mismatch", str(stranger))
    assert_nothing_came_of_it(hoist_root, skopeo, command, target)


@pytest.mark.parametrize(
    ("command", "part"),
    [("push", "layer"), ("push", "config"), ("push", "manifest"), ("load", "layer")],
)
def test_oci_blob_does_not_match_its_digest(
    hoist: Hoist,
    hoist_root: Path,
    skopeo: Skopeo,
    layout: Path,
    target: str,
    command: str,
    part: str,
) -> None:
    index, manifest = layout_parts(layout)
    digest = {
        "layer": manifest["layers"][-1]["digest"],
        "config": manifest["config"]["digest"],
        "manifest": index["manifests"][0]["digest"],
    }[part]
    victim = blob_path(layout, digest)
    # A layer keeps its size and still gunzips to its diff ID: only its digest can tell.
    flip_byte(victim, GZIP_MTIME_OFFSET if part == "layer" else victim.stat().st_size // 2)

    result = run_source(hoist, command, layout, target)

    assert_one_error(result, "digest mismatch", digest)
    assert_nothing_came_of_it(hoist_root, skopeo, command, target)


def test_a_big_oci_layer_that_does_not_match_its_digest_is_never_committed(
    hoist: Hoist, hoist_root: Path, skopeo: Skopeo, tmp_path: Path, target: str
) -> None:
    """A layer too big to go in its commit's body streams from its file in a PATCH, hashed as it
    goes; the mismatch is found before the commit."""
    layout = tmp_path / "layout"
    write_oci_layout(layout, [LayerSpec(size=3 << 20, seed=503)], ref_name="v1")
    _, manifest = layout_parts(layout)
    digest = manifest["layers"][0]["digest"]
    flip_byte(blob_path(layout, digest), GZIP_MTIME_OFFSET)

    result = run_source(hoist, "push", layout, target)

    assert_one_error(result, "digest mismatch", digest)
    assert_nothing_came_of_it(hoist_root, skopeo, "push", target)


# --- entries that try to leave the archive ------------------------------------------------------

UNSAFE_ENTRIES: dict[str, Entry] = {
    "dotdot": file_entry("../escaped.txt", b"out of the archive\n"),
    "dotdot-inside": file_entry("layer0/../../escaped.txt", b"out of the archive\n"),
    "absolute": file_entry("/tmp/hoist-escaped.txt", b"out of the archive\n"),
    "symlink-up": link_entry("evil", "../../escaped.txt"),
    "symlink-absolute": link_entry("evil", "/etc/passwd"),
    "hardlink-absolute": link_entry("evil", "/etc/passwd", hard=True),
    "hardlink-up": link_entry("evil", "../escaped.txt", hard=True),
}


@pytest.mark.parametrize("entry", UNSAFE_ENTRIES.values(), ids=UNSAFE_ENTRIES.keys())
def test_archive_entry_that_escapes_is_refused_by_load(
    hoist: Hoist, hoist_root: Path, skopeo: Skopeo, tmp_path: Path, target: str, entry: Entry
) -> None:
    archive = write_tar(tmp_path / "evil.tar", [*docker_archive_entries(tmp_path, [target]), entry])

    result = run_source(hoist, "load", archive, target)

    assert_one_error(result, str(archive), repr(entry[0].name))
    assert_nothing_came_of_it(hoist_root, skopeo, "load", target)


def test_layer_symlinked_out_of_the_archive_is_refused_by_push(
    hoist: Hoist, skopeo: Skopeo, tmp_path: Path, target: str
) -> None:
    # Docker >= 25 symlinks each layer.tar into blobs/; this one points at the host instead.
    entries = docker_archive_entries(tmp_path, [target], layer_names=["a/layer.tar", "b/layer.tar"])
    entries[1] = link_entry("a/layer.tar", "../../../../../../etc/passwd")
    archive = write_tar(tmp_path / "evil.tar", entries)

    result = run_source(hoist, "push", archive, target)

    assert_one_error(result, str(archive), "'a/layer.tar'", "outside the archive")
    assert not skopeo.manifest_exists(target)


def test_oci_archive_entry_that_escapes_is_refused_by_push(
    hoist: Hoist, skopeo: Skopeo, layout: Path, tmp_path: Path, target: str
) -> None:
    archive = tmp_path / "evil-oci.tar"
    write_oci_archive(archive, layout)
    with tarfile.open(archive, "a") as tar:
        info, data = UNSAFE_ENTRIES["dotdot"]
        tar.addfile(info, io.BytesIO(data or b""))

    result = run_source(hoist, "push", archive, target)

    assert_one_error(result, str(archive), "'../escaped.txt'", "escapes")
    assert not skopeo.manifest_exists(target)


# --- blobs missing from a layout ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "part"),
    [("push", "layer"), ("push", "config"), ("push", "manifest"), ("load", "layer")],
)
def test_blob_missing_from_layout(
    hoist: Hoist,
    hoist_root: Path,
    skopeo: Skopeo,
    layout: Path,
    target: str,
    command: str,
    part: str,
) -> None:
    index, manifest = layout_parts(layout)
    digest = {
        "layer": manifest["layers"][0]["digest"],
        "config": manifest["config"]["digest"],
        "manifest": index["manifests"][0]["digest"],
    }[part]
    blob_path(layout, digest).unlink()

    result = run_source(hoist, command, layout, target)

    assert_one_error(result, str(layout), digest, "missing")
    assert_nothing_came_of_it(hoist_root, skopeo, command, target)


# --- malformed JSON -----------------------------------------------------------------------------

BROKEN_JSON = b'{"schemaVersion": 2, "layers": [{"digest": '


@pytest.mark.parametrize("command", COMMANDS)
def test_malformed_json_in_oci_manifest(
    hoist: Hoist, hoist_root: Path, skopeo: Skopeo, layout: Path, target: str, command: str
) -> None:
    replace_manifest(layout, BROKEN_JSON)

    result = run_source(hoist, command, layout, target)

    digest = "sha256:" + hashlib.sha256(BROKEN_JSON).hexdigest()
    assert_one_error(result, str(layout), digest, "malformed JSON")
    assert_nothing_came_of_it(hoist_root, skopeo, command, target)


@pytest.mark.parametrize("command", COMMANDS)
def test_malformed_json_in_oci_config(
    hoist: Hoist, hoist_root: Path, skopeo: Skopeo, layout: Path, target: str, command: str
) -> None:
    replace_config(layout, b'{"rootfs": {"diff_ids": ["sha256:')

    result = run_source(hoist, command, layout, target)

    assert_one_error(result, str(layout), "config", "malformed JSON")
    assert_nothing_came_of_it(hoist_root, skopeo, command, target)


@pytest.mark.parametrize("command", COMMANDS)
def test_malformed_index_json(
    hoist: Hoist, hoist_root: Path, skopeo: Skopeo, layout: Path, target: str, command: str
) -> None:
    (layout / "index.json").write_bytes(b'{"schemaVersion": 2, "manifests": [')

    result = run_source(hoist, command, layout, target)

    assert_one_error(result, str(layout), "index.json", "malformed JSON")
    assert_nothing_came_of_it(hoist_root, skopeo, command, target)


#: A descriptor field of the wrong JSON type, and what the error says of it (found by
#: ``tests/unit/test_malformed_layouts.py``: the first two were tracebacks).
WRONG_TYPES = {
    "annotations-number": ({"annotations": 1}, "annotations is not an object"),
    "size-infinite": ({"size": float("inf")}, "size inf is not a byte count"),
    "size-fraction": ({"size": 1.5}, "size 1.5 is not a byte count"),
    "size-negative": ({"size": -1}, "size -1 is not a byte count"),
    "urls-string": ({"urls": "https://example.com/"}, "urls is not a list"),
    "digest-missing": ({"digest": None}, "no digest"),
    "digest-invalid": ({"digest": "sha256:nonsense"}, "invalid digest 'sha256:nonsense'"),
}


@pytest.mark.parametrize("fields,message", WRONG_TYPES.values(), ids=WRONG_TYPES.keys())
def test_index_descriptor_of_the_wrong_type(
    hoist: Hoist,
    hoist_root: Path,
    skopeo: Skopeo,
    layout: Path,
    target: str,
    fields: dict[str, object],
    message: str,
) -> None:
    index = json.loads((layout / "index.json").read_bytes())
    index["manifests"][0].update(fields)
    (layout / "index.json").write_text(json.dumps(index))

    result = run_source(hoist, "push", layout, target)

    assert_one_error(result, "index.json: manifests[0]: malformed descriptor", message)
    assert_nothing_came_of_it(hoist_root, skopeo, "push", target)


@pytest.mark.parametrize("document", ["manifest.json", "config"])
@pytest.mark.parametrize("command", COMMANDS)
def test_malformed_json_in_docker_archive(
    hoist: Hoist,
    hoist_root: Path,
    skopeo: Skopeo,
    tmp_path: Path,
    target: str,
    command: str,
    document: str,
) -> None:
    broken = {document: b'[{"Config": "x.json", "RepoTags": ['}
    entries = docker_archive_entries(
        tmp_path, [target], config=broken.get("config"), manifest=broken.get("manifest.json")
    )
    archive = write_tar(tmp_path / "app.tar", entries)

    result = run_source(hoist, command, archive, target)

    named = "manifest.json" if document == "manifest.json" else entries[0][0].name
    assert_one_error(result, str(archive), named, "malformed JSON")
    assert_nothing_came_of_it(hoist_root, skopeo, command, target)


def test_malformed_docker_config_json_is_named(
    hoist: Hoist, skopeo: Skopeo, layout: Path, tmp_path: Path, target: str
) -> None:
    config_file = Path(hoist.env["DOCKER_CONFIG"]) / "config.json"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text('{"auths": {"example.com": {"auth": ')

    result = run_source(hoist, "push", layout, target)

    assert_one_error(result, str(config_file))
    assert not skopeo.manifest_exists(target)


@pytest.mark.parametrize("command", [["images"], ["push", "example.com/app:v1"]])
def test_malformed_daemon_json_is_named(hoist: Hoist, hoist_root: Path, command: list[str]) -> None:
    hoist_root.mkdir(parents=True)
    (hoist_root / "daemon.json").write_text('{"max-concurrent-uploads": ')

    result = hoist(*command, check=False)

    assert_one_error(result, str(hoist_root / "daemon.json"), "malformed JSON")


def test_corrupt_repositories_json_is_named(hoist: Hoist, hoist_root: Path) -> None:
    hoist_root.mkdir(parents=True)
    (hoist_root / "repositories.json").write_text('{"Repositories": {"app": ')

    result = hoist("images", check=False)

    assert_one_error(result, str(hoist_root / "repositories.json"), "corrupt JSON")


# --- a registry that answers with HTML or garbage -----------------------------------------------

NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


class _Answers(BaseHTTPRequestHandler):
    """Answers every request with the server's ``status``/``content_type``/``body``; ``/v2/``
    gets a registry's 200 when the server says ``ping_ok``."""

    server: _FakeFront
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.server.ping_ok and self.path == "/v2/":
            status, content_type, body = 200, "application/json", b"{}"
        else:
            status, content_type, body = self.server.answer
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the test reads Hoist's stderr, not the server's


class _FakeFront(ThreadingHTTPServer):
    """A broken gateway on a free loopback port, in place of a registry."""

    daemon_threads = True

    def __init__(self, answer: tuple[int, str, bytes], *, ping_ok: bool) -> None:
        super().__init__(("127.0.0.1", 0), _Answers)
        self.answer = answer
        self.ping_ok = ping_ok

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def fake_front(request: pytest.FixtureRequest) -> Iterator[_FakeFront]:
    answer, ping_ok, _ = request.param
    server = _FakeFront(answer, ping_ok=ping_ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


#: (status, content type, body), whether ``/v2/`` answers 200 first, and what the error must say.
FRONTS = {
    "html-502-everywhere": ((502, "text/html", NGINX_502), False, "502"),
    "html-502-after-ping": ((502, "text/html", NGINX_502), True, "502"),
    "html-404-after-ping": (
        (404, "text/html", b"<html><body>Not Found</body></html>"),
        True,
        "not found",
    ),
    "garbage-json-500": ((500, "application/json", b'{"errors": [{"code": \xff\xfe'), True, "500"),
    "binary-400": ((400, "application/octet-stream", random.Random(3).randbytes(512)), True, "400"),
}


@pytest.mark.parametrize(
    ("fake_front", "expected"),
    [(front, front[2]) for front in FRONTS.values()],
    ids=FRONTS.keys(),
    indirect=["fake_front"],
)
def test_registry_error_body_that_is_not_json(
    hoist: Hoist, layout: Path, fake_front: _FakeFront, expected: str
) -> None:
    target = f"{fake_front.host}/broken/app:v1"

    result = run_source(hoist, "push", layout, target)

    line = assert_one_error(result, expected)
    assert "<" not in line, "raw HTML in the error line"
    assert line.isprintable(), "raw bytes in the error line"


def test_registry_502_on_the_manifest_is_one_error_and_no_manifest(
    hoist: Hoist, registry: LocalRegistry, skopeo: Skopeo, layout: Path
) -> None:
    plan = FaultPlan(
        schedule={0: Fault(kind="status", status=502)}, methods={"PUT"}, path="/manifests/"
    )
    with running_proxy(registry.host, faults=plan) as proxy:
        result = run_source(hoist, "push", layout, f"{proxy.host}/proxied/app:v1")
        put = proxy.exchanges("PUT", "/manifests/")

    assert_one_error(result)
    assert [exchange.status for exchange in put] == [502]
    assert not skopeo.manifest_exists(f"{registry.host}/proxied/app:v1")


def test_gateway_without_upstream_is_one_error(hoist: Hoist, layout: Path) -> None:
    # Port 1 on loopback refuses: the proxy answers each request with a text/plain 502.
    with running_proxy("127.0.0.1:1") as proxy:
        result = run_source(hoist, "push", layout, f"{proxy.host}/nowhere/app:v1")

    assert_one_error(result, "502")


# --- oversized manifests, references, sizes, platforms ------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_manifest_over_4_mib(
    hoist: Hoist, hoist_root: Path, skopeo: Skopeo, layout: Path, target: str, command: str
) -> None:
    _, manifest = layout_parts(layout)
    manifest["annotations"] = {"org.example.padding": "x" * (4 * MiB)}
    replace_manifest(layout, json.dumps(manifest).encode())

    result = run_source(hoist, command, layout, target)

    assert_one_error(result, str(layout), "4194304-byte limit")
    assert_nothing_came_of_it(hoist_root, skopeo, command, target)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("127.0.0.1:5000/Upper/app:v1", "repository name must be lowercase"),
        ("127.0.0.1:5000/app:" + "t" * 129, "invalid reference format"),
        ("127.0.0.1:5000/" + "a" * 250 + ":v1", "must not be more than 255 characters"),
        ("127.0.0.1:5000/app::v1", "invalid reference format"),
        ("127.0.0.1:5000/app@sha256:abc", "invalid"),
        ("127.0.0.1:5000/-app:v1", "invalid reference format"),
        ("", "invalid reference format"),
    ],
    ids=["uppercase", "long-tag", "long-name", "double-colon", "short-digest", "dash", "empty"],
)
def test_push_invalid_reference(hoist: Hoist, layout: Path, name: str, message: str) -> None:
    result = run_source(hoist, "push", layout, name)

    assert_one_error(result, message)


#: engine/api.py ``_tagged`` calls ``Reference.with_tag``, which drops the digest: ``app@sha256:…``
#: silently becomes ``app:latest`` in ``tag`` and ``load`` instead of being refused.
@pytest.fixture
def loaded(hoist: Hoist, tmp_path: Path) -> str:
    """An image in the store, tagged ``example.com/loaded/app:v1``."""
    name = "example.com/loaded/app:v1"
    write_docker_archive(tmp_path / "loaded.tar", LAYERS[:1], [name], tmp_path / "work")
    hoist("load", "-i", str(tmp_path / "loaded.tar"))
    return name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tag", "{loaded}", "Example/App:v2"], "repository name must be lowercase"),
        (["tag", "{loaded}", "app:bad tag"], "invalid reference format"),
        (
            ["tag", "{loaded}", "app@sha256:" + "a" * 64],
            "refusing to create a tag with a digest reference",
        ),
        (["tag", "not a name", "app:v2"], "invalid reference format"),
        (["rmi", "Not/Valid"], "repository name must be lowercase"),
        (["rmi", "app:"], "invalid reference format"),
    ],
    ids=["tag-upper", "tag-space", "tag-digest", "tag-source", "rmi-upper", "rmi-empty-tag"],
)
def test_tag_and_rmi_invalid_reference(
    hoist: Hoist, loaded: str, args: list[str], message: str
) -> None:
    result = hoist(*(arg.format(loaded=loaded) for arg in args), check=False)

    assert_one_error(result, message)
    rows = [json.loads(line) for line in hoist("images", "--format", "json").stdout.splitlines()]
    assert [f"{row['Repository']}:{row['Tag']}" for row in rows] == [loaded]


@pytest.mark.parametrize(
    ("repo_tag", "message"),
    [
        ("Example/App:v1", "repository name must be lowercase"),
        ("example/app:bad:tag", "invalid reference format"),
        ("example/app@sha256:" + "a" * 64, "invalid tag"),
    ],
    ids=["upper", "two-tags", "digest"],
)
def test_load_invalid_target_name(
    hoist: Hoist, tmp_path: Path, repo_tag: str, message: str
) -> None:
    archive = write_tar(tmp_path / "app.tar", docker_archive_entries(tmp_path, [repo_tag]))

    result = hoist("load", "-i", str(archive), check=False)

    assert_one_error(result, message)
    rows = [json.loads(line) for line in hoist("images", "--format", "json").stdout.splitlines()]
    assert all(row["Repository"] == "<none>" for row in rows), rows


@pytest.mark.parametrize("size", ["nonsense", "0", "-5MiB", "12 parsecs"])
def test_chunk_size_nonsense(
    hoist: Hoist, skopeo: Skopeo, layout: Path, target: str, size: str
) -> None:
    result = run_source(hoist, "push", layout, target, f"--chunk-size={size}")

    assert_one_error(result, "invalid size", repr(size))
    assert not skopeo.manifest_exists(target)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["push", "-a", "localhost:5000/a", "localhost:5000/b"], "--all-tags takes one repository"),
        (["login", "--password-stdin", "localhost:5000"], "Must provide --username with"),
        (["login", "-u", "someone", "localhost:5000"], "interactive login from a non TTY"),
    ],
)
def test_command_line_mistakes(hoist: Hoist, args: list[str], message: str) -> None:
    """Options that do not go together are one error line and exit 1, as Docker's CLI says them
    (stdin a pipe, never a terminal, so that no run asks for a password)."""
    assert_one_error(hoist(*args, check=False, input=""), message)


@pytest.mark.parametrize(
    ("platform", "message"),
    [
        ("windows/amd64", "has no manifest for platform windows/amd64"),
        ("linux/riscv64", "has no manifest for platform linux/riscv64"),
        ("linux", "invalid platform 'linux'"),
    ],
)
def test_unknown_platform_of_multi_platform_layout(
    hoist: Hoist, skopeo: Skopeo, tmp_path: Path, target: str, platform: str, message: str
) -> None:
    layout = tmp_path / "multi"
    platforms = [("linux", "amd64", None), ("linux", "arm64", "v8")]
    write_oci_index_layout(layout, platforms, LAYERS, ref_name="v1")

    result = run_source(hoist, "push", layout, target, "--platform", platform)

    assert_one_error(result, message)
    assert not skopeo.manifest_exists(target)
