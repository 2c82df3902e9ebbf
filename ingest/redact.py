"""PII redaction of events before normalization (so before storage, series ids and Slack).

Keys that name a secret have their value replaced; values are scanned for emails, bearer
tokens and API keys, Luhn-valid card numbers and IPv4/IPv6 addresses. DB statements are left
to `fingerprint.py`, which turns every literal into `?`. Pure functions over a rules model.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ingest.models import DB, METRIC, QUEUE, SPAN, AnyEvent, with_fields

_MAX_TEXT = 200
_CACHE_MAX = 100_000
_CACHE_TEXT_MAX = 256


class CustomPattern(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    pattern: Annotated[str, Field(min_length=1, max_length=500)]
    replacement: Annotated[str, Field(max_length=40)] = "<redacted>"

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a regular expression: {e}") from None
        return v


_KEY_WORDS = r"pass(word|wd)?|secret|token|api[-_.]?key|auth(orization)?|cookie|session"  # noqa: S105
SECRET_KEYS = rf"(?i)({_KEY_WORDS}|credential|private[-_.]?key|ssn)"  # names, not a password


class RedactionRules(BaseModel):
    """What to redact. Defaults are on: an operator turns a class off, never forgets one on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # a label/attribute key matching this (search) has its value replaced
    secret_keys: str = SECRET_KEYS
    emails: bool = True
    tokens: bool = True
    card_numbers: bool = True
    ip_addresses: bool = True
    custom: tuple[CustomPattern, ...] = ()

    @field_validator("secret_keys")
    @classmethod
    def _key_regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a regular expression: {e}") from None
        return v


_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_TOKENS = [
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/]{8,}=*"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),  # JWT
    re.compile(r"\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{10,}"),  # Stripe-style keys
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}"),  # GitHub tokens
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),  # Slack tokens
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(
        r"(?i)((?:api[-_]?key|access[-_]?token|token|secret|password|passwd|sig)=)[^&\s\"']+"
    ),  # query-string secrets: keep the name, drop the value
]
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(
    r"(?<![0-9A-Fa-f:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?"
    r"(?:%[0-9A-Za-z]+)?(?![0-9A-Fa-f:.])"
)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(m: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", m.group(0))
    return "<card>" if 13 <= len(digits) <= 19 and luhn_ok(digits) else m.group(0)


def _ip(m: re.Match[str]) -> str:
    text = m.group(0)
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text
    return "<ip>"


def _token(m: re.Match[str]) -> str:
    if m.re is _TOKENS[-1]:
        return m.group(1) + "<token>"
    return "<token>"


class Redactor:
    """Applies rules to text and events. Label values repeat, so results are cached (bounded)."""

    def __init__(self, rules: RedactionRules | None = None) -> None:
        self.rules = rules = rules or RedactionRules()
        self._secret_key = re.compile(rules.secret_keys) if rules.secret_keys else None
        steps: list[tuple[Callable[[str], bool], Callable[[str], str]]] = []
        if rules.tokens:
            steps.append((lambda s: True, lambda s: _sub_all(_TOKENS, _token, s)))
        if rules.emails:
            steps.append((lambda s: "@" in s, lambda s: _EMAIL.sub("<email>", s)))
        if rules.card_numbers:
            steps.append((_has_digit_run, lambda s: _CARD.sub(_card, s)))
        if rules.ip_addresses:
            steps.append((lambda s: s.count(":") >= 2, lambda s: _IPV6.sub(_ip, s)))
            steps.append((lambda s: "." in s, lambda s: _IPV4.sub(_ip, s)))
        for c in rules.custom:
            pat, rep = re.compile(c.pattern), c.replacement
            steps.append((lambda s: True, lambda s, p=pat, r=rep: p.sub(r, s)))  # type: ignore[misc]
        self._steps = steps
        self._cache: dict[str, str] = {}
        # label keys and values already seen to need nothing: a clean label dict is two
        # C-level subset checks instead of a regex pass per key and value
        self._clean_keys: set[str] = set()
        self._clean_values: set[str] = set()
        self.redacted = 0  # values changed (cache hits included): a pipeline-health counter

    def text(self, value: str) -> str:
        """`value` with every enabled pattern replaced by a placeholder like `<email>`."""
        hit = self._cache.get(value)
        if hit is None:
            hit = value
            for applies, apply in self._steps:
                if applies(hit):
                    hit = apply(hit)
            if len(value) <= _CACHE_TEXT_MAX:  # long texts (a dead letter's payload) are rare
                if len(self._cache) >= _CACHE_MAX:
                    self._cache.clear()
                self._cache[value] = hit
        if hit != value:
            self.redacted += 1
        return hit

    def _clean(self, labels: dict[str, str]) -> bool:
        return self._clean_keys.issuperset(labels) and self._clean_values.issuperset(
            labels.values()
        )

    def labels(self, labels: dict[str, str]) -> dict[str, str]:
        if self._clean(labels):
            return labels
        out: dict[str, str] = {}
        changed = False
        for k, v in labels.items():
            nk = self.text(k)
            secret = self._secret_key is not None and self._secret_key.search(k) is not None
            nv = "<redacted>" if secret else self.text(v)
            changed |= nk != k or nv != v
            out[nk[:_MAX_TEXT]] = nv[:_MAX_TEXT]
            if nk == k and len(k) <= _MAX_TEXT and not secret:
                _remember(self._clean_keys, k)
            if nv == v and len(v) <= _MAX_TEXT and not secret:
                _remember(self._clean_values, v)
        return out if changed else labels

    def event(self, e: AnyEvent) -> AnyEvent:
        """The event with PII replaced; the same object when nothing needed redaction."""
        upd: dict[str, object] = {}
        if isinstance(e, METRIC + SPAN):
            labels = self.labels(e.labels)
            if labels is not e.labels:
                upd["labels"] = labels
        if isinstance(e, SPAN):
            _maybe(upd, "operation", e.operation, self.text)
        elif isinstance(e, QUEUE):
            _maybe(upd, "queue", e.queue, self.text)
            _maybe(upd, "group", e.group, self.text)
        elif isinstance(e, DB):
            _maybe(upd, "database", e.database, self.text)
        return with_fields(e, upd) if upd else e

    def events(self, events: Iterable[AnyEvent]) -> list[AnyEvent]:
        clean = self._clean
        return [e if type(e) in METRIC and clean(e.labels) else self.event(e) for e in events]


def _remember(seen: set[str], text: str) -> None:
    if len(seen) >= _CACHE_MAX:
        seen.clear()
    seen.add(text)


def _maybe(upd: dict[str, object], key: str, value: str, f: Callable[[str], str]) -> None:
    new = f(value)
    if new != value:
        upd[key] = new[:_MAX_TEXT] or "<redacted>"


def _sub_all(patterns: list[re.Pattern[str]], rep: Callable[[re.Match[str]], str], s: str) -> str:
    for p in patterns:
        s = p.sub(rep, s)
    return s


_DIGIT_RUN = re.compile(r"\d{4}")


def _has_digit_run(s: str) -> bool:
    return _DIGIT_RUN.search(s) is not None
