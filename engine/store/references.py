"""``repositories.json``: which reference names which image, in the shape Docker writes.

    {"Repositories": {"<familiar name>": {"<familiar string>": "sha256:<image id>"}}}

The mapping is a plain dict loaded whole and saved whole (sorted, as Go marshals maps); callers
change it only under the store's lock. Docker also keeps digest references here
(``busybox@sha256:…``); they are read and kept, never written by Hoist.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from engine.digest import Digest
from engine.errors import HoistError, InvalidReferenceError, StoreError
from engine.reference import (
    Reference,
    familiar_name,
    familiar_string,
    parse_normalized_named,
    with_default_tag,
)
from engine.store.atomic import read_json, write_json

#: familiar name → familiar string → image ID
Repositories = dict[str, dict[str, str]]


def load_repositories(path: Path) -> Repositories:
    """The whole mapping; an absent file is an empty store, a malformed one a StoreError."""
    value = read_json(path)
    if value is None:
        return {}
    repositories = value.get("Repositories") if isinstance(value, dict) else []
    if repositories is None:  # Go marshals a nil map as null
        return {}
    if not _well_formed(repositories):
        raise StoreError(f"{path}: not a repositories file")
    assert isinstance(repositories, dict)
    for refs in repositories.values():
        _check_entries(path, refs)
    return repositories


def _well_formed(repositories: object) -> bool:
    return isinstance(repositories, dict) and all(
        isinstance(name, str)
        and isinstance(refs, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in refs.items())
        for name, refs in repositories.items()
    )


def _check_entries(path: Path, refs: dict[str, str]) -> None:
    for text, image_id in refs.items():
        try:
            parse_normalized_named(text)
            Digest.parse(image_id)
        except HoistError as e:
            raise StoreError(f"{path}: bad entry {text!r}: {e}") from e


def save_repositories(path: Path, repositories: Repositories) -> None:
    ordered = {name: dict(sorted(refs.items())) for name, refs in sorted(repositories.items())}
    write_json(path, {"Repositories": ordered})


def lookup(repositories: Repositories, ref: Reference) -> Digest | None:
    """The image a reference names (``latest`` when it has no tag nor digest)."""
    ref = with_default_tag(ref)
    image_id = repositories.get(familiar_name(ref), {}).get(familiar_string(ref))
    return Digest(image_id) if image_id is not None else None


def add_reference(repositories: Repositories, ref: Reference, image_id: Digest) -> None:
    """Point ``ref`` (tagged; ``latest`` when bare) at ``image_id``, replacing what it named."""
    ref = with_default_tag(ref)
    if familiar_name(ref) == "sha256":
        # "sha256:<hex>" would then read as both a tag and an image ID.
        raise InvalidReferenceError(
            "refusing to create an ambiguous tag using digest algorithm as name", str(ref)
        )
    repositories.setdefault(familiar_name(ref), {})[familiar_string(ref)] = str(image_id)


def delete_reference(repositories: Repositories, ref: Reference) -> bool:
    """Drop ``ref``; an emptied repository goes too, as Docker does. False if it was absent."""
    ref = with_default_tag(ref)
    name = familiar_name(ref)
    refs = repositories.get(name, {})
    if refs.pop(familiar_string(ref), None) is None:
        return False
    if not refs:
        del repositories[name]
    return True


def references_to(repositories: Repositories, image_id: Digest) -> list[Reference]:
    """Every reference naming ``image_id``, sorted by their text."""
    return _parsed(
        text for refs in repositories.values() for text, i in refs.items() if i == image_id
    )


def references_in(repositories: Repositories, name: Reference) -> list[tuple[Reference, Digest]]:
    """Every reference of ``name``'s repository with the image it names, sorted by text."""
    refs = repositories.get(familiar_name(name), {})
    return [(ref, Digest(refs[familiar_string(ref)])) for ref in _parsed(refs)]


def _parsed(texts: Iterable[str]) -> list[Reference]:
    # load_repositories has checked that every text parses.
    return sorted(map(parse_normalized_named, texts), key=str)
