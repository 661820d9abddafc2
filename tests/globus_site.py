"""A real site whose files move through the Globus stand-in, shared by Globus tests.

Layout under a test's temporary root: the stand-in's site collection is the root
itself, and the site directory ``<root>/site`` appears on it as ``/site`` (so paths
are mapped by prefix, as on a real site); the remote collection is
``<root>/remote``, and the site trusts ``remote: globus://<remote>/data``. Jobs
stage a frame in from ``/data/in`` and, when the app has the slot, a result out to
``/data/out``. ``ComputeSide`` and the waiting helpers come from ``engine_site``.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import requests

from balsam_tui.engine import Engine
from balsam_tui.globus.auth import GlobusLogin, LoginRecord
from balsam_tui.settings import load_settings
from balsam_tui.site import Site, init_site
from balsam_tui.store import Database
from balsam_tui.store import jobs as job_store
from balsam_tui.store.jobs import ItemQuery, JobSpec
from balsam_tui.testing.globus_standin import GlobusStandin

SITE_COLLECTION = "5a1e0000-0000-4000-8000-0000000000a1"
REMOTE_COLLECTION = "5a1e0000-0000-4000-8000-0000000000b2"
NATIVE_CLIENT = "c11e0000-0000-4000-8000-0000000000c3"
SERVICE_CLIENT = "c11e0000-0000-4000-8000-0000000000d4"
SERVICE_ENV = {
    "GLOBUS_CLIENT_ID": SERVICE_CLIENT,
    "GLOBUS_CLIENT_SECRET": "stand-in-secret",
}
APP = "scan.reduce"

SETTINGS = """\
transfers:
  transfer_locations:
    remote: globus://{remote}/data
  globus_endpoint_id: {site_collection}
  globus_endpoint_site_path: /site
  globus_client_id: {client}
  globus_poll_interval: 0.2
  globus_skip_source_errors: {skip}
  max_concurrent_transfers: {concurrency}
  transfer_batch_size: {batch}
  service_period: {period}
  retry_backoff: 1
"""


@dataclass
class GlobusSite:
    site: Site
    root: Path
    jobs: int
    missing: frozenset[int]
    stage_out: bool

    @property
    def remote_dir(self) -> Path:
        return self.root / "remote"

    def source(self, n: int) -> str:
        """The frame's path on the remote collection."""
        return f"/data/in/run-{n // 100}/frame-{n:05d}.dat"

    def source_file(self, n: int) -> Path:
        return self.remote_dir / self.source(n).lstrip("/")

    def archived(self, n: int) -> str:
        return f"/data/out/result-{n:05d}.txt"

    def archived_file(self, n: int) -> Path:
        return self.remote_dir / self.archived(n).lstrip("/")

    def workdir(self, n: int) -> Path:
        return self.site.data_dir / f"jobs/{n:05d}"


def make_globus_site(
    root: Path,
    *,
    jobs: int,
    missing: Iterable[int] = (),
    stage_out: bool = True,
    skip_source_errors: bool = True,
    concurrency: int = 6,
    batch: int = 100,
    period: float = 0.2,
    size: int = 1024,
) -> GlobusSite:
    root = root.resolve()
    site = init_site(
        root / "site",
        settings_text=SETTINGS.format(
            remote=REMOTE_COLLECTION,
            site_collection=SITE_COLLECTION,
            client=NATIVE_CLIENT,
            skip="true" if skip_source_errors else "false",
            concurrency=concurrency,
            batch=batch,
            period=period,
        ),
    )
    built = GlobusSite(site, root, jobs, frozenset(missing), stage_out)
    (built.remote_dir / "data" / "out").mkdir(parents=True)
    for n in range(jobs):
        if n not in built.missing:
            path = built.source_file(n)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content(n, size))

    slots = {"frame": {"direction": "in", "local_path": "frame.dat", "required": True}}
    if stage_out:
        slots["result"] = {
            "direction": "out",
            "local_path": "out/result.txt",
            "required": True,
        }
    db = Database(site.store_path)
    job_store.create_app(db, APP, slots)
    specs = []
    for n in range(jobs):
        transfers = {"frame": f"remote:{built.source(n)}"}
        if stage_out:
            transfers["result"] = f"remote:{built.archived(n)}"
        specs.append(JobSpec(workdir=f"jobs/{n:05d}", app=APP, transfers=transfers))
    job_store.create_jobs(db, specs, load_settings(site.settings_path).locations)
    db.close()
    return built


def content(n: int, size: int) -> bytes:
    seed = hashlib.sha256(f"frame {n}".encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def standin_for(gs: GlobusSite, **options: object) -> GlobusStandin:
    """A started stand-in serving this site's two collections."""
    return GlobusStandin(
        {SITE_COLLECTION: gs.root, REMOTE_COLLECTION: gs.remote_dir}, **options
    ).start()


def log_in(
    site: Site,
    *,
    endpoints: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> LoginRecord:
    """A real native-app login: fetch the URL the flow gives, paste the answer."""
    login = GlobusLogin(
        site,
        load_settings(site.settings_path).transfers,
        endpoints=endpoints,
        environ=environ if environ is not None else {},
    )
    code = requests.get(login.start(), timeout=10).text
    return login.finish(code)


@contextlib.contextmanager
def running_engine(site: Site) -> Iterator[Engine]:
    """The real engine in a thread, stopped (and checked stopped) on the way out."""
    engine = Engine(site)
    thread = threading.Thread(target=engine.run, name="engine", daemon=True)
    thread.start()
    try:
        yield engine
    finally:
        engine.stop()
        thread.join(timeout=15)
        assert not thread.is_alive(), "the engine did not stop"


def count_items(site: Site, **query: object) -> int:
    db = Database(site.store_path)
    try:
        return job_store.count_items(db, ItemQuery(**query))
    finally:
        db.close()


def globus_task_ids(site: Site) -> list[str]:
    """The Globus task ids the engine recorded, one per task it submitted."""
    db = Database(site.store_path)
    try:
        rows = (
            db.connection()
            .execute(
                "SELECT backend_task_id FROM transfer_tasks"
                " WHERE backend_task_id IS NOT NULL ORDER BY id"
            )
            .fetchall()
        )
    finally:
        db.close()
    return [row[0] for row in rows]
