"""The Kafka connection settings (streams/kafka/connection.py), without a broker.

SASL is exercised here only: the embedded broker (tansu) has no SASL, so no test
authenticates against a broker. What is checked: each mechanism becomes the right
settings for librdkafka (CLI) and for aiokafka (runner, handler feed, Faust), the
sources combine in the documented order, and no secret is ever printed.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
import types
from pathlib import Path

import faust
import pytest
import trustme
from confluent_kafka import KafkaError
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from streams.kafka import client
from streams.kafka.connection import (
    MASK,
    TOKEN_PROVIDER,
    ConnectionConfigError,
    FunctionTokenProvider,
    KafkaConnection,
    OidcTokenProvider,
    connection_env_names,
    kafka_of,
    load_properties,
)
from streams.settings import Settings
from tests.conftest import ROOT

PASSWORD = "pw-7f3a9c-never-shown"
SECRET = "client-secret-51e0-never-shown"


@pytest.fixture
def ca_pem(tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(autouse=True)
def no_connection_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [*connection_env_names(), "KAFKA_BOOTSTRAP_SERVERS"]:
        monkeypatch.delenv(name, raising=False)


def fake_token() -> tuple[str, float]:
    return "token-abc", 4_102_444_800.0


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_password_mechanisms_over_tls_for_both_libraries(mechanism: str, ca_pem: str):
    conn = KafkaConnection("b1:9096,b2:9096", {"security.protocol": "sasl_ssl", "sasl.mechanism": mechanism,
                                               "sasl.username": "alice", "sasl.password": PASSWORD,
                                               "ssl.ca.location": ca_pem})
    assert conn.librdkafka_config() == {
        "bootstrap.servers": "b1:9096,b2:9096", "security.protocol": "SASL_SSL", "sasl.mechanism": mechanism,
        "sasl.username": "alice", "sasl.password": PASSWORD, "ssl.ca.location": ca_pem}
    aio = conn.aiokafka_kwargs()
    context = aio.pop("ssl_context")
    assert aio == {"bootstrap_servers": ["b1:9096", "b2:9096"], "security_protocol": "SASL_SSL",
                   "sasl_mechanism": mechanism, "sasl_plain_username": "alice", "sasl_plain_password": PASSWORD}
    assert isinstance(context, ssl.SSLContext) and context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED and context.get_ca_certs()  # the CA file, loaded
    credentials = conn.faust_credentials()
    assert isinstance(credentials, faust.SASLCredentials)
    faust_auth = dict(credentials_to_aiokafka_auth(credentials))
    assert isinstance(faust_auth.pop("ssl_context"), ssl.SSLContext)
    assert faust_auth == {"security_protocol": "SASL_SSL", "sasl_mechanism": mechanism,
                          "sasl_plain_username": "alice", "sasl_plain_password": PASSWORD}
    assert conn.faust_broker("kafka") == "kafka://b1:9096;b2:9096"


def test_sasl_plaintext_has_no_tls_context():
    conn = KafkaConnection("b:9092", {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256",
                                      "sasl.username": "u", "sasl.password": PASSWORD})
    assert "ssl_context" not in conn.aiokafka_auth()
    assert credentials_to_aiokafka_auth(conn.faust_credentials())["security_protocol"] == "SASL_PLAINTEXT"
    assert conn.librdkafka_config()["security.protocol"] == "SASL_PLAINTEXT"


def test_sasl_mechanism_defaults_to_plain_as_kafka_does():
    conn = KafkaConnection("b:9092", {"security.protocol": "SASL_SSL", "sasl.username": "u", "sasl.password": "p"})
    assert conn.librdkafka_config()["sasl.mechanism"] == "PLAIN" and conn.aiokafka_auth()["sasl_mechanism"] == "PLAIN"


def test_oauthbearer_oidc_for_both_libraries():
    props = {"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER", "sasl.oauthbearer.method": "oidc",
             "sasl.oauthbearer.client.id": "app", "sasl.oauthbearer.client.secret": SECRET,
             "sasl.oauthbearer.token.endpoint.url": "https://idp.example/token", "sasl.oauthbearer.scope": "kafka"}
    conn = KafkaConnection("b:9093", props)
    assert conn.librdkafka_config() == {"bootstrap.servers": "b:9093", **props}  # librdkafka fetches the tokens
    aio = conn.aiokafka_auth()
    assert aio["sasl_mechanism"] == "OAUTHBEARER" and aio["security_protocol"] == "SASL_SSL"
    provider = aio["sasl_oauth_token_provider"]
    assert isinstance(provider, OidcTokenProvider)
    assert (provider.endpoint, provider.client_id, provider.scope) == ("https://idp.example/token", "app", "kafka")
    assert SECRET not in repr(provider)
    credentials = conn.faust_credentials()
    assert isinstance(credentials, faust.OAuthCredentials)
    assert credentials_to_aiokafka_auth(credentials)["security_protocol"] == "SASL_SSL"


def test_oauthbearer_token_function_for_both_libraries():
    """MSK IAM's way: a function makes the tokens (streams.kafka.msk_iam:token)."""
    conn = KafkaConnection("b:9098", {"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER",
                                      TOKEN_PROVIDER: "tests.test_connection:fake_token"})
    config = conn.librdkafka_config()
    assert TOKEN_PROVIDER not in config  # ours, not librdkafka's
    assert config["oauth_cb"]("") == ("token-abc", 4_102_444_800.0)
    provider = conn.aiokafka_auth()["sasl_oauth_token_provider"]
    assert isinstance(provider, FunctionTokenProvider)
    assert asyncio.run(provider.token()) == "token-abc"
    assert isinstance(conn.faust_credentials(), faust.OAuthCredentials)


