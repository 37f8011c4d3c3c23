"""Docker's image reference grammar and normalisation, as docker/distribution 2.8 parses it.

    reference       := name [ ":" tag ] [ "@" digest ]
    name            := [domain "/"] path-component ["/" path-component]*
    domain          := domain-component ["." domain-component]* [":" port-number]
    domain-component:= [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]
    path-component  := [a-z0-9]+ (separator [a-z0-9]+)*     separator := "." | "_" | "__" | "-"+
    tag             := [\\w][\\w.-]{0,127}                    (ASCII \\w, as in Go)
    digest          := algorithm ":" hex                     (then checked as go-digest v1.0.0 does)

Normalisation (``ParseNormalizedNamed``): the first path component is a registry host only if it is
``localhost`` or contains ``.`` or ``:``; otherwise the domain is ``docker.io`` and one-component
names get ``library/``. ``index.docker.io`` becomes ``docker.io``. Bracketed IPv6 hosts are not
part of the 2.8 grammar and are refused, as Docker refuses them.

Go and Python disagree in small ways that matter at the edges, so this module follows Go: regexes
match the whole text (Go's ``$`` does not match before a trailing newline), ``\\w`` is ASCII, and
lower-casing is Go's rune-by-rune ``strings.ToLower``.
"""

from __future__ import annotations

import re

from engine import docker_hub
from engine.digest import Digest
from engine.errors import InvalidReferenceError
from engine.value import Value

OFFICIAL_REPO_NAME = "library"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

# Go allows an empty separator ("[-]*"); it adds nothing to the language but makes Python's
# backtracking exponential on long invalid names, so _PATH_COMPONENT requires one dash or more.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_PATH = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"\w[\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_REFERENCE_RE = re.compile(rf"((?:{_DOMAIN}/)?{_PATH})(?::({_TAG}))?(?:@({_DIGEST}))?", re.ASCII)
_NAME_RE = re.compile(rf"(?:({_DOMAIN})/)?({_PATH})", re.ASCII)
_TAG_RE = re.compile(_TAG, re.ASCII)
_DIGEST_RE = re.compile(_DIGEST, re.ASCII)
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")

# go-digest v1.0.0 (what Docker links the 2.8 reference package with) validates a digest again.
_GO_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_DIGEST_ENCODED_RE = re.compile(r"[a-f0-9]+")
_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}

_INVALID_FORMAT = "invalid reference format"
_NAME_NOT_LOWERCASE = "repository name must be lowercase"
_NAME_TOO_LONG = f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"

# The one code point whose full lower case (Python) is longer than its simple one (Go).
_GO_LOWER_EXCEPTIONS = {"\u0130": "i"}


