"""``hoist serve``: the image part of the Docker Engine API over aiohttp, one ``Engine`` behind it.

Enough of dockerd for ``DOCKER_HOST=unix://… docker push`` and its neighbours (``load``, ``tag``,
``images``, ``inspect``, ``rmi``, ``login``, ``version``), and one route of Hoist's own: a batch
push (``hoist push A B …``). Every route answers at ``/vN.NN/…`` and unversioned; every error
is Docker's ``{"message": …}``. Written for asyncio (aiohttp's server; a push runs as a task
the request owns, cancelled when its client goes away).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import socket
import ssl
import stat
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
from aiohttp import web

from engine import logs
from engine.api import BatchItem, Engine
from engine.errors import HoistError, ImageNotFoundError, TLSConfigError
from engine.progress.events import LayerProgress, ProgressEvent, PushEnded, PushFailed
from engine.progress.jsonstream import LINE_END, JSONObject, encode, error_message, messages_for
from engine.progress.summary import summary_message
from engine.push.compression import Compression
from engine.registry.auth_config import AuthConfig
from engine.serve import wire
from engine.serve.address import Address
from engine.temp_names import temp_path

log = logs.get_logger("engine.serve")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")

#: Seconds a stopping server lets running requests finish before it cancels them.
SHUTDOWN_TIMEOUT = 10.0
#: Bytes read from a ``docker load`` body at a time.
LOAD_CHUNK = 1 << 20
_ENGINE: web.AppKey[Engine] = web.AppKey("engine", Engine)
#: The tasks handling requests now: a stopping server waits for them, then cancels them.
_RUNNING: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("running", set)


#: What a client is told of a bug; the log has the traceback.
INTERNAL_ERROR = "internal error: see the hoist serve log"

#: Exactly this, no charset: the docker CLI compares the header with it to parse a JSON body.
JSON_HEADERS = {"Content-Type": "application/json"}


def json_response(body: Any, status: int = 200) -> web.Response:
    text = json.dumps(body, separators=(",", ":")) + "\n"
    return web.Response(body=text.encode(), status=status, headers=JSON_HEADERS)


def error_response(status: int, message: str) -> web.Response:
    return json_response(wire.error_body(message), status)


@web.middleware
async def docker_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Docker's JSON errors for everything that goes wrong; never a traceback."""
    version, _ = wire.split_version(request.path)
    running = request.app[_RUNNING]
    task = asyncio.current_task()
    assert task is not None
    running.add(task)
    try:
        wire.check_version(version)
        return await handler(request)
    except wire.WireError as exc:
        return error_response(exc.status, exc.message)
    except web.HTTPNotFound:
        return error_response(404, "page not found")
    except web.HTTPMethodNotAllowed:
        return error_response(501, f"{request.method} {request.path} is not implemented")
    except web.HTTPException as exc:
        return error_response(exc.status, exc.reason)
    except HoistError as exc:
        return error_response(wire.status_of(exc), str(exc))
    except Exception:
        log.exception("request failed", method=request.method, path=request.path)
        return error_response(500, INTERNAL_ERROR)
    finally:
        running.discard(task)


def _engine(request: web.Request) -> Engine:
    return request.app[_ENGINE]


async def ping(request: web.Request) -> web.Response:
    return web.Response(text="OK", headers=wire.ping_headers())


async def version(request: web.Request) -> web.Response:
    return json_response(wire.version_payload())


async def info(request: web.Request) -> web.Response:
    engine = _engine(request)
    images = {row.image_id for row in await engine.images()}
    return json_response(wire.info_payload(str(engine.store.root), len(images)))


async def load(request: web.Request) -> web.StreamResponse:
    """``docker load``: the body to a temp file in the store (never all in memory), then load."""
    engine = _engine(request)
    tmp_dir = engine.store.root / "tmp"
    await anyio.Path(tmp_dir).mkdir(parents=True, exist_ok=True)
    archive = temp_path(tmp_dir)
    try:
        async with await anyio.open_file(archive, "wb") as out:
            async for chunk in request.content.iter_chunked(LOAD_CHUNK):
                await out.write(chunk)
        lines = await engine.load(archive)
    finally:
        with contextlib.suppress(FileNotFoundError):
            await anyio.Path(archive).unlink()
    body = "".join(encode({"stream": line + "\n"}) + LINE_END for line in lines)
    return web.Response(body=body.encode(), headers=JSON_HEADERS)


