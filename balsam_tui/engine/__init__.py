"""The transfer engine: batches, submits, polls, reconciles and retries transfers.

``engine`` runs the loop; ``planning`` and ``reconcile`` are its pure decisions;
``snapshot`` is what it publishes. No module here imports Textual or Rich.
"""

from balsam_tui.engine.engine import Engine
from balsam_tui.engine.snapshot import EngineSnapshot, EngineStatus

__all__ = ["Engine", "EngineSnapshot", "EngineStatus"]
