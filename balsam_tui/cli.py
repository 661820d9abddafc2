"""The ``balsam-tui`` command: run the engine (console or headless) and manage a site.

Start-up cost matters here: ``--help`` and ``--no-ui`` must never import Textual,
so every command imports what it needs inside its own function. Every expected
failure is one line on stderr and exit status 1; argparse's own usage errors exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from balsam_tui.globus import commands as globus_commands

EPILOG = """\
commands without a subcommand run the engine: the console by default,
or headless with --no-ui. Examples:
  balsam-tui --demo                 the console on a throw-away demo site
  balsam-tui --demo --no-ui         the same demo, headless, to the end
  balsam-tui init ~/sites/beamline  create a site
  balsam-tui --site ~/sites/beamline --no-ui --exit-when-idle
  balsam-tui submit jobs.yml        add apps and jobs from a YAML file
  balsam-tui jobs --state READY     list jobs (add --json for scripts)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="balsam-tui",
        description="Batched data staging for many small HPC jobs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--site",
        help="the site directory (else BALSAM_SITE_PATH, "
        "the current directory, or the default site)",
    )
    parser.add_argument(
        "--no-ui",
        action="store_true",
        help="run the engine headless: log lines instead of a console",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="run on a new throw-away demo site with a simulated compute side",
    )
    parser.add_argument(
        "--exit-when-idle",
        action="store_true",
        help="with --no-ui: stop once nothing is pending or in flight",
    )
    parser.add_argument(
        "--summary-every",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="with --no-ui: seconds between summary lines (default 30)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug lines")
    parser.add_argument("--version", action="store_true", help="print the version")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("init", help="create a site directory")
    p.add_argument("path")

    globus_commands.add_parsers(sub)

    p = sub.add_parser("submit", help="add apps and jobs from a YAML file")
    p.add_argument(
        "file", help="YAML with 'apps:' (name -> slots) and 'jobs:' (a list)"
    )

    p = sub.add_parser("jobs", help="list jobs")
    p.add_argument("--state", action="append", help="only this state (repeatable)")
    p.add_argument("--app")
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--limit", type=int, default=100, help="at most this many (0: all)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("items", help="list transfer items")
    p.add_argument("--state", action="append")
    p.add_argument("--direction", choices=("in", "out"))
    p.add_argument("--job", type=int, action="append", dest="jobs", metavar="JOB_ID")
    p.add_argument("--alias")
    p.add_argument("--task", type=int)
    p.add_argument("--limit", type=int, default=100, help="at most this many (0: all)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("tasks", help="list recent transfer tasks")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("set-state", help="set jobs' state (as a compute side does)")
    p.add_argument("state")
    p.add_argument("job_ids", type=int, nargs="+", metavar="JOB_ID")

    p = sub.add_parser("retry", help="send failed transfer items again")
    p.add_argument("item_ids", type=int, nargs="*", metavar="ITEM_ID")
    p.add_argument("--job", type=int, action="append", dest="jobs", metavar="JOB_ID")
    p.add_argument("--all-errors", action="store_true", help="every failed item")

    p = sub.add_parser("journal", help="what happened, newest last")
    p.add_argument("--job", type=int)
    p.add_argument("--task", type=int)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("settings", help="show the effective transfer settings")
    p.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.version:
        from balsam_tui import __version__

        print(f"balsam-tui {__version__}")
        return 0
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message = _expected_message(exc)
        if message is None:
            raise
        print(f"balsam-tui: error: {message}", file=sys.stderr)
        return 1


def _expected_message(exc: Exception) -> str | None:
    """The one line for an expected failure; ``None`` for a bug (keep its traceback)."""
    from balsam_tui.engine.lock import EngineAlreadyRunning
    from balsam_tui.locations import LocationError
    from balsam_tui.settings import SettingsError
    from balsam_tui.site import SiteError
    from balsam_tui.store import StoreError

    if isinstance(
        exc, (SettingsError, SiteError, StoreError, LocationError, EngineAlreadyRunning)
    ):
        return str(exc)
    if isinstance(exc, _InputError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")
    return None


class _InputError(Exception):
    """A command's input file or arguments are unusable."""


def _dispatch(args: argparse.Namespace) -> int:
    if args.command is None:
        return _run(args)
    if args.command == "init":
        from balsam_tui.site import init_site

        site = init_site(args.path)
        print(f"site ready at {site.root}; edit {site.settings_path} to add locations")
        return 0
    site = _site(args)
    if args.command in globus_commands.COMMANDS:
        return globus_commands.run(site, args)
    handler = {
        "submit": _submit,
        "jobs": _jobs,
        "items": _items,
        "tasks": _tasks,
        "set-state": _set_state,
        "retry": _retry,
        "journal": _journal,
        "settings": _settings,
    }[args.command]
    return handler(site, args)


def _site(args: argparse.Namespace):
    from balsam_tui.site import resolve_site

    return resolve_site(args.site)


def _run(args: argparse.Namespace) -> int:
    if args.demo:
        from balsam_tui.demo import run_demo

        return run_demo(args)
    site = _site(args)
    if args.no_ui:
        from balsam_tui.headless import run_headless

        _db(site).close()  # an unusable store fails here in one line, not in the engine

        return run_headless(
            site,
            exit_when_idle=args.exit_when_idle,
            summary_every=args.summary_every,
            verbose=args.verbose,
        )
    from balsam_tui.ui import run_console  # the only path that imports Textual

    return run_console(site)


def _db(site):
    import sqlite3

    from balsam_tui.store import Database

    try:
        return Database(site.store_path)
    except sqlite3.DatabaseError as exc:
        # A damaged file, or not a SQLite file at all: say which file, not where.
        raise _InputError(f"{site.store_path}: cannot open the store ({exc})") from None


# -- submit -------------------------------------------------------------------------


def _submit(site, args: argparse.Namespace) -> int:
    """Save the file's apps and create its jobs: all of them, or nothing."""
    import yaml

    from balsam_tui.settings import load_settings
    from balsam_tui.store import ValidationError
    from balsam_tui.store import jobs as job_store

    try:
        with open(args.file, encoding="utf-8") as handle:
            doc = yaml.safe_load(handle) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise _InputError(f"{args.file}{where}: not valid YAML") from None
    except UnicodeDecodeError as exc:
        raise _InputError(
            f"{args.file}: not UTF-8 text (bad byte at offset {exc.start})"
        ) from None
    if not isinstance(doc, dict) or set(doc) - {"apps", "jobs"}:
        raise _InputError(f"{args.file}: expected a mapping with 'apps' and/or 'jobs'")
    apps = doc.get("apps") or {}
    if not isinstance(apps, dict):
        raise _InputError(f"{args.file}: 'apps' must map app names to their slots")
    app_specs = [_app_spec(args.file, name, spec) for name, spec in apps.items()]
    jobs = doc.get("jobs") or []
    if not isinstance(jobs, list):
        raise _InputError(f"{args.file}: 'jobs' must be a list")
    specs = [_job_spec(args.file, n, entry) for n, entry in enumerate(jobs, 1)]
    locations = load_settings(site.settings_path).locations

    db = _db(site)
    try:
        # One transaction, so that a file refused half-way leaves nothing behind
        # and can simply be submitted again once fixed.
        with db.write():
            for name, transfers, description in app_specs:
                job_store.create_app(db, name, transfers, description)
            ids = job_store.create_jobs(db, specs, locations)
    except ValidationError as exc:
        raise _InputError(f"{args.file}: {exc}") from None
    print(
        f"{len(apps)} app(s) saved, {len(ids)} job(s) created"
        + (f" (ids {ids[0]}..{ids[-1]})" if ids else "")
    )
    return 0


def _app_spec(path: str, name: Any, spec: Any) -> tuple[Any, Any, str]:
    spec = spec or {}
    if not isinstance(spec, dict) or set(spec) - {"transfers", "description"}:
        raise _InputError(
            f"{path}: app {name!r} must be a mapping with transfers "
            "(and optional description)"
        )
    description = spec.get("description") or ""
    if not isinstance(description, str):
        raise _InputError(f"{path}: app {name!r}: description must be text")
    return name, spec.get("transfers") or {}, description


def _job_spec(path: str, n: int, entry: Any):
    from balsam_tui.store.jobs import JobSpec

    allowed = {"workdir", "app", "transfers", "parents", "tags"}
    if (
        not isinstance(entry, dict)
        or set(entry) - allowed
        or not {"workdir", "app"} <= set(entry)
    ):
        raise _InputError(
            f"{path}: job #{n} must be a mapping with workdir and app "
            f"(and optional {', '.join(sorted(allowed - {'workdir', 'app'}))})"
        )
    tags = entry.get("tags") or {}
    if not isinstance(tags, dict):
        raise _InputError(
            f"{path}: job #{n}: tags must be a mapping of names to values"
        )
    return JobSpec(
        workdir=entry["workdir"],
        app=entry["app"],
        transfers=entry.get("transfers") or {},
        parents=entry.get("parents") or [],
        tags={str(k): str(v) for k, v in tags.items()},
    )


# -- listings -----------------------------------------------------------------------


def _jobs(site, args: argparse.Namespace) -> int:
    from balsam_tui.store import jobs as job_store

    tags = {}
    for pair in args.tag:
        key, sep, value = pair.partition("=")
        if not sep:
            raise _InputError(f"--tag {pair!r}: expected KEY=VALUE")
        tags[key] = value
    query = job_store.JobQuery(state=args.state, app=args.app, tags=tags or None)
    records = job_store.list_jobs(_db(site), query, limit=args.limit or None)
    rows = [
        {
            "id": r.id,
            "workdir": r.workdir,
            "app": r.app_name,
            "state": r.state,
            "reason": r.state_reason,
            "parents": list(r.parents),
            "tags": dict(r.tags),
        }
        for r in records
    ]
    return _print_rows(rows, args.json, ["id", "state", "app", "workdir", "reason"])


def _items(site, args: argparse.Namespace) -> int:
    from balsam_tui.store import jobs as job_store

    query = job_store.ItemQuery(
        job_ids=args.jobs,
        direction=args.direction,
        state=args.state,
        location_alias=args.alias,
        task_id=args.task,
    )
    records = job_store.list_items(_db(site), query, limit=args.limit or None)
    rows = [
        {
            "id": r.id,
            "job_id": r.job_id,
            "slot": r.slot,
            "direction": r.direction,
            "state": r.state,
            "location_alias": r.location_alias,
            "remote_path": r.remote_path,
            "local_path": r.local_path,
            "task_id": r.task_id,
            "attempts": r.attempts,
            "error": r.error,
            "transfer_info": dict(r.transfer_info),
        }
        for r in records
    ]
    return _print_rows(
        rows,
        args.json,
        [
            "id",
            "job_id",
            "slot",
            "direction",
            "state",
            "location_alias",
            "remote_path",
            "task_id",
            "error",
        ],
    )


def _tasks(site, args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from balsam_tui.store import tasks as task_store

    records = task_store.recent_tasks(_db(site), args.limit)
    rows = [asdict(r) for r in records]
    return _print_rows(
        rows,
        args.json,
        [
            "id",
            "direction",
            "location_alias",
            "state",
            "remote_state",
            "item_count",
            "files_done",
            "files_failed",
            "bytes_done",
            "status_text",
            "backend_task_id",
        ],
    )


def _journal(site, args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from balsam_tui.store import jobs as job_store

    entries = job_store.recent_journal(
        _db(site), args.limit, job_id=args.job, task_id=args.task
    )
    if args.json:
        print(json.dumps([asdict(e) for e in entries], indent=2))
        return 0
    import time

    for e in entries:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.ts))
        print(f"{stamp}  {e.kind:<18} {e.message}")
    return 0


def _settings(site, args: argparse.Namespace) -> int:
    from balsam_tui.settings import load_settings

    settings = load_settings(site.settings_path)
    rows = [{"key": k, "value": v, "from": src} for k, v, src in settings.effective()]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    print(f"site: {site.root}")
    if settings.transfers is None:
        print("transfers are off (transfers: null)")
    _print_rows(rows, False, ["key", "value", "from"])
    if settings.ignored_sections:
        print(f"ignored sections: {', '.join(settings.ignored_sections)}")
    return 0


def _print_rows(rows: list[dict], as_json: bool, columns: list[str]) -> int:
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("(none)")
        return 0
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print(
        "  ".join(
            c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)
        ).rstrip()
    )
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- changes ------------------------------------------------------------------------


def _set_state(site, args: argparse.Namespace) -> int:
    from balsam_tui.store import jobs as job_store

    n = job_store.set_job_states(_db(site), args.job_ids, args.state, source="cli")
    print(f"{n} job(s) moved to {args.state}")
    return 0


def _retry(site, args: argparse.Namespace) -> int:
    from balsam_tui.states import ItemState
    from balsam_tui.store import jobs as job_store

    if args.all_errors:
        query = job_store.ItemQuery(state=ItemState.ERROR)
    elif args.item_ids or args.jobs:
        query = job_store.ItemQuery(ids=args.item_ids or None, job_ids=args.jobs)
    else:
        raise _InputError("retry what? give ITEM_IDs, --job JOB_ID or --all-errors")
    db = _db(site)
    _check_exist(db, args.item_ids, args.jobs)
    n = job_store.retry_items(db, query, source="cli")
    print(f"{n} item(s) sent back to pending (only failed or held items are retried)")
    return 0


def _check_exist(db, item_ids: Sequence[int], job_ids: Sequence[int] | None) -> None:
    from balsam_tui.store import NotFound
    from balsam_tui.store import jobs as job_store

    if item_ids:
        found = job_store.list_items(db, job_store.ItemQuery(ids=item_ids))
        missing = sorted(set(item_ids) - {item.id for item in found})
        if missing:
            raise NotFound(f"no transfer item with id {', '.join(map(str, missing))}")
    if job_ids:
        found_jobs = job_store.list_jobs(db, job_store.JobQuery(ids=job_ids))
        missing = sorted(set(job_ids) - {job.id for job in found_jobs})
        if missing:
            raise NotFound(f"no job with id {', '.join(map(str, missing))}")
