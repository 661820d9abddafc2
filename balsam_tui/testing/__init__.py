"""Test tools: a stand-in Globus service that the real globus-sdk talks to.

Nothing in here is used by the tool at run time; tests and offline trials import it.
``globus_standin`` is the entry point (``GlobusStandin`` and a command line);
``standin_transfer``, ``standin_auth``, ``standin_oidc`` and ``standin_faults`` hold
the service's state and never touch HTTP. None of it imports Textual, Rich or
globus-sdk.
"""
