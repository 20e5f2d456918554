"""Workers that lose their disk, and workers that find the wrong topics."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import yaml

from tests.conftest import ROOT, Stack, command, decode_avro, unique

pytestmark = pytest.mark.broker


def test_worker_with_deleted_rocksdb_gets_job_state_back_from_changelog(stack: Stack):
    commands = stack.reader(stack.topics.job_commands)
    results = stack.reader(stack.topics.run_results)
    first = stack.start_worker("a")
    first.wait_ready()
    h = {"id": unique("recover"), "job": "count8", "event": {"match": {"type": "recover"}}, "params": {"n": "n"}}
    stack.apply_handler(h)
    for n in (1, 2, 3):
        stack.send_event({"id": f"rec-{n}", "type": "recover", "n": n})
        [c] = commands.wait_for(
            lambda m, n=n: decode_avro("job_command.avsc", m.value())["trigger_ref"] == f"id:rec-{n}")
        run = decode_avro("job_command.avsc", c.value())["run_id"]
        results.wait_for(lambda m, run=run: decode_avro("run_result.avsc", m.value())["run_id"] == run)
    # settle writes the state before it emits the status event
    events = stack.reader(stack.topics.events)
    events.wait_for(lambda m, run=run: b'"source":"internal"' in m.value() and run.encode() in m.value()
                    and b'"new_status":"finished"' in m.value())
    events.close()
    assert first.stop() == 0
    shutil.rmtree(first.datadir)
    assert not first.datadir.exists()

    second = stack.start_worker("b", datadir=first.datadir)
    second.wait_ready()
    stack.send_event({"id": "rec-1", "type": "recover", "n": 1})  # a replay: the new disk knows it too
    stack.send_event({"id": "rec-4", "type": "recover", "n": 4})
    [c4] = commands.wait_for(lambda m: decode_avro("job_command.avsc", m.value())["trigger_ref"] == "id:rec-4")
    state = json.loads(decode_avro("job_command.avsc", c4.value())["initial_state_json"])
    assert state == {"runs": 3, "seen": [{"n": 1}, {"n": 2}, {"n": 3}]}
    commands.poll_for(1.0)
    assert len([m for m in commands.seen if command(m)["trigger_ref"] == "id:rec-1"]) == 1
    second.stop()
    commands.close()
    results.close()


def test_worker_refuses_topics_that_differ_from_topics_yaml(stack: Stack, tmp_path):
    spec = yaml.safe_load((ROOT / "topics.yaml").read_text())
    spec["topics"]["events"]["partitions"] = 8
    spec["topics"]["handlers"]["config"]["cleanup.policy"] = "delete"
    wrong = tmp_path / "topics.yaml"
    wrong.write_text(yaml.safe_dump(spec))

    check = stack.cli("topics", "check", "--topics-file", str(wrong))
    assert check.returncode == 2
    assert f"{stack.prefix}signalbox.events: partitions is 4, topics.yaml says 8" in check.stderr
    assert f"{stack.prefix}signalbox.handlers: cleanup.policy is 'compact', topics.yaml says 'delete'" in check.stderr

    worker = stack.cli("worker", "--topics-file", str(wrong), "--datadir", str(tmp_path / "d"), timeout=60)
    assert worker.returncode == 2
    assert "differ from topics.yaml" in worker.stderr and "partitions is 4" in worker.stderr

    assert stack.cli("topics", "check").returncode == 0


def test_dedup_entries_expire_after_the_retention(stack: Stack):
    """A replay inside the retention starts nothing; after it, the entry is swept (a
    tombstone on the dedup changelog) and the same event starts a new run."""
    w = stack.start_worker("dedup", env={"SIGNALBOX_DEDUP_RETENTION_SECONDS": "2",
                                         "SIGNALBOX_DEDUP_SWEEP_INTERVAL_SECONDS": "0.5"})
    w.wait_ready()
    commands = stack.reader(stack.topics.job_commands)
    h = {"id": unique("dedup"), "job": "count5", "event": {"match": {"type": "dedup"}}}
    stack.apply_handler(h)
    event = {"id": unique("replayed"), "type": "dedup"}
    stack.send_event(event)
    [first] = commands.wait_for(lambda m: command(m)["handler_id"] == h["id"])
    run = command(first)["run_id"]
    stack.send_event(event)  # inside the retention: dropped
    time.sleep(3)
    stack.send_event({"id": unique("tick"), "type": "other"})
    stack.send_event(event)  # after the retention: a new run, same run id
    commands.wait_for(lambda m: command(m)["handler_id"] == h["id"], count=2)
    commands.poll_for(1.0)
    assert [command(m)["run_id"] for m in commands.seen if command(m)["handler_id"] == h["id"]] == [run, run]
    # the sweep deleted the first entry: a tombstone on the changelog for the batch that held it
    changelog = stack.reader(f"{stack.app_id}-job-runs-changelog")
    [entry] = changelog.wait_for(lambda m: m.key().startswith(b'"b:') and m.value() is not None
                                 and run.encode() in m.value())
    changelog.wait_for(lambda m: m.key() == entry.key() and m.value() is None)
    changelog.close()
    commands.close()
    w.stop()


def test_every_settled_run_is_on_the_dedup_changelog_of_its_partition(stack: Stack):
    """A worker that takes over a partition knows a settled run only from the changelog. A
    burst over 20 jobs puts results of every partition into one schedule batch (one
    millisecond): counted from outside, each settled run id is in a de-duplication entry of
    the job-runs changelog partition its result was read from (two partitions' entries of
    one millisecond once shared a key, and one of them was lost)."""
    from tests.test_e2e_guarantees import send_all

    w = stack.start_worker(unique("dedup-burst"))
    w.wait_ready()
    tag = unique("burst")
    handlers = [{"id": f"{tag}-{j}", "job": f"load{60 + j}", "event": {"match": {"type": tag, "job": j}}}
                for j in range(20)]
    for h in handlers:
        stack.apply_handler(h, wait=False)
    stack.wait_logged(f"handler {handlers[-1]['id']} applied")
    results = stack.reader(stack.topics.run_results)
    send_all(stack, [{"id": f"{tag}-e{i}", "type": tag, "job": i % 20} for i in range(200)])
    settled = results.wait_for(lambda m: decode_avro("run_result.avsc", m.value())["handler_id"].startswith(tag),
                               count=200, timeout=120)
    where = {decode_avro("run_result.avsc", m.value())["run_id"]: m.partition() for m in settled}
    assert len(where) == 200
    assert len(set(where.values())) > 1, "the burst must span several partitions"
    changelog = stack.reader(f"{stack.app_id}-job-runs-changelog")
    on_changelog: dict[str, set[int]] = {}
    end = time.monotonic() + 60
    while time.monotonic() < end:
        changelog.poll_for(0.5)
        on_changelog = {}
        for m in changelog.seen:
            if m.key().startswith(b'"b:') and m.value() is not None:
                for run_id in json.loads(m.value())[1]:
                    on_changelog.setdefault(run_id, set()).add(m.partition())
        if all(where[r] in on_changelog.get(r, ()) for r in where):
            break
    missing = sorted(r for r in where if where[r] not in on_changelog.get(r, ()))
    assert not missing, f"{len(missing)} of {len(where)} settled runs have no de-duplication entry on their partition"
    changelog.close()
    results.close()
    w.stop()
