"""This machine in the words images use: Go's GOARCH, and the OCI platform it runs."""

from __future__ import annotations

import platform

#: ``platform.machine()`` as Go names the architecture, and the OCI variant where it has one.
_GO_ARCH = {
    "x86_64": ("amd64", ""),
    "aarch64": ("arm64", ""),
    "armv7l": ("arm", "v7"),
    "i686": ("386", ""),
}


def go_arch() -> str:
    """``amd64``, ``arm64``…: what dockerd reports as its ``Arch``."""
    return _arch_and_variant()[0]


def host_platform() -> str:
    """``linux/amd64``, ``linux/arm/v7``…: the child of a multi-platform image to push."""
    arch, variant = _arch_and_variant()
    return "/".join(part for part in (platform.system().lower(), arch, variant) if part)


def _arch_and_variant() -> tuple[str, str]:
    machine = platform.machine().lower()
    return _GO_ARCH.get(machine, (machine, ""))
