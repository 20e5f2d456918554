"""Deliveries: runs whose target is the outside world instead of a Python job.

One module per transport (``webhook``), plus what they share: the address guard
(``guard``), the signature scheme (``signing``) and secret names (``secrets``). A delivery
is a run like any other: deterministic run id, per-job queue, retries and dead letters.
"""
