"""Which backend serves which location protocol, built from the site's settings."""

from __future__ import annotations

from balsam_tui.backends.base import Backend, WakeCallback
from balsam_tui.settings import TransferSettings
from balsam_tui.site import Site


class BackendUnavailable(Exception):
    """No backend can serve a protocol here (not built, or not configured)."""


def make_backend(
    protocol: str, settings: TransferSettings, site: Site, wake: WakeCallback
) -> Backend:
    if protocol == "local":
        from balsam_tui.backends.local import LocalBackend

        return LocalBackend(workers=settings.local_workers, wake=wake)
    if protocol == "globus":
        try:
            from balsam_tui.backends.globus import GlobusBackend
        except ImportError:
            raise BackendUnavailable(
                "globus:// locations are not supported by this build yet"
            ) from None
        return GlobusBackend(settings=settings, site=site, wake=wake)
    raise BackendUnavailable(f"no backend for protocol {protocol!r}")
