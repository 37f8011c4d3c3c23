"""The README's demo command runs as a user runs it: a real registry, load, push, push again."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support.clients import ROOT

pytestmark = pytest.mark.integration


def test_the_demo_pushes_then_finds_every_layer_already_there() -> None:
    demo = [sys.executable, "-m", "engine.demo", "--layers", "2", "--layer-mib", "1"]
    done = subprocess.run(
        [*demo, "--progress", "plain"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )

    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Loaded image:" in out
    assert len(re.findall(r"^[0-9a-f]{12}: Pushed$", out, re.MULTILINE)) == 2
    assert len(re.findall(r"^[0-9a-f]{12}: Layer already exists$", out, re.MULTILINE)) == 2
    digests = re.findall(r"^v1: digest: (sha256:[0-9a-f]{64}) size: \d+$", out, re.MULTILINE)
    assert len(digests) == 2 and digests[0] == digests[1], "the same image both times"
