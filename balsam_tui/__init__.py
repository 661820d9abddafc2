"""balsam-tui: batched data staging for many small HPC jobs.

The package is split by role: ``store`` keeps sites, apps, jobs and transfer items;
``engine`` batches and tracks transfers; ``backends`` move the bytes; ``api`` and
``cli`` put work in; ``headless`` and ``ui`` are the two faces that run the engine.
Nothing outside ``ui`` imports Textual or Rich.
"""

__version__ = "0.1.0"
