"""Avro single-object encoding of job commands and run results.

Each record is ``C3 01`` + the 8-byte little-endian CRC-64-AVRO fingerprint of the
schema's parsing canonical form + the Avro binary body, so any Avro library can check
which schema wrote it and decode it from ``schemas/*.avsc`` alone.
"""

from __future__ import annotations

import io
import json
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

MAGIC = b"\xc3\x01"
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the streams package
SCHEMA_DIR = PACKAGE_DIR.parent / "schemas"


class AvroDecodeError(ValueError):
    """The bytes are not a single-object encoded record of the expected schema."""


class Codec:
    def __init__(self, schema_json: dict[str, Any]) -> None:
        self.schema = fastavro.parse_schema(schema_json)
        self.fingerprint = bytes.fromhex(
            fingerprint(to_parsing_canonical_form(self.schema), "CRC-64-AVRO")
        )
        self.header = MAGIC + self.fingerprint

    def encode(self, record: dict[str, Any]) -> bytes:
        out = io.BytesIO()
        out.write(self.header)
        fastavro.schemaless_writer(out, self.schema, record)
        return out.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        if data[:2] != MAGIC:
            raise AvroDecodeError("not Avro single-object encoding (no C3 01 marker)")
        if data[2:10] != self.fingerprint:
            raise AvroDecodeError(
                f"schema fingerprint {data[2:10].hex()} is not {self.schema['name']}'s "
                f"{self.fingerprint.hex()}"
            )
        return fastavro.schemaless_reader(io.BytesIO(data[10:]), self.schema)  # type: ignore[no-any-return]


def _schema_dir() -> Path:
    # Installed as a wheel, the schemas ship inside the package; from a checkout they sit
    # beside it.
    packaged = PACKAGE_DIR / "schemas"
    return packaged if packaged.is_dir() else SCHEMA_DIR


@cache
def codec(name: str) -> Codec:
    """``codec("job_command")`` or ``codec("run_result")``."""
    with (_schema_dir() / f"{name}.avsc").open() as f:
        return Codec(json.load(f))


def commands() -> Codec:
    return codec("job_command")


def results() -> Codec:
    return codec("run_result")
