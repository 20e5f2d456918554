"""The ``signalbox`` console script. Exit codes: 0 ok, 1 failure, 2 bad input or mismatch."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.cli.formatting import describe_trigger, format_command, format_result, ms_of
from streams.contracts import avro, listeners, problem_records, records
from streams.contracts import topics as topics_mod
from streams.kafka import client
from streams.kafka.connection import ConnectionConfigError, KafkaConnection, kafka_of
from streams.matching.handler_set import cycles_with
from streams.model import handlers, jsonvalue, provenance
from streams.model.handler_files import load_handlers
from streams.settings import Settings

EXIT_OK, EXIT_FAIL, EXIT_BAD_INPUT = 0, 1, 2


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.code = code


def settings_from(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "bootstrap_servers", None):
        overrides["bootstrap_servers"] = args.bootstrap_servers
    for name in ("topics_file", "topic_prefix", "app_id", "broker_kind", *CONNECTION_FLAGS):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


def connection(settings: Settings) -> KafkaConnection:
    """The settings' Kafka connection; contradictory settings are bad input (exit 2)."""
    try:
        return kafka_of(settings)
    except ConnectionConfigError as exc:
        raise CliError(f"kafka config: {exc}", EXIT_BAD_INPUT) from None


def connect(args: argparse.Namespace) -> Settings:
    """The settings of a command that talks to Kafka, once a bootstrap server answers."""
    return reachable(settings_from(args))


def reachable(settings: Settings) -> Settings:
    """The settings, once a bootstrap server answers; a TLS or authentication failure is
    one line and exit 1, as an unreachable broker."""
    try:
        client.check_broker(connection(settings))
    except client.BrokerUnreachable as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT if isinstance(exc, client.BadAddress) else EXIT_FAIL) from None
    return settings


def load_topics(settings: Settings) -> topics_mod.Topics:
    try:
        return topics_mod.Topics.load(settings.topics_file, settings.topic_prefix)
    except topics_mod.TopicsError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None


def admin(settings: Settings) -> AdminClient:
    return client.admin(kafka_of(settings))


# -- topics ---------------------------------------------------------------------------


