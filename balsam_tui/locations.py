"""Transfer locations: the site's trusted aliases, and the jobs' references to them.

A site trusts a set of *location aliases*, each a URL ``protocol://netloc[/root]``.
A job names a file at a location as ``"alias:/absolute/path"`` (split on the first
colon, so the path may hold colons) or as ``{location_alias: ..., path: ...}``. The
path must lie inside the location's root; ``inside`` is the one check, used both when
a job is created and again, with symlinks resolved, when a file is copied.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

PROTOCOLS = ("globus", "local")


class LocationError(ValueError):
    """A location URL or a job's reference to a location is malformed."""


@dataclass(frozen=True)
class Location:
    """One trusted alias. ``netloc`` is the Globus endpoint id for ``globus``."""

    alias: str
    protocol: str
    netloc: str
    root: str
    url: str

    @property
    def is_local(self) -> bool:
        return self.protocol == "local"


def parse_location(alias: str, url: str) -> Location:
    """Parse ``protocol://netloc[/root]``; a ``LocationError`` says what is off."""
    if not isinstance(url, str) or "://" not in url:
        raise LocationError(
            f"location {alias!r}: {url!r} is not a URL of the form "
            "protocol://netloc/root"
        )
    parts = urlsplit(url)
    protocol = parts.scheme.lower()
    if protocol not in PROTOCOLS:
        known = ", ".join(f"{p}://" for p in PROTOCOLS)
        raise LocationError(
            f"location {alias!r}: unknown protocol {parts.scheme!r} "
            f"(use one of {known})"
        )
    root = posixpath.normpath(parts.path) if parts.path else "/"
    if root.startswith("//"):
        root = "/" + root.lstrip("/")
    if protocol == "local":
        if parts.netloc not in ("", "localhost"):
            raise LocationError(
                f"location {alias!r}: a local location is local://localhost/<root> "
                f"or local:///<root>, not host {parts.netloc!r}"
            )
        if root == "/" and not parts.path:
            raise LocationError(
                f"location {alias!r}: a local location needs an absolute root directory"
            )
        return Location(alias, protocol, "localhost", root, url)
    try:
        endpoint = str(uuid.UUID(parts.netloc))
    except ValueError:
        raise LocationError(
            f"location {alias!r}: {parts.netloc!r} is not a Globus endpoint UUID"
        ) from None
    return Location(alias, protocol, endpoint, root, url)


@dataclass(frozen=True)
class RemoteRef:
    """A job's reference to a file at a trusted location."""

    alias: str
    path: str


def parse_remote_ref(value: object) -> RemoteRef:
    """Read either form of a location reference (the alias is not checked here)."""
    if isinstance(value, str):
        alias, sep, path = value.partition(":")
        if not sep or not alias:
            raise LocationError(f"{value!r} is not of the form 'alias:/absolute/path'")
    elif isinstance(value, Mapping):
        extra = set(value) - {"location_alias", "path"}
        alias, path = value.get("location_alias"), value.get("path")
        if extra or not isinstance(alias, str) or not isinstance(path, str):
            raise LocationError(
                f"{dict(value)!r} is not a mapping with exactly "
                "'location_alias' and 'path' strings"
            )
    else:
        raise LocationError(
            f"{value!r} is neither 'alias:/absolute/path' nor "
            "{location_alias: ..., path: ...}"
        )
    if not path.startswith("/"):
        raise LocationError(f"path {path!r} at {alias!r} is not absolute")
    return RemoteRef(alias, path)


def inside(path: str, root: str) -> bool:
    """Whether the normalised ``path`` is ``root`` or below it (no ``..`` escape)."""
    if not is_normal(path):
        path = posixpath.normpath(path)
    if not is_normal(root):
        root = posixpath.normpath(root)
    if root == "/":
        return path.startswith("/")
    return path == root or path.startswith(root + "/")


def is_normal(path: str) -> bool:
    """A cheap test that ``normpath`` would leave an absolute path as it is."""
    return (
        path.startswith("/")
        and "//" not in path
        and "/." not in path
        and (len(path) == 1 or not path.endswith("/"))
    )


def resolved_inside(path: str, root: str) -> bool:
    """Like ``inside`` but with symlinks resolved on this machine's filesystem."""
    return inside(os.path.realpath(path), os.path.realpath(root))


def has_parent_reference(relative: str) -> bool:
    """Whether a relative path climbs with ``..`` anywhere in it."""
    return ".." in relative.replace("\\", "/").split("/")
