"""Site settings: read ``settings.yml`` and check its ``transfers:`` section.

A Balsam site file holds many sections (scheduler, launcher, logging...). This tool
uses only ``transfers:``; the other sections are listed as ignored and never even
built into Python objects, so Jinja leftovers or custom tags elsewhere in the file do
not stop it from loading. Inside ``transfers:`` every key is checked, and a problem is
reported as one line naming the file, the line and the key.

Surprises worth knowing:

- ``transfers: null`` (or ``transfers:`` with nothing after it) turns transfers OFF,
  as in Balsam; a file with no ``transfers`` key at all gets the defaults.
- Line numbers come from the YAML node tree, not from pydantic, which knows only key
  paths. The loader therefore walks the nodes itself, and checks unknown keys and
  location aliases there; pydantic checks the values.
- A key given twice is an error inside ``transfers:`` (YAML would keep the last one
  without a word).
- ``balsam_server:`` (this tool's own section) makes the site the transfer agent of
  a site registered on a Balsam server. Its ``site_id`` may be left out when the
  file has Balsam's top-level ``site_id``; only then is that key read at all.
"""

from __future__ import annotations

import difflib
import os
import posixpath
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Literal, NamedTuple

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
)

from balsam_tui.locations import Location, LocationError, parse_location

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

_MAX_REPORTED = 3


class SettingsError(ValueError):
    """``settings.yml`` cannot be used. The message is one line: file, line, key, why.

    ``source``, ``line`` and ``key`` locate the first problem for a UI that wants to
    point at it; ``line`` and ``key`` are None when the problem has no better place
    than the file itself (a missing file, say).
    """

    def __init__(
        self,
        message: str,
        *,
        source: str,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.source = source
        self.line = line
        self.key = key


# --- the transfers: section -----------------------------------------------------------


def _canonical_uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValueError(f"{value!r} is not a UUID") from None


def _absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} is not an absolute path (it must start with /)")
    return posixpath.normpath(value)


# Strict types: YAML already gives numbers and booleans their types, so a quoted "5"
# or a `yes` where a count belongs is a mistake in the file, not something to coerce.
_AtLeastOne = Annotated[int, Strict(), Field(ge=1)]
_AtLeastZero = Annotated[int, Strict(), Field(ge=0)]
_Seconds = Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]
_Hours = Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]
_Uuid = Annotated[str, Strict(), AfterValidator(_canonical_uuid)]
_AbsolutePath = Annotated[str, Strict(), AfterValidator(_absolute_path)]
_Flag = Annotated[bool, Strict()]
_SyncLevel = Literal["exists", "size", "mtime", "checksum"]


