"""Records handed between the worker's schedule step and its own runner, beside the topic.

A run's round trip holds two broker hops: its command to the runner, its result back to
the schedule step. Each costs a record's trip through the broker, a fetch the broker holds,
the consumer's hand-over and (for results) Faust's per-record path, all queued behind a
busy event loop: in ``bench/bench_e2e.py``'s phase 3 the result's hop took 50-100 ms of a
~110 ms round trip, the command's 15-30 ms. When the runner runs inside the worker, each
side already holds the record the other one waits for. So once the broker has
acknowledged a record, its writer offers it to the other side (partition, offset, bytes):

- a run result to the schedule step (:meth:`Handover.offer`), which takes it into its
  next batch as if it had been fetched;
- a job command to the runner (:attr:`Handover.runner`, the runner's ``offer``), which
  starts it at once.

The topic stays the record of truth. Each record still arrives from its topic, and only
what was read from the topic is committed. Whichever of a record's two copies is taken
first is processed, the other skipped (:meth:`Handover.first`; the runner keeps its own
count). A record is offered only for a partition its reader owns, never during the
schedule step's rebalance, and copies still waiting when partitions move are dropped
(their records go to whoever owns them). A worker that dies leaves everything to be read
again from the topics, as before.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

TWINS_MAX = 50_000  # handed copies settled whose twin was not read yet (it normally follows within ms)


@dataclass(slots=True)
class HandedRecord:
    """What the schedule step reads of a record (Faust's ``Message`` fields it uses)."""

    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes | None = None
    timestamp: float | None = None  # seconds, as Faust's; None: not measured as a fetch


@dataclass(slots=True, weakref_slot=True, eq=False)
class HandedResult:
    """A result offered by the runner, in the schedule step's inbox beside Faust's events
    (weak-referenceable: Faust's current event while its table writes are made)."""

    message: HandedRecord


# (partition, offset, value, key) of a record the broker acknowledged -> whether it was taken
Offer = Callable[[int, int, bytes, bytes | None], bool]


class Handover:
    """The schedule step's side: ``attach`` it to the agent's inbox; the runner calls
    :meth:`offer`; each batch asks :meth:`first` of every result it takes. In the other
    direction, :attr:`runner` (the runner's own ``offer``) gets each job command the broker
    acknowledged."""

    runner: Offer | None = None

    def __init__(self, topic: str, owned: Callable[[], set[int]], rebalancing: Callable[[], bool],
                 count: Callable[[str], None] = lambda outcome: None) -> None:
        """``owned``: the job partitions this worker's schedule step owns; ``count``: called
        with ``offered`` (a copy put in the inbox) or ``skipped`` (a second copy skipped)."""
        self.topic = topic
        self._count = count
        self._owned = owned
        self._rebalancing = rebalancing
        self._inbox: list[Any] | None = None
        self._arrived: asyncio.Event | None = None
        self._taken: OrderedDict[tuple[int, int], None] = OrderedDict()  # handed copies settled, twin not read
        self._read: dict[int, int] = {}  # partition -> the last offset read from the topic

    def attach(self, inbox: list[Any], arrived: asyncio.Event) -> None:
        self._inbox, self._arrived = inbox, arrived

    def detach(self) -> None:
        self._inbox = self._arrived = None
        self.forget()

    def offer(self, partition: int, offset: int, value: bytes, key: bytes | None = None) -> bool:
        """The runner's result, acknowledged by the broker at (partition, offset): put in the
        schedule step's inbox if this worker owns that partition now. Returns whether it was."""
        if self._inbox is None or self._arrived is None or self._rebalancing() or partition not in self._owned():
            return False
        self._inbox.append(HandedResult(HandedRecord(self.topic, partition, offset, value, key)))
        self._arrived.set()
        self._count("offered")
        return True

    def first(self, message: Any, handed: bool) -> bool:
        """Whether ``message`` (a result, ``handed`` over or read from the topic) is the
        first of its two copies a batch took: settle it. False: its twin was taken before,
        skip it. The topic hands a partition's records over in offset order, so a handed
        copy at or below the last offset read from there has had its twin taken."""
        partition, offset = message.partition, message.offset
        if handed:
            if offset <= self._read.get(partition, -1):
                self._count("skipped")
                return False
            self._taken[(partition, offset)] = None
            if len(self._taken) > TWINS_MAX:
                self._taken.popitem(last=False)  # its twin, if it ever comes, is settled again: a repeat, ignored
            return True
        if offset > self._read.get(partition, -1):
            self._read[partition] = offset
        if self._taken.pop((partition, offset), False) is None:
            self._count("skipped")
            return False
        return True

    def taken(self, message: Any) -> bool:
        """Whether a result read from the topic is the twin of a handed copy already taken
        (it only needs acknowledging: it can wait for the next batch instead of making one)."""
        return (message.partition, message.offset) in self._taken

    def hand_commands(self, commands: list[tuple[str, bytes]], acks: list[asyncio.Future[Any]]) -> None:
        """Hand each of a batch's commands ((job, value), in send order) to the runner once
        the broker acknowledged it (not when the batch is written: that waits for the
        batch before)."""
        if self.runner is None:
            return
        for (job, value), ack in zip(commands, acks, strict=True):
            ack.add_done_callback(partial(self._hand_command, value, job.encode()))

    def _hand_command(self, value: bytes, key: bytes, ack: asyncio.Future[Any]) -> None:
        if self.runner is None or ack.cancelled() or ack.exception() is not None:
            return  # a refused command stops the worker (agents.py); the topic has the rest
        metadata = ack.result()
        self.runner(metadata.partition, metadata.offset, value, key)

    def forget(self) -> None:
        """Partitions moved: drop the copies still waiting (the topic has them) and what
        was remembered of twins (a second copy read after this is settled again as a
        repeat, which the run book ignores)."""
        if self._inbox is not None:
            self._inbox[:] = [event for event in self._inbox if not isinstance(event, HandedResult)]
        self._taken.clear()
        self._read.clear()


def is_handed(event: Any) -> bool:
    return isinstance(event, HandedResult)
