"""What one engine cycle costs with little history in the store, and with a lot.

Run: ``python bench/cycle_cost.py [--small 10000] [--large 1000000] [--rounds 3]``

Both stores hold the same live work (2,500 pending stage-in items) beside different
amounts of history (items done long ago, their jobs, tasks and journal entries). A
backend that finishes every task at once stands in for the transfers, so what is
timed is the engine alone: poll, settle 500 items, move their jobs on, plan and claim
500 more, submit, publish a snapshot. The figure is the ratio of the median cycle
times; it should stay near 1 because a cycle's cost must follow the work in it, not
the history behind it.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from balsam_tui.backends.base import (  # noqa: E402
    InFlightTask,
    RemoteState,
    TaskSpec,
    TaskStatus,
)
from balsam_tui.engine import Engine  # noqa: E402
from balsam_tui.site import Site, init_site  # noqa: E402
from balsam_tui.store import Database  # noqa: E402

LIVE = 2_500
SETTINGS = """\
transfers:
  transfer_locations:
    src: local://localhost/bench/src
  max_concurrent_transfers: 5
  transfer_batch_size: 100
"""


class InstantBackend:
    """Finishes every task the moment it is submitted; copies nothing."""

    protocol = "local"
    min_poll_interval = 0.0

    def __init__(self) -> None:
        self.sizes: dict[int, int] = {}

    def new_submission_id(self) -> str:
        return str(uuid.uuid4())

    def submit(self, spec: TaskSpec) -> str:
        self.sizes[spec.task_id] = len(spec.files)
        return f"instant-{spec.task_id}"

    def poll(self, tasks: Sequence[InFlightTask]) -> dict[int, TaskStatus]:
        return {
            t.task_id: TaskStatus(
                t.task_id,
                RemoteState.SUCCEEDED,
                files_total=self.sizes.get(t.task_id, 0),
                files_done=self.sizes.get(t.task_id, 0),
                status_text="done",
            )
            for t in tasks
        }

    def cancel(self, task: InFlightTask) -> None:
        pass

    def close(self) -> None:
        pass


def build_store(root: Path, total: int) -> Site:
    site = init_site(root, settings_text=SETTINGS)
    Database(site.store_path).close()  # create the schema
    history = total - LIVE
    conn = sqlite3.connect(site.store_path)
    conn.executescript(f"""
        PRAGMA journal_mode = WAL;
        PRAGMA synchronous = OFF;
        BEGIN;
        INSERT INTO apps (id, name, slots, created_at) VALUES (1, 'copy',
          '{{"f": {{"direction": "in", "local_path": ".", "required": false,
                    "description": "", "recursive": false}}}}', 0);
        WITH RECURSIVE n(i) AS (
          SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {total})
        INSERT INTO jobs (id, workdir, app_id, state, created_at, updated_at)
        SELECT i, 'j/' || i, 1,
               CASE WHEN i <= {history} THEN 'JOB_FINISHED' ELSE 'READY' END, 0, 0
        FROM n;
        WITH RECURSIVE n(i) AS (
          SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {history // 100})
        INSERT INTO transfer_tasks (id, protocol, location_alias, direction, state,
          submission_id, label, item_count, created_at, finished_at, updated_at)
        SELECT i, 'local', 'src', 'in', 'succeeded', 'old-' || i, 'old', 100, 0, 0, 0
        FROM n;
        WITH RECURSIVE n(i) AS (
          SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {total})
        INSERT INTO transfer_items (id, job_id, slot, direction, local_path,
          remote_path, location_alias, state, task_id, attempts, updated_at)
        SELECT i, i, 'f', 'in', '.', '/bench/src/f' || i, 'src',
               CASE WHEN i <= {history} THEN 'done' ELSE 'pending' END,
               CASE WHEN i <= {history} THEN (i - 1) / 100 + 1 END, 1, 0
        FROM n;
        WITH RECURSIVE n(i) AS (
          SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {history})
        INSERT INTO journal (ts, kind, job_id, item_id, task_id, message)
        SELECT 0, 'item.state', i, i, (i - 1) / 100 + 1, 'item ' || i || ' done'
        FROM n;
        COMMIT;
        PRAGMA wal_checkpoint(TRUNCATE);
        ANALYZE;
    """)
    conn.close()
    return site


def cycle_times(site: Site) -> list[float]:
    """Run the engine until the live work is done; return each cycle's seconds."""
    backend = InstantBackend()
    engine = Engine(site, backend_factory=lambda *args: backend)
    times = []
    try:
        for _ in range(LIVE // 500 + 2):
            started = time.perf_counter()
            engine.run_cycle()
            times.append(time.perf_counter() - started)
        pending = engine.snapshot.items(state="pending")
        if pending:
            raise SystemExit(f"{pending} items still pending after the run")
    finally:
        engine.close()
    # The first cycle only submits and the last only settles: keep the steady ones.
    return times[1:-2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="bench-cycle-"))
    try:
        stores = {}
        for label, total in (("small", args.small), ("large", args.large)):
            started = time.perf_counter()
            stores[label] = build_store(base / f"{label}-template", total)
            print(
                f"built the {label} store ({total:,} items) in "
                f"{time.perf_counter() - started:.1f} s",
                flush=True,
            )
        samples: dict[str, list[float]] = {"small": [], "large": []}
        for round_ in range(args.rounds):
            for label, template in stores.items():
                work = base / f"{label}-{round_}"
                shutil.copytree(template.root, work)
                samples[label] += cycle_times(Site(work))
                shutil.rmtree(work)
        small = statistics.median(samples["small"])
        large = statistics.median(samples["large"])
        print(f"median cycle (settle 500 items, submit 500), {args.rounds} rounds:")
        print(f"  {args.small:>9,} items in the store: {small * 1000:7.1f} ms")
        print(f"  {args.large:>9,} items in the store: {large * 1000:7.1f} ms")
        print(f"  ratio large/small: {large / small:.2f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
