"""The worker's Faust transport refuses acknowledgements the engine did not give."""

from __future__ import annotations

from dataclasses import dataclass

from streams.kafka import faust_driver


def test_faust_acknowledgements_count_only_for_records_the_engine_handled() -> None:
    """``faust_driver``: Faust's stream acknowledges a record it skips during a rebalance;
    on the schedule step's topics that acknowledgement must not count (the record is read
    again), while the engine's own acknowledgements do, once each."""
    @dataclass(eq=False)
    class Record:
        topic: str

    faust_driver.acknowledge_only_handled(["app.triggers"])
    skipped, processed, other = Record("app.triggers"), Record("app.triggers"), Record("app.events")
    faust_driver.handled(processed)
    assert faust_driver.refuses_ack(skipped)
    assert not faust_driver.refuses_ack(processed)
    assert faust_driver.refuses_ack(processed)  # handled once, acknowledged once
    assert not faust_driver.refuses_ack(other)
