"""The Textual console. Nothing outside this package imports Textual or Rich."""

from __future__ import annotations

import sys

from balsam_tui.site import Site


def run_console(site: Site, *, demo: bool = False) -> int:
    # The console is not built yet; say so instead of pretending.
    print("balsam-tui: error: the console is not available in this build yet; "
          "run with --no-ui", file=sys.stderr)
    return 1
