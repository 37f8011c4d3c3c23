"""Hoist's logs go through the caller's ``logging``, and never carry a secret."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from engine import logs


def test_a_library_caller_s_logging_decides_what_is_shown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logs.get_logger("engine.test")
    with caplog.at_level(logging.WARNING, logger="engine"):
        log.debug("per request", url="http://r/v2/")
        log.warning("slow down", host="r")
    assert [record.levelname for record in caplog.records] == ["WARNING"]
    assert "slow down" in caplog.records[0].getMessage()


@pytest.mark.parametrize("key", ["password", "identitytoken", "Authorization", "credentials"])
def test_a_secret_never_reaches_the_log_whatever_structlog_is_configured_with(
    caplog: pytest.LogCaptureFixture, key: str
) -> None:
    log = logs.get_logger("engine.test")
    with caplog.at_level(logging.DEBUG, logger="engine"):
        log.info("login", **{key: "hunter2"})
    message = caplog.records[0].getMessage()
    assert "hunter2" not in message and logs.REDACTED in message


def test_lines_nobody_shows_cost_no_structlog_import() -> None:
    # A fresh interpreter: this one imported structlog long ago.
    probe = (
        "import sys\n"
        "from engine import logs\n"
        "log = logs.get_logger('engine.test')\n"
        "log.debug('per request', url='x'); log.info('placed')\n"
        "quiet = 'structlog' not in sys.modules\n"
        "log.warning('slow down')\n"
        "print(quiet, 'structlog' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["True", "True"], done.stderr
    assert "slow down" in done.stderr
