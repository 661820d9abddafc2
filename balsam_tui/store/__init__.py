"""The embedded store: one SQLite file per site holding apps, jobs, transfer items,
transfer tasks and the journal. ``db`` owns connections and transactions, ``jobs``
the apps, jobs and items, ``tasks`` the engine's batches.
"""

from balsam_tui.store.db import Database, StoreBusy, StoreError, StoreVersionError
from balsam_tui.store.jobs import NotFound, ValidationError

__all__ = [
    "Database",
    "NotFound",
    "StoreBusy",
    "StoreError",
    "StoreVersionError",
    "ValidationError",
]
