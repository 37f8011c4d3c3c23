"""Hoist against registries that want something: credentials, tokens, trust in a CA, a client cert.

Every registry here is a real ``docker-registry``; what Hoist pushed is read back by skopeo.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from engine import Engine
from engine.errors import UnauthorizedError
from engine.registry.auth_config import AuthConfig
from tests.support.clients import Hoist
from tests.support.registry import SecuredRegistry
from tests.support.sample import LayerSpec, write_docker_archive, write_oci_layout

pytestmark = pytest.mark.integration

KiB = 1024
LAYERS = [LayerSpec(200 * KiB, 41), LayerSpec(64 * KiB, 42)]


def _load(hoist: Hoist, tmp_path: Path, target: str) -> None:
    write_docker_archive(tmp_path / "image.tar", LAYERS, [target], tmp_path / "work")
    hoist("load", "-i", str(tmp_path / "image.tar"))


def _skopeo_has(secured: SecuredRegistry, ref: str) -> bool:
    args = ["skopeo", "inspect", "--raw"]
    if secured.username:
        args.append(f"--creds={secured.creds}")
    if secured.certs_d is not None:
        args.append(f"--cert-dir={secured.cert_dir}")
    else:
        args.append("--tls-verify=false")
    answer = subprocess.run([*args, f"docker://{ref}"], capture_output=True, timeout=60)
    return answer.returncode == 0


def _no_secret(secret: str, *outputs: str) -> None:
    for output in outputs:
        assert secret not in output


def _secure_loopback(hoist: Hoist) -> None:
    """Loopback is insecure by default (as in Docker); these tests want TLS really checked."""
    hoist.root.mkdir(parents=True, exist_ok=True)
    (hoist.root / "daemon.json").write_text(json.dumps({"insecure-loopback": False}))


# -- Basic auth ----------------------------------------------------------------------------


def test_login_push_logout_with_basic_auth(
    hoist: Hoist, basic_auth_registry: SecuredRegistry, tmp_path: Path
) -> None:
    secured = basic_auth_registry
    target = f"{secured.host}/basic/app:v1"
    _load(hoist, tmp_path, target)

    login = hoist(
        "login", "-u", secured.username, "--password-stdin", secured.host, input=secured.password
    )
    assert login.stdout.strip() == "Login Succeeded"
    assert "stored unencrypted" in login.stderr
    config = Path(hoist.env["DOCKER_CONFIG"]) / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert secured.host in json.loads(config.read_text())["auths"]

    pushed = hoist("push", "--progress", "plain", "--log-level", "debug", target)
    assert _skopeo_has(secured, target)

    logout = hoist("logout", secured.host)
    assert logout.stdout.strip() == f"Removing login credentials for {secured.host}"
    assert secured.host not in json.loads(config.read_text()).get("auths", {})
    _no_secret(secured.password, login.stdout, login.stderr, pushed.stdout, pushed.stderr)


def test_wrong_password_is_refused_and_never_shown(
    hoist: Hoist, basic_auth_registry: SecuredRegistry, tmp_path: Path
) -> None:
    secured = basic_auth_registry
    target = f"{secured.host}/basic/wrong:v1"
    _load(hoist, tmp_path, target)
    wrong = secured.password + "-wrong"

    login = hoist(
        "login", "-u", secured.username, "--password-stdin", secured.host, input=wrong, check=False
    )
    assert login.returncode == 1 and "unauthorized" in login.stderr.lower()

    config_dir = Path(hoist.env["DOCKER_CONFIG"])
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "config.json").write_text(
        json.dumps({"auths": {secured.host: {"auth": _basic(secured.username, wrong)}}})
    )
    pushed = hoist("push", "--log-level", "debug", target, check=False)

    assert pushed.returncode == 1
    assert pushed.stderr.splitlines()[-1].startswith("Error: ")
    assert "unauthorized" in pushed.stderr.lower()
    assert f"hoist login {secured.host}" in pushed.stderr
    assert "Traceback" not in pushed.stderr
    _no_secret(wrong, login.stdout, login.stderr, pushed.stdout, pushed.stderr)
    assert not _skopeo_has(secured, target)


def test_no_credentials_and_no_terminal_says_to_log_in(
    hoist: Hoist, basic_auth_registry: SecuredRegistry, tmp_path: Path
) -> None:
    target = f"{basic_auth_registry.host}/basic/anon:v1"
    _load(hoist, tmp_path, target)

    pushed = hoist("push", target, check=False)

    assert pushed.returncode == 1
    assert f"run 'hoist login {basic_auth_registry.host}'" in pushed.stderr


def test_each_refused_row_of_a_batch_says_to_log_in(
    hoist: Hoist, basic_auth_registry: SecuredRegistry, tmp_path: Path
) -> None:
    first, second = (f"{basic_auth_registry.host}/basic/anon-{n}:v1" for n in (1, 2))
    _load(hoist, tmp_path, first)
    hoist("tag", first, second)

    pushed = hoist("push", first, second, check=False)

    assert pushed.returncode == 1
    hint = f"(run 'hoist login {basic_auth_registry.host}')"
    errors = [line for line in pushed.stderr.splitlines() if line.startswith("Error: ")]
    assert [line.split(": ")[1] for line in errors] == [first, second]
    assert all(line.endswith(hint) for line in errors), errors


def _basic(username: str, password: str) -> str:
    import base64

    return base64.b64encode(f"{username}:{password}".encode()).decode()


async def _write_archive(tmp_path: Path, target: str) -> None:
    """``i.tar`` in ``tmp_path``: a docker-archive of the sample layers, named ``target``."""
    await anyio.to_thread.run_sync(
        lambda: write_docker_archive(tmp_path / "i.tar", LAYERS, [target], tmp_path / "work")
    )


@pytest.mark.anyio
async def test_relogin_callback_supplies_new_credentials(
    basic_auth_registry: SecuredRegistry, tmp_path: Path, anyio_backend: str
) -> None:
    secured = basic_auth_registry
    target = f"{secured.host}/basic/relogin:v1"
    await _write_archive(tmp_path, target)
    asked: list[str] = []

    async def relogin(domain: str) -> AuthConfig:
        asked.append(domain)
        return AuthConfig(username=secured.username, password=secured.password)

    config_dir = tmp_path / "config"
    async with Engine(tmp_path / "root", config_dir=config_dir, relogin=relogin) as engine:
        await engine.load(tmp_path / "i.tar")
        result = await engine.push(target)

    assert asked == [secured.host]
    assert result.tag == "v1"
    assert await anyio.to_thread.run_sync(_skopeo_has, secured, target)


@pytest.mark.anyio
async def test_a_long_lived_engine_asks_for_credentials_again_in_a_later_push(
    basic_auth_registry: SecuredRegistry, tmp_path: Path, anyio_backend: str
) -> None:
    # A refusal is an answer for one push (or batch), not for the Engine's life: hoist serve
    # keeps one Engine while credentials are renewed.
    secured = basic_auth_registry
    target = f"{secured.host}/basic/renewed:v1"
    await _write_archive(tmp_path, target)
    answers: list[AuthConfig | None] = [
        None,
        AuthConfig(username=secured.username, password=secured.password),
    ]

    async def relogin(domain: str) -> AuthConfig | None:
        return answers.pop(0)

    config_dir = tmp_path / "config"
    async with Engine(tmp_path / "root", config_dir=config_dir, relogin=relogin) as engine:
        await engine.load(tmp_path / "i.tar")
        with pytest.raises(UnauthorizedError):
            await engine.push(target)
        result = await engine.push(target)

    assert answers == [] and result.tag == "v1"
    assert await anyio.to_thread.run_sync(_skopeo_has, secured, target)


@pytest.mark.anyio
async def test_without_relogin_the_library_raises_unauthorized(
    basic_auth_registry: SecuredRegistry, tmp_path: Path, anyio_backend: str
) -> None:
    target = f"{basic_auth_registry.host}/basic/lib:v1"
    await _write_archive(tmp_path, target)
    async with Engine(tmp_path / "root", config_dir=tmp_path / "config") as engine:
        await engine.load(tmp_path / "i.tar")
        with pytest.raises(UnauthorizedError):
            await engine.push(target)


# -- Credential helpers ----------------------------------------------------------------------

HELPER = """#!{python}
import json, os, sys
store = {store!r}
data = json.load(open(store)) if os.path.exists(store) else {{}}
action = sys.argv[1]
if action == "get":
    url = sys.stdin.read().strip()
    if url not in data:
        print("credentials not found in native keychain")
        sys.exit(1)
    json.dump({{"ServerURL": url, **data[url]}}, sys.stdout)
