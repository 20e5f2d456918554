"""The signalbox console script against a real broker and worker."""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest
from confluent_kafka.admin import AdminClient

from streams.contracts import topics as topics_mod
from tests.conftest import ROOT, BrokerInfo, Stack

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def cli_stack(broker: BrokerInfo, tmp_path_factory: pytest.TempPathFactory):
    """A stack whose topics are created by the CLI itself."""
    tag = uuid.uuid4().hex[:8]
    topics = topics_mod.Topics.load(ROOT / "topics.yaml", f"c{tag}.")
    s = Stack(broker, f"c{tag}.", f"signalbox-c{tag}", topics, tmp_path_factory.mktemp("cli"))
    yield s
    for w in s.workers:
        w.stop()


def test_topics_create_then_check(cli_stack: Stack):
    created = cli_stack.cli("topics", "create")
    assert created.returncode == 0, created.stderr
    assert created.stdout.count("created ") == 7
    again = cli_stack.cli("topics", "create")
    assert again.returncode == 0 and "created" not in again.stdout
    names = set(AdminClient({"bootstrap.servers": cli_stack.broker.bootstrap}).list_topics(timeout=10).topics)
    assert {s.name for s in cli_stack.topics.specs.values()} <= names


def test_handlers_apply_list_delete(cli_stack: Stack, tmp_path):
    folder = tmp_path / "handlers"
    folder.mkdir()
    (folder / "a.yaml").write_text(
        "id: cli-a\njob: count9\nevent:\n  match: {type: cli}\nparams: {n: n}\n")
    (folder / "b.json").write_text(json.dumps({"id": "cli-b", "job": "count9", "event": {"match": {"type": "other"}}}))
    applied = cli_stack.cli("handlers", "apply", str(folder))
    assert applied.returncode == 0, applied.stderr
    assert "applied cli-a" in applied.stdout and "applied cli-b" in applied.stdout

    listed = cli_stack.cli("handlers", "list", "--json")
    assert listed.returncode == 0
    ids = [json.loads(line)["id"] for line in listed.stdout.splitlines()]
    assert ids == ["cli-a", "cli-b"]

    bad = tmp_path / "bad.yaml"
    bad.write_text("id: cli-bad\njob: count9\nevent: {match: {}}\nwhen: tomorrow\n")
    refused = cli_stack.cli("handlers", "apply", str(bad))
    assert refused.returncode == 2 and "when: Extra inputs are not permitted" in refused.stderr

    deleted = cli_stack.cli("handlers", "delete", "cli-b")
    assert deleted.returncode == 0
    assert [json.loads(x)["id"] for x in cli_stack.cli("handlers", "list", "--json").stdout.splitlines()] == ["cli-a"]
    unknown = cli_stack.cli("handlers", "delete", "cli-nope")
    assert unknown.returncode == 2 and "no handler 'cli-nope'" in unknown.stderr


def test_send_tail_and_state(cli_stack: Stack, tmp_path):
    worker = cli_stack.start_worker("cli-worker")
    worker.wait_ready()
    cli_stack.wait_logged("handler cli-a applied")

    assert cli_stack.cli("send", '{"id": "c1", "type": "cli", "n": 1}').returncode == 0
    lines = tmp_path / "events.jsonl"
    lines.write_text('{"id": "c2", "type": "cli", "n": 2}\n\n{"id": "c3", "type": "other"}\n')
    sent = cli_stack.cli("send", "--file", str(lines))
    assert sent.returncode == 0 and "sent 2 event(s)" in sent.stdout
    assert cli_stack.cli("send", "-", input='{"id": "c4", "type": "cli", "n": 4}\n').returncode == 0
    refused = cli_stack.cli("send", "[1, 2]")
    assert refused.returncode == 2 and "not an object" in refused.stderr

    tail = cli_stack.cli("tail", "--from-beginning", "--count", "3", "--timeout", "60", "--json")
    assert tail.returncode == 0, tail.stderr
    results = [json.loads(line) for line in tail.stdout.splitlines()]
    assert [r["status"] for r in results] == ["succeeded"] * 3
    assert {r["handler_id"] for r in results} == {"cli-a"}

    human = cli_stack.cli("tail", "--from-beginning", "--count", "1", "--timeout", "60")
    assert re.match(r"\d\d:\d\d:\d\d RESULT  job=count9 handler=cli-a run=", human.stdout), human.stdout
    assert "status=succeeded" in human.stdout

    # the state is stored when the third result is settled, a moment after it is produced
    deadline = time.monotonic() + 30
    while True:
        state = cli_stack.cli("state", "count9")
        if state.returncode == 0 and json.loads(state.stdout)["runs"] == 3:
            break
        assert time.monotonic() < deadline, (state.stdout, state.stderr)
        time.sleep(0.5)
    missing = cli_stack.cli("state", "no-such-job")
    assert missing.returncode == 1 and "no stored state" in missing.stderr


def test_help_on_every_subcommand(cli_stack: Stack, capsys):
    """The console script answers --help (one process); every subcommand's help, in process."""
    from streams.cli.main import main

    out = cli_stack.cli("--help")
    assert out.returncode == 0 and out.stdout.startswith("usage: signalbox")
    for args in (["dev", "--help"], ["topics", "--help"], ["topics", "check", "--help"],
                 ["topics", "create", "--help"], ["jobs", "--help"], ["handlers", "apply", "--help"],
                 ["run", "--help"],
                 ["test-match", "--help"], ["handlers", "arm", "--help"],
                 ["handlers", "list", "--help"], ["handlers", "delete", "--help"], ["send", "--help"],
                 ["worker", "--help"], ["tail", "--help"], ["state", "--help"], ["schema", "--help"],
                 ["listeners", "add", "--help"], ["listeners", "list", "--help"], ["listeners", "delete", "--help"],
                 ["gateway", "--help"], ["token", "--help"], ["dead-letters", "--help"], ["rejections", "--help"]):
        with pytest.raises(SystemExit) as exited:
            main(args)
        assert exited.value.code == 0, args
        assert capsys.readouterr().out.startswith("usage: signalbox"), args


def test_test_match_dry_run_and_live(cli_stack: Stack, tmp_path):
    lines = tmp_path / "cases.jsonl"
    lines.write_text("\n".join(json.dumps(x) for x in [
        {"filter": {"match": {"formID": "patient_registration_v7"}, "exclude": {"allowedToShare": False}},
         "event": {"formID": "patient_registration_v7", "allowedToShare": False}},
        {"handler": {"id": "h", "job": "j", "event": {"pattern": {"n": [{"numeric": [">=", 1.5]}]}},
                     "params": {"n": "n"}}, "event": {"n": 1.50}},
        {"filter": {"pattern": {"n": [{"numeric": [">", 2, "<", 1]}]}}, "event": {"n": 1}},
    ]) + "\n")
    dry = cli_stack.cli("test-match", str(lines))
    assert dry.returncode == 0, dry.stderr
    out = [json.loads(line) for line in dry.stdout.splitlines()]
    assert out[0] == {"matched": False, "params": None, "error": None}
    assert out[1] == {"matched": True, "params": {"n": 1.5}, "error": None}
    assert out[2]["matched"] is False and "n[0].numeric" in out[2]["error"]

    live = cli_stack.cli("test-match", "--live", '{"type": "cli", "n": 5}')
    assert live.returncode == 0, live.stderr
    assert json.loads(live.stdout) == {"fires": [{"id": "cli-a", "job": "count9", "params": {"n": 5}}], "error": None}
    nothing = cli_stack.cli("test-match", "--live", '{"type": "nope"}')
    assert json.loads(nothing.stdout)["fires"] == []
