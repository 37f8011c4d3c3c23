"""The command line's start-up: what it changes of the process, and that it undoes it."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

import cli

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import json, ssl, sys
import cli
cli._import_aiohttp_without_default_trust()
from aiohttp import connector
print(json.dumps({
    "patch_undone": "set_default_verify_paths" not in vars(ssl.SSLContext),
    "aiohttp_default_cas": connector._SSL_CONTEXT_VERIFIED.cert_store_stats()["x509_ca"],
    "aiohttp_default_verifies": connector._SSL_CONTEXT_VERIFIED.verify_mode == ssl.CERT_REQUIRED,
}))
"""


def test_aiohttp_defaults_trust_nothing_and_ssl_is_left_as_it_was() -> None:
    # A fresh interpreter: the change is process-wide, and this one imported aiohttp long ago.
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, check=True
    )
    probe = json.loads(out.stdout)
    expected = {"patch_undone": True, "aiohttp_default_cas": 0, "aiohttp_default_verifies": True}
    assert probe == expected


def test_version_and_help_import_no_event_loop_and_no_engine() -> None:
    # What a command that pushes nothing costs at start-up: none of asyncio, aiohttp, the engine.
    probe = (
        "import sys, runpy\n"
        "sys.argv = ['hoist', sys.argv[1]]\n"
        "try:\n"
        "    runpy.run_path('cli.py', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('asyncio', 'aiohttp', 'engine.api') if m in sys.modules]\n"
        "print(heavy, file=sys.stderr)\n"
    )
    for flag in ("--version", "--help"):
        out = subprocess.run(
            [sys.executable, "-c", probe, flag], cwd=ROOT, capture_output=True, text=True
        )
        assert out.stderr.strip().splitlines()[-1] == "[]", (flag, out.stderr)


def test_a_push_through_a_daemon_imports_only_what_it_uses() -> None:
    # What the client of ``hoist serve`` loads (the modules cli.py's daemon path imports), in an
    # interpreter without site-packages: nothing else of a user's may bring these in first.
    probe = (
        "import sys, cli\n"
        "cli.build_parser().parse_args(['push', '-q', 'app', 'app2'])\n"
        "import engine.data_root, engine.serve.remote\n"
        "import engine.progress.render, engine.registry.credentials\n"
        "import engine.progress.summary  # a batch's rows\n"
        "unused = ('asyncio', 'aiohttp', 'shutil', 'subprocess', 'hashlib', 'ssl',\n"
        "          'dataclasses', 'inspect')\n"
        "print([m for m in unused if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("columns", ["50", "120"])
def test_help_is_laid_out_as_argparse_s_own_formatter_lays_it_out(
    columns: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Hoist's formatter sizes itself without shutil; it must still honour COLUMNS as argparse's.
    monkeypatch.setenv("COLUMNS", columns)

    def push_help() -> str:
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args(["push", "--help"])
        return capsys.readouterr().out

    ours = push_help()
    monkeypatch.setattr(cli, "_HelpFormatter", argparse.HelpFormatter)
    assert ours == push_help()
    assert "--max-concurrent-uploads" in ours
