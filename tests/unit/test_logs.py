"""Hoist's logs go through the caller's ``logging``, and never carry a secret."""

from __future__ import annotations

import logging

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
