"""Secrets out of everything the relay shows: logs, ``/health``, errors and ``relay check``.

One mechanism: a :class:`Redactor` holds the secret values of the loaded config and replaces
every occurrence of one, and the user info of any ``scheme://user:password@`` URL, with
``***``. The CLI builds it from the config (:meth:`Redactor.from_config`) and installs it
(:func:`install`) before anything runs; then

- every structlog event passes through it (a processor after ``format_exc_info``, so the
  rendered traceback is covered too), JSON and console alike;
- every stdlib log record (nats-py, httpx, Hypercorn, asyncio) is formatted through
  :class:`RedactingFormatter`;
- the sidecar redacts the ``/health`` document before sending it;
- the CLI redacts what it prints: config errors, the ``relay check`` plan and notes.

The secrets are: NATS ``token`` and ``password``; the contents of ``nkey_seed_file`` and
``creds_file`` when they can be read (each key, seed or JWT line); the user info of every
NATS URL and venue endpoint URL (its password, ``user:password``, or a bare token); and every
value of every venue's ``[venues.credentials]``. Each is also matched in the spellings it
takes inside a ``repr()``, a JSON string and a percent-encoded URL. The user name alone is
not a secret (masking ``relay`` everywhere would make logs unreadable).

Values shorter than :data:`MIN_SECRET_LENGTH` characters are not matched: a two-character
"password" would turn every log line into asterisks and hide nothing worth hiding. Such a
secret is not protected by value (URL user info still is, by pattern).

Cost: one compiled regex, the secrets ``re.escape``'d and longest first (so a secret that
contains another is masked whole), plus one pattern for URL user info that only matches
where ``://`` occurs. Redacting a typical log event takes a few microseconds.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

if TYPE_CHECKING:
    from relay.config import Config

__all__ = [
    "MASK",
    "MIN_SECRET_LENGTH",
    "RedactingFormatter",
    "Redactor",
    "active",
    "install",
]

MASK = "***"
MIN_SECRET_LENGTH = 4
"""Secrets shorter than this are not masked by value (see the module docstring)."""

_URL_USERINFO = re.compile(r"://[^\s/?#@'\"<>\\]+@")
"""The user info of a URL: ``://`` then anything up to ``@`` that cannot end the authority."""
_URL_MASK = "://" + MASK + "@"
_PRIMITIVES = (int, float, bool, type(None))


class Redactor:
    """Replaces secret values and URL user info with :data:`MASK`.

    Immutable once built; :meth:`redact` is safe from any thread.
    """

    __slots__ = ("_secrets", "secret_count")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        variants: set[str] = set()
        for secret in secrets:
            if not isinstance(secret, str) or len(secret) < MIN_SECRET_LENGTH:
                continue
            variants.update(_spellings(secret))
        ordered = sorted(
            (v for v in variants if len(v) >= MIN_SECRET_LENGTH), key=lambda v: (-len(v), v)
        )
        self.secret_count = len(ordered)
        self._secrets = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    @classmethod
    def from_config(cls, config: Config) -> Redactor:
        """The secrets of ``config`` (see the module docstring for which)."""
        nats = config.nats
        secrets: list[str] = [s for s in (nats.token, nats.password) if s]
        for path in (nats.nkey_seed_file, nats.creds_file):
            if path:
                secrets += _key_file_secrets(path)
        urls = list(nats.urls)
        for venue in config.venues:
            secrets += venue.credentials.values()
            urls += [u for u in (venue.connection.ws_url, venue.connection.rest_url) if u]
        for url in urls:
            secrets += _userinfo_secrets(url)
        return cls(secrets)

    def redact(self, text: str) -> str:
        """``text`` with every secret and every URL's user info replaced by ``***``."""
        if self._secrets is not None:
            text = self._secrets.sub(MASK, text)
        if "://" in text:
            text = _URL_USERINFO.sub(_URL_MASK, text)
        return text

    def redact_value(self, value: Any) -> Any:
        """``value`` with every string in it redacted: dicts, lists and tuples are walked,
        numbers, booleans and ``None`` kept, any other object replaced by its redacted
        ``repr()`` (what a JSON or console log renderer would have shown of it)."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, _PRIMITIVES):
            return value
        if isinstance(value, Mapping):
            return {self.redact_value(k): self.redact_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.redact_value(item) for item in value]
        return self.redact(repr(value))

    def __call__(self, logger: Any, method_name: str, event_dict: Any) -> Any:
        """The structlog processor: redacts every value of the event, in place."""
        for key, value in event_dict.items():
            if isinstance(value, str):
                event_dict[key] = self.redact(value)
            elif not isinstance(value, _PRIMITIVES):
                event_dict[key] = self.redact_value(value)
        return event_dict

    def __repr__(self) -> str:
        return f"<Redactor of {self.secret_count} secret spellings>"


class RedactingFormatter(logging.Formatter):
    """A stdlib :class:`logging.Formatter` whose output, traceback included, is redacted.

    It redacts with the :func:`active` redactor at the time of formatting, so a handler set
    up before :func:`install` is still covered.
    """

    def format(self, record: logging.LogRecord) -> str:
        return active().redact(super().format(record))


_active = Redactor()


def install(redactor: Redactor) -> None:
    """Make ``redactor`` the process-wide one (the sidecar and the log formatters use it)."""
    global _active
    _active = redactor


def active() -> Redactor:
    """The installed redactor; before :func:`install`, one that masks URL user info only."""
    return _active


def _spellings(secret: str) -> set[str]:
    """A secret as it may appear in text: as is, inside a ``repr()``, inside a JSON string,
    and percent-encoded or -decoded (as URL user info is)."""
    return {
        secret,
        repr(secret)[1:-1],
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        quote(secret, safe=""),
        unquote(secret),
    }


def _userinfo_secrets(url: str) -> list[str]:
    """The secret part of ``url``'s user info: the password and ``user:password``, or the
    whole user info when it has no password (a token, as in ``nats://TOKEN@host``)."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:  # not in a loaded config: it checks every URL
        return []
    if "@" not in netloc:
        return []
    userinfo = netloc.rsplit("@", 1)[0]
    _, colon, password = userinfo.partition(":")
    return [password, userinfo] if colon else [userinfo]


def _key_file_secrets(path: str) -> list[str]:
    """The key material of an nkey seed or creds file: every line that is one word and not
    a ``-----BEGIN/END-----`` or ``*****`` marker (a seed, a JWT). Nothing when the file
    cannot be read (the NATS client reports that, naming only the path)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return []
    words = (line.split() for line in text.splitlines())
    return [w[0] for w in words if len(w) == 1 and not w[0].startswith(("-", "*"))]
