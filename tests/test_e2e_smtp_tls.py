"""E-mail over STARTTLS and implicit TLS, with SMTP AUTH, to a real SMTP server (aiosmtpd) on
loopback whose certificate a test CA (trustme) issued: first one delivery at a time through
delivery/email.py, then through a worker configured by its settings alone."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from streams.delivery import email, secrets
from streams.model.handlers import parse_handler
from streams.settings import Settings
from tests.conftest import Stack, result, unique
from tests.test_delivery import dead_letter_headers

# aiosmtpd warns when AUTH does not require STARTTLS, which the implicit-TLS sink must say
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

USER, PASSWORD = "jobs", "pa55-smtp-not-a-real-one"


@dataclass
class Seen:
    rcpt: list[str]
    subject: str
    tls: bool  # the message came over an encrypted connection
    starttls: bool  # ... upgraded by STARTTLS
    user: str | None  # who authenticated


@dataclass
class TlsSink:
    """aiosmtpd on loopback with a certificate for 127.0.0.1, AUTH required."""

    ca: trustme.CA
    implicit: bool
    seen: list[Seen] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
        sink = self

        class Keep:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                from email import message_from_bytes, policy

                msg = message_from_bytes(envelope.content, policy=policy.default)
                sink.seen.append(Seen(envelope.rcpt_tos, str(msg["Subject"]),
                                      server.transport.get_extra_info("ssl_object") is not None,
                                      session.ssl is not None, session.auth_data if session.authenticated else None))
                return "250 OK"

        def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
            ok = isinstance(data, LoginPassword) and (data.login, data.password) == (USER.encode(), PASSWORD.encode())
            return AuthResult(success=ok, handled=False, auth_data=USER if ok else None)

        tls = {"ssl_context": server_ctx} if self.implicit else {"tls_context": server_ctx, "require_starttls": True}
        # aiosmtpd counts only STARTTLS as encryption for AUTH; over implicit TLS it is encrypted anyway
        self.controller = Controller(Keep(), hostname="127.0.0.1", port=self.port, authenticator=authenticate,
                                     auth_required=True, auth_require_tls=not self.implicit, **tls)
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="module")
def other_ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("other-ca") / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="module", params=["starttls", "tls"])
def sink(request: pytest.FixtureRequest, ca: trustme.CA) -> Iterator[TlsSink]:
    s = TlsSink(ca, implicit=request.param == "tls")
    yield s
    s.close()


HANDLER = parse_handler({"id": "mail-tls", "event": {"match": {"type": "x"}},
                         "email": {"to": "ada@example.org", "subject": "Run {{ n }}", "message": "body"}})


def deliver(sink: TlsSink, ca_file: Path | None, monkeypatch: pytest.MonkeyPatch,
            password: str = PASSWORD) -> email.Outcome:
    monkeypatch.setenv(secrets.env_name("smtp-pass"), password)
    settings = Settings(smtp_host="127.0.0.1", smtp_port=sink.port, smtp_starttls=not sink.implicit,
                        smtp_tls=sink.implicit, smtp_ca_file=ca_file, smtp_user=USER,
                        smtp_password_secret="smtp-pass", smtp_timeout_seconds=5)
    command = {"run_id": unique("run"), "event_json": json.dumps({"type": "x", "n": 7})}
    return asyncio.run(email.deliver(HANDLER, command, settings))


def test_mail_goes_over_tls_authenticated_when_the_ca_is_trusted(sink: TlsSink, ca_file: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    before = len(sink.seen)
    outcome = deliver(sink, ca_file, monkeypatch)
    assert outcome.delivered and outcome.status == 250, outcome
    [seen] = sink.seen[before:]
    assert seen == Seen(["ada@example.org"], "Run 7", tls=True, starttls=not sink.implicit, user=USER)


def test_an_untrusted_certificate_fails_the_delivery_clearly_and_is_retried(
        sink: TlsSink, other_ca_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = len(sink.seen)
    for ca_file in (other_ca_file, None):  # another CA; the system's CAs alone
        outcome = deliver(sink, ca_file, monkeypatch)
        assert not outcome.delivered and outcome.retry, outcome
        assert outcome.error is not None and "certificate is not trusted" in outcome.error, outcome.error
        assert "SIGNALBOX_SMTP_CA_FILE" in outcome.error
    assert len(sink.seen) == before


def test_a_wrong_password_is_permanent_and_not_shown(sink: TlsSink, ca_file: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    before = len(sink.seen)
    outcome = deliver(sink, ca_file, monkeypatch, password="wrong-password-xyz")
    assert not outcome.delivered and not outcome.retry and outcome.status == 535, outcome
    assert "wrong-password-xyz" not in (outcome.error or "")
    assert len(sink.seen) == before


def test_starttls_and_tls_together_are_refused_at_startup() -> None:
    with pytest.raises(ValueError, match="exclude each other"):
        Settings(smtp_starttls=True, smtp_tls=True)


# -- through a worker, configured by its environment --------------------------------------


@pytest.mark.broker
def test_a_worker_mails_over_starttls_with_auth_and_dead_letters_when_it_cannot_trust_the_server(
        stack: Stack, ca: trustme.CA, ca_file: Path, other_ca_file: Path) -> None:
    sink = TlsSink(ca, implicit=False)
    env = {"SIGNALBOX_SMTP_HOST": "127.0.0.1", "SIGNALBOX_SMTP_PORT": str(sink.port),
           "SIGNALBOX_SMTP_STARTTLS": "true", "SIGNALBOX_SMTP_USER": USER,
           "SIGNALBOX_SMTP_PASSWORD_SECRET": "smtp-pass", secrets.env_name("smtp-pass"): PASSWORD,
           "SIGNALBOX_SMTP_TIMEOUT_SECONDS": "5"}
    trusting = stack.start_worker(unique("tls-ok"), env={**env, "SIGNALBOX_SMTP_CA_FILE": str(ca_file)})
    results = stack.reader(stack.topics.run_results)
    try:
        trusting.wait_ready()
        kind = unique("tls")
        h = {"id": unique("mailtls"), "event": {"match": {"type": kind}},
             "email": {"to": "ada@example.org", "subject": "Task {{ n }} done", "message": "ok"}}
        stack.apply_handler(h)
        stack.send_event({"id": unique("e"), "type": kind, "n": 1})
        [done] = results.wait_for(lambda m: result(m)["handler_id"] == h["id"])
        assert result(done)["status"] == "succeeded", result(done)
        assert sink.seen == [Seen(["ada@example.org"], "Task 1 done", tls=True, starttls=True, user=USER)]
        trusting.stop()

        distrusting = stack.start_worker(unique("tls-bad"), env={**env, "SIGNALBOX_SMTP_CA_FILE": str(other_ca_file)})
        distrusting.wait_ready()
        kind = unique("tlsbad")
        bad = {"id": unique("mailtlsbad"), "event": {"match": {"type": kind}},
               "retry": {"attempts": 3, "backoff": {"initial_seconds": 0.2, "factor": 1}},
               "email": {"to": "ada@example.org", "subject": "never", "message": "m"}}
        stack.apply_handler(bad)
        stack.send_event({"id": unique("e"), "type": kind})
        tries = results.wait_for(lambda m: result(m)["handler_id"] == bad["id"], count=3)
        assert [result(m)["attempt"] for m in tries] == [1, 2, 3]
        assert all(result(m)["status"] == "failed" and "certificate is not trusted" in result(m)["error"]
                   for m in tries), [result(m)["error"] for m in tries]
        headers = dead_letter_headers(stack, bad["id"])
        assert headers["attempts"] == b"3" and b"certificate is not trusted" in headers["reason"]
        assert len(sink.seen) == 1, "nothing reached the server it could not trust"
        distrusting.stop()
        for w in (trusting, distrusting):
            assert PASSWORD not in w.log_text()
    finally:
        results.close()
        sink.close()