class TransferSettings(BaseModel):
    """The ``transfers:`` section: Balsam's keys first, then this tool's additions.

    UUIDs are kept as canonical lowercase strings, the form ``Location.netloc`` uses.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    # Balsam's keys, with Balsam's meaning and defaults.
    transfer_locations: dict[str, str] = Field(
        default_factory=dict,
        description="trusted location aliases -> protocol://netloc[/root]",
    )
    globus_endpoint_id: _Uuid | None = Field(
        None, description="this site's own Globus endpoint or collection"
    )
    globus_endpoint_site_path: _AbsolutePath | None = Field(
        None, description="where the site directory appears on that endpoint"
    )
    max_concurrent_transfers: _AtLeastOne = Field(
        5, description="transfer tasks in flight at once"
    )
    transfer_batch_size: _AtLeastOne = Field(
        100, description="most transfer items in one task"
    )
    num_items_query_limit: _AtLeastOne = Field(
        2000, description="most pending items considered per cycle"
    )
    service_period: _Seconds = Field(5.0, description="seconds between cycles")

    # This tool's additions.
    retry_limit: _AtLeastZero = Field(
        3, description="automatic retries of a transiently failed item"
    )
    retry_backoff: _Seconds = Field(
        30.0, description="seconds before the first retry; doubles each attempt"
    )
    retry_backoff_max: _Seconds = Field(
        900.0, description="longest wait between two retries, in seconds"
    )
    local_workers: _AtLeastOne = Field(
        4, description="copy worker processes of the local backend"
    )
    globus_sync_level: _SyncLevel | None = Field(
        None, description="skip files already at the destination, compared by this"
    )
    globus_verify_checksum: _Flag = Field(
        True, description="Globus verifies a checksum of every file it copies"
    )
    globus_encrypt_data: _Flag = Field(True, description="encrypt data in transit")
    globus_skip_source_errors: _Flag = Field(
        True, description="a missing or unreadable source fails its item, not the task"
    )
    globus_deadline_hours: _Hours | None = Field(
        None,
        description="Globus gives up on a task after this long (null: its default)",
    )
    globus_client_id: _Uuid | None = Field(
        None,
        description="Globus native app client id (null: BALSAM_TUI_GLOBUS_CLIENT_ID)",
    )
    globus_poll_interval: _Seconds = Field(
        2.0, description="least time between two polls of Globus, in seconds"
    )

    @field_validator("transfer_locations")
    @classmethod
    def _locations_parse(cls, value: dict[str, str]) -> dict[str, str]:
        for alias, url in value.items():
            try:
                _parse_location_entry(alias, url)
            except LocationError as exc:
                raise ValueError(f"location {alias!r}: {exc}") from None
        return value


def _parse_location_entry(alias: object, url: object) -> Location:
    """Check one ``transfer_locations`` entry; the error text does not repeat alias."""
    if not isinstance(alias, str):
        raise LocationError(
            f"an alias must be a name; quote {_show(alias)} if it is meant as one"
        )
    if not alias:
        raise LocationError("an alias must not be empty")
    if ":" in alias:
        raise LocationError(
            "an alias must not contain ':' (jobs write 'alias:/absolute/path')"
        )
    if not isinstance(url, str):
        raise LocationError(
            "must be a URL such as local:///abs/root or globus://<endpoint uuid> "
            f"(got {_show(url)})"
        )
    try:
        return parse_location(alias, url)
    except LocationError as exc:
        text = str(exc)
        prefix = f"location {alias!r}: "
        raise LocationError(text.removeprefix(prefix)) from None


# --- the balsam_server: section ------------------------------------------------------


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    return value.rstrip("/")


class ServerSettings(BaseModel):
    """The ``balsam_server:`` section: which Balsam server and site to serve.

    ``api_root`` may be left out: the Balsam client configuration names it (see
    ``balsam_tui.server.client``). The token is never read from settings.yml.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    site_id: _AtLeastOne = Field(description="the site's id on the Balsam server")
    api_root: Annotated[str, Strict(), AfterValidator(_http_url)] | None = Field(
        None, description="the server's URL (null: from the Balsam client config)"
    )
    request_timeout: _Seconds = Field(
        30.0, description="seconds before a request to the server is given up"
    )


# --- the loaded site ------------------------------------------------------------------


@dataclass(frozen=True)
class SiteSettings:
    """What a site's ``settings.yml`` means to this tool."""

    path: Path | None
    transfers: TransferSettings | None
    locations: Mapping[str, Location]
    from_file: frozenset[str]
    ignored_sections: tuple[str, ...]
    server: ServerSettings | None = None

    def effective(self) -> list[tuple[str, object, str]]:
        """(key, value, "file" or "default") for each transfers key, in field order.

        With transfers off there is one row, ``("transfers", None, "file")``.
        """
        if self.transfers is None:
            return [("transfers", None, "file")]
        return [
            (
                name,
                getattr(self.transfers, name),
                "file" if name in self.from_file else "default",
            )
            for name in TransferSettings.model_fields
        ]


def default_settings_text() -> str:
    """The bundled ``settings.yml`` a new site starts from."""
    bundled = resources.files("balsam_tui") / "defaults" / "settings.yml"
    return bundled.read_text(encoding="utf-8")


