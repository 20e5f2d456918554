"""Routing keys and binding patterns with RabbitMQ topic-exchange semantics.

A routing key is a list of words separated by dots (``run.migrate-pid.r1.succeeded``). A
binding pattern is the same, where the whole word ``*`` matches exactly one word and the
whole word ``#`` matches zero or more words; ``*`` or ``#`` inside a longer word is a
literal character, as in RabbitMQ.

Keys are built from record fields by a template (``run.{job}.{run_id}.{status}``). A dot
inside a field's value would split it into two words, so every field value is escaped
first: each ``.`` becomes ``_`` (job ``webhook.hook1`` -> word ``webhook_hook1``). A
missing or null field, or one holding an object or a list, is the empty word.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

MAX_KEY_CHARS = 255  # AMQP's limit on a routing key (bytes there; characters here)
MAX_WORDS = 64


class PatternError(ValueError):
    """A binding pattern that cannot be used (empty, too long, too many words)."""


def escape_word(value: Any) -> str:
    """A field value as one routing-key word: dots replaced by underscores."""
    if value is None or isinstance(value, dict | list):
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    return text.replace(".", "_")


_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class KeyTemplate:
    """``run.{job}.{run_id}.{status}``: literal words and ``{field}`` placeholders."""

    def __init__(self, template: str) -> None:
        self.template = template
        self.fields: list[str] = []
        for literal, field, spec, conversion in string.Formatter().parse(template):
            del literal
            if field is None:
                continue
            if not _FIELD.match(field) or spec or conversion:
                raise ValueError(f"key template {template!r}: {{{field}}} is not a plain field name")
            self.fields.append(field)
        if not template:
            raise ValueError("key template is empty")

    def render(self, fields: Mapping[str, Any]) -> str:
        return self.template.format_map({name: escape_word(fields.get(name)) for name in self.fields})


def validate_pattern(pattern: str) -> list[str]:
    """The words of a binding pattern; raises PatternError when it cannot be used."""
    if not isinstance(pattern, str) or not pattern:
        raise PatternError("the binding key is empty")
    if len(pattern) > MAX_KEY_CHARS:
        raise PatternError(f"the binding key is longer than {MAX_KEY_CHARS} characters")
    words = pattern.split(".")
    if len(words) > MAX_WORDS:
        raise PatternError(f"the binding key has more than {MAX_WORDS} words")
    return words


def matches(pattern: str | list[str], key: str | list[str]) -> bool:
    """Whether ``key`` matches the binding ``pattern`` (``*`` one word, ``#`` zero or more).

    Dynamic programming over (pattern word, key word): O(len(pattern) * len(key)), no
    recursion, so a hostile pattern like ``#.#.#.#.x`` costs no more than any other."""
    p = pattern.split(".") if isinstance(pattern, str) else pattern
    k = key.split(".") if isinstance(key, str) else key
    # reach[j]: the first i pattern words can match the first j key words
    reach = [True] + [False] * len(k)
    for word in p:
        if word == "#":
            # zero or more words: reachable from any earlier reachable j
            seen = False
            for j in range(len(k) + 1):
                seen = seen or reach[j]
                reach[j] = seen
        elif word == "*":
            reach = [False, *reach[:-1]]
        else:
            reach = [False] + [reach[j] and k[j] == word for j in range(len(k))]
        if not any(reach):
            return False
    return reach[len(k)]


def literal_prefix(pattern: str | list[str], prefix: str | list[str]) -> bool:
    """Whether every key the pattern can match starts with the words of ``prefix``: the
    pattern's first words equal them literally (no ``*`` or ``#`` in those places)."""
    p = pattern.split(".") if isinstance(pattern, str) else pattern
    want = prefix.split(".") if isinstance(prefix, str) else prefix
    return len(p) >= len(want) and all(a == b and a not in ("*", "#") for a, b in zip(p, want, strict=False))
