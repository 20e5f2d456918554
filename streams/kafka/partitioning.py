"""Where a job's records land: the partition of a key under murmur2 (the partitioner of
Java's clients and aiokafka, and of this project's confluent-kafka producers,
``kafka/client.py``). The engine reads a job's partition with it to know which worker
owns the job, and the gateway to write a replayed trigger where the engine reads it."""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2


@lru_cache(maxsize=65_536)  # job names are few (one per job with handlers); murmur2 in Python: 1.7 µs
def job_partition(job: str, partitions: int) -> int:
    """The partition a job's records land on (records keyed by the job's name)."""
    return (murmur2(job.encode()) & 0x7FFFFFFF) % partitions
