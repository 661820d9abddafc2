"""Serving a site registered on a Balsam server instead of the embedded store.

``client`` speaks Balsam's REST API (httpx), ``mirror`` keeps the server's rows in
the site's store, ``sync`` moves changes both ways around each engine cycle. Like
the engine, nothing here imports Textual or Rich.
"""
