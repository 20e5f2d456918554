"""Reading handler definitions from YAML/JSON files or folders (for the CLI)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from streams.model import jsonvalue
from streams.model.handlers import Handler, InvalidHandler, parse_handler

SUFFIXES = (".yaml", ".yml", ".json")


def _documents(path: Path) -> list[Any]:
    with path.open() as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    out: list[Any] = []
    for doc in docs:
        if isinstance(doc, dict) and "handlers" in doc and isinstance(doc["handlers"], list):
            out.extend(doc["handlers"])
        elif isinstance(doc, list):
            out.extend(doc)
        else:
            out.append(doc)
    return out


def load_handlers(paths: list[Path]) -> tuple[list[Handler], list[str]]:
    """All handlers in the files (folders are searched for *.yaml/*.yml/*.json).

    Returns the valid handlers and one error line per invalid one.
    """
    files: list[Path] = []
    errors: list[str] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            errors.append(f"{path}: no such file or folder")
    handlers: list[Handler] = []
    seen: dict[str, Path] = {}
    for file in files:
        try:
            docs = _documents(file)
        except yaml.YAMLError as exc:
            errors.append(f"{file}: {exc}")
            continue
        for i, doc in enumerate(docs):
            try:
                handler = parse_handler(_yaml_to_json_compatible(doc))
            except InvalidHandler as exc:
                errors.append(f"{file} [{i}]: {exc}")
                continue
            if handler.id in seen:
                errors.append(f"{file} [{i}]: handler id {handler.id!r} also defined in {seen[handler.id]}")
                continue
            seen[handler.id] = file
            handlers.append(handler)
    return handlers, errors


def _yaml_to_json_compatible(doc: Any) -> Any:
    # YAML floats become exact decimals, as if the handler had been written in JSON.
    try:
        return jsonvalue.loads(jsonvalue.dumps(doc))
    except TypeError as exc:  # YAML dates, sets, ... have no JSON form
        raise InvalidHandler(f"not representable as JSON: {exc}") from None
