"""SQL statement fingerprints: literals become `?`, so one query shape is one series and no
value a user typed (an email, an id) is ever stored or shown."""

from __future__ import annotations

import hashlib
import re

_PATTERNS = [
    (re.compile(r"--[^\n]*|/\*.*?\*/", re.S), " "),  # comments
    (re.compile(r"'(?:[^'\\]|\\.|'')*'"), "?"),  # single-quoted strings
    (re.compile(r"\$\d+|:\w+|%\(\w+\)s|%s"), "?"),  # bind parameters of every style
    (re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[+-]?\d+)?\b", re.I), "?"),  # numbers
    (re.compile(r"\b(?:true|false|null)\b", re.I), "?"),
    (re.compile(r"\(\s*\?(?:\s*,\s*\?)+\s*\)"), "(?+)"),  # IN lists of any length
    (re.compile(r"\s+"), " "),
]


def normalize_statement(sql: str) -> str:
    """The statement's shape, lower-cased keywords kept as written, at most 500 characters."""
    out = sql
    for pat, rep in _PATTERNS:
        out = pat.sub(rep, out)
    return out.strip()[:500]


def fingerprint(shape: str) -> str:
    """A short stable id of a statement shape (12 hex digits)."""
    return hashlib.blake2b(shape.encode(), digest_size=6).hexdigest()
