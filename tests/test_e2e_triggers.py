"""Every trigger kind end to end on the real broker: cron with failover, run now, flow and
catch, once-armed listeners."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import Message

from streams.engine import job_partition
from tests.conftest import Stack, TopicReader, WorkerProcess, decode_avro, unique

pytestmark = pytest.mark.broker


def command(msg: Message) -> dict[str, Any]:
    return decode_avro("job_command.avsc", msg.value())


def result(msg: Message) -> dict[str, Any]:
    return decode_avro("run_result.avsc", msg.value())


def of_handler(handler_id: str):
    return lambda m: command(m)["handler_id"] == handler_id


def tick_time(cmd: dict[str, Any]) -> float:
    return datetime.strptime(cmd["trigger_ref"], "cron:%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def owner(workers: list[WorkerProcess], handler_id: str) -> WorkerProcess:
    """The worker that has been sending the handler's ticks most recently."""
    def last_send(w: WorkerProcess) -> int:
        return w.log_text().rfind(f"cron {handler_id}: tick")
    return max(workers, key=last_send)


def test_cron_ticks_fire_once_across_a_sigkill_failover(stack: Stack):
    # Both jobs on one partition, so killing its owner interrupts both schedules.
    jobs = ("count0", "count3")
    part = job_partition(jobs[0], stack.topics.job_partitions)
    assert job_partition(jobs[1], stack.topics.job_partitions) == part, "pick two jobs on one partition"
    commands = stack.reader(stack.topics.job_commands)
    a, b = stack.start_worker("cron-a"), stack.start_worker("cron-b")
    a.wait_ready()
    b.wait_ready()
    once_each = {"id": unique("cron-run-once"), "job": jobs[0],
                 "cron": {"schedule": "*/2 * * * * *", "timezone": "Europe/Zurich"}}
    skipping = {"id": unique("cron-skip"), "job": jobs[1],
                "cron": {"schedule": "*/2 * * * * *", "timezone": "UTC", "misfire": "skip"}}
    stack.apply_handler(once_each)
    stack.apply_handler(skipping)
    commands.wait_for(of_handler(once_each["id"]), count=3)
    victim = owner([a, b], once_each["id"])
    survivor = b if victim is a else a
    killed_at = time.time()
    victim.stop(signal.SIGKILL)
    # ticks keep falling due while the partition has no owner; wait for the survivor
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        commands.poll_for(0.5)
        after = [command(m) for m in commands.seen if of_handler(once_each["id"])(m)]
        if sum(tick_time(c) > killed_at + 16 for c in after) >= 2:
            break
    survivor_log = survivor.log_text()
    assert f"cron {once_each['id']}: tick" in survivor_log

    ticks = sorted(tick_time(command(m)) for m in commands.seen if of_handler(once_each["id"])(m))
    assert len(ticks) == len(set(ticks)), f"a tick fired twice: {ticks}"
    gaps = [t2 - t1 for t1, t2 in zip(ticks, ticks[1:], strict=False)]
    assert gaps and all(g == 2.0 for g in gaps), f"a tick was lost (run_once): {ticks}"
    assert ticks[-1] > killed_at + 16

    skipped = sorted(tick_time(command(m)) for m in commands.seen if of_handler(skipping["id"])(m))
    assert len(skipped) == len(set(skipped)), f"a tick fired twice: {skipped}"
    assert any(t2 - t1 > 2.0 for t1, t2 in zip(skipped, skipped[1:], strict=False)), \
        f"misfire: skip should drop the ticks missed during the failover: {skipped}"
    assert "misfire: skip" in survivor_log

    # a cron run starts with the job's cursor: the runs counter goes up by one each time
    runs = [json.loads(c["initial_state_json"] or "{}").get("runs", 0)
            for c in sorted((command(m) for m in commands.seen if of_handler(once_each["id"])(m)), key=tick_time)]
    assert runs[-1] >= 3 and runs == sorted(runs)
    survivor.stop()
    commands.close()