def test_msk_iam_token(monkeypatch: pytest.MonkeyPatch):
    from streams.kafka import msk_iam

    signer = types.ModuleType("aws_msk_iam_sasl_signer")
    calls = []

    class MSKAuthTokenProvider:
        @staticmethod
        def generate_auth_token(region: str) -> tuple[str, int]:
            calls.append(region)
            return "signed", 1_700_000_900_000

    signer.MSKAuthTokenProvider = MSKAuthTokenProvider  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "aws_msk_iam_sasl_signer", signer)
    monkeypatch.setenv("AWS_REGION", "eu-central-2")
    assert msk_iam.token() == ("signed", 1_700_000_900.0) and calls == ["eu-central-2"]
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    with pytest.raises(ConnectionConfigError, match="AWS_REGION"):
        msk_iam.token()


def test_mutual_tls_without_sasl(tmp_path: Path):
    ca = trustme.CA()
    leaf = ca.issue_cert("client")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "user.crt"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "user.key"))
    conn = KafkaConnection("b:9093", {"security.protocol": "SSL", "ssl.ca.location": str(tmp_path / "ca.pem"),
                                      "ssl.certificate.location": str(tmp_path / "user.crt"),
                                      "ssl.key.location": str(tmp_path / "user.key")})
    assert conn.librdkafka_config()["ssl.certificate.location"] == str(tmp_path / "user.crt")
    auth = conn.aiokafka_auth()
    assert auth["security_protocol"] == "SSL" and "sasl_mechanism" not in auth
    assert isinstance(conn.faust_credentials(), faust.SSLCredentials)
    assert conn.who() == f"client certificate {tmp_path / 'user.crt'}"


def test_plaintext_is_the_default():
    conn = KafkaConnection("127.0.0.1:9092")
    assert conn.librdkafka_config() == {"bootstrap.servers": "127.0.0.1:9092", "security.protocol": "PLAINTEXT"}
    assert conn.aiokafka_auth() == {"security_protocol": "PLAINTEXT"} and conn.faust_credentials() is None


@pytest.mark.parametrize(("props", "message"), [
    ({"security.protocol": "TLS"}, "security.protocol 'TLS'"),
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "GSSAPI", "sasl.username": "u", "sasl.password": "p"},
     "sasl.mechanism 'GSSAPI'"),
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "u"},
     "needs sasl.username and sasl.password"),
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER"}, "OAUTHBEARER needs"),
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER", "sasl.oauthbearer.method": "oidc"},
     "sasl.oauthbearer.method=oidc needs"),
    ({"sasl.username": "u", "sasl.password": "p"}, "security.protocol is PLAINTEXT"),
    ({"ssl.ca.location": "/etc/hosts"}, "use SSL"),
    ({"security.protocol": "SSL", "ssl.ca.location": "/no/such/ca.pem"}, "no such file /no/such/ca.pem"),
    ({"security.protocol": "SSL", "ssl.certificate.location": "/etc/hosts"}, "needs both"),
    ({"security.protocol": "SSL", "ssl.truststore.location": "/x.jks"}, "Java keystores are not read"),
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER", TOKEN_PROVIDER: "no_such_mod:f"},
     "cannot load it"),
])
def test_contradictions_are_refused(props: dict[str, str], message: str):
    with pytest.raises(ConnectionConfigError, match=message):
        conn = KafkaConnection("b:9092", props)
        conn.librdkafka_config()