async def tag(request: web.Request) -> web.Response:
    repo = request.query.get("repo", "")
    if not repo:
        raise wire.WireError(400, "repository name (repo) is required")
    tag_name = request.query.get("tag", "")
    target = f"{repo}:{tag_name}" if tag_name else repo
    await _engine(request).tag(request.match_info["name"], target)
    return web.Response(status=201)


async def images(request: web.Request) -> web.Response:
    rows = await _engine(request).images()
    patterns = wire.reference_filters(request.query.get("filters"))
    return json_response(wire.images_json(rows, patterns))


async def inspect(request: web.Request) -> web.Response:
    details = await _engine(request).store.inspect(request.match_info["name"])
    return json_response(wire.inspect_json(details))


async def remove(request: web.Request) -> web.Response:
    lines = await _engine(request).remove(request.match_info["name"])
    return json_response([wire.removal_record(line) for line in lines])


async def auth(request: web.Request) -> web.Response:
    """``docker login``: check the credentials with the registry; the client stores them."""
    try:
        document = await request.json()
    except ValueError as exc:
        raise wire.WireError(400, "invalid JSON body") from exc
    credentials = wire.auth_config_of(document)
    server = credentials.server_address or None
    outcome = await _engine(request).login(server, credentials, store=False)
    return json_response({"Status": outcome.status, "IdentityToken": outcome.identity_token})


async def push(request: web.Request) -> web.StreamResponse:
    """``docker push``: Docker's JSON message stream, the push's error in it if it fails.

    Without ``tag`` (``docker push --all-tags``) every tag of the repository goes, one after
    the other in one stream, stopping at the first that fails, as dockerd does.
    """
    engine = _engine(request)
    name, tag = request.match_info["name"], request.query.get("tag", "")
    ref = wire.push_reference(name, tag)
    credentials = wire.decode_registry_auth(request.headers.get("X-Registry-Auth"))
    source = _source(request, all_tags=not tag)
    compression = wire.compression_of(request.query)
    quiet = wire.quiet_of(request.query)
    refs = [ref] if source is not None else await _refs_to_push(engine, ref, all_tags=not tag)
    response = web.StreamResponse(headers=JSON_HEADERS)
    await response.prepare(request)
    for one in refs:
        if not await _push_one(engine, one, credentials, response, source, compression, quiet):
            break
    await response.write_eof()
    return response


def _source(request: web.Request, *, all_tags: bool) -> str | None:
    """Hoist's ``from`` parameter (``hoist push --from PATH`` through the daemon): an archive or
    layout the daemon reads itself, so it is served only to a client of the daemon's own user
    on its unix socket, who could read the path anyway. Absent: the store's image, as dockerd."""
    source = request.query.get("from")
    if source is None:
        return None
    peer = wire.peer_uid(request.transport.get_extra_info("socket") if request.transport else None)
    return wire.check_source(source, peer, all_tags=all_tags)


async def _refs_to_push(engine: Engine, ref: str, *, all_tags: bool) -> list[str]:
    """As dockerd: an image that is not there is an HTTP error, before any stream."""
    try:
        if all_tags:
            return await engine.tags_of(ref)
        await engine.store.resolve(ref)
    except ImageNotFoundError as exc:
        raise wire.WireError(
            404, f"An image does not exist locally with the tag: {wire.familiar_name(ref)}"
        ) from exc
    return [ref]


async def _push_one(
    engine: Engine,
    ref: str,
    credentials: AuthConfig,
    response: web.StreamResponse,
    source: str | None = None,
    compression: Compression | None = None,
    quiet: bool = False,
) -> bool:
    """Stream one push's messages (``quiet``: none of its layers'); whether it succeeded."""
    queue: asyncio.Queue[ProgressEvent] = asyncio.Queue()
    compression = compression or Compression()
    push = engine.push(
        ref,
        source=source,
        progress=queue,
        credentials=credentials,
        compression=compression.algorithm,
        compression_level=compression.level,
    )
    task = await _streamed(push, queue, response, name=f"push {ref}", quiet=quiet)
    return not task.cancelled() and task.exception() is None


