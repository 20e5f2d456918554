"""Pure pieces of the spine: no broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from streams.contracts import avro, records
from streams.contracts.topics import Topics, TopicsError
from streams.matching.match import HandlerIndex, extract
from streams.model import jsonvalue
from streams.model.handler_files import load_handlers
from streams.model.handlers import InvalidHandler, json_schema, parse_handler
from streams.model.identity import event_identity, run_id
from streams.model.state_rules import StateDecision, StateLimits
from tests.conftest import ROOT, decode_avro

HANDLER = {"id": "h1", "job": "j", "event": {"match": {"a": 1}}, "params": {"x": "b.c", "y": ["d.e"]}}


def test_run_id_is_deterministic_and_depends_on_handler_and_event():
    assert run_id("h1", "id:e1") == run_id("h1", "id:e1")
    assert len({run_id("h1", "id:e1"), run_id("h2", "id:e1"), run_id("h1", "id:e2")}) == 3


def test_event_identity_prefers_id_field():
    assert event_identity({"id": "e1"}, "t", 0, 5) == "id:e1"
    assert event_identity({"id": 42}, "t", 0, 5) == "id:42"
    assert event_identity({"id": True}, "t", 1, 5) == "offset:t/1/5"
    assert event_identity({"x": 1}, "t", 2, 9) == "offset:t/2/9"


def test_load_object_rejects_non_objects_with_reason():
    assert jsonvalue.load_object(b'{"n": 1.50}') == {"n": Decimal("1.50")}
    for raw, reason in [(b"[]", "not an object"), (b"nope", "not JSON"), (b"\xff", "not UTF-8"),
                        (None, "null"), (b'{"n": NaN}', "not JSON")]:
        with pytest.raises(jsonvalue.NotAJsonObject, match=reason):
            jsonvalue.load_object(raw)


def test_dumps_keeps_exact_numbers():
    assert jsonvalue.dumps({"n": jsonvalue.loads("9007199254740993.000000001")}) == '{"n":9007199254740993.000000001}'


def test_parameters_extracted_by_path_missing_means_no_match():
    h = parse_handler(HANDLER)
    index = HandlerIndex()
    index.put(h)
    [m] = index.match({"a": 1, "b": {"c": [1, 2]}, "d.e": "dotted"})
    assert m.params == {"x": [1, 2], "y": "dotted"}
    assert index.match({"a": 1, "b": {"c": 1}}) == []  # y missing
    assert index.match({"a": 2, "b": {"c": 1}, "d.e": 1}) == []  # filter fails
    assert extract({"l": [{"k": "v"}]}, "l.0.k") == "v"
    index.put(parse_handler({**HANDLER, "enabled": False}))
    assert index.match({"a": 1, "b": {"c": 1}, "d.e": 1}) == []


def test_null_parameter_is_present_not_missing():
    index = HandlerIndex()
    index.put(parse_handler({"id": "n", "job": "j", "event": {"match": {}}, "params": {"p": "p"}}))
    assert index.match({"p": None})[0].params == {"p": None}


@pytest.mark.parametrize("raw, reason", [
    ({"id": "h", "job": "j"}, "exactly one trigger of event, cron, after is required; got none"),
    ({"id": "h", "job": "j", "event": {"match": {}}, "extra": 1}, "extra: Extra inputs are not permitted"),
    ({"id": "", "job": "j", "event": {"match": {}}}, "id: String should match pattern"),
    ({"id": "h", "job": "j", "event": {"match": {}}, "params": {"p": ""}}, "empty path"),
    ({"id": "h", "job": "j", "event": {"match": {}}, "timeout_seconds": 0}, "timeout_seconds"),
    ('{"id": ', "not JSON"),
    ("[1]", "must be a JSON object"),
])
def test_invalid_handlers_say_why(raw, reason):
    with pytest.raises(InvalidHandler, match=reason.replace("(", r"\(")):
        parse_handler(raw if isinstance(raw, str) else json.dumps(raw))


def test_record_key_must_equal_handler_id():
    with pytest.raises(InvalidHandler, match="differs from handler id"):
        parse_handler(json.dumps(HANDLER), key="other")


def test_published_json_schema_is_current():
    assert json.loads((ROOT / "schemas" / "handler.schema.json").read_text()) == json_schema()


def test_state_limits():
    limits = StateLimits()
    assert limits.decide(10_000) is StateDecision.STORE
    assert limits.decide(10_001) is StateDecision.STORE_WITH_WARNING
    assert limits.decide(50_000) is StateDecision.STORE_WITH_WARNING
    assert limits.decide(50_001) is StateDecision.REJECT_TOO_LARGE


def _result(status: str, state: str | None) -> dict:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    return {"run_id": "r", "job": "j", "handler_id": "h", "status": status, "final_state_json": state,
            "error": None, "started_at": t, "finished_at": t}


def test_settle_emits_feeder_shaped_status_event_and_applies_limits():
    s = records.settle(_result("succeeded", '{"a":1}'), StateLimits())
    assert s.state_to_store == '{"a":1}'
    [event] = s.events
    assert event["source"] == "internal" and event["new_status"] == "finished"
    assert event["id"] == "r:status:succeeded" and event["run_id"] == "r" and event["job"] == "j"
    big = records.settle(_result("succeeded", json.dumps({"p": "x" * 60_000})), StateLimits())
    assert big.state_to_store is None and big.events[1]["stored"] is False
    failed = records.settle(_result("failed", '{"a":1}'), StateLimits())
    assert failed.state_to_store is None and failed.events[0]["new_status"] == "failed"


def test_commands_round_trip_through_avro_and_plain_fastavro():
    cmd = {"run_id": "r", "job": "j", "handler_id": "h", "trigger_kind": "event", "trigger_ref": "id:e",
           "params_json": "{}", "event_json": "{}", "initial_state_json": None, "attempt": 1,
           "timeout_seconds": 5.0, "event_time": None, "created_at": 1_700_000_000_000}
    data = avro.commands().encode(cmd)
    assert data[:2] == b"\xc3\x01"
    decoded = decode_avro("job_command.avsc", data)  # fastavro + the .avsc file, no project code
    assert decoded["created_at"] == datetime.fromtimestamp(1_700_000_000, tz=UTC)
    assert {k: v for k, v in decoded.items() if k != "created_at"} == {
        k: v for k, v in cmd.items() if k != "created_at"}
    with pytest.raises(avro.AvroDecodeError, match="fingerprint"):
        avro.results().decode(data)


def test_topics_yaml_is_validated(tmp_path: Path):
    bad = tmp_path / "topics.yaml"
    bad.write_text((ROOT / "topics.yaml").read_text().replace("name: signalbox.run-results\n    partitions: 4",
                                                               "name: signalbox.run-results\n    partitions: 3"))
    with pytest.raises(TopicsError, match="equal partitions"):
        Topics.load(bad)
    assert Topics.load(ROOT / "topics.yaml", "p.").events == "p.signalbox.events"


def test_handler_files_yaml_folder_and_duplicates(tmp_path: Path):
    (tmp_path / "one.yaml").write_text("handlers:\n  - {id: a, job: j, event: {match: {n: 1.5}}}\n")
    (tmp_path / "two.json").write_text('[{"id": "a", "job": "k", "event": {"match": {}}}]')
    handlers, errors = load_handlers([tmp_path])
    assert [h.id for h in handlers] == ["a"]
    assert handlers[0].event.match == {"n": Decimal("1.5")}
    assert len(errors) == 1 and "also defined" in errors[0]


def test_docker_compose_commands_are_real_cli_commands():
    import yaml

    from streams.cli.main import build_parser

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    parser = build_parser()
    for service in ("topics", "worker", "runner"):
        args = parser.parse_args(compose["services"][service]["command"])
        assert callable(args.func)
    assert compose["services"]["worker"]["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092"


def test_settle_refuses_a_final_state_that_is_not_a_json_object():
    for bad in ("not json", "[1, 2]"):
        with pytest.raises(ValueError):
            records.settle(_result("succeeded", bad), StateLimits())


def test_runner_fails_a_malformed_command_instead_of_crashing():
    import asyncio

    from streams import jobs
    from streams.runner.service import execute

    jobs.job("unit-noop")(lambda run: None)
    command = {"run_id": "r", "job": "unit-noop", "handler_id": "h", "attempt": 1, "trigger_kind": "event",
               "params_json": "{broken", "initial_state_json": None, "event_json": None, "timeout_seconds": 5.0}
    result, run = asyncio.run(execute(command, "test"))
    assert result["status"] == "failed" and result["error"].startswith("malformed job command")
    assert run is None
