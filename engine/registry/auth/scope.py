"""Token scopes (``repository:NAME:push,pull``): build them, and merge the ones a request needs.

Grammar (distribution's token spec): ``TYPE:NAME:ACTION[,ACTION]``; NAME may itself hold a
colon (``localhost:5000/a``), so TYPE ends at the first colon and the actions start after the last.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import parse_qs, urlsplit

PUSH_PULL = ("push", "pull")
PULL = ("pull",)


def repository_scope(path: str, actions: Sequence[str] = PUSH_PULL) -> str:
    """``repository:a/b:push,pull``: what pushing to repository ``a/b`` needs."""
    return f"repository:{path}:{','.join(actions)}"


def _split(scope: str) -> tuple[str, list[str]] | None:
    """``(TYPE:NAME, actions)``, or None for a scope outside the grammar (kept verbatim)."""
    resource, sep, actions = scope.rpartition(":")
    if not sep or ":" not in resource:
        return None
    return resource, [action for action in actions.split(",") if action]


def merge_scopes(*groups: Iterable[str]) -> tuple[str, ...]:
    """The union of scopes, one per resource with the union of its actions, in first-seen order.

    A challenge may name several scopes in one space-separated value; each is split out. Merging
    ``repository:a:pull`` into ``repository:a:push,pull`` keeps one scope, so one token serves both.
    """
    actions_by_resource: dict[str, list[str] | None] = {}
    for group in groups:
        for text in group:
            for scope in text.split():
                parts = _split(scope)
                if parts is None:
                    actions_by_resource.setdefault(scope, None)
                    continue
                resource, actions = parts
                known = actions_by_resource.setdefault(resource, [])
                if known is not None:
                    known.extend(action for action in actions if action not in known)
    return tuple(
        resource if actions is None else f"{resource}:{','.join(actions)}"
        for resource, actions in actions_by_resource.items()
    )


def scope_key(scopes: Iterable[str]) -> tuple[str, ...]:
    """An order-free identity of a scope set, for the token cache."""
    canonical = []
    for scope in merge_scopes(scopes):
        parts = _split(scope)
        canonical.append(f"{parts[0]}:{','.join(sorted(parts[1]))}" if parts else scope)
    return tuple(sorted(canonical))


def mount_source_scopes(url: str) -> tuple[str, ...]:
    """``repository:SRC:pull`` for each mount source (``?mount=…&from=SRC``), as Docker adds."""
    if "from=" not in url:
        return ()  # most requests: no query to take apart
    sources = parse_qs(urlsplit(url).query).get("from", [])
    return tuple(repository_scope(source, PULL) for source in sources if source)
