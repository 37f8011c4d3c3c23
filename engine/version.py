"""Hoist's version: a leaf, so that what needs it (the User-Agent) imports nothing else, and the
one place ``pyproject.toml`` reads it from."""

VERSION = "0.1.0"
