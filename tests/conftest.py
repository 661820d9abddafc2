"""Shared fixtures: a real site on disk, and the Python API pointed at it.

The site trusts two local locations under the test's own temporary directory:
``laptop`` (where inputs come from) and ``archive`` (where results go).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from balsam_tui.site import Site, init_site

SITE_SETTINGS = """\
transfers:
  transfer_locations:
    laptop: local://localhost{root}/laptop
    archive: local://localhost{root}/archive
  max_concurrent_transfers: 2
  transfer_batch_size: 10
  service_period: 1
"""


@pytest.fixture
def site(tmp_path: Path) -> Site:
    """A new site whose settings trust ``laptop`` and ``archive``."""
    root = tmp_path.resolve()
    for name in ("laptop", "archive"):
        (root / name).mkdir()
    return init_site(root / "site", settings_text=SITE_SETTINGS.format(root=root))


@pytest.fixture
def api_site(site: Site, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    """The site, with ``balsam_tui.api`` using it; the API forgets it afterwards."""
    from balsam_tui import api

    monkeypatch.setenv("BALSAM_SITE_PATH", str(site.root))
    api.use_site(site.root)
    yield site
    api.close()
