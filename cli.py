"""``hoist``: Docker's image commands without a Docker daemon — push, load, tag, images, rmi.

Thin on purpose: parse arguments, build an Engine, pick a renderer, map errors to exit codes.
Heavy modules are imported inside the commands so that ``hoist --help`` stays instant.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

    from engine.api import BatchItem, Engine
    from engine.errors import HoistError
    from engine.progress.events import ProgressEvent
    from engine.progress.summary import PushSummary
    from engine.registry.auth_config import AuthConfig
    from engine.serve.address import Address
    from engine.serve.app import TLSVerify
    from engine.store import ImageSummary

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
DEFAULT_UPLOAD_ATTEMPTS = 5


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's own, sized to the terminal without ``shutil``: argparse makes a formatter for
    every option it adds, and shutil's import (its compression modules with it) would cost a push
    through ``hoist serve`` a twentieth of its start."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_terminal_columns() - 2)  # argparse keeps 2 columns free


def _terminal_columns() -> int:
    """``$COLUMNS``, else the width of the terminal on stdout, else 80 (as shutil decides)."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    stdout = sys.__stdout__
    if columns <= 0 and stdout is not None:
        try:
            columns = os.get_terminal_size(stdout.fileno()).columns
        except (ValueError, OSError):  # not a terminal, or stdout closed
            columns = 0
    return columns if columns > 0 else 80


def _global_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """Options taken before or after the command: ``hoist --root X push`` or ``push --root X``."""

    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--root",
        default=default(None),
        help="store directory (env HOIST_ROOT, default ~/.local/share/hoist)",
    )
    parser.add_argument(
        "--config",
        default=default(None),
        metavar="DIR",
        help="location of client config files (config.json; default $DOCKER_CONFIG or ~/.docker)",
    )
    parser.add_argument(
        "--insecure-registry",
        action="append",
        default=default([]),
        metavar="HOST[:PORT]",
        help="registry reachable over http or unverified https (loopback always is)",
    )
    parser.add_argument(
        "--max-concurrent-uploads",
        type=_positive,
        default=default(None),
        metavar="N",
        help="layers of 2 MiB or more uploaded at once, across every push of this run (default 5, "
        "or daemon.json); smaller ones share a slot",
    )
    parser.add_argument(
        "--log-level",
        default=default("warning"),
        choices=["debug", "info", "warning", "error"],
        help="structured log level on stderr (default warning)",
    )