async def push_batch(request: web.Request) -> web.StreamResponse:
    """Hoist's own route, for ``hoist push A B …`` through the daemon: ``POST /hoist/push`` with
    ``{"Refs": [...]}`` as its body, credentials by registry in ``X-Registry-Config`` (as
    ``docker build`` sends them), ``from``, compression and ``quiet`` as for a push.

    The images go at once, as one batch (``Engine.push_many``): one stream of their messages,
    interleaved as ``hoist push --progress json A B`` prints them (each result naming its
    repository), then the batch's summary as the last message. An image that cannot be pushed,
    a missing one included, is its row's error, not the request's.
    """
    engine = _engine(request)
    try:
        document = await request.json()
    except ValueError as exc:
        raise wire.WireError(400, "invalid JSON body") from exc
    refs = wire.batch_refs(document)
    credentials = wire.decode_registry_config(request.headers.get("X-Registry-Config"))
    source = _source(request, all_tags=False)
    compression = wire.compression_of(request.query)
    response = web.StreamResponse(headers=JSON_HEADERS)
    await response.prepare(request)
    queue: asyncio.Queue[ProgressEvent] = asyncio.Queue()
    batch = engine.push_many(
        refs,
        source=source,
        progress=queue,
        credentials=credentials,
        compression=compression.algorithm,
        compression_level=compression.level,
    )
    name = f"push {len(refs)} images"
    task = await _streamed(
        batch,
        queue,
        response,
        name=name,
        pushes=len(refs),
        repository=True,
        quiet=wire.quiet_of(request.query),
    )
    await _write(response, [_batch_ending(task)])
    await response.write_eof()
    return response


def _batch_ending(task: asyncio.Task[list[BatchItem]]) -> JSONObject:
    """The summary of a batch that ended, or the error that stopped it as a whole."""
    if task.cancelled():
        return error_message(PushFailed("the push was cancelled"))
    exc = task.exception()
    if exc is None:
        return summary_message([item.summary() for item in task.result()])
    if isinstance(exc, HoistError):
        return error_message(PushFailed(str(exc)))
    log.error("batch push failed", exc_info=exc)
    return error_message(PushFailed(INTERNAL_ERROR))


async def _streamed(
    push: Coroutine[Any, Any, T],
    queue: asyncio.Queue[ProgressEvent],
    response: web.StreamResponse,
    *,
    name: str,
    pushes: int = 1,
    repository: bool = False,
    quiet: bool = False,
) -> asyncio.Task[T]:
    """Run ``push`` (of ``pushes`` pushes, telling ``queue``) as a task while its events are
    written to ``response`` (see ``_stream``); the task, ended.

    A client gone (a failed write, or aiohttp cancelling this handler) cancels the push, whose
    cancellation deletes its upload sessions.
    """
    task = asyncio.create_task(push, name=name)
    try:
        await _stream(queue, response, pushes=pushes, repository=repository, quiet=quiet)
        await asyncio.wait([task])  # its last event told, it may still be finishing
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return task


async def _stream(
    queue: asyncio.Queue[ProgressEvent],
    response: web.StreamResponse,
    *,
    pushes: int = 1,
    repository: bool = False,
    quiet: bool = False,
) -> None:
    """Write the events of ``pushes`` pushes until each has ended; ``repository``: see
    ``jsonstream.aux_message``; ``quiet``: none of a layer's (a batch tells about twenty per
    image, which a quiet client reads only to drop).

    The events told while the last write went out go in one write: a batch tells about a
    thousand, and a write (and the client's read) per message cost the daemon and its client
    more CPU than the messages themselves.
    """
    while pushes > 0:
        events = [await queue.get()]
        while not queue.empty():
            events.append(queue.get_nowait())
        messages: list[JSONObject] = []
        for event in events:
            if not (quiet and isinstance(event, LayerProgress)):
                messages += messages_for(event, repository=repository)
            pushes -= isinstance(event, PushEnded)
        if messages:  # a quiet push's layer events make none
            await _write(response, messages)


async def _write(response: web.StreamResponse, messages: Sequence[JSONObject]) -> None:
    """``messages``, a line each, in one write."""
    await response.write("".join(encode(message) + LINE_END for message in messages).encode())


ROUTES: list[tuple[str, str, Handler]] = [
    ("GET", "/_ping", ping),
    ("GET", "/version", version),
    ("GET", "/info", info),
    ("POST", "/auth", auth),
    ("GET", "/images/json", images),
    ("POST", "/images/load", load),
    ("POST", "/images/{name:.+}/tag", tag),
    ("POST", "/images/{name:.+}/push", push),
    ("GET", "/images/{name:.+}/json", inspect),
    ("DELETE", "/images/{name:.+}", remove),
    ("POST", "/hoist/push", push_batch),
]


