"""Routing keys, binding patterns, exchange configs and offset tokens (no broker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.gateway import exchanges, offsets
from streams.gateway.routing import KeyTemplate, PatternError, escape_word, literal_prefix, matches, validate_pattern

# (pattern, key, matches?) -- RabbitMQ's topic exchange semantics
WILDCARDS = [
    ("run.migrate-pid.#", "run.migrate-pid.r1.started", True),
    ("run.migrate-pid.#", "run.migrate-pid", True),  # '#' is zero or more words
    ("run.migrate-pid.#", "run.migrate-pidx.r1.started", False),
    ("run.*.*.succeeded", "run.j.r1.succeeded", True),
    ("run.*.*.succeeded", "run.j.r1.failed", False),
    ("run.*.succeeded", "run.j.r1.succeeded", False),  # '*' is exactly one word
    ("run.*", "run", False),
    ("run.*", "run.j", True),
    ("run.*", "run.j.k", False),
    ("#", "", True),
    ("#", "a.b.c", True),
    ("#.c", "c", True),
    ("#.c", "a.b.c", True),
    ("#.c", "a.b.c.d", False),
    ("a.#.c", "a.c", True),
    ("a.#.c", "a.x.y.c", True),
    ("a.#.c", "a.x.y.d", False),
    ("*.*.#", "a", False),
    ("*.#", "a", True),
    ("#.*", "a.b", True),
    ("#.#", "a", True),
    ("*", "", True),  # the empty key is one empty word
    ("*", "a.b", False),
    ("a.*.#.z", "a.b.z", True),
    ("a.*.#.z", "a.z", False),
    ("task.42.#", "task.42.step.1", True),
    ("task.42.#", "task.420.step", False),
    ("a*.b", "ax.b", False),  # '*' inside a word is a literal
    ("a*.b", "a*.b", True),
    ("a#", "a.b", False),
    ("a..b", "a..b", True),  # empty words are words
    ("a..b", "a.b", False),
]


@pytest.mark.parametrize(("pattern", "key", "expected"), WILDCARDS)
def test_wildcard_table(pattern: str, key: str, expected: bool) -> None:
    assert matches(pattern, key) is expected


def test_hostile_pattern_is_cheap() -> None:
    pattern = ".".join(["#"] * 60 + ["x"])
    key = ".".join(["y"] * 60)
    assert matches(pattern, key) is False
    assert matches(pattern, key + ".x") is True


def test_pattern_limits() -> None:
    with pytest.raises(PatternError):
        validate_pattern("")
    with pytest.raises(PatternError):
        validate_pattern("a" * 256)
    with pytest.raises(PatternError):
        validate_pattern(".".join(["a"] * 65))
    assert validate_pattern("run.*.#") == ["run", "*", "#"]


def test_escaping_rule() -> None:
    assert escape_word("webhook.hook1") == "webhook_hook1"
    assert escape_word(None) == ""
    assert escape_word({"a": 1}) == ""
    assert escape_word(3) == "3"
    template = KeyTemplate("run.{job}.{run_id}.{status}")
    assert template.render({"job": "webhook.hook1", "run_id": "r.1", "status": "started"}) == \
        "run.webhook_hook1.r_1.started"
    with pytest.raises(ValueError):
        KeyTemplate("run.{job!r}")
    with pytest.raises(ValueError):
        KeyTemplate("run.{0}")


def test_literal_prefix() -> None:
    assert literal_prefix("run.alpha.#", "run.alpha")
    assert literal_prefix("run.alpha", "run.alpha")
    assert not literal_prefix("run.*.#", "run.alpha")
    assert not literal_prefix("#", "run.alpha")
    assert not literal_prefix("run.alphabet.#", "run.alpha")
    assert not literal_prefix("run", "run.alpha")


def status(new_status: str, job: str = "j", run_id: str = "r1") -> dict[str, object]:
    return {"id": f"{run_id}:status:{new_status}", "source": "internal", "event_type": "JobRun Status Change",
            "new_status": new_status, "job": job, "run_id": run_id, "handler_id": "h"}


def test_default_exchanges() -> None:
    defaults = exchanges.load(None)
    runs, events = defaults["runs"], defaults["events"]
    assert runs.routing_key(status("finished", "webhook.hook1")) == "run.webhook_hook1.r1.succeeded"
    assert runs.routing_key(status("timed_out")) == "run.j.r1.timed_out"
    assert runs.selects(status("started")) and not events.selects(status("started"))
    plain = {"id": "e1", "source": "feeder", "event_type": "Patient Import"}
    assert events.selects(plain) and not runs.selects(plain)
    assert events.routing_key(plain) == "event.Patient Import.e1"
    assert not any(x.public for x in defaults.values())


def test_exchanges_file(tmp_path: Path) -> None:
    path = tmp_path / "exchanges.yaml"
    path.write_text("""
exchanges:
  open: {source: all, key: "any.{event_type}", access: {policy: public}}
  team: {source: runs, key: "run.{job}.{status}", access: {policy: claims, claim: org.team, prefix: "run.{value}"}}
  checked: {source: runs, key: "run.{job}", access: {policy: http, url: "http://127.0.0.1:1/check/{key}"}}
""")
    loaded = exchanges.load(path)
    assert loaded["open"].public
    team = loaded["team"].access
    assert isinstance(team, exchanges.ClaimsAccess)
    assert exchanges.claims_prefixes(team, ["a.b", "c", 7, None, True]) == ["run.a_b", "run.c", "run.7"]
    path.write_text("exchanges: {x: {source: runs, key: 'a', access: {policy: http, url: 'ftp://x/{key}'}}}")
    with pytest.raises(exchanges.ExchangesError):
        exchanges.load(path)
    path.write_text("exchanges: {x: {source: runs, key: 'a', access: {policy: claims, claim: t, prefix: 'run'}}}")
    with pytest.raises(exchanges.ExchangesError):
        exchanges.load(path)


def test_offset_tokens() -> None:
    token = offsets.encode([3, 0, 17, 5])
    assert offsets.decode(token) == [3, 0, 17, 5]
    assert offsets.parse_since(token).positions == [3, 0, 17, 5]
    assert offsets.parse_since(None).edge == "latest"
    assert offsets.parse_since("earliest").edge == "earliest"
    assert offsets.parse_since("1700000000000").timestamp_ms == 1_700_000_000_000
    assert offsets.parse_since("2023-11-14T22:13:20Z").timestamp_ms == 1_700_000_000_000
    for bad in ("2023-11-14T22:13:20", "nonsense!", offsets.encode([-1]), "W10", "x" * 5000):
        with pytest.raises(offsets.SinceError):
            offsets.parse_since(bad)
