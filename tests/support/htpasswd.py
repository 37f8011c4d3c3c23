"""Write an htpasswd file of bcrypt hashes, the only kind Distribution's htpasswd auth accepts."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import bcrypt

#: Apache's ``htpasswd -B`` default cost. Distribution checks the hash on every request, so a
#: high cost would slow each blob upload of a test push for no gain.
DEFAULT_ROUNDS = 5


def htpasswd_line(username: str, password: str, rounds: int = DEFAULT_ROUNDS) -> str:
    if ":" in username:
        raise ValueError("an htpasswd user name cannot contain ':'")
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds))
    return f"{username}:{hashed.decode()}"


def write_htpasswd(path: Path, users: Mapping[str, str], rounds: int = DEFAULT_ROUNDS) -> Path:
    """Write ``users`` (name → password) to ``path``, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [htpasswd_line(name, password, rounds) for name, password in users.items()]
    path.write_text("".join(f"{line}\n" for line in lines))
    path.chmod(0o600)
    return path
