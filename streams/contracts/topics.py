"""topics.yaml: the declared topics, and creating / checking them on a broker."""

from __future__ import annotations

from pathlib import Path

import yaml
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

REQUIRED = ("events", "handlers", "handler_rejections", "dead_letter", "triggers", "job_commands", "run_results")
JOB_KEYED = ("triggers", "job_commands", "run_results")


class TopicSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=249)
    partitions: int = Field(ge=1)
    replication: int = Field(ge=1)
    config: dict[str, str] = Field(default_factory=dict)

    @field_validator("config", mode="before")
    @classmethod
    def _stringify(cls, value: dict[str, object]) -> dict[str, str]:
        return {k: str(v) for k, v in (value or {}).items()}


class TopicsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topics: dict[str, TopicSpec]

    @model_validator(mode="after")
    def _complete_and_copartitioned(self) -> TopicsFile:
        missing = [k for k in REQUIRED if k not in self.topics]
        if missing:
            raise ValueError(f"topics.yaml lacks: {', '.join(missing)}")
        counts = {k: self.topics[k].partitions for k in JOB_KEYED}
        if len(set(counts.values())) != 1:
            raise ValueError(f"triggers, job_commands and run_results must have equal partitions: {counts}")
        return self


class TopicsError(RuntimeError):
    pass


class Topics:
    """The resolved topic names (prefix applied) and their specs."""

    def __init__(self, specs: dict[str, TopicSpec], prefix: str = "") -> None:
        self.specs = {k: s.model_copy(update={"name": prefix + s.name}) for k, s in specs.items()}

    @classmethod
    def load(cls, path: Path, prefix: str = "") -> Topics:
        try:
            with path.open() as f:
                parsed = TopicsFile.model_validate(yaml.safe_load(f))
        except (OSError, yaml.YAMLError, ValidationError) as exc:
            raise TopicsError(f"{path}: {exc}") from None
        return cls(parsed.topics, prefix)

    def name(self, key: str) -> str:
        return self.specs[key].name

    @property
    def events(self) -> str:
        return self.name("events")

    @property
    def handlers(self) -> str:
        return self.name("handlers")

    @property
    def handler_rejections(self) -> str:
        return self.name("handler_rejections")

    @property
    def dead_letter(self) -> str:
        return self.name("dead_letter")

    @property
    def triggers(self) -> str:
        return self.name("triggers")

    @property
    def job_commands(self) -> str:
        return self.name("job_commands")

    @property
    def run_results(self) -> str:
        return self.name("run_results")

    @property
    def job_partitions(self) -> int:
        return self.specs["triggers"].partitions


def create(admin: AdminClient, topics: Topics, timeout: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    existing = set(admin.list_topics(timeout=timeout).topics)
    new = [
        NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication, config=s.config)
        for s in topics.specs.values()
        if s.name not in existing
    ]
    if not new:
        return []
    created = []
    for name, future in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise TopicsError(f"creating {name}: {exc}") from None
    return created


def check(admin: AdminClient, topics: Topics, timeout: float = 30.0) -> list[str]:
    """Differences between the broker and topics.yaml, one line per field; [] when equal."""
    metadata = admin.list_topics(timeout=timeout).topics
    problems: list[str] = []
    present = []
    for spec in topics.specs.values():
        meta = metadata.get(spec.name)
        if meta is None or meta.error is not None:
            problems.append(f"{spec.name}: missing (run `signalbox topics create`)")
            continue
        present.append(spec)
        partitions = len(meta.partitions)
        if partitions != spec.partitions:
            problems.append(f"{spec.name}: partitions is {partitions}, topics.yaml says {spec.partitions}")
        replicas = min((len(p.replicas) for p in meta.partitions.values()), default=0)
        if replicas != spec.replication:
            problems.append(f"{spec.name}: replication is {replicas}, topics.yaml says {spec.replication}")
    if present:
        resources = [ConfigResource(ResourceType.TOPIC, s.name) for s in present]
        futures = admin.describe_configs(resources, request_timeout=timeout)
        for spec, resource in zip(present, resources, strict=True):
            actual = {k: v.value for k, v in futures[resource].result().items()}
            for key, want in spec.config.items():
                have = actual.get(key)
                if have != want:
                    problems.append(f"{spec.name}: {key} is {have!r}, topics.yaml says {want!r}")
    return problems