elif action == "store":
    item = json.load(sys.stdin)
    data[item["ServerURL"]] = {{"Username": item["Username"], "Secret": item["Secret"]}}
    json.dump(data, open(store, "w"))
elif action == "erase":
    data.pop(sys.stdin.read().strip(), None)
    json.dump(data, open(store, "w"))
"""


def test_credentials_go_through_a_helper(
    hoist: Hoist, basic_auth_registry: SecuredRegistry, tmp_path: Path
) -> None:
    secured = basic_auth_registry
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-hoisttest"
    helper.write_text(HELPER.format(python=sys.executable, store=str(tmp_path / "helper.json")))
    helper.chmod(0o755)
    hoist.env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    config_dir = Path(hoist.env["DOCKER_CONFIG"])
    config_dir.mkdir(parents=True)
    (config_dir / "config.json").write_text(json.dumps({"credsStore": "hoisttest"}))
    target = f"{secured.host}/helper/app:v1"
    _load(hoist, tmp_path, target)

    login = hoist(
        "login", "-u", secured.username, "--password-stdin", secured.host, input=secured.password
    )
    hoist("push", target)

    assert "stored unencrypted" not in login.stderr
    assert secured.password not in (config_dir / "config.json").read_text()
    kept = json.loads((tmp_path / "helper.json").read_text())
    assert kept[secured.host] == {"Username": secured.username, "Secret": secured.password}
    assert _skopeo_has(secured, target)


# -- TLS --------------------------------------------------------------------------------------


def test_tls_registry_is_verified_with_certs_d(
    hoist: Hoist, tls_registry: SecuredRegistry, tmp_path: Path
) -> None:
    secured = tls_registry
    target = f"{secured.host}/tls/app:v1"
    _secure_loopback(hoist)
    _load(hoist, tmp_path, target)

    refused = hoist("push", target, check=False)
    assert refused.returncode == 1
    assert "certificate" in refused.stderr.lower()

    hoist.env["HOIST_CERTS_D"] = str(secured.certs_d)
    hoist("push", target)
    assert _skopeo_has(secured, target)


def test_blobs_that_lie_in_files_go_over_tls_too(
    hoist: Hoist, tls_registry: SecuredRegistry, tmp_path: Path
) -> None:
    """A layout's blobs over 2 MiB stream from their files in one PATCH, here through TLS.
    skopeo copies the image back, checking every blob's digest."""
    secured = tls_registry
    target = f"{secured.host}/tls/layout:v1"
    _secure_loopback(hoist)
    hoist.env["HOIST_CERTS_D"] = str(secured.certs_d)
    layout = tmp_path / "layout"
    image = write_oci_layout(layout, [LayerSpec(3 << 20, 81), LayerSpec(5 << 20, 82)], "v1")

    hoist("push", "--from", str(layout), target)

    copied = subprocess.run(
        [
            "skopeo",
            "copy",
            f"--src-cert-dir={secured.cert_dir}",
            f"docker://{target}",
            f"oci:{tmp_path / 'back'}:v1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert copied.returncode == 0, copied.stderr
    back = json.loads((tmp_path / "back" / "index.json").read_text())
    assert back["manifests"][0]["digest"] == str(image.manifest_digest)


def test_mtls_registry_needs_the_client_pair(
    hoist: Hoist, mtls_registry: SecuredRegistry, tmp_path: Path
) -> None:
    secured = mtls_registry
    target = f"{secured.host}/mtls/app:v1"
    _secure_loopback(hoist)
    _load(hoist, tmp_path, target)
    assert secured.cert_dir is not None
    without_client = tmp_path / "ca-only"
    (without_client / secured.host).mkdir(parents=True)
    (without_client / secured.host / "ca.crt").write_bytes(
        (secured.cert_dir / "ca.crt").read_bytes()
    )

    hoist.env["HOIST_CERTS_D"] = str(without_client)
    assert hoist("push", target, check=False).returncode == 1

    hoist.env["HOIST_CERTS_D"] = str(secured.certs_d)
    hoist("push", target)
    assert _skopeo_has(secured, target)


def test_http_is_refused_for_a_registry_that_is_not_insecure(
    hoist: Hoist, registry: object, tmp_path: Path
) -> None:
    host = registry.host  # type: ignore[attr-defined]
    target = f"{host}/plain/app:v1"
    _secure_loopback(hoist)
    _load(hoist, tmp_path, target)

    refused = hoist("push", target, check=False)

    assert refused.returncode == 1
    assert f"https://{host}/v2/" in refused.stderr
    hoist("--insecure-registry", host, "push", target)


# -- Token auth ---------------------------------------------------------------------------------


def test_token_auth_login_and_push(
    hoist: Hoist, token_registry: SecuredRegistry, tmp_path: Path
) -> None:
    secured = token_registry
    server = secured.token_server
    assert server is not None
    target = f"{secured.host}/token/app:v1"
    _load(hoist, tmp_path, target)

    hoist("login", "-u", secured.username, "--password-stdin", secured.host, input=secured.password)
    server.clear()
    pushed = hoist("push", "--log-level", "debug", target)

    granted_scopes = {str(scope) for request in server.issued for scope in request.scopes}
    assert "repository:token/app:push,pull" in granted_scopes
    assert len(server.issued) <= 2, "one token should serve every request of the push"
    for request in server.requests:
        assert secured.password not in request.target
    _no_secret(secured.password, pushed.stdout, pushed.stderr)
    assert _skopeo_has(secured, target)


@pytest.mark.anyio
async def test_a_token_expired_mid_push_is_renewed(
    token_registry: SecuredRegistry, tmp_path: Path, anyio_backend: str
) -> None:
    """The registry refuses a token the client still believes valid: Hoist fetches another."""
    secured = token_registry
    server = secured.token_server
    assert server is not None
    server.lifetime = 1  # the registry will refuse each token a second after it is issued
    # One repository: the second push needs no new scope, only a token the registry still takes.
    first, second = f"{secured.host}/token/renew:v1", f"{secured.host}/token/renew:v2"

    def make() -> None:
        write_docker_archive(tmp_path / "a.tar", LAYERS, [first], tmp_path / "wa")
        write_docker_archive(
            tmp_path / "b.tar", [LayerSpec(300 * KiB, 43)], [second], tmp_path / "wb"
        )

    await anyio.to_thread.run_sync(make)
    credentials = AuthConfig(username=secured.username, password=secured.password)
    async with Engine(tmp_path / "root", config_dir=tmp_path / "config") as engine:
        engine.pool.use_credentials(secured.host, credentials)
        await engine.load(tmp_path / "a.tar")
        await engine.load(tmp_path / "b.tar")
        await engine.push(first)
        issued_before = len(server.issued)
        await anyio.sleep(2.5)  # not a timing assertion: lets the registry's clock pass the token
        await engine.push(second)

    renewed = server.issued[issued_before:]
    assert renewed, "the refused token was not replaced"
    assert all("repository:token/renew:push,pull" in map(str, r.scopes) for r in renewed)
    assert await anyio.to_thread.run_sync(_skopeo_has, secured, second)


def test_on_a_terminal_push_asks_for_a_login_and_retries(
    hoist: Hoist, basic_auth_registry: SecuredRegistry, tmp_path: Path
) -> None:
    """Docker's ``Please login prior to push:``, answered at the prompt through a real pty."""
    secured = basic_auth_registry
    target = f"{secured.host}/basic/prompt:v1"
    _load(hoist, tmp_path, target)

    transcript, code = _run_on_terminal(
        _push_plain(hoist, target),
        env={**os.environ, **hoist.env},
        answers=[
            ("Username: ", secured.username.encode() + b"\n"),
            ("Password: ", secured.password.encode() + b"\n"),
        ],
    )

    assert code == 0, transcript
    assert "Please login prior to push:" in transcript
    assert "v1: digest: sha256:" in transcript
    assert secured.password not in transcript
    assert _skopeo_has(secured, target)


@pytest.mark.parametrize(
    ("keys", "code"),
    [(b"\x04", 1), (b"\x03", 130)],
    ids=["ctrl-d", "ctrl-c"],
)
def test_giving_up_at_the_login_prompt_ends_the_push_cleanly(
    hoist: Hoist, basic_auth_registry: SecuredRegistry, tmp_path: Path, keys: bytes, code: int
) -> None:
    """Ctrl-D at the prompt: no credentials, so the refusal stands (one error line, exit 1).
    Ctrl-C: interrupted (exit 130). Neither prints a traceback or pushes anything."""
    secured = basic_auth_registry
    target = f"{secured.host}/basic/giveup:v1"
    _load(hoist, tmp_path, target)

    transcript, exit_code = _run_on_terminal(
        _push_plain(hoist, target), env={**os.environ, **hoist.env}, answers=[("Username: ", keys)]
    )

    assert exit_code == code, transcript
    assert "Please login prior to push:" in transcript
    assert "Traceback" not in transcript
    if code == 1:
        errors = [line for line in transcript.splitlines() if line.startswith("Error")]
        assert len(errors) == 1, transcript
    assert not _skopeo_has(secured, target)


def _push_plain(hoist: Hoist, target: str) -> list[str]:
    root = str(hoist.root)
    return [sys.executable, "cli.py", "--root", root, "push", "--progress", "plain", target]


def _run_on_terminal(
    argv: list[str], env: dict[str, str], answers: list[tuple[str, bytes]]
) -> tuple[str, int]:
    """Run ``argv`` with a pseudo-terminal as its controlling tty; type each answer (its bytes:
    text and Enter, or a control key) when its prompt shows. The transcript and the exit code."""
    import pty
    import select

    from tests.support.clients import ROOT

    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes the CLI, its terminal the pty
        os.chdir(ROOT)
        os.execve(argv[0], argv, env)
    output = b""
    pending = list(answers)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal: it is done
            break
        if not chunk:
            break
        output += chunk
        if pending and output.rstrip().endswith(pending[0][0].strip().encode()):
            os.write(fd, pending.pop(0)[1])
    _, status = os.waitpid(pid, 0)
    return output.decode(errors="replace"), os.waitstatus_to_exitcode(status)
