"""Where a site lives and how a command finds it.

A site is a directory with ``settings.yml``, ``data/`` (one work directory per job),
the store file and ``log/``. A command uses, in order: ``--site PATH``, then
``BALSAM_SITE_PATH``, then the current directory if it holds a ``settings.yml``,
then a default site in the user's data directory, created on first use.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

STORE_NAME = "balsam-tui.sqlite3"
SETTINGS_NAME = "settings.yml"


class SiteError(Exception):
    """The site directory cannot be used."""


@dataclass(frozen=True)
class Site:
    root: Path

    @property
    def settings_path(self) -> Path:
        return self.root / SETTINGS_NAME

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def store_path(self) -> Path:
        return self.root / STORE_NAME

    @property
    def name(self) -> str:
        return self.root.name

    def workdir(self, relative: str) -> Path:
        return self.data_dir / relative


def default_site_path() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "balsam-tui" / "default-site"


def resolve_site(explicit: str | os.PathLike[str] | None = None) -> Site:
    """Find the site a command should use, creating the default site if need be."""
    if explicit:
        return _existing(Path(explicit), "--site")
    from_env = os.environ.get("BALSAM_SITE_PATH")
    if from_env:
        return _existing(Path(from_env), "BALSAM_SITE_PATH")
    here = Path.cwd()
    if (here / SETTINGS_NAME).is_file():
        return Site(here.resolve())
    default = default_site_path()
    if not (default / SETTINGS_NAME).is_file():
        return init_site(default)
    return Site(default)


def _existing(path: Path, origin: str) -> Site:
    path = path.expanduser()
    if not (path / SETTINGS_NAME).is_file():
        raise SiteError(
            f"{origin} points at {path}, which is not a site (no {SETTINGS_NAME}); "
            f"create one with: balsam-tui init {path}"
        )
    return Site(path.resolve())


def init_site(path: str | os.PathLike[str], settings_text: str | None = None) -> Site:
    """Create a site directory with default settings; keep an existing settings file.

    The store is created here too, so that it is already in WAL mode when several
    processes first use the site at once: switching a new file to WAL cannot wait
    for another writer, and would fail with "database is locked".
    """
    from balsam_tui.settings import default_settings_text
    from balsam_tui.store import Database

    root = Path(path).expanduser()
    if root.exists() and not root.is_dir():
        raise SiteError(f"{root} exists and is not a directory")
    root.mkdir(parents=True, exist_ok=True)
    site = Site(root.resolve())
    site.data_dir.mkdir(exist_ok=True)
    site.log_dir.mkdir(exist_ok=True)
    if not site.settings_path.exists():
        site.settings_path.write_text(
            settings_text if settings_text is not None else default_settings_text()
        )
    try:
        Database(site.store_path).close()
    except sqlite3.DatabaseError as exc:
        raise SiteError(f"{site.store_path}: cannot open the store ({exc})") from None
    return site
