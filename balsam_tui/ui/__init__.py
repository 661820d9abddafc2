"""The Textual console. Nothing outside this package imports Textual or Rich.

``run_console`` is the whole entry point: it builds the engine (a settings or store
problem stops here, as one line, before the screen is taken over), sends log
records to the site's log file and to the Log pane, and runs ``BalsamConsole``.

Layout of the package: ``app`` (the App: engine worker, snapshots, keys),
``panes/`` (Tasks, Jobs, Settings, Log), ``dialogs/`` (screens pushed over the
panes), ``reading`` (what the console reads from the store itself), ``status``,
``cells`` (how values look), ``job_filter``, ``messages`` and ``log_bridge``.
"""

from __future__ import annotations

import logging

from balsam_tui.site import Site

log = logging.getLogger(__name__)


def run_console(site: Site, *, demo: bool = False) -> int:
    """Run the console on ``site`` until the operator quits; return the exit status.

    With ``demo``, a simulated compute side runs the demo site's jobs too.
    """
    from balsam_tui.engine import Engine
    from balsam_tui.headless import configure_logging
    from balsam_tui.ui.app import BalsamConsole
    from balsam_tui.ui.log_bridge import QueuedLogHandler

    engine = Engine(site)
    # The terminal belongs to the console: log to the site's file, not to stderr.
    configure_logging(site, stderr=False)
    demo_side = None
    if demo:
        from balsam_tui.demo import DemoComputeSide

        demo_side = DemoComputeSide(site)
    app = BalsamConsole(
        site, engine, log_handler=QueuedLogHandler(), demo_side=demo_side
    )
    log.info("console opened on site %s", site.root)
    status = app.run()
    log.info("console closed")
    if demo:
        print(f"the demo site is kept at {site.root} (safe to delete)")
    return status or 0