def load_settings(path: str | os.PathLike[str]) -> SiteSettings:
    """Read and check a site's ``settings.yml``; raise ``SettingsError`` if unusable."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SettingsError(
            f"{source}: settings file not found (check --site or BALSAM_SITE_PATH)",
            source=source,
        ) from None
    except IsADirectoryError:
        raise SettingsError(
            f"{source}: is a directory; give the settings.yml inside it",
            source=source,
        ) from None
    except UnicodeDecodeError as exc:
        raise SettingsError(
            f"{source}: not UTF-8 text (bad byte at offset {exc.start})",
            source=source,
        ) from None
    except OSError as exc:
        raise SettingsError(
            f"{source}: cannot read it ({exc.strerror or exc})", source=source
        ) from None
    return _read_site(text, source=source, path=path)


def parse_settings_text(text: str, *, source: str = "<settings>") -> SiteSettings:
    """Like ``load_settings`` for text in hand; ``source`` names it in messages."""
    return _read_site(text, source=source, path=None)


# --- reading the YAML node tree -------------------------------------------------------


class _Entry(NamedTuple):
    """One ``key: value`` pair of a YAML mapping, with the line of its key."""

    key: object
    line: int
    value: yaml.Node


class _Problem(NamedTuple):
    line: int
    key: str
    message: str


_NULL_TAG = "tag:yaml.org,2002:null"


def _read_site(text: str, *, source: str, path: Path | None) -> SiteSettings:
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text, source) from None
    try:
        return _read_document(loader, source=source, path=path)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text, source) from None
    finally:
        loader.dispose()


def _read_document(
    loader: yaml.SafeLoader, *, source: str, path: Path | None
) -> SiteSettings:
    root = loader.get_single_node()
    if root is None or _is_null(root):
        return _site(path, TransferSettings(), {}, frozenset(), ())

    if not isinstance(root, yaml.MappingNode):
        raise SettingsError(
            f"{source}:{_line(root)}: the file must be a mapping of sections such as "
            f"'transfers:', not {_kind(root)}",
            source=source,
            line=_line(root),
        )

    sections = _entries(loader, root, source=source, where="")
    transfers_entries = [entry for entry in sections if entry.key == "transfers"]
    server, used = _read_server(loader, sections, source=source)
    ignored = tuple(
        dict.fromkeys(str(entry.key) for entry in sections if entry.key not in used)
    )
    if len(transfers_entries) > 1:
        first, second = transfers_entries[:2]
        raise SettingsError(
            f"{source}:{second.line}: transfers: given twice (also on line "
            f"{first.line}); keep one",
            source=source,
            line=second.line,
            key="transfers",
        )
    if not transfers_entries:
        return _site(path, TransferSettings(), {}, frozenset(), ignored, server)

    section = transfers_entries[0]
    if _is_null(section.value):
        return _site(path, None, {}, frozenset(), ignored, server)
    if not isinstance(section.value, yaml.MappingNode):
        raise SettingsError(
            f"{source}:{section.line}: transfers: must be a mapping of settings, or "
            f"null to turn transfers off (got {_kind(section.value)})",
            source=source,
            line=section.line,
            key="transfers",
        )

    transfers, locations, given = _read_transfers(loader, section, source=source)
    return _site(path, transfers, locations, given, ignored, server)


def _read_transfers(
    loader: yaml.SafeLoader, section: _Entry, *, source: str
) -> tuple[TransferSettings, dict[str, Location], frozenset[str]]:
    entries = _entries(loader, section.value, source=source, where="transfers")
    problems: list[_Problem] = []
    values: dict[str, object] = {}
    lines: dict[str, int] = {}
    locations: dict[str, Location] = {}

    for entry in entries:
        known = (
            isinstance(entry.key, str) and entry.key in TransferSettings.model_fields
        )
        if not known:
            problems.append(_unknown_key(entry))
            continue
        lines[entry.key] = entry.line
        if entry.key == "transfer_locations":
            urls, found, location_problems = _read_locations(
                loader, entry, source=source
            )
            values[entry.key] = urls
            locations.update(found)
            problems.extend(location_problems)
        else:
            values[entry.key] = loader.construct_object(entry.value, deep=True)

    transfers = None
    try:
        transfers = TransferSettings.model_validate(values)
    except ValidationError as exc:
        problems.extend(_value_problems(exc, lines, fallback=section.line))

    if problems or transfers is None:
        raise _settings_error(source, problems)
    return transfers, locations, frozenset(values)


def _read_server(
    loader: yaml.SafeLoader, sections: list[_Entry], *, source: str
) -> tuple[ServerSettings | None, set[str]]:
    """The ``balsam_server:`` section, and the top-level keys it used."""
    found = [entry for entry in sections if entry.key == "balsam_server"]
    if not found or _is_null(found[-1].value):
        return None, {"transfers", "balsam_server"} if found else {"transfers"}
    if len(found) > 1:
        raise SettingsError(
            f"{source}:{found[1].line}: balsam_server: given twice (also on line "
            f"{found[0].line}); keep one",
            source=source,
            line=found[1].line,
            key="balsam_server",
        )
    section = found[0]
    used = {"transfers", "balsam_server"}
    if not isinstance(section.value, yaml.MappingNode):
        raise SettingsError(
            f"{source}:{section.line}: balsam_server: must be a mapping with site_id "
            f"and api_root, or null (got {_kind(section.value)})",
            source=source,
            line=section.line,
            key="balsam_server",
        )

    values: dict[str, object] = {}
    lines: dict[str, int] = {}
    problems: list[_Problem] = []
    for entry in _entries(loader, section.value, source=source, where="balsam_server"):
        if (
            not isinstance(entry.key, str)
            or entry.key not in ServerSettings.model_fields
        ):
            close = difflib.get_close_matches(
                str(entry.key), ServerSettings.model_fields, n=1
            )
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(
                _Problem(entry.line, f"balsam_server.{entry.key}", f"unknown key{hint}")
            )
            continue
        values[entry.key] = loader.construct_object(entry.value, deep=True)
        lines[entry.key] = entry.line
    if "site_id" not in values:
        # A Balsam site file already names its site at the top level.
        top = [entry for entry in sections if entry.key == "site_id"]
        if top:
            values["site_id"] = loader.construct_object(top[0].value, deep=True)
            lines["site_id"] = top[0].line
            used.add("site_id")

    server = None
    try:
        server = ServerSettings.model_validate(values)
    except ValidationError as exc:
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else ""
            where = "site_id" if name == "site_id" and "site_id" in used else None
            key = where or (f"balsam_server.{name}" if name else "balsam_server")
            if error["type"] == "missing":
                message = "missing (or give the site's top-level site_id)"
            else:
                message = _explain(error)
            problems.append(_Problem(lines.get(name, section.line), key, message))
    if problems or server is None:
        raise _settings_error(source, problems)
    return server, used


def _read_locations(
    loader: yaml.SafeLoader, entry: _Entry, *, source: str
) -> tuple[dict[str, str], dict[str, Location], list[_Problem]]:
    key = "transfers.transfer_locations"

    # An empty `transfer_locations:` (all examples commented out) means none.
    if _is_null(entry.value):
        return {}, {}, []
    if not isinstance(entry.value, yaml.MappingNode):
        message = f"must be a mapping of alias: URL (got {_kind(entry.value)})"
        return {}, {}, [_Problem(entry.line, key, message)]

    urls: dict[str, str] = {}
    locations: dict[str, Location] = {}
    problems: list[_Problem] = []
    for alias_entry in _entries(loader, entry.value, source=source, where=key):
        alias = alias_entry.key
        url = loader.construct_object(alias_entry.value, deep=True)
        try:
            location = _parse_location_entry(alias, url)
        except LocationError as exc:
            where = f"{key}.{alias}" if isinstance(alias, str) and alias else key
            problems.append(_Problem(alias_entry.line, where, str(exc)))
            continue
        urls[location.alias] = url
        locations[location.alias] = location
    return urls, locations, problems


def _entries(
    loader: yaml.SafeLoader, node: yaml.MappingNode, *, source: str, where: str
) -> list[_Entry]:
    """The pairs of a mapping node in file order, merge keys (``<<``) resolved.

    Inside ``transfers:`` (``where`` not empty) a key given twice is an error.
    """
    loader.flatten_mapping(node)
    entries: list[_Entry] = []
    seen: dict[object, int] = {}
    for key_node, value_node in node.value:
        line = _line(key_node)
        if not isinstance(key_node, yaml.ScalarNode):
            name = f"{where}: a key" if where else "a section name"
            raise SettingsError(
                f"{source}:{line}: {name} must be a plain name, not {_kind(key_node)}",
                source=source,
                line=line,
                key=where or None,
            )
        key = loader.construct_object(key_node, deep=True)
        if where and key in seen:
            dotted = f"{where}.{key}"
            raise SettingsError(
                f"{source}:{line}: {dotted}: given twice (also on line "
                f"{seen[key]}); keep one",
                source=source,
                line=line,
                key=dotted,
            )
        seen.setdefault(key, line)
        entries.append(_Entry(key, line, value_node))
    return entries


# --- turning problems into one line ---------------------------------------------------


def _unknown_key(entry: _Entry) -> _Problem:
    name = str(entry.key)
    close = difflib.get_close_matches(name, TransferSettings.model_fields, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return _Problem(entry.line, f"transfers.{name}", f"unknown key{hint}")


def _value_problems(
    exc: ValidationError, lines: Mapping[str, int], *, fallback: int
) -> list[_Problem]:
    problems = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        line = lines.get(name, fallback)
        key = f"transfers.{name}" if name else "transfers"
        problems.append(_Problem(line, key, _explain(error)))
    return problems


def _explain(error: ErrorDetails) -> str:
    """Say in an operator's words what pydantic found wrong with one value."""
    kind = error["type"]
    context = error.get("ctx") or {}
    got = f"(got {_show(error.get('input'))})"
    if kind == "greater_than_equal":
        return f"must be at least {context['ge']:g} {got}"
    if kind == "greater_than":
        return f"must be more than {context['gt']:g} {got}"
    if kind == "finite_number":
        return f"must be a finite number {got}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be a whole number {got}"
    if kind in ("float_type", "float_parsing"):
        return f"must be a number {got}"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false {got}"
    if kind == "string_type":
        return f"must be a string {got}"
    if kind == "literal_error":
        return f"must be {context['expected']}, or null {got}"
    if kind == "dict_type":
        return f"must be a mapping {got}"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "value_error":
        return str(context["error"])
    return f"{error['msg']} {got}"