def _host_option(
    parser: argparse.ArgumentParser, help_text: str, default: Any = argparse.SUPPRESS
) -> None:
    """``-H ADDRESS``, before the command (``default`` None) or after it (left unset, so the
    value before it stays), as ``docker -H`` and ``dockerd -H``."""
    parser.add_argument("-H", "--host", metavar="ADDRESS", default=default, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hoist",
        description="Push container images to any Docker/OCI registry, without a Docker daemon.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    _host_option(parser, "the hoist serve that push goes through, or serve listens on", None)
    _global_options(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=help_text, description=help_text, formatter_class=_HelpFormatter
        )
        _global_options(sub, defaults=False)
        return sub

    push = command("push", "Push an image or a repository to a registry")
    push.add_argument("names", nargs="+", metavar="NAME[:TAG]")
    push.add_argument("-q", "--quiet", action="store_true", help="Suppress verbose output")
    push.add_argument(
        "-a", "--all-tags", action="store_true", help="Push all tags of an image to the repository"
    )
    push.add_argument(
        "--from",
        dest="source",
        metavar="PATH",
        help="push straight from a docker-archive, OCI layout or OCI archive",
    )
    push.add_argument(
        "--chunk-size",
        metavar="SIZE",
        help="send each layer in PATCH chunks of SIZE (e.g. 16MiB) instead of one request",
    )
    push.add_argument(
        "--compression",
        choices=["gzip", "zstd"],
        default="gzip",
        help="how Hoist compresses layers (default gzip; zstd: smaller, in an OCI manifest)",
    )
    push.add_argument(
        "--compression-level",
        type=int,
        metavar="N",
        help="gzip 0-3 (default 2), zstd 1-19 (default 3)",
    )
    push.add_argument(
        "--max-upload-attempts",
        type=_positive,
        default=DEFAULT_UPLOAD_ATTEMPTS,
        metavar="N",
        help=f"tries of each upload step before the push fails (default {DEFAULT_UPLOAD_ATTEMPTS})",
    )
    push.add_argument(
        "--platform",
        metavar="OS/ARCH[/VARIANT]",
        help="push one platform of a multi-platform image (an index) instead of all",
    )
    push.add_argument(
        "--progress",
        choices=["auto", "tty", "plain", "json"],
        default="auto",
        help="progress output (default auto: tty on a terminal, else plain)",
    )
    _host_option(
        push,
        "push through the hoist serve at ADDRESS (env HOIST_HOST; default: the one on "
        "ROOT/hoist.sock if it runs, else push in this process)",
    )
    push.set_defaults(run=_push)

    load = command("load", "Load an image from a tar archive or an OCI layout")
    load.add_argument("-i", "--input", required=True, metavar="PATH", help="archive or layout")
    load.add_argument("-q", "--quiet", action="store_true", help="Suppress the load output")
    load.set_defaults(run=_load)

    tag = command("tag", "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE")
    tag.add_argument("source", metavar="SOURCE_IMAGE[:TAG]")
    tag.add_argument("target", metavar="TARGET_IMAGE[:TAG]")
    tag.set_defaults(run=_tag)

    images = command("images", "List images")
    images.add_argument("--format", choices=["table", "json"], default="table")
    images.add_argument("-q", "--quiet", action="store_true", help="Only show image IDs")
    images.set_defaults(run=_images)

    rmi = command("rmi", "Remove one or more images")
    rmi.add_argument("names", nargs="+", metavar="IMAGE")
    rmi.set_defaults(run=_rmi)

    login = command("login", "Log in to a registry")
    login.add_argument("server", nargs="?", metavar="SERVER")
    login.add_argument("-u", "--username")
    login.add_argument("-p", "--password", help="Password (insecure: use --password-stdin)")
    login.add_argument("--password-stdin", action="store_true", help="Take the password from stdin")
    login.set_defaults(run=_login)

    logout = command("logout", "Log out from a registry")
    logout.add_argument("server", nargs="?", metavar="SERVER")
    logout.set_defaults(run=_logout)

    serve = command("serve", "Serve the Docker Engine API's image routes (DOCKER_HOST=...)")
    _host_option(
        serve,
        "unix:///PATH.sock or tcp://HOST:PORT (default unix://ROOT/hoist.sock); a TCP host that "
        "is not loopback needs --tlsverify",
    )
    serve.add_argument(
        "--tlsverify",
        action="store_true",
        help="serve TCP over TLS to clients with a certificate of --tlscacert (as dockerd)",
    )
    for flag, what in (("--tlscacert", "the CA clients' certificates must chain to"),
                       ("--tlscert", "the server's certificate"),
                       ("--tlskey", "the server's private key")):  # fmt: skip
        serve.add_argument(flag, metavar="FILE", help=f"with --tlsverify: {what} (PEM)")
    serve.set_defaults(run=_serve)
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _version() -> str:
    from engine import __version__

    return f"hoist {__version__}"


def _engine(args: argparse.Namespace) -> Engine:
    from engine.api import Engine
    from engine.retry import RetryPolicy
    from engine.units import parse_size

    chunk_size = getattr(args, "chunk_size", None)
    return Engine(
        args.root or os.environ.get("HOIST_ROOT") or None,
        chunk_size=parse_size(chunk_size) if chunk_size else None,
        retry=RetryPolicy(attempts=getattr(args, "max_upload_attempts", DEFAULT_UPLOAD_ATTEMPTS)),
        max_concurrent_uploads=args.max_concurrent_uploads,
        insecure_registries=args.insecure_registry,
        config_dir=args.config,
        relogin=_prompt_relogin if sys.stdin.isatty() else None,
    )


async def _push(args: argparse.Namespace) -> int:
    import asyncio

    import anyio

    from engine.concurrency import gather
    from engine.errors import UnauthorizedError
    from engine.progress.render import make_renderer, render

    _check_all_tags(args)
    async with _engine(args) as engine:
        names = args.names
        if args.all_tags:
            names = await engine.tags_of(names[0])
        queue: asyncio.Queue[ProgressEvent] = asyncio.Queue()
        renderer = make_renderer(args.progress, sys.stdout, quiet=args.quiet)
        batch: list[BatchItem] = []

        async def pushing() -> None:
            if len(names) > 1:
                batch.extend(
                    await engine.push_many(
                        names,
                        source=args.source,
                        platform=args.platform,
                        progress=queue,
                        compression=args.compression,
                        compression_level=args.compression_level,
                    )
                )
                return
            try:
                await engine.push(
                    names[0],
                    source=args.source,
                    platform=args.platform,
                    progress=queue,
                    compression=args.compression,
                    compression_level=args.compression_level,
                )
            except UnauthorizedError as exc:
                raise _with_login_hint(exc, names[0]) from exc

        async def drawing() -> None:
            # Shielded: every event the pushes sent is drawn, their ends included, before an
            # error (or Ctrl-C) is reported; each push ends with one PushEnded however it ends.
            with anyio.CancelScope(shield=True):
                await render(queue, renderer, pushes=len(names))

        await gather([pushing, drawing])
    return _report([_summary(item) for item in batch], quiet=args.quiet) if len(names) > 1 else 0


def _check_all_tags(args: argparse.Namespace) -> None:
    from engine.errors import UsageError

    if args.all_tags and len(args.names) != 1:
        raise UsageError("--all-tags takes one repository name")


def _push_through_daemon(args: argparse.Namespace) -> int | None:
    """``hoist push`` as a client of a running ``hoist serve`` (``-H``, ``$HOIST_HOST``, or the
    socket in the store's root), as the docker CLI is of dockerd: no event loop, no aiohttp, no
    engine to load. None: push in this process instead, because no daemon runs (a socket left
    by one that is gone included) or the push asks what only this process does."""
    from pathlib import Path

    with _Loading():
        from engine.data_root import default_root
        from engine.errors import DaemonUnreachable, HoistError, UsageError
        from engine.progress import render  # noqa: F401 (drawing a daemon's push needs it)
        from engine.registry import credentials  # noqa: F401 (the same)
        from engine.serve import remote

    named = False
    try:
        root = Path(args.root).expanduser() if args.root else default_root()
        found = remote.find_daemon(args.host, root)
        if found is None:
            return None
        address, named = found
        _check_all_tags(args)
        local_only = _local_only(args)
        if local_only:
            if not named:
                return None
            raise UsageError(
                f"{local_only} cannot go through the hoist serve at {address}: "
                f"push without -H and {remote.HOST_ENV}"
            )
        # SIGTERM ends the command as Ctrl-C does: exit 130, the daemon cancelling the push.
        signal.signal(signal.SIGTERM, _interrupt)
        return _draw_daemon_push(args, address)
    except HoistError as exc:
        if isinstance(exc, DaemonUnreachable) and not named:
            return None
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        # The daemon sees the connection close, and cancels the push (its uploads included).
        return EXIT_INTERRUPTED


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _local_only(args: argparse.Namespace) -> str:
    """The first option of ``args`` that a push through the daemon cannot honour, or ""."""
    asked = [
        ("--platform", args.platform is not None),
        ("--chunk-size", args.chunk_size is not None),
        ("--max-upload-attempts", args.max_upload_attempts != DEFAULT_UPLOAD_ATTEMPTS),
        ("--max-concurrent-uploads", args.max_concurrent_uploads is not None),
        ("--insecure-registry", bool(args.insecure_registry)),
    ]
    return next((option for option, given in asked if given), "")


def _draw_daemon_push(args: argparse.Namespace, address: Address) -> int:
    from pathlib import Path

    from engine.progress.render import make_renderer
    from engine.registry.credentials import DockerConfig
    from engine.serve import remote

    config = DockerConfig.read(Path(args.config) if args.config else None)
    renderer = make_renderer(args.progress, sys.stdout, quiet=args.quiet)
    source = Path(args.source) if args.source is not None else None
    try:
        if len(args.names) > 1:
            summary = remote.push_many(
                address,
                args.names,
                credentials=config.get_blocking,
                draw=renderer.handle,
                source=source,
                options=_push_query(args),
            )
        else:
            failures = remote.push(
                address,
                args.names[0],
                all_tags=args.all_tags,
                credentials=config.get_blocking,
                draw=renderer.handle,
                source=source,
                options=_push_query(args),
            )
    finally:
        renderer.close()
    if len(args.names) > 1:
        return _report(summary, quiet=args.quiet)
    for message in failures:
        print(f"Error: {message}", file=sys.stderr)
    return EXIT_ERROR if failures else 0


def _push_query(args: argparse.Namespace) -> dict[str, str]:
    """Hoist's own query parameters of a push through the daemon (``remote.push``)."""
    query = {"compression": args.compression} if args.compression != "gzip" else {}
    if args.compression_level is not None:
        query["compressionLevel"] = str(args.compression_level)
    if args.quiet:
        query["quiet"] = "1"  # the quiet renderer draws no layer: none need be sent
    return query


def _with_login_hint(exc: HoistError, name: str) -> HoistError:
    from engine.errors import UnauthorizedError

    if not isinstance(exc, UnauthorizedError):
        return exc
    return UnauthorizedError(f"{exc} (run 'hoist login {_domain(name)}')", status=exc.status)


def _report(summary: Sequence[PushSummary], *, quiet: bool) -> int:
    """A batch's summary table (stdout) and one error line per failed image (stderr)."""
    from engine.progress.summary import COLUMNS

    if not quiet:
        print()
        _print_rows([COLUMNS, *(row.row() for row in summary)])
    failed = [row for row in summary if row.error is not None]
    for row in failed:
        print(f"Error: {row.ref}: {row.error}", file=sys.stderr)
    return EXIT_ERROR if failed else 0


def _summary(item: BatchItem) -> PushSummary:
    """``item``'s row; an error that asks for a login says how."""
    from engine.progress.summary import PushSummary

    if item.error is None:
        return item.summary()
    return PushSummary(item.ref, error=str(_with_login_hint(item.error, item.ref)))


def _domain(name: str) -> str:
    from engine.reference import parse_normalized_named

    return parse_normalized_named(name).domain


async def _prompt_relogin(domain: str) -> AuthConfig | None:
    """Docker's "Please login prior to push:" — ask on the terminal, once."""
    print("\nPlease login prior to push:", flush=True)
    username, password = await _ask_on_terminal(None)
    if not username or not password:
        return None
    from engine.registry.auth_config import AuthConfig

    return AuthConfig(username=username, password=password, server_address=domain)


async def _ask_on_terminal(username: str | None) -> tuple[str, str]:
    """Prompt in a daemon thread: Ctrl-C must not wait for a half-typed answer."""
    import asyncio
    import threading

    loop = asyncio.get_running_loop()
    answer: asyncio.Future[tuple[str, str]] = loop.create_future()

    def ask() -> None:
        result = _ask_credentials(username)
        loop.call_soon_threadsafe(deliver, result)

    def deliver(result: tuple[str, str]) -> None:
        if not answer.done():  # Ctrl-C may have cancelled the wait meanwhile
            answer.set_result(result)

    threading.Thread(target=ask, daemon=True).start()
    return await answer


def _ask_credentials(username: str | None) -> tuple[str, str]:
    """Username (unless given) and password from the terminal; Ctrl-D gives up with empties."""
    import getpass

    try:
        if not username:
            username = input("Username: ").strip()
        return username, getpass.getpass("Password: ")
    except EOFError:
        print(flush=True)  # the prompt's line ends here, not in the middle of what comes next
        return "", ""


async def _login(args: argparse.Namespace) -> int:
    from engine.errors import UsageError
    from engine.registry.auth_config import AuthConfig

    username, password = args.username, args.password
    if password is not None:
        print(
            "WARNING! Using --password via the CLI is insecure. Use --password-stdin.",
            file=sys.stderr,
        )
    if args.password_stdin:
        if password is not None:
            raise UsageError("--password and --password-stdin are mutually exclusive")
        if not username:
            raise UsageError("Must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\r\n")
    if not username or password is None:
        if not sys.stdin.isatty():
            raise UsageError("cannot perform an interactive login from a non TTY device")
        username, password = await _ask_on_terminal(username)
        if not username or not password:
            raise UsageError("login needs a username and a password")
    async with _engine(args) as engine:
        config = await engine.config()
        outcome = await engine.login(args.server, AuthConfig(username=username, password=password))
    if outcome.stored_unencrypted:
        print(
            f"WARNING! Your password will be stored unencrypted in {config.path}.\n"
            "Configure a credential helper to remove this warning.",
            file=sys.stderr,
        )
    print(outcome.status)
    return 0


async def _logout(args: argparse.Namespace) -> int:
    async with _engine(args) as engine:
        domain = await engine.logout(args.server)
    print(f"Removing login credentials for {domain}")
    return 0


async def _load(args: argparse.Namespace) -> int:
    async with _engine(args) as engine:
        lines = await engine.load(args.input)
    if not args.quiet:
        for line in lines:
            print(line)
    return 0


async def _tag(args: argparse.Namespace) -> int:
    async with _engine(args) as engine:
        await engine.tag(args.source, args.target)
    return 0


async def _images(args: argparse.Namespace) -> int:
    async with _engine(args) as engine:
        rows = await engine.images()
    if args.quiet:
        for image_id in dict.fromkeys(row.image_id.hex[:12] for row in rows):
            print(image_id)
    elif args.format == "json":
        for row in rows:
            print(json.dumps(_image_json(row)))
    else:
        _print_table(rows)
    return 0


def _image_json(row: ImageSummary) -> dict[str, Any]:
    return {
        "Repository": row.repository,
        "Tag": row.tag,
        "ID": str(row.image_id),
        "CreatedAt": row.created,
        "Size": row.size,
    }


def _print_table(rows: Sequence[ImageSummary]) -> None:
    from engine.progress.units import human_size

    table: list[tuple[str, ...]] = [("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")]
    for row in rows:
        created = _ago(row.created)
        table.append(
            (row.repository, row.tag, row.image_id.hex[:12], created, human_size(row.size))
        )
    _print_rows(table)


def _ago(created: str | None) -> str:
    """``docker images``' CREATED column: "2 years ago"."""
    from datetime import UTC, datetime

    from engine.progress.units import human_duration

    if not created:
        return "N/A"
    try:
        when = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return "N/A"
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return f"{human_duration((datetime.now(UTC) - when).total_seconds())} ago"


def _print_rows(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


async def _rmi(args: argparse.Namespace) -> int:
    async with _engine(args) as engine:
        for name in args.names:
            for line in await engine.remove(name):
                print(line)
    return 0


async def _serve(args: argparse.Namespace) -> int:
    import asyncio

    from engine.errors import UsageError
    from engine.serve import app, wire
    from engine.serve.address import default_socket, listening_address

    engine = _engine(args)
    tls = _tls_verify(args)
    default = f"unix://{default_socket(engine.store.root)}"
    address = listening_address(args.host or default, tls_verify=tls is not None)
    if tls is not None and address.path is not None:
        raise UsageError("--tlsverify serves a tcp:// address, not a unix socket")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Not a cancellation, as for the other commands: running requests get time to finish.
        loop.add_signal_handler(signum, stop.set)

    def ready(where: str) -> None:
        print(f"hoist serve: listening on {where}", file=sys.stderr, flush=True)

    async with engine:
        try:
            await app.serve(engine, address, stop, ready, tls)
        except wire.WireError as exc:
            raise UsageError(exc.message) from exc
    return 0


def _tls_verify(args: argparse.Namespace) -> TLSVerify | None:
    from pathlib import Path

    from engine.errors import UsageError
    from engine.serve.app import TLSVerify

    files = (args.tlscacert, args.tlscert, args.tlskey)
    if not args.tlsverify:
        if any(files):
            raise UsageError("--tlscacert, --tlscert and --tlskey go with --tlsverify")
        return None
    if not all(files):
        raise UsageError("--tlsverify needs --tlscacert, --tlscert and --tlskey")
    return TLSVerify(*(Path(name) for name in files))


def _import_aiohttp_without_default_trust() -> None:
    """Import aiohttp without loading the system's CAs into the two SSL contexts it makes then.

    That load costs ~15 ms per context with OpenSSL 3, a tenth of a small push's start-up, for
    contexts Hoist never uses: every https request gets one of Hoist's own
    (``engine.registry.tls``). Made while ``set_default_verify_paths`` does nothing, aiohttp's
    defaults trust no CA at all, so a request that did reach one would fail verification, never
    pass it. Only the command line does this: it owns the process, single-threaded here.
    """
    import ssl

    if "aiohttp" in sys.modules or "set_default_verify_paths" in vars(ssl.SSLContext):
        return  # already imported, or someone else's override: leave both alone
    ssl.SSLContext.set_default_verify_paths = _trust_no_ca  # type: ignore[method-assign,assignment]
    try:
        import aiohttp  # noqa: F401
    finally:
        del ssl.SSLContext.set_default_verify_paths


def _trust_no_ca(context: object) -> None:
    return None


class _Loading:
    """Imports made inside run with the cyclic garbage collector off.

    Modules, classes and functions live as long as the process: collections during the imports
    find nothing to free, and every later full collection (the interpreter's at exit among them)
    would walk them all again, so they are set apart for good (``gc.freeze``). Measured: 6% less
    CPU on the 50-image batch benchmark; about 15 ms less per command (of 80–95) for a client of
    ``hoist serve``, most of it at exit. (A class, not contextlib: the thin client spares
    that import.)
    """

    def __enter__(self) -> None:
        gc.disable()

    def __exit__(self, *exc_info: object) -> None:
        gc.freeze()
        gc.enable()


def _start_up() -> None:
    """Load the engine, which every in-process command uses."""
    with _Loading():
        _import_aiohttp_without_default_trust()
        import engine.api  # noqa: F401


def _run(command: Callable[[argparse.Namespace], Awaitable[int]], args: argparse.Namespace) -> int:
    # Here, not at the top: ``hoist --version`` and ``--help`` need no event loop.
    import asyncio

    _start_up()
    from engine import logs
    from engine.errors import HoistError

    logs.configure(args.log_level)
    try:
        return asyncio.run(_until_signalled(command, args))
    except HoistError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (KeyboardInterrupt, asyncio.CancelledError):
        return EXIT_INTERRUPTED


async def _until_signalled(
    command: Callable[[argparse.Namespace], Awaitable[int]], args: argparse.Namespace
) -> int:
    """Run ``command``; SIGTERM cancels it as Ctrl-C does (cleanup runs, exit 130)."""
    import asyncio

    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await command(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.run is _push:
            through_daemon = _push_through_daemon(args)
            if through_daemon is not None:
                return through_daemon
        return _run(args.run, args)
    except BrokenPipeError:
        # A reader that went away (``hoist images | head``) is not an error of ours.
        sys.stderr.close()
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
