"""Screens pushed over the panes: confirmations, the Globus login, help, details."""
