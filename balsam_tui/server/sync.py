"""Keep the local mirror and a Balsam server in step, around each engine cycle.

Role: ``ServerSync.pull`` (start of a cycle) brings the site's new pending items,
and their jobs, into the store; the engine then batches, submits, polls and settles
them as it does for its own items; ``ServerSync.push`` (end of a cycle) sends what
changed in one bulk PATCH per few hundred items, then reads back the jobs' states.
The server advances jobs when items change; the mirror takes its word for them.

Why the guarantees of the embedded store still hold: the store stays the agent's
journal. A task is written (with its submission id) before the backend is called,
whatever the server is doing; an item's change is pushed until the server accepts
that version of it; an item is mirrored once, keyed by its server id. A dead server
only delays pulls and pushes: transfers already mirrored go on, and everything
waiting is sent when it answers again.

Traps:

- Balsam makes a job's stage-in items pending at creation, even while the job
  waits for its parents; only items of READY jobs are pulled.
- When an item PATCH finishes a job's stage-out, the server moves the job to
  JOB_FINISHED but leaves its children AWAITING_PARENTS (only a job PATCH releases
  them). The sync releases them itself, for this site's jobs only: after a job is
  seen finishing, and once in a sweep at start-up in case we died in between.
- ``transfer_info`` is replaced whole by a PATCH, so the mirror keeps what the
  server had and sends it back with its own additions.
- Settings reloads do not rebuild the sync: a changed ``balsam_server:`` section
  needs a restart.

Known shortcomings:

- The engine still advances a mirrored job locally when its items are done (the
  store does that inside ``settle_items``). It is harmless: the server makes the
  same move when the items are pushed and the next refresh writes the server's
  state over the mirror's. While the server is away the console can therefore
  show a job STAGED_IN that the server still has READY.
- Job states set with balsam-tui's own API or CLI on a mirrored job change only
  the mirror; set them with Balsam's client, which the server then reports here.
- Each pull pages through all of the site's pending items (Balsam cannot filter
  items by id), so its cost grows with the backlog, not with the work in flight.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

from balsam_tui.server import mirror
from balsam_tui.server.client import (
    BalsamClient,
    ServerError,
    ServerRefused,
    ServerUnreachable,
    load_client_config,
)
from balsam_tui.server.mirror import ServerItem, ServerJob, Unpushed
from balsam_tui.settings import ServerSettings, SiteSettings
from balsam_tui.site import Site
from balsam_tui.states import ItemState, JobState
from balsam_tui.store.db import Database

log = logging.getLogger(__name__)

PUSH_CHUNK = 500
ID_CHUNK = 200
REFRESH_EVERY = 2.0
# Jobs changed this long before the newest change we saw are read again: the
# server stamps a change when its transaction starts, not when it commits.
UPDATE_MARGIN = timedelta(seconds=30)
BACKOFF = (1.0, 30.0)

ClientFactory = Callable[[], BalsamClient]


def sync_for_settings(
    site: Site, settings: SiteSettings, db: Database, clock: Callable[[], float]
) -> ServerSync | None:
    """The sync the settings ask for, or None for a site served from its own store."""
    server = settings.server
    if server is None:
        return None
    limit = settings.transfers.num_items_query_limit if settings.transfers else 2000

    def make_client() -> BalsamClient:
        config = load_client_config(server.api_root)
        return BalsamClient(config, timeout=server.request_timeout)

    return ServerSync(site, db, server, make_client, clock=clock, pull_limit=limit)


class ServerSync:
    """Pulls and pushes for one site; never raises a ``ServerError`` to its caller."""

    def __init__(
        self,
        site: Site,
        db: Database,
        server: ServerSettings,
        make_client: ClientFactory,
        *,
        clock: Callable[[], float] = time.time,
        pull_limit: int = 2000,
        backoff: tuple[float, float] = BACKOFF,
    ) -> None:
        self.site = site
        self.db = db
        self.site_id = server.site_id
        self._make_client = make_client
        self._client: BalsamClient | None = None
        self._clock = clock
        self._pull_limit = pull_limit
        self._backoff = backoff
        self._failures = 0
        self._not_before = 0.0
        self._problem = ""
        self._problem_kind: type[ServerError] | None = None
        self._failed_step = ""
        self._site_checked = False
        self._sweep_due = True
        self._watermark: datetime | None = None
        self._last_refresh = float("-inf")
        # Jobs whose stage-out we just reported done: if the server finished them,
        # their children need releasing (see the module's second trap).
        self._finishing: set[int] = set()

    @property
    def problem(self) -> str:
        """One line on why the server is not being used now, or empty."""
        return self._problem

    def pull(self) -> None:
        self._guard("pull", self._pull)

    def push(self) -> None:
        self._guard("push", self._push)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- failures -------------------------------------------------------------------

    def _guard(self, name: str, step: Callable[[BalsamClient], None]) -> None:
        if self._clock() < self._not_before:
            return
        try:
            step(self._connected())
        except ServerError as exc:
            self._failed_step = name
            self._failed(exc)
            return
        # A refusal belongs to the step it refused; any success ends an outage.
        if self._problem_kind is ServerRefused and self._failed_step != name:
            return
        if self._problem:
            log.info("Balsam server answers again: catching up")
            self._problem = ""
            self._problem_kind = None
        self._failures = 0

    def _connected(self) -> BalsamClient:
        if self._client is None:
            self._client = self._make_client()
        if not self._site_checked:
            self._check_site(self._client)
        return self._client

    def _failed(self, exc: ServerError) -> None:
        self._failures += 1
        first, most = self._backoff
        delay = min(first * 2 ** (self._failures - 1), most)
        self._not_before = self._clock() + delay
        message = str(exc)
        if type(exc) is not self._problem_kind:
            # One line per new kind of problem; the same one again is not news.
            level = (
                logging.WARNING if isinstance(exc, ServerUnreachable) else logging.ERROR
            )
            log.log(level, "%s", message)
        self._problem = message
        self._problem_kind = type(exc)

    def _check_site(self, client: BalsamClient) -> None:
        site = client.site(self.site_id)
        path = str(site.get("path") or "")
        # A data/ that is a link to the Balsam site's data/ is the same place.
        if path and Path(path, "data").resolve() != self.site.data_dir.resolve():
            log.warning(
                "site %d is registered at %s on the Balsam server, but its work "
                "directories are taken under %s; link %s to %s/data if it should "
                "be the same place",
                self.site_id,
                path,
                self.site.data_dir,
                self.site.data_dir,
                path,
            )
        log.info(
            "serving site %d (%s) of the Balsam server %s",
            self.site_id,
            site.get("name", "?"),
            client.api_root,
        )
        self._site_checked = True

    # -- pull -----------------------------------------------------------------------

    def _pull(self, client: BalsamClient) -> None:
        now = self._clock()
        seen = self._pending_on_server(client)
        known = mirror.known_items(self.db, (item.id for item in seen))

        reopened = [
            known[item.id].item_id
            for item in seen
            if item.id in known
            and item.state == ItemState.PENDING
            and known[item.id].state in (ItemState.DONE, ItemState.ERROR)
            and not known[item.id].unpushed
        ]
        if reopened:
            mirror.reopen_items(self.db, reopened, now)
            log.info("%d item(s) made pending again on the server", len(reopened))

        new = [item for item in seen if item.id not in known][: self._pull_limit]
        if not new:
            return
        job_ids = self._mirror_jobs(client, {item.job_id for item in new}, now)
        wanted = [item for item in new if item.job_id in job_ids]
        mirror.add_items(self.db, wanted, job_ids, now)
        log.info(
            "pulled %d new transfer item(s) of %d job(s) from the Balsam server",
            len(wanted),
            len({item.job_id for item in wanted}),
        )

    def _pending_on_server(self, client: BalsamClient) -> list[ServerItem]:
        """Items to move: pending ones the server released, and in-flight ones."""
        queries = (
            {"state": ItemState.PENDING.value, "direction": "in", "job_state": "READY"},
            {"state": ItemState.PENDING.value, "direction": "out"},
            # In flight there but perhaps unknown here (a lost store, or Balsam's
            # own transfer service was the agent before): mirrored as pending.
            {"state": [ItemState.ACTIVE.value, ItemState.INACTIVE.value]},
        )
        items: dict[int, ServerItem] = {}
        for query in queries:
            for data in client.transfers(site_id=self.site_id, **query):
                item = ServerItem.from_json(data)
                items.setdefault(item.id, item)
        return sorted(items.values(), key=lambda item: item.id)

    def _mirror_jobs(
        self, client: BalsamClient, server_ids: set[int], now: float
    ) -> dict[int, int]:
        job_ids = mirror.known_jobs(self.db, server_ids)
        missing = sorted(server_ids - set(job_ids))
        if not missing:
            return job_ids
        jobs = self._jobs_by_id(client, missing)
        app_ids = self._mirror_apps(client, {job.app_id for job in jobs}, now)
        job_ids.update(mirror.add_jobs(self.db, jobs, app_ids, now))
        return job_ids

    def _mirror_apps(
        self, client: BalsamClient, server_ids: set[int], now: float
    ) -> dict[int, int]:
        app_ids = mirror.known_apps(self.db, server_ids)
        missing = sorted(server_ids - set(app_ids))
        for chunk in _chunks(missing, ID_CHUNK):
            for app in client.apps(id=list(chunk)):
                app_ids[app["id"]] = mirror.add_app(
                    self.db, int(app["id"]), str(app.get("name") or "app"), now
                )
        for server_id in missing:
            if server_id not in app_ids:  # deleted meanwhile: keep its jobs visible
                app_ids[server_id] = mirror.add_app(
                    self.db, server_id, f"app {server_id}", now
                )
        return app_ids

    def _jobs_by_id(self, client: BalsamClient, ids: Sequence[int]) -> list[ServerJob]:
        jobs = []
        for chunk in _chunks(list(ids), ID_CHUNK):
            jobs += [ServerJob.from_json(j) for j in client.jobs(id=list(chunk))]
        self._note_updates(jobs)
        return jobs

    # -- push -----------------------------------------------------------------------

    def _push(self, client: BalsamClient) -> None:
        pushed = 0
        while True:
            batch = mirror.unpushed(self.db, PUSH_CHUNK)
            if not batch:
                break
            accepted = self._send(client, batch)
            pushed += accepted
            if accepted < len(batch):
                break
        if pushed:
            log.debug("pushed %d item update(s) to the Balsam server", pushed)
        if pushed or self._clock() - self._last_refresh >= REFRESH_EVERY:
            self._refresh_jobs(client)

    def _send(self, client: BalsamClient, batch: list[Unpushed]) -> int:
        """PATCH one batch; how many were accepted (items deleted there are dropped)."""
        updates = [
            {
                "id": u.server_id,
                "state": u.state,
                "task_id": u.task_id,
                "transfer_info": json.loads(u.transfer_info),
            }
            for u in batch
        ]
        try:
            client.update_transfers(updates)
        except ServerRefused as exc:
            if exc.status != 400 or "not found" not in exc.detail.lower():
                raise
            self._drop_deleted(client, batch)
            return 0
        mirror.mark_pushed(self.db, batch)
        self._finishing.update(
            u.server_job_id
            for u in batch
            if u.direction == "out" and u.state == ItemState.DONE
        )
        return len(batch)

    def _drop_deleted(self, client: BalsamClient, batch: list[Unpushed]) -> None:
        ids = [u.server_id for u in batch]
        existing = {
            item["id"]
            for chunk in _chunks(ids, ID_CHUNK)
            for item in client.transfers(id=list(chunk))
        }
        gone = [u for u in batch if u.server_id not in existing]
        if gone:
            mirror.mark_gone(self.db, gone, self._clock())
            log.warning(
                "%d item(s) were deleted on the Balsam server; their updates are "
                "dropped (server items %s)",
                len(gone),
                ", ".join(str(u.server_id) for u in gone[:10]),
            )

    # -- job states -----------------------------------------------------------------

    def _refresh_jobs(self, client: BalsamClient) -> None:
        self._last_refresh = self._clock()
        if self._watermark is None:
            ids = {*mirror.unfinished_jobs(self.db), *self._finishing}
            jobs = self._jobs_by_id(client, sorted(ids))
        else:
            since = (self._watermark - UPDATE_MARGIN).isoformat()
            jobs = [
                ServerJob.from_json(j)
                for j in client.jobs(site_id=self.site_id, last_update_after=since)
            ]
            self._note_updates(jobs)
        moves = mirror.take_job_states(
            self.db, {job.id: job.state for job in jobs}, self._clock()
        )
        _log_moves(moves)
        states = {job.id: job.state for job in jobs}
        finished = [
            job_id
            for job_id in sorted(self._finishing)
            if states.get(job_id) == JobState.JOB_FINISHED
        ]
        self._finishing.clear()
        if self._sweep_due or finished:
            self._release_children(client, finished, sweep=self._sweep_due)
            self._sweep_due = False

    def _note_updates(self, jobs: Iterable[ServerJob]) -> None:
        for job in jobs:
            stamp = _parse_time(job.last_update)
            if stamp is not None and (
                self._watermark is None or stamp > self._watermark
            ):
                self._watermark = stamp

    def _release_children(
        self, client: BalsamClient, finished: Sequence[int], *, sweep: bool
    ) -> None:
        """Move this site's jobs whose parents all finished on to READY."""
        waiting: dict[int, ServerJob] = {}
        query = {"site_id": self.site_id, "state": JobState.AWAITING_PARENTS.value}
        if sweep:
            waiting = {j["id"]: ServerJob.from_json(j) for j in client.jobs(**query)}
        else:
            for chunk in _chunks(list(finished), ID_CHUNK):
                for j in client.jobs(parent_id=list(chunk), **query):
                    waiting[j["id"]] = ServerJob.from_json(j)
        if not waiting:
            return
        parents = sorted({p for job in waiting.values() for p in job.parent_ids})
        states = {job.id: job.state for job in self._jobs_by_id(client, parents)}
        ready = [
            job.id
            for job in waiting.values()
            if all(states.get(p) == JobState.JOB_FINISHED for p in job.parent_ids)
        ]
        for chunk in _chunks(ready, PUSH_CHUNK):
            client.update_jobs([{"id": job_id, "state": "READY"} for job_id in chunk])
        if ready:
            log.info(
                "%d job(s) released on the server: their parents finished (%s)",
                len(ready),
                ", ".join(map(str, ready[:12])),
            )


def _chunks(values: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _parse_time(text: str) -> datetime | None:
    if not text:
        return None
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def _log_moves(moves: Sequence[tuple[int, str]], shown: int = 12) -> None:
    """One line per new state, as the engine logs its own moves."""
    by_state: dict[str, list[int]] = {}
    for job_id, state in moves:
        by_state.setdefault(state, []).append(job_id)
    for state, job_ids in by_state.items():
        named = ", ".join(map(str, job_ids[:shown]))
        more = f" and {len(job_ids) - shown} more" if len(job_ids) > shown else ""
        noun = "job" if len(job_ids) == 1 else "jobs"
        log.info("%s %s%s -> %s on the Balsam server", noun, named, more, state)
