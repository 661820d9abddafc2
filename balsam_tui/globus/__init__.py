"""Globus login for balsam-tui: tokens in the site, and the apps the engine uses.

``auth`` holds the login flow (``GlobusLogin``: ``start() -> url``, ``finish(code)``),
the site's token file and the credentials the engine's Transfer client runs on;
``commands`` turns them into the ``login``, ``logout`` and ``whoami`` commands. The
Transfer backend itself lives with the other backends, in
``balsam_tui.backends.globus``.
"""
