"""The embedded store's tables, and the steps that bring an older file up to date.

The schema version lives in SQLite's ``user_version``. Each entry of ``MIGRATIONS``
takes a file from version ``n`` to ``n + 1``; a release that changes the schema
appends a step and never edits an old one.

Counts by state are kept in small tables by triggers, so that showing them costs the
same with a million finished items as with ten: the engine's cycle must grow with the
work in flight, not with history.
"""

from __future__ import annotations

_V1 = """
CREATE TABLE apps (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    slots TEXT NOT NULL,
    created_at REAL NOT NULL
);

CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    workdir TEXT NOT NULL,
    app_id INTEGER NOT NULL REFERENCES apps(id),
    state TEXT NOT NULL,
    state_reason TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX ix_jobs_state ON jobs (state, id);
CREATE INDEX ix_jobs_workdir ON jobs (workdir);

CREATE TABLE job_parents (
    job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    parent_id INTEGER NOT NULL REFERENCES jobs(id),
    PRIMARY KEY (job_id, parent_id)
) WITHOUT ROWID;
CREATE INDEX ix_job_parents_parent ON job_parents (parent_id);

CREATE TABLE transfer_tasks (
    id INTEGER PRIMARY KEY,
    protocol TEXT NOT NULL,
    location_alias TEXT NOT NULL,
    direction TEXT NOT NULL,
    state TEXT NOT NULL,
    submission_id TEXT NOT NULL UNIQUE,
    backend_task_id TEXT,
    label TEXT NOT NULL,
    item_count INTEGER NOT NULL,
    remote_state TEXT NOT NULL DEFAULT '',
    files_done INTEGER NOT NULL DEFAULT 0,
    files_failed INTEGER NOT NULL DEFAULT 0,
    bytes_done INTEGER NOT NULL DEFAULT 0,
    bytes_total INTEGER,
    bytes_per_second REAL NOT NULL DEFAULT 0,
    status_text TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    submit_attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    cancel_reason TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    submitted_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL
);
CREATE INDEX ix_tasks_state ON transfer_tasks (state, id);

CREATE TABLE transfer_items (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    slot TEXT NOT NULL,
    direction TEXT NOT NULL,
    local_path TEXT NOT NULL,
    remote_path TEXT NOT NULL,
    location_alias TEXT NOT NULL,
    recursive INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    task_id INTEGER REFERENCES transfer_tasks(id),
    attempts INTEGER NOT NULL DEFAULT 0,
    retry_at REAL,
    error TEXT NOT NULL DEFAULT '',
    permanent INTEGER NOT NULL DEFAULT 0,
    transfer_info TEXT NOT NULL DEFAULT '{}',
    updated_at REAL NOT NULL
);
CREATE INDEX ix_items_job ON transfer_items (job_id);
CREATE INDEX ix_items_task ON transfer_items (task_id);
CREATE INDEX ix_items_group ON transfer_items (state, direction, location_alias, id);

CREATE TABLE journal (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    job_id INTEGER,
    item_id INTEGER,
    task_id INTEGER,
    message TEXT NOT NULL
);
CREATE INDEX ix_journal_job ON journal (job_id) WHERE job_id IS NOT NULL;
CREATE INDEX ix_journal_task ON journal (task_id) WHERE task_id IS NOT NULL;

CREATE TABLE item_counts (
    direction TEXT NOT NULL,
    location_alias TEXT NOT NULL,
    state TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (direction, location_alias, state)
) WITHOUT ROWID;

CREATE TABLE job_counts (
    state TEXT PRIMARY KEY,
    n INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TRIGGER items_counted_in AFTER INSERT ON transfer_items BEGIN
    INSERT INTO item_counts (direction, location_alias, state, n)
    VALUES (NEW.direction, NEW.location_alias, NEW.state, 1)
    ON CONFLICT (direction, location_alias, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER items_counted_move AFTER UPDATE OF state ON transfer_items
WHEN OLD.state <> NEW.state BEGIN
    UPDATE item_counts SET n = n - 1
    WHERE direction = OLD.direction AND location_alias = OLD.location_alias
      AND state = OLD.state;
    INSERT INTO item_counts (direction, location_alias, state, n)
    VALUES (NEW.direction, NEW.location_alias, NEW.state, 1)
    ON CONFLICT (direction, location_alias, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER items_counted_out AFTER DELETE ON transfer_items BEGIN
    UPDATE item_counts SET n = n - 1
    WHERE direction = OLD.direction AND location_alias = OLD.location_alias
      AND state = OLD.state;
END;

CREATE TRIGGER jobs_counted_in AFTER INSERT ON jobs BEGIN
    INSERT INTO job_counts (state, n) VALUES (NEW.state, 1)
    ON CONFLICT (state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_counted_move AFTER UPDATE OF state ON jobs
WHEN OLD.state <> NEW.state BEGIN
    UPDATE job_counts SET n = n - 1 WHERE state = OLD.state;
    INSERT INTO job_counts (state, n) VALUES (NEW.state, 1)
    ON CONFLICT (state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_counted_out AFTER DELETE ON jobs BEGIN
    UPDATE job_counts SET n = n - 1 WHERE state = OLD.state;
END;
"""

# V2: the mirror of a site served from a Balsam server (balsam_tui/server). Local
# rows keep the server's ids where they are free; these tables map the rest. An
# item's ``version`` grows with every local change that the server must learn
# (state, task, transfer_info, its task's backend id); ``pushed_version`` is the
# version the server last accepted, so an interrupted push is simply repeated.
_V2 = """
CREATE TABLE server_apps (
    app_id INTEGER PRIMARY KEY REFERENCES apps(id) ON DELETE CASCADE,
    server_id INTEGER NOT NULL UNIQUE
);

CREATE TABLE server_jobs (
    job_id INTEGER PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
    server_id INTEGER NOT NULL UNIQUE
);

CREATE TABLE server_items (
    item_id INTEGER PRIMARY KEY REFERENCES transfer_items(id) ON DELETE CASCADE,
    server_id INTEGER NOT NULL UNIQUE,
    version INTEGER NOT NULL DEFAULT 0,
    pushed_version INTEGER NOT NULL DEFAULT 0,
    gone INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX ix_server_items_unpushed ON server_items (item_id)
WHERE version <> pushed_version AND gone = 0;

CREATE TRIGGER server_item_changed
AFTER UPDATE OF state, task_id, transfer_info ON transfer_items BEGIN
    UPDATE server_items SET version = version + 1 WHERE item_id = NEW.id;
END;

CREATE TRIGGER server_task_submitted AFTER UPDATE OF backend_task_id ON transfer_tasks
WHEN NEW.backend_task_id IS NOT OLD.backend_task_id BEGIN
    UPDATE server_items SET version = version + 1
    WHERE item_id IN (SELECT id FROM transfer_items WHERE task_id = NEW.id);
END;
"""

MIGRATIONS: tuple[str, ...] = (_V1, _V2)

SCHEMA_VERSION = len(MIGRATIONS)