def test_client_properties_file(tmp_path: Path):
    path = tmp_path / "client.properties"
    path.write_text(
        "# Confluent Cloud, Java flavour\n"
        "bootstrap.servers=pkc-123.eu-west-1.aws.confluent.cloud:9092\n"
        "security.protocol = SASL_SSL\n"
        "sasl.mechanisms:PLAIN\n"
        "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required \\\n"
        f"    username=\"KEY123\" password=\"{PASSWORD}\";\n"
        "! a comment\n"
        "client.dns.lookup=use_all_dns_ips\n"
        "session.timeout.ms=45000\n")
    assert load_properties(path)["sasl.mechanisms"] == "PLAIN"
    conn = kafka_of(Settings(kafka_config=path))
    assert conn.bootstrap_servers == "pkc-123.eu-west-1.aws.confluent.cloud:9092"
    assert conn.librdkafka_config() == {
        "bootstrap.servers": "pkc-123.eu-west-1.aws.confluent.cloud:9092", "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN", "sasl.username": "KEY123", "sasl.password": PASSWORD,
        "session.timeout.ms": "45000"}  # the rest goes to librdkafka as given; Java-only ones are dropped
    assert conn.aiokafka_auth()["sasl_plain_username"] == "KEY123"


def test_file_then_environment_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "client.properties"
    path.write_text("bootstrap.servers=file:9092\nsecurity.protocol=SASL_SSL\nsasl.mechanism=PLAIN\n"
                    "sasl.username=from-file\nsasl.password=file-password\n")
    monkeypatch.setenv("KAFKA_CONFIG_FILE", str(path))
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "from-env")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", PASSWORD)
    conn = kafka_of(Settings(sasl_username="from-flag"))
    assert conn.bootstrap_servers == "file:9092"  # not set elsewhere: the file's
    assert (conn.mechanism, conn.properties["sasl.username"], conn.properties["sasl.password"]) == (
        "SCRAM-SHA-512", "from-flag", PASSWORD)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "env:9092")
    assert kafka_of(Settings()).bootstrap_servers == "env:9092"
    secret_file = tmp_path / "password"
    secret_file.write_text(f"{PASSWORD}-from-file\n")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD_FILE", str(secret_file))
    assert kafka_of(Settings()).properties["sasl.password"] == f"{PASSWORD}-from-file"
    assert PASSWORD not in repr(Settings())


def test_describe_masks_every_secret():
    conn = KafkaConnection("b:9093", {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER", "sasl.oauthbearer.method": "oidc",
        "sasl.oauthbearer.client.id": "app", "sasl.oauthbearer.client.secret": SECRET,
        "sasl.oauthbearer.token.endpoint.url": "https://idp.example/token", "ssl.key.password": PASSWORD,
        "sasl.password": PASSWORD})
    text = "\n".join(conn.describe())
    assert SECRET not in text and PASSWORD not in text
    assert f"sasl.oauthbearer.client.secret = {MASK}" in text and f"ssl.key.password = {MASK}" in text
    assert "sasl.oauthbearer.client.id = app" in text and "bootstrap.servers = b:9093" in text