def make_app(engine: Engine) -> web.Application:
    # client_max_size bounds the bodies read whole (/auth's JSON); a load's body is streamed
    # to a file, which it does not limit.
    app = web.Application(middlewares=[docker_errors], client_max_size=1 << 20)
    app[_ENGINE] = engine
    app[_RUNNING] = set()
    for method, path, handler in ROUTES:
        for prefix in ("", r"/v{version:[0-9]+\.[0-9]+}"):
            if method == "GET":
                app.router.add_get(prefix + path, handler)  # HEAD too, as dockerd answers it
            else:
                app.router.add_route(method, prefix + path, handler)
    return app


def _prepare_socket_path(path: Path) -> None:
    check_socket_free(path)
    path.parent.mkdir(parents=True, exist_ok=True)


def _unix_socket(path: Path) -> socket.socket:
    """A socket bound at ``path`` with the mode 0660 from its first moment, as dockerd binds
    its own (under a umask that gives that mode): a mode set after binding would leave a moment
    in which a client the mode refuses could connect. Bound here in one step: no other task
    runs while the process's umask is changed."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    umask = os.umask(0o117)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:  # another server bound it since the check
            raise wire.WireError(400, f"{path} is in use: another server listens there") from exc
        raise
    finally:
        os.umask(umask)
    return sock


def check_socket_free(path: Path) -> None:
    """Remove a stale socket file left by a server that died; refuse one still served."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise wire.WireError(400, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise wire.WireError(400, f"{path} is in use: another server listens there")


async def _finish(running: set[asyncio.Task[Any]]) -> None:
    """Let running requests end for ``SHUTDOWN_TIMEOUT`` seconds, then cancel them and wait: a
    push's cancellation deletes its upload sessions, which needs the Engine still open."""
    if not running:
        return
    _, pending = await asyncio.wait(set(running), timeout=SHUTDOWN_TIMEOUT)
    if pending:
        log.info("cancelling requests still running", requests=len(pending))
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


@dataclass(frozen=True)
class TLSVerify:
    """dockerd's ``--tlsverify``: the server's certificate and key, and the CA whose
    certificates clients must show."""

    ca: Path
    certificate: Path
    key: Path

    def context(self) -> ssl.SSLContext:
        """Reads the files: call it off the event loop."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.certificate, self.key)
            context.load_verify_locations(cafile=self.ca)
        except (OSError, ssl.SSLError) as error:
            raise TLSConfigError(f"cannot serve TLS with {self.certificate}: {error}") from error
        context.verify_mode = ssl.CERT_REQUIRED
        return context


async def serve(
    engine: Engine,
    address: Address,
    stop: asyncio.Event,
    ready: Callable[[str], None] | None = None,
    tls: TLSVerify | None = None,
) -> None:
    """Serve until ``stop`` is set; then stop accepting, give running requests
    ``SHUTDOWN_TIMEOUT`` seconds, cancel the rest, and remove the socket file."""
    app = make_app(engine)
    runner = web.AppRunner(
        app,
        access_log=None,  # headers and queries are nobody's business: credentials travel there
        handler_cancellation=True,
        # Requests were waited for and cancelled already (see _finish): only idle keep-alive
        # connections are left to close.
        shutdown_timeout=1.0,
    )
    socket_path = Path(address.path) if address.path is not None else None
    if socket_path is not None:
        # Off the loop: a probe connection, a stat, perhaps an unlink and a mkdir.
        await anyio.to_thread.run_sync(_prepare_socket_path, socket_path)
    await runner.setup()
    # Removed at the end only once bound here: a refused start leaves another server's alone.
    owned: Path | None = None
    try:
        site: web.BaseSite
        if socket_path is not None:
            bound = _unix_socket(socket_path)
            owned = socket_path
            site = web.SockSite(runner, bound)
            try:
                await site.start()
            except BaseException:
                bound.close()  # a started site's server owns it, and closes it on stop
                raise
        else:
            context = None if tls is None else await anyio.to_thread.run_sync(tls.context)
            site = web.TCPSite(runner, address.host, address.port, ssl_context=context)
            await site.start()
        log.info("listening", address=str(address))
        if ready is not None:
            ready(str(address))
        await stop.wait()
    finally:
        for running_site in list(runner.sites):
            await running_site.stop()
        await _finish(app[_RUNNING])
        await runner.cleanup()
        if owned is not None:
            await anyio.Path(owned).unlink(missing_ok=True)