def cmd_topics(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.action == "check":  # what we connect with, secrets masked, before we try
        print("connection:")
        for line in connection(settings).describe():
            print(f"  {line}")
    reachable(settings)
    topics = load_topics(settings)
    a = admin(settings)
    if args.action == "create":
        created = topics_mod.create(a, topics)
        for name in created:
            print(f"created {name}")
    problems = topics_mod.check(a, topics)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return EXIT_BAD_INPUT
    print(f"{len(topics.specs)} topics match {settings.topics_file}")
    return EXIT_OK


# -- handlers -------------------------------------------------------------------------


def current_handlers(settings: Settings, topics: topics_mod.Topics) -> dict[str, bytes]:
    latest = client.latest_by_key(client.read_to_end(kafka_of(settings), topics.handlers))
    return {k.decode(): v for k, v in latest.items() if v is not None}


def cmd_handlers(args: argparse.Namespace) -> int:
    settings = connect(args)
    topics = load_topics(settings)
    if args.action == "apply":
        found, errors = load_handlers([Path(p) for p in args.paths])
        errors += flow_cycles(settings, topics, found)
        for line in errors:
            print(f"invalid: {line}", file=sys.stderr)
        if errors and not args.skip_invalid:
            print("nothing applied (use --skip-invalid to apply the valid ones)", file=sys.stderr)
            return EXIT_BAD_INPUT
        client.produce_all(kafka_of(settings), [
            (topics.handlers, h.id.encode(), json.dumps(h.model_dump(mode="json", exclude_none=True)).encode())
            for h in found
        ])
        for h in found:
            print(f"applied {h.id} (job {h.job})")
        return EXIT_BAD_INPUT if errors else EXIT_OK
    current = current_handlers(settings, topics)
    if args.action == "list":
        for handler_id in sorted(current):
            value = current[handler_id]
            if args.json:
                print(value.decode())
                continue
            try:
                h = handlers.parse_handler(value, key=handler_id)
                print(f"{h.id}\tjob={h.job}\tenabled={str(h.enabled).lower()}\t{describe_trigger(h)}")
            except handlers.InvalidHandler as exc:
                print(f"{handler_id}\tINVALID: {exc}")
        return EXIT_OK
    if args.action == "arm":
        if args.id not in current:
            raise CliError(f"no handler {args.id!r} on {topics.handlers}", EXIT_BAD_INPUT)
        try:
            once = handlers.parse_handler(current[args.id], key=args.id).once
        except handlers.InvalidHandler as exc:
            raise CliError(f"handler {args.id!r} is invalid, nothing to arm: {exc}", EXIT_BAD_INPUT) from None
        if not once:
            raise CliError(f"handler {args.id!r} is not a once-handler (it fires on every match): "
                           "nothing to arm; add 'once: true' to make it a listener", EXIT_BAD_INPUT)
        # A once-handler is armed by every new version of it: publish the same value again.
        client.produce_all(kafka_of(settings), [(topics.handlers, args.id.encode(), current[args.id])])
        print(f"armed {args.id}")
        return EXIT_OK
    # delete
    if args.id not in current and not args.force:
        raise CliError(f"no handler {args.id!r} on {topics.handlers} (use --force to send the tombstone anyway)",
                       EXIT_BAD_INPUT)
    client.produce_all(kafka_of(settings), [(topics.handlers, args.id.encode(), None)])
    print(f"deleted {args.id}")
    return EXIT_OK


# -- listeners (Mistral's) ------------------------------------------------------------

def listener_handler(args: argparse.Namespace) -> handlers.Handler:
    """A webhook handler on the lifecycle events of the named jobs."""
    headers: dict[str, Any] = {}
    for item in args.header:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CliError(f"--header {item!r}: expected NAME=VALUE (or NAME=secret:SECRET_NAME)", EXIT_BAD_INPUT)
        headers[name] = {"secret": value[len("secret:"):]} if value.startswith("secret:") else value
    unknown = [w for w in listeners.split_words(args.on) if w.lower() not in listeners.LIFECYCLE]
    if unknown:
        raise CliError(f"--on: unknown event(s) {', '.join(unknown)}; known: {', '.join(listeners.LIFECYCLE)}",
                       EXIT_BAD_INPUT)
    try:
        return listeners.webhook_listener(listeners.split_words(args.job), listeners.split_words(args.on), args.url,
                                          args.method, headers, args.secret, args.id)
    except handlers.InvalidHandler as exc:
        raise CliError(f"invalid listener: {exc}", EXIT_BAD_INPUT) from None


def cmd_listeners(args: argparse.Namespace) -> int:
    settings = connect(args)
    topics = load_topics(settings)
    if args.action == "add":
        h = listener_handler(args)
        client.produce_all(kafka_of(settings), [
            (topics.handlers, h.id.encode(), json.dumps(h.model_dump(mode="json", exclude_none=True)).encode())])
        print(f"added listener {h.id}")
        return EXIT_OK
    current = current_handlers(settings, topics)
    webhooks: dict[str, handlers.Handler] = {}
    for handler_id, value in current.items():
        try:
            h = handlers.parse_handler(value, key=handler_id)
        except handlers.InvalidHandler:
            continue
        if h.webhook is not None:
            webhooks[handler_id] = h
    if args.action == "list":
        for handler_id in sorted(webhooks):
            h = webhooks[handler_id]
            assert h.webhook is not None
            if args.json:
                print(json.dumps(h.model_dump(mode="json", exclude_none=True)))
            else:
                print(f"{h.id}	{h.webhook.method} {h.webhook.url}	enabled={str(h.enabled).lower()}	"
                      f"{describe_trigger(h)}")
        return EXIT_OK
    if args.id not in webhooks:
        raise CliError(f"no listener {args.id!r} (a handler with a webhook target) on {topics.handlers}",
                       EXIT_BAD_INPUT)
    client.produce_all(kafka_of(settings), [(topics.handlers, args.id.encode(), None)])
    print(f"deleted listener {args.id}")
    return EXIT_OK


def flow_cycles(settings: Settings, topics: topics_mod.Topics, new: list[handlers.Handler]) -> list[str]:
    """Flow/catch cycles the new handlers would close with the current ones."""
    if not any(h.after is not None for h in new):
        return []
    return cycles_with(current_handlers(settings, topics), new)


# -- send -----------------------------------------------------------------------------


def _event_lines(args: argparse.Namespace) -> Iterable[tuple[str, str]]:
    if args.event is not None and args.event != "-":
        yield "argument", args.event
    if args.file:
        with open(args.file, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    yield f"{args.file}:{n}", line
    if args.event == "-":
        for n, line in enumerate(sys.stdin, 1):
            if line.strip():
                yield f"stdin:{n}", line


def cmd_send(args: argparse.Namespace) -> int:
    settings = settings_from(args)  # the input is checked before the broker
    topics = load_topics(settings)
    if args.event is None and not args.file:
        raise CliError("give an event as JSON, '-' for stdin, or --file FILE", EXIT_BAD_INPUT)
    out: list[tuple[str, bytes | None, bytes | None]] = []
    for where, text in _event_lines(args):
        try:
            jsonvalue.load_object(text.encode())
        except jsonvalue.NotAJsonObject as exc:
            raise CliError(f"{where}: {exc}; nothing sent", EXIT_BAD_INPUT) from None
        out.append((topics.events, args.key.encode() if args.key else None, text.strip().encode()))
    headers = [(provenance.CREATOR, args.creator.encode())] if args.creator else None
    client.produce_all(kafka_of(reachable(settings)), out, headers=headers)
    print(f"sent {len(out)} event(s) to {topics.events}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    settings = connect(args)
    topics = load_topics(settings)
    try:
        given = json.loads(args.params)
    except ValueError as exc:
        raise CliError(f"--params: {exc}", EXIT_BAD_INPUT) from None
    if not isinstance(given, dict):
        raise CliError("--params must be a JSON object", EXIT_BAD_INPUT)
    current = current_handlers(settings, topics)
    if args.handler_id not in current:
        raise CliError(f"no handler {args.handler_id!r} on {topics.handlers}", EXIT_BAD_INPUT)
    try:
        handler = handlers.parse_handler(current[args.handler_id], key=args.handler_id)
    except handlers.InvalidHandler as exc:
        raise CliError(f"handler {args.handler_id!r} is invalid: {exc}", EXIT_BAD_INPUT) from None
    params, missing = handlers.run_params(handler, given)
    if missing and not args.allow_missing:
        example = json.dumps({name: "..." for name in missing})
        raise CliError(f"handler {args.handler_id!r} declares params with no value: {', '.join(missing)} "
                       f"(give them with --params '{example}', or --allow-missing to run without)", EXIT_BAD_INPUT)
    request_id = f"run-{uuid.uuid4()}"
    event = records.run_request(args.handler_id, params, request_id)
    client.produce_all(kafka_of(settings), [(topics.events, None, json.dumps(event).encode())])
    print(f"requested a run of {args.handler_id} (request {request_id})")
    return EXIT_OK


# -- tail / state ---------------------------------------------------------------------


def cmd_tail(args: argparse.Namespace) -> int:
    settings = connect(args)
    topics = load_topics(settings)
    return tail(settings, topics, args.commands, args.from_beginning, args.count, args.timeout, args.json,
                verbose=args.verbose)


def _say_start(assignment: list[TopicPartition]) -> None:
    where = ", ".join(f"{tp.topic}[{tp.partition}]@{'beginning' if tp.offset == OFFSET_BEGINNING else tp.offset}"
                      for tp in assignment)
    print(f"signalbox tail: following {where}", file=sys.stderr, flush=True)


RESULT_HOLD_SECONDS = 1.0


class _TailPrinter:
    """Prints tail's records, each human line stamped with its record's time. With commands,
    a result waits (at most RESULT_HOLD_SECONDS) for its command: they are on different
    topics and partitions, and a consumer may fetch the result first."""

    def __init__(self, as_json: bool, hold: bool) -> None:
        self.as_json, self.hold = as_json, hold
        self.results = 0
        self.pending: dict[tuple[str, int], tuple[float, str]] = {}  # (run, attempt) -> (until, line)
        self.commanded: OrderedDict[tuple[str, int], None] = OrderedDict()  # the latest 10,000

    def line(self, kind: str, record: dict[str, Any], timestamp_ms: int) -> str:
        if self.as_json:
            return json.dumps({"kind": kind, **record}, default=ms_of)
        text = format_result(record) if kind == "result" else format_command(record)
        return f"{datetime.fromtimestamp(timestamp_ms / 1000):%H:%M:%S} {text}"

    def add(self, kind: str, record: dict[str, Any], timestamp_ms: int) -> None:
        key = (record["run_id"], record["attempt"])
        line = self.line(kind, record, timestamp_ms)
        if kind == "command":
            print(line, flush=True)
            self.commanded[key] = None
            while len(self.commanded) > 10_000:
                self.commanded.popitem(last=False)
            if key in self.pending:
                self._print_result(self.pending.pop(key)[1])
        elif self.hold and key not in self.commanded:
            self.pending[key] = (time.monotonic() + RESULT_HOLD_SECONDS, line)
        else:
            self._print_result(line)

    def release(self, everything: bool = False) -> None:
        """Print the held results whose wait is over (all of them with ``everything``)."""
        now = time.monotonic()
        for key, (until, line) in list(self.pending.items()):
            if everything or until <= now:
                del self.pending[key]
                self._print_result(line)

    def _print_result(self, line: str) -> None:
        print(line, flush=True)
        self.results += 1


def tail(settings: Settings, topics: topics_mod.Topics, commands: bool, from_beginning: bool,
         count: int | None, timeout: float | None, as_json: bool = False, verbose: bool = False) -> int:
    watched = [topics.run_results] + ([topics.job_commands] if commands else [])
    printer = _TailPrinter(as_json, hold=commands)
    deadline = time.monotonic() + timeout if timeout else None
    # The embedded broker's ListOffsets answer misses the end of a multi-record batch.
    stream = client.follow(kafka_of(settings), watched, from_beginning, fetched_end=settings.embedded,
                           on_assigned=_say_start if verbose else None)
    try:
        for msg in stream:
            if deadline is not None and time.monotonic() > deadline:
                printer.release(everything=True)
                return EXIT_OK if count is None or printer.results >= count else EXIT_FAIL
            if msg is not None:
                is_result = msg.topic() == topics.run_results
                record = (avro.results() if is_result else avro.commands()).decode(msg.value())
                printer.add("result" if is_result else "command", record, msg.timestamp()[1])
            printer.release()
            if count is not None and printer.results >= count:
                return EXIT_OK
    finally:
        stream.close()
    return EXIT_OK


def changelog_topic(settings: Settings, table: str) -> str:
    return f"{settings.app_id}-{table}-changelog"


def read_table(settings: Settings, table: str) -> dict[bytes, bytes | None]:
    """A Faust table as its changelog says: the latest value per key (no worker needed)."""
    topic = changelog_topic(settings, table)
    return client.latest_by_key(read_topic(settings, topic))


def cmd_state(args: argparse.Namespace) -> int:
    latest = read_table(connect(args), "job-state")
    value = latest.get(json.dumps(args.job).encode())  # Faust writes JSON keys
    if value is None:
        raise CliError(f"no stored state for job {args.job!r}")
    print(json.dumps(json.loads(value), indent=2))
    return EXIT_OK


def job_rows(latest: dict[bytes, bytes | None], only: list[str]) -> list[dict[str, Any]]:
    """One row per job from the latest ``m:<job>`` entries of the job-runs changelog."""
    rows = []
    for raw_key, raw_value in latest.items():
        key = json.loads(raw_key)
        if raw_value is None or not key.startswith("m:") or (only and key[2:] not in only):
            continue
        meta = json.loads(raw_value)
        running = [{"run_id": run_id, "attempt": slot["attempt"], "retry_pending": "retry_key" in slot}
                   for run_id, slot in meta["running"].items()]
        rows.append({"job": key[2:], "running": running, "waiting": meta["tail"] - meta["head"]})
    return sorted(rows, key=lambda r: r["job"])


def cmd_jobs(args: argparse.Namespace) -> int:
    rows = job_rows(read_table(connect(args), "job-runs"), args.job)
    if args.job and not rows:
        raise CliError(f"no runs recorded for {', '.join(args.job)}")
    for row in rows:
        if args.json:
            print(json.dumps(row))
            continue
        running = ", ".join(f"{r['run_id']} (attempt {r['attempt']}{', retry pending' if r['retry_pending'] else ''})"
                            for r in row["running"]) or "-"
        print(f"{row['job']}: waiting {row['waiting']}; running {running}")
    return EXIT_OK


def read_topic(settings: Settings, topic: str) -> list[Message]:
    try:
        return client.read_to_end(kafka_of(settings), topic)
    except KafkaException as exc:
        raise CliError(f"cannot read {topic}: {exc}") from None


def cmd_dead_letters(args: argparse.Namespace) -> int:
    settings = connect(args)
    topic = load_topics(settings).dead_letter
    shown = problem_records.latest_first(read_topic(settings, topic))[:args.limit or None]
    for msg in shown:
        letter = problem_records.DeadLetter.of(msg, values=args.values)
        print(letter.model_dump_json(exclude_none=not args.values) if args.json else letter.line())
    return EXIT_OK


def cmd_rejections(args: argparse.Namespace) -> int:
    settings = connect(args)
    topic = load_topics(settings).handler_rejections
    seen: set[tuple[str | None, int | None]] = set()
    rejections = []
    for msg in problem_records.latest_first(read_topic(settings, topic)):
        rejection = problem_records.Rejection.of(msg, values=args.values)
        if (rejection.handler_id, rejection.offset) not in seen:  # every worker writes the same one
            seen.add((rejection.handler_id, rejection.offset))
            rejections.append(rejection)
    for rejection in rejections[:args.limit or None]:
        print(rejection.model_dump_json(exclude_none=not args.values) if args.json else rejection.line())
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(handlers.json_schema(), indent=2))
    return EXIT_OK


# -- worker / dev ---------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    from streams.cli.worker import run_worker

    settings = connect(args)
    if args.datadir:
        settings.datadir = Path(args.datadir)
    if args.web_port:
        settings.web_port = args.web_port
    if args.metrics_port:
        settings.metrics_port = args.metrics_port
    if settings.metrics_port and settings.web_port and settings.metrics_port != settings.web_port:
        raise CliError(f"--metrics-port {settings.metrics_port} and --web-port {settings.web_port}: the worker has "
                       "one web server (its /metrics is there); give one port")
    return run_worker(settings, load_topics(settings), args.jobs, runner=not args.no_runner, loglevel=args.loglevel)


def cmd_runner(args: argparse.Namespace) -> int:
    from streams.cli.worker import run_runner

    settings = connect(args)
    if args.metrics_port:
        settings.metrics_port = args.metrics_port
    return run_runner(settings, load_topics(settings), args.jobs, loglevel=args.loglevel)


def cmd_native(args: argparse.Namespace) -> int:
    from streams import native

    if args.action == "build":
        native.build()  # never fails: the matcher then runs as plain Python
    else:
        mode, why = native.status()
        print(f"matcher: {mode} ({why})")
    return EXIT_OK


def cmd_dev(args: argparse.Namespace) -> int:
    from streams.cli.dev import run_dev
    from streams.kafka.broker import BrokerError

    try:
        return run_dev(events=args.events)
    except BrokerError as exc:
        raise CliError(f"dev: {exc}") from None


def _gateway_settings(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from streams.gateway.config import GatewaySettings

    overrides = {k: v for k, v in (("host", getattr(args, "host", None)), ("port", getattr(args, "port", None)),
                                   ("auth", "none" if getattr(args, "no_auth", False) else None)) if v is not None}
    try:
        return GatewaySettings(**overrides)
    except ValidationError as exc:
        raise CliError(f"gateway settings: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}",
                       EXIT_BAD_INPUT) from None


def cmd_gateway(args: argparse.Namespace) -> int:
    from streams.cli.gateway import serve

    settings = connect(args)
    return serve(settings, _gateway_settings(args))


def cmd_token(args: argparse.Namespace) -> int:
    from streams.cli.gateway import token

    extra = {"email": args.email} if args.email else {}
    try:
        print(token(_gateway_settings(args), args.sub, listeners.split_words(args.scope), args.ttl, extra))
    except ValueError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    return EXIT_OK


def cmd_test_match(args: argparse.Namespace) -> int:
    from streams.matching import dry_run

    if args.live is None:
        if args.file is None:
            raise CliError("give FILE (JSON lines, '-' for stdin), or --live EVENT", EXIT_BAD_INPUT)
        return dry_run.main([args.file], strict=args.strict)
    settings = connect(args)
    topics = load_topics(settings)
    live = []
    for handler_id, value in sorted(current_handlers(settings, topics).items()):
        try:
            live.append(handlers.parse_handler(value, key=handler_id))
        except handlers.InvalidHandler as exc:
            print(f"skipping invalid handler {handler_id}: {exc}", file=sys.stderr)
    texts = sys.stdin if args.live == "-" else [args.live]
    headers = {k: v for k, v in ((provenance.CREATOR, args.creator), (provenance.EMITTED_BY_JOB, args.emitted_by)) if v}
    erred = 0
    for text in texts:
        if not text.strip():
            continue
        try:
            event = jsonvalue.load_object(text.encode())
        except jsonvalue.NotAJsonObject as exc:
            erred += 1
            print(jsonvalue.dumps({"fires": [], "error": str(exc)}))
            continue
        fires = [f for f in dry_run.firing_handlers(live, event)
                 if provenance.constraints_hold(next(h for h in live if h.id == f["id"]).event, headers)]
        print(jsonvalue.dumps({"fires": fires, "error": None}), flush=True)
    if args.strict and erred:
        raise CliError(f"test-match: {erred} event(s) reported an error", EXIT_BAD_INPUT)
    return EXIT_OK


# -- parser ---------------------------------------------------------------------------


# The connection's flags (Settings fields); no secret has one: passwords and key passwords
# come from the environment (KAFKA_SASL_PASSWORD, KAFKA_SSL_KEY_PASSWORD) or a file.
CONNECTION_FLAGS = ("kafka_config", "security_protocol", "sasl_mechanism", "sasl_username", "ssl_ca_location",
                    "ssl_certificate_location", "ssl_key_location")


def add_kafka_options(target: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    target.add_argument("--bootstrap-servers", help="Kafka bootstrap servers (env KAFKA_BOOTSTRAP_SERVERS)")
    target.add_argument("--kafka-config", type=Path, metavar="FILE",
                        help="a client.properties file: security.protocol, sasl.*, ssl.*, ... (env KAFKA_CONFIG_FILE)")
    target.add_argument("--security-protocol", choices=["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"],
                        type=str.upper, help="security.protocol (env KAFKA_SECURITY_PROTOCOL)")
    target.add_argument("--sasl-mechanism", choices=["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"],
                        type=str.upper, help="sasl.mechanism (env KAFKA_SASL_MECHANISM)")
    target.add_argument("--sasl-username", help="sasl.username (env KAFKA_SASL_USERNAME); the password only from "
                        "env KAFKA_SASL_PASSWORD, KAFKA_SASL_PASSWORD_FILE or --kafka-config")
    target.add_argument("--ssl-ca-location", metavar="PEM",
                        help="CA certificate(s) to trust (env KAFKA_SSL_CA_LOCATION)")
    target.add_argument("--ssl-certificate-location", metavar="PEM",
                        help="client certificate, for mutual TLS (env KAFKA_SSL_CERTIFICATE_LOCATION)")
    target.add_argument("--ssl-key-location", metavar="PEM", help="the client certificate's key "
                        "(env KAFKA_SSL_KEY_LOCATION; its password from env KAFKA_SSL_KEY_PASSWORD)")
    target.add_argument("--topics-file", type=Path, help="topics.yaml to use (env SIGNALBOX_TOPICS_FILE)")
    target.add_argument("--topic-prefix", help="prefix for every topic name (env SIGNALBOX_TOPIC_PREFIX)")
    target.add_argument("--app-id", help="Faust app id / consumer group (env SIGNALBOX_APP_ID)")
    target.add_argument("--broker-kind", choices=["kafka", "tansu"],
                        help="'tansu' enables the embedded broker's workarounds (env SIGNALBOX_BROKER_KIND)")
    target.add_argument("-v", "--verbose", action="store_true", help="show librdkafka's own log lines")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    add_kafka_options(common)
    # For ACTION subcommands: no defaults, so options given before the action
    # (`signalbox topics --bootstrap-servers X check`) are not reset by the action's parser.
    common_action = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    add_kafka_options(common_action)

    parser = argparse.ArgumentParser(prog="signalbox", description="Event-triggered jobs on Kafka.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("dev", help="embedded broker + worker + examples, results in the terminal")
    p.add_argument("--events", type=int, default=0, help="also send N extra generated events")
    p.set_defaults(func=cmd_dev)

    p = sub.add_parser("gateway", parents=[common], help="serve the HTTP gateway (REST, ingest, WebSocket)",
                       description="Serves the HTTP gateway (docs/api.md). Settings: SIGNALBOX_GATEWAY_* "
                       "environment variables; the JWT key from SIGNALBOX_GATEWAY_JWT_SECRET, "
                       "SIGNALBOX_GATEWAY_JWT_PUBLIC_KEY_FILE or SIGNALBOX_GATEWAY_JWKS_FILE.")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; env SIGNALBOX_GATEWAY_HOST)")
    p.add_argument("--port", type=int, help="port (default 8080; env SIGNALBOX_GATEWAY_PORT)")
    p.add_argument("--no-auth", action="store_true",
                   help="no authentication at all: every caller may do everything (local development only)")
    p.set_defaults(func=cmd_gateway)

    p = sub.add_parser("token", help="mint a gateway token (HS256, SIGNALBOX_GATEWAY_JWT_SECRET) for development",
                       description="Prints a JWT signed with SIGNALBOX_GATEWAY_JWT_SECRET, for trying the gateway "
                       "out; production tokens come from your identity provider.")
    p.add_argument("--sub", required=True, help="the caller (the creator of the events it sends)")
    p.add_argument("--scope", action="append", default=[],
                   help="scopes, repeated or comma-separated: events:write, handlers:read, handlers:write, "
                   "runs:read, subscribe")
    p.add_argument("--email", help="an email claim (notifications go there)")
    p.add_argument("--ttl", type=int, default=3600, help="seconds until it expires (default 3600)")
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("topics", parents=[common], help="create or check the topics of topics.yaml")
    ts = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = ts.add_parser("create", parents=[common_action],
                      help="create the missing topics of topics.yaml, then check them all",
                      description="Creates the topics of topics.yaml the broker lacks, then compares every one "
                      "with topics.yaml (exit 2 on a difference).")
    a.set_defaults(func=cmd_topics)
    a = ts.add_parser("check", parents=[common_action], help="compare the broker's topics with topics.yaml",
                      description="Compares the broker's topics with topics.yaml: one line per differing field "
                      "on stderr and exit 2, else exit 0. Creates nothing.")
    a.set_defaults(func=cmd_topics)

    p = sub.add_parser("handlers", parents=[common], help="apply, list or delete handlers")
    hs = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = hs.add_parser("apply", parents=[common_action], help="apply handlers from YAML/JSON files or folders")
    a.add_argument("paths", nargs="+")
    a.add_argument("--skip-invalid", action="store_true", help="apply the valid ones even if some are invalid")
    a.set_defaults(func=cmd_handlers)
    a = hs.add_parser("list", parents=[common_action], help="list the current handlers")
    a.add_argument("--json", action="store_true", help="one JSON handler per line")
    a.set_defaults(func=cmd_handlers)
    a = hs.add_parser("arm", parents=[common_action], help="re-arm a once-handler (publishes it again)")
    a.add_argument("id")
    a.set_defaults(func=cmd_handlers)
    a = hs.add_parser("delete", parents=[common_action], help="delete a handler (tombstone)")
    a.add_argument("id")
    a.add_argument("--force", action="store_true", help="send the tombstone even if the id is unknown")
    a.set_defaults(func=cmd_handlers)

    p = sub.add_parser("listeners", parents=[common], help="webhooks on jobs' lifecycle events (Mistral's)")
    ls = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = ls.add_parser("add", parents=[common_action], help="add a webhook on the lifecycle events of jobs",
                      description="Publishes a webhook handler on the status events of the jobs: "
                      "started (launched), succeeded, failed, timed-out, retrying.")
    a.add_argument("--job", action="append", required=True, help="job name(s), comma-separated or repeated")
    a.add_argument("--on", action="append", required=True, help="events, e.g. succeeded,failed")
    a.add_argument("--url", required=True, help="http(s) URL of the receiver")
    a.add_argument("--method", default="POST", choices=["POST", "PUT", "PATCH", "post", "put", "patch"])
    a.add_argument("--header", action="append", default=[], metavar="NAME=VALUE",
                   help="a header sent as given; NAME=secret:SECRET_NAME takes the named secret's value")
    a.add_argument("--secret", help="name of the signing secret (whsec_...), resolved by the workers")
    a.add_argument("--id", help="the listener's handler id (default: from the jobs and the URL)")
    a.set_defaults(func=cmd_listeners)
    a = ls.add_parser("list", parents=[common_action], help="list the webhook handlers")
    a.add_argument("--json", action="store_true", help="one JSON handler per line")
    a.set_defaults(func=cmd_listeners)
    a = ls.add_parser("delete", parents=[common_action], help="delete a webhook handler (tombstone)")
    a.add_argument("id")
    a.set_defaults(func=cmd_listeners)

    p = sub.add_parser("send", parents=[common], help="send events (JSON objects)")
    p.add_argument("event", nargs="?", help="an event as JSON, or '-' to read JSON lines from stdin")
    p.add_argument("--file", help="a file of JSON lines")
    p.add_argument("--key", help="record key for every event")
    p.add_argument("--creator", help="set the 'creator' header (trusted ingest; see the README)")
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("run", parents=[common], help="start a handler's job now (OpenFn's run button)")
    p.add_argument("handler_id")
    p.add_argument("--params", default="{}", help="the run's parameters, a JSON object (over the handler's "
                   "constant cron.params); every param the handler declares needs a value")
    p.add_argument("--allow-missing", action="store_true", help="run even if declared params have no value")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("worker", parents=[common], help="run a worker (match, schedule, settle, runner)")
    p.add_argument("--jobs", action="append", default=[], metavar="MODULE|FILE",
                   help="import MODULE (current directory first, then the path) or a .py FILE for its @job functions")
    p.add_argument("--datadir", help="RocksDB directory of this worker (env SIGNALBOX_DATADIR)")
    p.add_argument("--web-port", type=int, help="serve Faust's web views on 127.0.0.1:PORT")
    p.add_argument("--metrics-port", type=int,
                   help="serve /metrics (Prometheus) on SIGNALBOX_WEB_HOST:PORT, 127.0.0.1 by default "
                        "(env SIGNALBOX_METRICS_PORT; the same server as --web-port)")
    p.add_argument("--no-runner", action="store_true",
                   help="do not run jobs here (`signalbox runner` processes or external executors do)")
    p.add_argument("--loglevel", default="info")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("runner", parents=[common], help="run jobs only: the built-in runner as a process of its own "
                       "(next to workers started with --no-runner)")
    p.add_argument("--jobs", action="append", default=[], metavar="MODULE|FILE",
                   help="import MODULE (current directory first, then the path) or a .py FILE for its @job functions")
    p.add_argument("--metrics-port", type=int,
                   help="serve /metrics (Prometheus) on SIGNALBOX_WEB_HOST:PORT, 127.0.0.1 by default "
                        "(env SIGNALBOX_METRICS_PORT)")
    p.add_argument("--loglevel", default="info")
    p.set_defaults(func=cmd_runner)

    p = sub.add_parser("native", help="the matcher compiled with mypyc: build it, or say which form runs",
                       description="`make install` compiles the matcher's modules with mypyc into the virtual "
                       "environment, keyed by a hash of their sources; a worker uses that build only while the "
                       "sources are unchanged, else plain Python (SIGNALBOX_NATIVE=0 turns it off).")
    p.add_argument("action", choices=["build", "status"])
    p.set_defaults(func=cmd_native)

    p = sub.add_parser("tail", parents=[common], help="print run results as they arrive")
    p.add_argument("--commands", action="store_true", help="print job commands too")
    p.add_argument("--from-beginning", action="store_true")
    p.add_argument("--count", type=int, help="exit after this many results")
    p.add_argument("--timeout", type=float, help="exit after this many seconds")
    p.add_argument("--json", action="store_true", help="one JSON record per line")
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("state", parents=[common], help="print a job's stored state")
    p.add_argument("job")
    p.set_defaults(func=cmd_state)

    p = sub.add_parser("jobs", parents=[common], help="each job's runs in flight and triggers waiting",
                       description="Reads the job-runs changelog (no worker needed): per job, the runs in "
                       "flight (with attempt, and whether a retry is pending) and how many triggers wait.")
    p.add_argument("job", nargs="*", help="only these jobs")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_jobs)

    for name, func, what in (("dead-letters", cmd_dead_letters, "the dead-letter topic: records no worker could "
                              "process, with the reason and where they came from"),
                             ("rejections", cmd_rejections, "the handler-rejections topic: handler versions no "
                              "worker applied, with the reason")):
        p = sub.add_parser(name, parents=[common], help=f"latest records of {what.split(':')[0]}",
                           description=f"Reads {what}; latest first. Values are not shown unless --values, and "
                           "then only JSON values, with every field named like a secret (password, token, "
                           "api_key, auth, ...) redacted.")
        p.add_argument("--limit", type=int, default=20, help="show at most N records (0: all; default 20)")
        p.add_argument("--json", action="store_true", help="one JSON object per line")
        p.add_argument("--values", action="store_true", help="also show the record's value (JSON only, redacted)")
        p.set_defaults(func=func)

    p = sub.add_parser("test-match", help="dry-run filters (no broker), or ask the live handlers",
                       description="test-match FILE: each line {\"handler\"|\"filter\": ..., \"event\": ...} gives "
                       "one line {\"matched\", \"params\", \"error\"}; no broker needed. "
                       "test-match --live EVENT: which handlers on the handlers topic would fire for EVENT. "
                       "Exit 0 even when lines report errors, unless --strict.")
    p.add_argument("file", nargs="?", help="JSON lines; '-' reads stdin")
    p.add_argument("--strict", action="store_true", help="exit 2 when any line reports an error")
    p.add_argument("--live", metavar="EVENT", help="an event (JSON), or '-' for JSON lines on stdin")
    live = p.add_argument_group("with --live only (FILE mode uses no broker and ignores these)")
    live.add_argument("--creator", help="the event's creator header")
    live.add_argument("--emitted-by", help="the job that emitted the event")
    add_kafka_options(live)
    p.set_defaults(func=cmd_test_match)

    p = sub.add_parser("schema", help="print the handler JSON Schema")
    p.set_defaults(func=cmd_schema)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    client.set_verbose(getattr(args, "verbose", False))
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"signalbox: {exc}", file=sys.stderr)
        return exc.code
    except ConnectionConfigError as exc:
        print(f"signalbox: kafka config: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (KafkaException, TimeoutError) as exc:
        print(f"signalbox: kafka: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
