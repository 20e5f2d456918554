"""Which handlers fire for an event, and with which parameters. Pure: no Kafka import.

``HandlerIndex`` is updated one handler at a time (put/remove) and answers
``match(event)``. The algorithm behind it is :mod:`streams.matching.index` (per-field value
indexes, not a loop over handlers); callers only see :class:`Match`.
"""

from __future__ import annotations

from streams.matching.index import _MISSING, Index, Match, extract, extract_params, filter_passes, split_path

__all__ = ["_MISSING", "HandlerIndex", "Match", "extract", "extract_params", "filter_passes", "split_path"]


class HandlerIndex(Index):
    """The live event-handler set of one worker: ``put``, ``remove``, ``get``, ``handlers``,
    ``len()`` and ``match(event) -> [Match]``. Disabled handlers never match."""
