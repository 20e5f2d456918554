"""Settings, read from the environment (SIGNALBOX_*, KAFKA_BOOTSTRAP_SERVERS) and the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.model import jsonvalue
from streams.model.state_rules import StateLimits

PACKAGE_DIR = Path(__file__).resolve().parent


def _kafka_env(name: str) -> AliasChoices:
    """KAFKA_<NAME> (Kafka's property, upper case, dots as underscores), or SIGNALBOX_KAFKA_<NAME>."""
    return AliasChoices(f"KAFKA_{name}", f"SIGNALBOX_KAFKA_{name}")


def default_topics_file() -> Path:
    for candidate in (Path("topics.yaml"), PACKAGE_DIR / "topics.yaml", PACKAGE_DIR.parent / "topics.yaml"):
        if candidate.is_file():
            return candidate
    return Path("topics.yaml")


class ConnectionConfigError(ValueError):
    """The Kafka connection settings contradict each other, or a file they name is unreadable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIGNALBOX_", extra="ignore", populate_by_name=True)

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "SIGNALBOX_BOOTSTRAP_SERVERS"),
    )
    # The connection (streams/kafka/connection.py): a client.properties file, under the
    # environment and flags below; secrets (SecretStr) only from the environment or files.
    kafka_config: Path | None = Field(default=None, validation_alias=_kafka_env("CONFIG_FILE"))
    security_protocol: str | None = Field(default=None, validation_alias=_kafka_env("SECURITY_PROTOCOL"))
    sasl_mechanism: str | None = Field(default=None, validation_alias=_kafka_env("SASL_MECHANISM"))
    sasl_username: str | None = Field(default=None, validation_alias=_kafka_env("SASL_USERNAME"))
    sasl_password: SecretStr | None = Field(default=None, validation_alias=_kafka_env("SASL_PASSWORD"))
    sasl_password_file: Path | None = Field(default=None, validation_alias=_kafka_env("SASL_PASSWORD_FILE"))
    ssl_ca_location: str | None = Field(default=None, validation_alias=_kafka_env("SSL_CA_LOCATION"))
    ssl_certificate_location: str | None = Field(default=None,
                                                 validation_alias=_kafka_env("SSL_CERTIFICATE_LOCATION"))
    ssl_key_location: str | None = Field(default=None, validation_alias=_kafka_env("SSL_KEY_LOCATION"))
    ssl_key_password: SecretStr | None = Field(default=None, validation_alias=_kafka_env("SSL_KEY_PASSWORD"))
    topics_file: Path = Field(default_factory=default_topics_file)
    topic_prefix: str = ""
    app_id: str = "signalbox"
    datadir: Path = Path(".signalbox/data")
    # "tansu" turns on the embedded broker's workarounds (short group timeouts, short
    # fetch waits, single-record batches for changelogs); never use it against Kafka.
    broker_kind: Literal["kafka", "tansu"] = "kafka"
    state_warn_bytes: int = 10_000
    state_max_bytes: int = 50_000
    dedup_retention_seconds: float = 7 * 24 * 3600
    dedup_sweep_interval_seconds: float = 60.0
    # jobs a runner runs at once (a thread each for sync jobs); a slot is held until the event
    # loop sees its job return, so a busy worker needs more slots than it has CPUs
    runner_concurrency: int = Field(default=32, ge=1)
    # how often Python's interpreter lets another thread take the GIL (sys.setswitchinterval):
    # the worker's loop, Faust's consumer thread and the job threads hand it over at every
    # record; Python's default 5 ms made each hand-over wait up to that long on a busy worker
    gil_switch_interval_ms: float = Field(default=1.0, gt=0, le=1000)
    # once the handlers are loaded, freeze the heap out of the garbage collector's full walks;
    # again after the handlers change, at most this often (engine/heap.py); 0: never
    gc_freeze_seconds: float = Field(default=60.0, ge=0)
    # webhook and e-mail deliveries at once per runner, apart from the jobs' slots
    delivery_concurrency: int = Field(default=64, ge=1)
    # events above these limits are dead-lettered (docs/input-limits.md)
    max_event_bytes: int = Field(default=262_144, ge=2)
    max_event_depth: int = Field(default=100, ge=1, le=500)
    # triggers a job may have waiting for its turn; one more is dead-lettered
    job_queue_max: int = Field(default=1000, ge=1)
    cron_interval_seconds: float = 1.0
    # workers that keep a warm copy of each job partition's tables (Faust standbys): a
    # faster failover, for the CPU of replaying every other worker's changelogs
    standby_replicas: int = Field(default=1, ge=0)
    # latency against throughput (README, Benchmarks): how long the worker's producer waits
    # to fill a request (triggers, commands, changelog records), and how long the schedule
    # step waits for more records to join a batch; 0 answers an idle job soonest
    producer_linger_ms: float = Field(default=5.0, ge=0, le=1000)
    schedule_batch_window_ms: float = Field(default=2.0, ge=0, le=1000)
    # networks deliveries may reach although the SSRF guard refuses them (delivery/guard.py)
    delivery_allow: str = ""
    # e-mail deliveries (delivery/email.py); the password is a secret's name, never a value
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_starttls: bool = False  # plain connection, then STARTTLS (usually port 587)
    smtp_tls: bool = False  # TLS from the first byte (usually port 465); not with smtp_starttls
    # a PEM file of CA certificates trusted for the SMTP server's certificate, in addition to
    # the system's (a private CA); the server's name is checked against its certificate
    smtp_ca_file: Path | None = None
    smtp_user: str = ""
    smtp_password_secret: str = ""
    smtp_from: str = "signalbox@localhost"
    smtp_timeout_seconds: float = 10.0
    # Faust's web server of a worker (its /metrics, engine/metrics.py): off unless a port is
    # set; SIGNALBOX_METRICS_PORT and SIGNALBOX_WEB_PORT (--web-port) name the same server
    web_port: int | None = None
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    web_host: str = "127.0.0.1"
    log_level: str = "info"

    @model_validator(mode="after")
    def _one_kind_of_smtp_tls(self) -> Settings:
        if self.smtp_starttls and self.smtp_tls:
            raise ValueError("SIGNALBOX_SMTP_STARTTLS and SIGNALBOX_SMTP_TLS exclude each other: STARTTLS "
                             "upgrades a plain connection (port 587), TLS starts with it (port 465)")
        return self

    @model_validator(mode="after")
    def _one_web_port(self) -> Settings:
        if self.metrics_port is not None and self.web_port is not None and self.metrics_port != self.web_port:
            raise ValueError(f"SIGNALBOX_METRICS_PORT ({self.metrics_port}) and SIGNALBOX_WEB_PORT ({self.web_port}) "
                             "name the same server (the worker's /metrics is on Faust's web server): set one")
        return self

    def kafka_properties(self) -> dict[str, str]:
        """The connection properties set by the environment or flags, by Kafka's names."""
        password = self.sasl_password.get_secret_value() if self.sasl_password is not None else None
        if self.sasl_password_file is not None:
            try:
                password = self.sasl_password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConnectionConfigError(f"KAFKA_SASL_PASSWORD_FILE: cannot read {self.sasl_password_file}: "
                                            f"{exc.strerror or exc}") from None
        props = {
            "security.protocol": self.security_protocol,
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": password,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": self.ssl_key_password.get_secret_value() if self.ssl_key_password else None,
        }
        return {k: v for k, v in props.items() if v}

    @property
    def state_limits(self) -> StateLimits:
        return StateLimits(self.state_warn_bytes, self.state_max_bytes)

    @property
    def event_limits(self) -> jsonvalue.Limits:
        return jsonvalue.Limits(self.max_event_bytes, self.max_event_depth)

    @property
    def embedded(self) -> bool:
        return self.broker_kind == "tansu"

    @property
    def session_timeout_seconds(self) -> float:
        # tansu holds a JoinGroup for half the session timeout and notices a dead member only
        # a session timeout after its last heartbeat: keep it short there (3 s: a kill -9
        # moves partitions in about 5 s; 2 s risked evicting a worker starting under load).
        return 3.0 if self.embedded else 45.0

    @property
    def fetch_max_wait_ms(self) -> int:
        """For our own aiokafka consumers: tansu holds every fetch for the full wait."""
        return 10 if self.embedded else 500

    @property
    def heartbeat_seconds(self) -> float:
        return 0.75 if self.embedded else 3.0