def _settings_error(source: str, problems: list[_Problem]) -> SettingsError:
    ordered = sorted(problems, key=lambda problem: problem.line)
    shown = [
        f"{source}:{problem.line}: {problem.key}: {problem.message}"
        for problem in ordered[:_MAX_REPORTED]
    ]
    more = len(ordered) - _MAX_REPORTED
    if more > 0:
        shown.append(f"and {more} more")
    first = ordered[0]
    return SettingsError(
        _one_line("; ".join(shown)), source=source, line=first.line, key=first.key
    )


def _yaml_error(exc: yaml.YAMLError, text: str, source: str) -> SettingsError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        line = mark.line + 1
    elif isinstance(getattr(exc, "position", None), int):
        line = text.count("\n", 0, exc.position) + 1  # a ReaderError
    else:
        line = None

    if isinstance(exc, yaml.MarkedYAMLError):
        reason = ", ".join(part for part in (exc.context, exc.problem) if part)
    elif isinstance(exc, yaml.reader.ReaderError):
        code = ord(exc.character) if isinstance(exc.character, str) else exc.character
        reason = f"{exc.reason} (U+{code:04X})"
    else:
        reason = str(exc)
    where = f"{source}:{line}" if line is not None else source
    return SettingsError(
        _one_line(f"{where}: not valid YAML: {reason}"), source=source, line=line
    )


def _show(value: object) -> str:
    """A value as the operator wrote it in YAML, kept short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"the value {node.value!r}"


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _site(
    path: Path | None,
    transfers: TransferSettings | None,
    locations: dict[str, Location],
    given: frozenset[str],
    ignored: tuple[str, ...],
    server: ServerSettings | None = None,
) -> SiteSettings:
    return SiteSettings(
        path=path,
        transfers=transfers,
        locations=MappingProxyType(locations),
        from_file=given,
        ignored_sections=ignored,
        server=server,
    )