class Reference(Value):
    """A parsed reference: ``domain/path[:tag][@digest]``.

    Build one with :func:`parse_normalized_named`; the constructor trusts its fields. ``domain`` is
    empty only in a corner Docker also has: the first component looks like a host (it has a ``.``)
    but is not a valid domain, while the whole name is a valid path (``a_b.com/x``).
    """

    __slots__ = ("digest", "domain", "path", "tag")
    domain: str
    path: str
    tag: str | None
    digest: Digest | None

    def __init__(
        self, domain: str, path: str, tag: str | None = None, digest: Digest | None = None
    ) -> None:
        super().__init__(domain, path, tag, digest)

    @property
    def name(self) -> str:
        """Docker's ``Name()``: the repository with its domain, without tag or digest."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    def __str__(self) -> str:
        return self.name + _suffix(self)

    def with_tag(self, tag: str) -> Reference:
        """The same repository at ``tag``; the digest is dropped, as pushing by tag needs."""
        if not _TAG_RE.fullmatch(tag):
            raise InvalidReferenceError("invalid tag format")
        return Reference(self.domain, self.path, tag)

    def with_digest(self, digest: str) -> Reference:
        """The same reference pinned to ``digest`` (the tag is kept, as ``WithDigest`` keeps it)."""
        if not _DIGEST_RE.fullmatch(digest):
            raise InvalidReferenceError("invalid digest format")
        return Reference(self.domain, self.path, self.tag, _parse_digest(digest))

    def trim(self) -> Reference:
        """The name only, without tag or digest (``TrimNamed``)."""
        return Reference(self.domain, self.path)


def parse_normalized_named(text: str) -> Reference:
    """Parse what a user typed (``ubuntu``, ``user/app:1``) into a full reference; an
    ``InvalidReferenceError`` names ``text``."""
    try:
        return _parse_normalized(text)
    except InvalidReferenceError as error:
        if error.reference is not None:
            raise
        raise InvalidReferenceError(error.reason, text) from None


def _parse_normalized(text: str) -> Reference:
    if _IDENTIFIER_RE.fullmatch(text):
        raise InvalidReferenceError(
            f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings"
        )
    domain, remainder = _split_docker_domain(text)
    remote_name = remainder.partition(":")[0]
    if _go_to_lower(remote_name) != remote_name:
        raise InvalidReferenceError(f"{_INVALID_FORMAT}: {_NAME_NOT_LOWERCASE}")
    return _parse(f"{domain}/{remainder}")


def parse_named(text: str) -> Reference:
    """Parse a reference that must already be in canonical form (``docker.io/library/x:y``)."""
    ref = parse_normalized_named(text)
    if str(ref) != text:
        raise InvalidReferenceError("repository name must be canonical", text)
    return ref


def familiar_name(ref: Reference) -> str:
    """The name as Docker shows it: no ``docker.io/``, no ``library/`` for official images."""
    if ref.domain != docker_hub.DOMAIN:
        return ref.name
    components = ref.path.split("/")
    if len(components) == 2 and components[0] == OFFICIAL_REPO_NAME:
        return components[1]
    return ref.path


def familiar_string(ref: Reference) -> str:
    """The familiar name with the tag and digest, as Docker prints a reference."""
    return familiar_name(ref) + _suffix(ref)


def with_default_tag(ref: Reference) -> Reference:
    """Add ``latest`` to a reference that has neither tag nor digest (``TagNameOnly``)."""
    if ref.tag is None and ref.digest is None:
        return ref.with_tag(DEFAULT_TAG)
    return ref


def _suffix(ref: Reference) -> str:
    tag = f":{ref.tag}" if ref.tag is not None else ""
    digest = f"@{ref.digest}" if ref.digest is not None else ""
    return tag + digest


def _split_docker_domain(text: str) -> tuple[str, str]:
    """Split off the registry host, defaulting to Docker Hub (``splitDockerDomain``)."""
    first, slash, rest = text.partition("/")
    if slash and (first == "localhost" or "." in first or ":" in first):
        domain, remainder = first, rest
    else:
        domain, remainder = docker_hub.DOMAIN, text
    if domain == docker_hub.LEGACY_DOMAIN:
        domain = docker_hub.DOMAIN
    if domain == docker_hub.DOMAIN and "/" not in remainder:
        remainder = f"{OFFICIAL_REPO_NAME}/{remainder}"
    return domain, remainder


def _parse(text: str) -> Reference:
    """Docker's ``Parse`` for a text that always has a domain in front."""
    match = _REFERENCE_RE.fullmatch(text)
    if match is None:
        # Go tells an upper-case problem apart by trying the lower-cased text again.
        if _REFERENCE_RE.fullmatch(_go_to_lower(text)):
            raise InvalidReferenceError(_NAME_NOT_LOWERCASE)
        raise InvalidReferenceError(_INVALID_FORMAT)
    name, tag, digest = match.groups()
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidReferenceError(_NAME_TOO_LONG)
    domain, path = _split_name(name)
    return Reference(domain, path, tag, _parse_digest(digest) if digest is not None else None)


def _split_name(name: str) -> tuple[str, str]:
    match = _NAME_RE.fullmatch(name)
    assert match is not None, "a name that matched the reference grammar matches the name grammar"
    domain, path = match.groups()
    return domain or "", path


def _parse_digest(text: str) -> Digest:
    """go-digest's ``Parse``: known algorithm, exact length, lower-case hex."""
    algorithm, colon, encoded = text.partition(":")
    if not algorithm or not colon or not encoded:
        raise InvalidReferenceError("invalid checksum digest format")
    hex_length = _DIGEST_HEX_LENGTHS.get(algorithm)
    if hex_length is None:
        if not _GO_DIGEST_RE.fullmatch(text):
            raise InvalidReferenceError("invalid checksum digest format")
        raise InvalidReferenceError("unsupported digest algorithm")
    if len(encoded) != hex_length:
        raise InvalidReferenceError("invalid checksum digest length")
    if not _DIGEST_ENCODED_RE.fullmatch(encoded):
        raise InvalidReferenceError("invalid checksum digest format")
    return Digest(text)


def _go_to_lower(text: str) -> str:
    """Go's ``strings.ToLower``: the simple mapping of each rune, not Python's full one."""
    if text.isascii():
        return text.lower()
    return "".join(map(_go_lower_rune, text))


def _go_lower_rune(char: str) -> str:
    if "\ud800" <= char <= "\udfff":
        # A lone surrogate is how Python carries a byte that is not UTF-8 (surrogateescape);
        # Go's ToLower replaces such a byte with U+FFFD.
        return "\ufffd"
    lowered = char.lower()
    return lowered if len(lowered) == 1 else _GO_LOWER_EXCEPTIONS.get(char, char)