def test_librdkafka_failures_are_named():
    conn = KafkaConnection("b:9096", {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-256",
                                      "sasl.username": "alice", "sasl.password": PASSWORD})
    auth = client.classify(KafkaError._AUTHENTICATION, "SASL authentication error: Authentication failed", conn,
                           "b:9096")
    assert isinstance(auth, client.AuthFailure)
    assert str(auth) == ("authentication failed at b:9096 (SASL SCRAM-SHA-256 as 'alice'): "
                         "SASL authentication error: Authentication failed")
    tls = client.classify(KafkaError._SSL, "SSL handshake failed: certificate verify failed", conn, "b:9096")
    assert isinstance(tls, client.TLSFailure) and str(tls).startswith("TLS failure at b:9096: SSL handshake")
    assert client.classify(KafkaError._TRANSPORT, "down", conn, "b:9096") is None


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams", *args], env=env, capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def test_topics_check_prints_the_settings_masked(tmp_path: Path, ca_pem: str):
    from streams.kafka.broker import free_port

    path = tmp_path / "client.properties"
    path.write_text(f"sasl.oauthbearer.client.secret={SECRET}\nsasl.mechanism=SCRAM-SHA-512\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "KAFKA_SASL_PASSWORD": PASSWORD}
    run = _cli("topics", "check", "--bootstrap-servers", f"127.0.0.1:{free_port()}", "--kafka-config", str(path),
               "--security-protocol", "sasl_ssl", "--sasl-username", "alice", "--ssl-ca-location", ca_pem, "-v",
               env=env)
    assert run.returncode == 1 and "connection refused" in run.stderr  # nothing listens there
    assert "security.protocol = SASL_SSL" in run.stdout and "sasl.username = alice" in run.stdout
    assert f"sasl.password = {MASK}" in run.stdout and f"sasl.oauthbearer.client.secret = {MASK}" in run.stdout
    assert PASSWORD not in run.stdout + run.stderr and SECRET not in run.stdout + run.stderr


def test_cli_refuses_contradictory_settings_with_exit_2():
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "KAFKA_SASL_PASSWORD": PASSWORD}
    run = _cli("handlers", "list", "--security-protocol", "SASL_SSL", "--sasl-mechanism", "SCRAM-SHA-256", env=env)
    assert run.returncode == 2
    assert run.stderr.strip() == ("signalbox: kafka config: SASL SCRAM-SHA-256 needs sasl.username and sasl.password "
                                  "(the password from KAFKA_SASL_PASSWORD, KAFKA_SASL_PASSWORD_FILE or the "
                                  "--kafka-config file)")
    assert PASSWORD not in run.stderr


def test_no_flag_takes_a_secret():
    helped = _cli("handlers", "list", "--help", env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert "--sasl-username" in helped.stdout and "--kafka-config" in helped.stdout
    assert "--sasl-password" not in helped.stdout and "--ssl-key-password" not in helped.stdout


def test_dev_worker_environment_drops_the_connection_settings():
    """`signalbox dev`'s worker talks plaintext to the embedded broker whatever the shell says."""
    names = connection_env_names()
    assert {"KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_PASSWORD", "KAFKA_SSL_CA_LOCATION", "KAFKA_CONFIG_FILE",
            "KAFKA_SSL_KEY_PASSWORD", "SIGNALBOX_KAFKA_SASL_PASSWORD"} <= names
    assert "KAFKA_BOOTSTRAP_SERVERS" not in names


def test_aiokafka_authentication_failure_is_named(monkeypatch: pytest.MonkeyPatch):
    """What aiokafka raises when the broker refuses the credentials becomes one AuthFailure
    line naming the mechanism and user, never the password."""
    from aiokafka import errors

    from streams.kafka import aio_check

    seen: dict[str, object] = {}

    async def refusing(host: str, port: int, **kwargs: object) -> None:
        seen.update(kwargs, host=host, port=port)
        raise errors.SaslAuthenticationFailed("Authentication failed during authentication due to invalid "
                                              "credentials with SASL mechanism SCRAM-SHA-512")

    monkeypatch.setattr(aio_check, "create_conn", refusing)
    conn = KafkaConnection("b-1:9096", {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
                                        "sasl.username": "signalbox", "sasl.password": PASSWORD})
    with pytest.raises(client.AuthFailure) as failure:
        asyncio.run(aio_check.check(conn))
    message = str(failure.value)
    assert message.startswith("authentication failed at b-1:9096 (SASL SCRAM-SHA-512 as 'signalbox'): ")
    assert "invalid credentials" in message and PASSWORD not in message and "\n" not in message
    assert (seen["host"], seen["port"], seen["sasl_mechanism"], seen["sasl_plain_username"]) == (
        "b-1", 9096, "SCRAM-SHA-512", "signalbox")
