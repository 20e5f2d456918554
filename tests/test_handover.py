"""The hand-over of run results from the worker's own runner to its schedule step
(``engine/handover.py``): which copy of a result is settled, which is skipped, and what a
rebalance drops. Pure units; the end-to-end counts are in ``test_e2e_handover.py``."""

from __future__ import annotations

import asyncio
import weakref
from collections import Counter
from types import SimpleNamespace
from typing import Any

from streams.engine.handover import HandedResult, Handover, is_handed
from streams.engine.overlay import current_event, processing

TOPIC = "signalbox.run-results"


def make(owned: set[int] | None = None, rebalancing: bool = False) -> tuple[Handover, list[Any], Counter[str]]:
    counts: Counter[str] = Counter()
    state = {"owned": {0, 1} if owned is None else owned, "rebalancing": rebalancing}
    h = Handover(TOPIC, lambda: state["owned"], lambda: state["rebalancing"], lambda o: counts.update([o]))
    inbox: list[Any] = []
    h.attach(inbox, asyncio.Event())
    h.state = state  # type: ignore[attr-defined]  # the test moves ownership and rebalances
    return h, inbox, counts


def from_topic(partition: int, offset: int) -> Any:
    return SimpleNamespace(topic=TOPIC, partition=partition, offset=offset, value=b"r")


def test_an_offer_reaches_the_inbox_only_for_an_owned_partition_outside_a_rebalance():
    h, inbox, counts = make(owned={1})
    assert not h.offer(0, 5, b"r0")  # partition 0 is another worker's
    assert h.offer(1, 5, b"r1", b"job")
    [event] = inbox
    assert is_handed(event) and (event.message.topic, event.message.partition, event.message.offset) == (TOPIC, 1, 5)
    assert (event.message.value, event.message.key, event.message.timestamp) == (b"r1", b"job", None)
    h.state["rebalancing"] = True  # type: ignore[attr-defined]
    assert not h.offer(1, 6, b"r")
    h.detach()
    h.state["rebalancing"] = False  # type: ignore[attr-defined]
    assert not h.offer(1, 7, b"r")  # the agent stopped: nobody to hand it to
    assert len(inbox) == 1 and counts == {"offered": 1}


def test_whichever_copy_is_taken_first_is_settled_and_its_twin_skipped():
    h, inbox, counts = make()
    h.offer(0, 10, b"r")
    handed = inbox[0].message
    assert h.first(handed, handed=True)  # the runner's copy first
    assert not h.first(from_topic(0, 10), handed=False)  # its record from the topic: skipped
    assert h.first(from_topic(0, 11), handed=False)  # the topic first this time
    assert not h.first(SimpleNamespace(partition=0, offset=11), handed=True)
    # a handed copy below an offset already read from the topic: its own record was read before it
    assert h.first(from_topic(1, 40), handed=False)
    assert not h.first(SimpleNamespace(partition=1, offset=39), handed=True)
    assert h.first(SimpleNamespace(partition=1, offset=41), handed=True)  # above it: not read yet
    assert counts["skipped"] == 3


def test_records_of_other_runners_are_settled_from_the_topic_as_before():
    """A worker whose runner is elsewhere (``--no-runner``, or another worker's runner ran
    the command): every result comes from the topic alone, and every one is settled."""
    h, _, counts = make()
    assert all(h.first(from_topic(p, o), handed=False) for o in range(200) for p in (0, 1))
    assert counts == {}


def test_a_rebalance_drops_the_waiting_copies_and_what_was_remembered():
    h, inbox, counts = make()
    inbox.append("a record from Faust")
    h.offer(0, 1, b"r")
    h.offer(0, 2, b"r")
    assert h.first(inbox[1].message, handed=True)
    h.forget()
    assert inbox == ["a record from Faust"]  # the copies not taken: the topic has them
    # after a rebalance the topic is read again from the committed offset: its copy of the
    # result settled above is settled again (the run book ignores it as a repeat)
    assert h.first(from_topic(0, 1), handed=False)
    assert counts == {"offered": 2}


def test_a_handed_result_can_be_fausts_current_event():
    """Table writes go to the partition of Faust's current event: a handed copy stands in."""
    h, inbox, _ = make()
    h.offer(1, 3, b"r")
    event: HandedResult = inbox[0]
    assert weakref.ref(event)() is event
    with processing(event):
        assert current_event() is event and current_event().message.partition == 1
