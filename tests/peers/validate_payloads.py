#!/usr/bin/env python3
"""Validates recorded uplink payloads against the contract's JSON Schemas (docs/schema/).

Reads JSON lines, one MQTT message each: {"topic": "...", "payload": <parsed JSON, or the raw
text when it was not JSON>}, from the files named or from stdin. Each payload is checked
against docs/schema/{kind}.schema.json, where kind is the payload's own `kind` field (the
downlink's bookings document, which has none, is named by its topic ending in /bookings).
Draft 2020-12, with `format` checked (date-time, date) where the library can.

Prints one line per failure (topic, msg_id, the JSON path of the error and the reason), then a
count per kind. Exits 1 on any failure, a payload that is not a JSON object, or a kind without
a schema; 0 otherwise; 2 on bad usage. Used by tests/contract.rs (tests/common/contract.rs).
"""

import argparse
import datetime
import json
import re
import sys
from collections import Counter
from pathlib import Path

import jsonschema
from jsonschema import Draft202012Validator, FormatChecker

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "docs" / "schema"

_DATE_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)


def format_checker():
    """A checker for date-time and date; the library's own when it has one (its date-time
    check needs an optional package), else a strict RFC 3339 check of our own."""
    checker = FormatChecker()
    if "date-time" not in checker.checkers:

        @checker.checks("date-time", raises=ValueError)
        def is_date_time(value):
            if not isinstance(value, str):
                return True
            if not _DATE_TIME.match(value):
                raise ValueError(f"{value!r} is not an RFC 3339 date-time")
            datetime.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
            return True

    if "date" not in checker.checkers:

        @checker.checks("date", raises=ValueError)
        def is_date(value):
            if isinstance(value, str):
                datetime.date.fromisoformat(value)
            return True

    return checker


def path_of(error):
    return "/" + "/".join(str(p) for p in error.absolute_path)


class Validators:
    def __init__(self, schema_dir):
        self.dir = schema_dir
        self.cache = {}
        self.checker = format_checker()

    def get(self, kind):
        if kind not in self.cache:
            path = self.dir / f"{kind}.schema.json"
            if not re.fullmatch(r"[a-z0-9_]+", kind) or not path.is_file():
                self.cache[kind] = None
            else:
                schema = json.loads(path.read_text(encoding="utf-8"))
                Draft202012Validator.check_schema(schema)
                self.cache[kind] = Draft202012Validator(schema, format_checker=self.checker)
        return self.cache[kind]


def kind_of(topic, payload):
    if isinstance(payload, dict):
        kind = payload.get("kind")
        if isinstance(kind, str):
            return kind
        if topic.endswith("/bookings"):
            return "bookings"
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help="JSON-lines files (default: stdin)")
    parser.add_argument("--schemas", type=Path, default=SCHEMA_DIR, help="schema directory")
    parser.add_argument(
        "--only",
        metavar="PREFIX",
        help="validate only topics under PREFIX (others are counted as skipped)",
    )
    args = parser.parse_args()
    if not args.schemas.is_dir():
        print(f"no schema directory at {args.schemas}", file=sys.stderr)
        return 2

    validators = Validators(args.schemas)
    passed, failed = Counter(), Counter()
    skipped = 0
    failures = 0

    def fail(kind, topic, msg_id, path, reason):
        nonlocal failures
        failures += 1
        failed[kind] += 1
        print(f"FAIL kind={kind} topic={topic} msg_id={msg_id} path={path}: {reason}")

    streams = [open(f, encoding="utf-8") for f in args.files] or [sys.stdin]
    for stream in streams:
        for number, line in enumerate(stream, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
                topic, payload = record["topic"], record["payload"]
            except (ValueError, KeyError, TypeError) as error:
                fail("?", "?", "-", "-", f"line {number} is not a recorded message: {error}")
                continue
            if args.only and not topic.startswith(args.only):
                skipped += 1
                continue
            msg_id = payload.get("msg_id", "-") if isinstance(payload, dict) else "-"
            if not isinstance(payload, dict):
                fail("?", topic, msg_id, "/", "the payload is not a JSON object")
                continue
            kind = kind_of(topic, payload)
            if kind is None:
                fail("?", topic, msg_id, "/kind", "the payload names no kind")
                continue
            validator = validators.get(kind)
            if validator is None:
                fail(kind, topic, msg_id, "/kind", f"no schema docs/schema/{kind}.schema.json")
                continue
            errors = sorted(validator.iter_errors(payload), key=lambda e: list(e.absolute_path))
            if errors:
                for error in errors:
                    fail(kind, topic, msg_id, path_of(error), error.message)
                failures -= len(errors) - 1
                failed[kind] -= len(errors) - 1
            else:
                passed[kind] += 1

    for kind in sorted(set(passed) | set(failed)):
        print(f"kind={kind} valid={passed[kind]} invalid={failed[kind]}")
    if skipped:
        print(f"skipped={skipped} (outside {args.only})")
    total = sum(passed.values()) + failures
    print(f"messages={total} valid={sum(passed.values())} invalid={failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
