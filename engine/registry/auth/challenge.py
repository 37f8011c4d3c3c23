"""``WWW-Authenticate`` challenges (RFC 7235): parse them and pick the one Hoist answers.

A header may hold several challenges (``Basic realm="r", Bearer realm="t",service="s"``) and a
response may repeat the header; quoted values may hold commas and backslash-escaped quotes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from engine.registry.auth.messages import WWW_AUTHENTICATE, HttpResponse
from engine.registry.auth.messages import header_values as _header_values

BASIC = "basic"
BEARER = "bearer"

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*[ \t]*(?=,|$)")
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_SPACE = re.compile(r"[ \t]*")
_SEPARATORS = re.compile(r"[ \t,]*")

#: Parameters that describe one refused request, not the registry: never worth remembering.
_PER_REQUEST = ("scope", "error", "error_description")


@dataclass(frozen=True)
class Challenge:
    """One challenge: the scheme in lower case, the parameters with lower-case names."""

    scheme: str
    parameters: Mapping[str, str] = field(default_factory=dict)

    def get(self, name: str) -> str:
        return self.parameters.get(name, "")


class _Scanner:
    """A cursor over one header value."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def done(self) -> bool:
        return self.pos >= len(self.text)

    def take(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        match = pattern.match(self.text, self.pos)
        if match:
            self.pos = match.end()
        return match

    def peek(self, char: str) -> bool:
        return self.text.startswith(char, self.pos)


def _value(scanner: _Scanner) -> str | None:
    quoted = scanner.take(_QUOTED)
    if quoted:
        return _ESCAPE.sub(r"\1", quoted.group(1))
    token = scanner.take(_TOKEN)
    return token.group(0) if token else None


def _scan(text: str) -> list[tuple[str, dict[str, str]]]:
    found: list[tuple[str, dict[str, str]]] = []
    scanner = _Scanner(text)
    while True:
        scanner.take(_SEPARATORS)
        if scanner.done():
            return found
        name = scanner.take(_TOKEN)
        if name is None:
            return found  # garbage: keep what parsed cleanly before it
        scanner.take(_SPACE)
        if scanner.peek("=") and not found:
            return found  # a parameter before any scheme: not a challenge
        if not scanner.peek("="):
            found.append((name.group(0).lower(), {}))
            scanner.take(_TOKEN68)  # an opaque credential (Negotiate): no scheme Hoist answers
            continue
        scanner.pos += 1
        scanner.take(_SPACE)
        value = _value(scanner)
        if value is None:
            return found  # an unterminated quote or a missing value ends the header
        # RFC 7235: a parameter name occurs once per challenge; the first one counts.
        found[-1][1].setdefault(name.group(0).lower(), value)


def parse_challenges(header_values: Sequence[str]) -> list[Challenge]:
    """Every challenge in every ``WWW-Authenticate`` value, in the order the server sent them."""
    return [Challenge(scheme, params) for text in header_values for scheme, params in _scan(text)]


def response_challenges(response: HttpResponse) -> list[Challenge]:
    """The challenges of a 401 answer; any other answer challenges nothing."""
    if response.status != 401:
        return []
    return parse_challenges(_header_values(response.headers, WWW_AUTHENTICATE))


def preferred_challenge(challenges: Sequence[Challenge]) -> Challenge | None:
    """Bearer when offered with a realm (it scopes access), else Basic, else none we answer."""
    for challenge in challenges:
        if challenge.scheme == BEARER and challenge.get("realm"):
            return challenge
    for challenge in challenges:
        if challenge.scheme == BASIC:
            return challenge
    return None


def registry_wide(challenge: Challenge) -> Challenge:
    """The challenge without what only concerned the request it refused (its scope, its error)."""
    kept = {k: v for k, v in challenge.parameters.items() if k not in _PER_REQUEST}
    return replace(challenge, parameters=kept)
