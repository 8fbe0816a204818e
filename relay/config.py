"""The configuration layer: ``relay.toml`` read, env-substituted, validated into frozen Structs.

:func:`load_config` is the only way in. It parses the file with :mod:`tomllib`, replaces
``${VAR}`` and ``${VAR:-default}`` in string values of the parsed tree (so TOML quoting never
interacts with a variable's contents), converts the tree into the Structs below with
:func:`msgspec.convert`, and then runs the checks that span fields: NATS auth and TLS
settings, stream and consumer consistency, adapter names, the data types an adapter supports
and the canonical symbol of every instrument. Every problem is a :class:`ConfigError` whose
text is ``<file>: <key path>: <message>``, with the key path written the way a user finds it
in the file (``venues[1].subscriptions[0].data_types[2]``).

The helpers at the end are what the runtime and ``relay check`` need from a loaded config:
:func:`venue_subscriptions`, :func:`venue_endpoints`, :func:`nats_connect_options` and
:func:`plan_text`. Adapters are reached only through :func:`adapters.load` and
:data:`adapters.NAMES`.
"""

from __future__ import annotations

import functools
import os
import re
import ssl
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

import msgspec

import adapters
from relay.codec import Adapter, Endpoints, Subscription
from relay.events import DataType
from relay.wire import symbol_token

__all__ = [
    "BackoffConfig",
    "BreakerConfig",
    "Config",
    "ConfigError",
    "ConnectionConfig",
    "ConsumerConfig",
    "HttpConfig",
    "NatsConfig",
    "PipelineConfig",
    "RestConfig",
    "ServiceConfig",
    "StreamConfig",
    "SubscriptionConfig",
    "TlsConfig",
    "VenueConfig",
    "load_config",
    "nats_connect_options",
    "plan_text",
    "venue_endpoints",
    "venue_subscriptions",
]

KeyPath = tuple[str | int, ...]
"""A location in the parsed TOML tree: table keys and array indexes, outermost first."""


class ConfigError(Exception):
    """A config file that cannot be used, and where in it the problem is.

    ``str(error)`` is ``<file>: <key path>: <message>``. The key path is a dotted TOML path
    with array indexes (``nats.streams[0].subjects``); for a TOML syntax error it is the
    location (``line 3, column 9``), and for a file that cannot be read it is empty and
    left out of the text.
    """

    def __init__(self, path: str | os.PathLike[str], key_path: str, message: str) -> None:
        super().__init__(path, key_path, message)
        self.path = path
        self.key_path = key_path
        self.message = message

    def __str__(self) -> str:
        if not self.key_path:
            return f"{self.path}: {self.message}"
        return f"{self.path}: {self.key_path}: {self.message}"


class _Invalid(Exception):
    """A problem found below :func:`load_config`, before the file name is attached."""

    def __init__(self, key_path: KeyPath, message: str) -> None:
        super().__init__(key_path, message)
        self.key_path = key_path
        self.message = message


# ---------------------------------------------------------------------------------------------
# Schema.

PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
LimitInt = Annotated[int, msgspec.Meta(ge=-1)]
"""A JetStream limit: ``-1`` for unlimited, otherwise positive (``0`` is rejected by a check)."""
NonEmptyStr = Annotated[str, msgspec.Meta(min_length=1)]
JetStreamName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]+$")]
"""Stream and consumer names: no dots, wildcards, spaces or path separators."""

VENUE_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
VenueId = Annotated[str, msgspec.Meta(pattern=VENUE_ID_PATTERN)]

AuthMode = Literal["none", "token", "user_password", "nkey", "creds"]

MAX_WORKERS = 64
"""Upper bound of ``service.workers``: a typo (``600``) fails the config, not the host."""


class _Section(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Base of every config table: unknown keys are errors, fields are keyword-only."""


class ServiceConfig(_Section, frozen=True, kw_only=True):
    """``[service]``: process identity, logging and shutdown."""

    name: NonEmptyStr = "relay"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    shutdown_timeout_ms: PositiveInt = 5000
    """How long a graceful shutdown may take to flush and await PubAcks."""
    state_dir: NonEmptyStr = "data"
    """Where the relay keeps what outlives a run: each venue's instrument list, as
    ``<state_dir>/instruments/<venue id>.json`` (read by ``relay check``)."""
    instruments_refresh_secs: PositiveInt = 6 * 3600
    """How often each venue's instrument list is fetched again while running."""
    workers: Annotated[int, msgspec.Meta(ge=1, le=MAX_WORKERS)] = 1
    """Relay processes. ``1`` runs everything in this process; more makes ``relay run`` a
    parent that shards the enabled venues over that many worker processes (at most one per
    venue; see :mod:`relay.workers`) and serves their aggregated ``/health`` and
    ``/metrics`` on ``[http]``."""


class TlsConfig(_Section, frozen=True, kw_only=True):
    """``[nats.tls]``: TLS to the NATS server; the files are PEM paths."""

    enabled: bool = False
    ca_file: NonEmptyStr | None = None
    """CA bundle to verify the server with; the system store when unset."""
    cert_file: NonEmptyStr | None = None
    """Client certificate for mutual TLS; needs ``key_file``."""
    key_file: NonEmptyStr | None = None


class StreamConfig(_Section, frozen=True, kw_only=True):
    """``[[nats.streams]]``: a JetStream stream the relay creates or updates."""

    name: JetStreamName
    subjects: Annotated[list[NonEmptyStr], msgspec.Meta(min_length=1)]
    storage: Literal["file", "memory"] = "file"
    retention: Literal["limits", "interest", "workqueue"] = "limits"
    max_age_secs: NonNegativeInt = 0
    """``0`` keeps messages regardless of age."""
    max_bytes: LimitInt = -1
    max_msg_size: LimitInt = -1
    discard: Literal["old", "new"] = "old"
    num_replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1
    duplicate_window_secs: NonNegativeInt = 120
    """How long JetStream remembers a ``Nats-Msg-Id`` to drop a republished event."""


class ConsumerConfig(_Section, frozen=True, kw_only=True):
    """``[[nats.consumers]]``: a JetStream consumer the relay creates on a configured stream."""

    stream: NonEmptyStr
    name: JetStreamName
    durable: bool = True
    ack_policy: Literal["explicit", "none", "all"] = "explicit"
    ack_wait_secs: PositiveInt = 30
    max_deliver: LimitInt = -1
    deliver_policy: Literal["all", "last", "new", "last_per_subject"] = "all"
    max_ack_pending: LimitInt = 1000
    filter_subject: NonEmptyStr | None = None
    """Only subjects matching this (within the stream's subjects) are delivered."""


_SECRET_FIELDS = frozenset({"token", "password"})
"""Fields whose values no error message, plan or repr may show."""


class NatsConfig(_Section, frozen=True, kw_only=True):
    """``[nats]``: the connection, its credentials, publishing limits, streams and consumers.

    Exactly the credential fields of the chosen ``auth`` mode are set: ``token`` for
    ``token``, ``user`` and ``password`` for ``user_password``, ``nkey_seed_file`` for
    ``nkey`` and ``creds_file`` for ``creds``. ``repr()`` masks the secrets.
    """

    urls: Annotated[list[NonEmptyStr], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: ["nats://127.0.0.1:4222"]
    )
    auth: AuthMode = "none"
    token: str | None = None
    user: str | None = None
    password: str | None = None
    nkey_seed_file: NonEmptyStr | None = None
    creds_file: NonEmptyStr | None = None
    tls: TlsConfig = msgspec.field(default_factory=TlsConfig)
    connect_timeout_ms: PositiveInt = 5000
    reconnect_time_wait_ms: NonNegativeInt = 500
    max_reconnects: LimitInt = -1
    """Reconnect attempts per server before giving up; ``-1`` retries forever."""
    ping_interval_secs: PositiveInt = 20
    reconnect_buffer_size: PositiveInt = 8 * 1024 * 1024
    """Bytes of outgoing data nats-py buffers while reconnecting."""
    publish_window: PositiveInt = 4096
    """Most messages published and still awaiting their PubAck."""
    ack_timeout_ms: PositiveInt = 2000
    """How long to wait for one PubAck before retrying the publish."""
    retry_schedule_ms: list[PositiveInt] = msgspec.field(default_factory=lambda: [100, 500, 2000])
    """Delays before each republish of a message whose PubAck failed or timed out."""
    streams: list[StreamConfig] = msgspec.field(default_factory=list)
    consumers: list[ConsumerConfig] = msgspec.field(default_factory=list)

    def _masked_fields(self) -> Iterator[tuple[str, Any]]:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            yield name, "***" if name in _SECRET_FIELDS and value is not None else value

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={value!r}" for name, value in self._masked_fields())
        return f"NatsConfig({inner})"

    def __rich_repr__(self) -> Iterator[tuple[str, Any]]:
        yield from self._masked_fields()


class HttpConfig(_Section, frozen=True, kw_only=True):
    """``[http]``: where the health and metrics server listens."""

    bind: NonEmptyStr = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    """``0`` lets the OS pick a free port."""


class OverloadConfig(_Section, frozen=True, kw_only=True):
    """``[pipeline.overload]``: what gives, per data type, when the outage buffer is full.

    ``backpressure``
        nothing is dropped: the normalizer waits for room, and with it the venue readers;
    ``conflate``
        only the latest message per subject (venue, symbol, type) waits; each one it
        replaces is dropped and counted (``reason="conflated"``);
    ``resync``
        a book delta that does not fit is dropped and counted (``reason="overflow"``), and
        so is every later delta of that book until the venue has sent a fresh snapshot,
        which the codec is asked for at once.

    The keys are the data types (the last subject token); ``status`` is ``_status``.
    Trades, liquidations and status events are never dropped: ``backpressure`` only.
    """

    trade: Literal["backpressure"] = "backpressure"
    liquidation: Literal["backpressure"] = "backpressure"
    status: Literal["backpressure"] = "backpressure"
    l2_orderbook: Literal["resync", "backpressure"] = "resync"
    ticker: Literal["conflate", "backpressure"] = "conflate"
    funding_rate: Literal["conflate", "backpressure"] = "conflate"
    mark_price: Literal["conflate", "backpressure"] = "conflate"
    open_interest: Literal["conflate", "backpressure"] = "conflate"


class PipelineConfig(_Section, frozen=True, kw_only=True):
    """``[pipeline]``: the bounded buffers between venue tasks and the publisher."""

    venue_channel_capacity: PositiveInt = 256
    """Batches a venue may queue before its reader waits."""
    outage_buffer_bytes: PositiveInt = 64 * 1024 * 1024
    """Bytes of encoded messages held in front of the JetStream publisher, on top of its
    window: what rides out a NATS outage or a slow JetStream. When it is full, the overload
    policy of each data type decides."""
    batch_max: PositiveInt = 256
    """Most events in one batch."""
    overload: OverloadConfig = msgspec.field(default_factory=OverloadConfig)


class ConnectionConfig(_Section, frozen=True, kw_only=True):
    """``[venues.connection]``: overrides of the adapter's default endpoints."""

    ws_url: NonEmptyStr | None = None
    """A ``ws://`` or ``wss://`` base URL, e.g. a local replay venue."""
    rest_url: NonEmptyStr | None = None
    """An ``http://`` or ``https://`` base URL for REST snapshots."""


class LivenessConfig(_Section, frozen=True, kw_only=True):
    """``[venues.liveness]``: when a connection counts as stalled and a stream as stale.

    A *stream* is one (symbol, data type) of the venue. Its threshold is learned from its
    own rate: ``stale_after_intervals`` times its typical gap between events, kept within
    ``stale_min_secs`` and ``stale_max_secs``, so an illiquid symbol is not declared dead.
    A stale stream is reported (status, ``/health``, a gauge); it does not reconnect.
    """

    stall_timeout_secs: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    """A connection that delivers no data frame for this long is torn down and reopened,
    even when it still answers pings."""
    stale_after_intervals: Annotated[float, msgspec.Meta(ge=1)] = 10.0
    stale_min_secs: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    stale_max_secs: Annotated[float, msgspec.Meta(gt=0)] = 900.0


class BackoffConfig(_Section, frozen=True, kw_only=True):
    """``[venues.backoff]``: delay between reconnect attempts, growing exponentially."""

    initial_ms: PositiveInt = 500
    max_ms: PositiveInt = 60_000
    multiplier: Annotated[float, msgspec.Meta(ge=1.0)] = 2.0
    jitter: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.2
    """Fraction of each delay randomized away (0 = none)."""


class BreakerConfig(_Section, frozen=True, kw_only=True):
    """``[venues.circuit_breaker]``: stop hammering a venue that keeps failing."""

    failure_threshold: PositiveInt = 5
    """Consecutive connection failures that open the circuit."""
    reset_timeout_secs: PositiveInt = 30
    """How long the circuit stays open before a half-open trial."""
    half_open_max_requests: PositiveInt = 1
    """Trial connections allowed while half-open."""


class RestConfig(_Section, frozen=True, kw_only=True):
    """``[venues.rest]``: the budget for the venue's REST snapshot requests.

    The defaults keep well inside the strictest venue's IP limits (Binance spot: a
    1000-level depth snapshot weighs 50 of 6000 per minute), so a reconnect with hundreds
    of books is staggered instead of getting the IP banned.
    """

    requests_per_second: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    """Sustained snapshot requests per second."""
    burst: PositiveInt = 5
    """Requests that may go out at once after a quiet spell."""


class SubscriptionConfig(_Section, frozen=True, kw_only=True):
    """``[[venues.subscriptions]]``: instruments (native symbols) and what to get for them."""

    instruments: Annotated[list[NonEmptyStr], msgspec.Meta(min_length=1)]
    data_types: Annotated[list[DataType], msgspec.Meta(min_length=1)]
    canonical_symbol: NonEmptyStr | None = None
    """Overrides the adapter's canonical symbol; only with exactly one instrument."""


class VenueConfig(_Section, frozen=True, kw_only=True):
    """``[[venues]]``: one venue feed, served by one adapter."""

    id: VenueId
    """Unique; the ``<venue>`` token of every subject this venue publishes."""
    adapter: NonEmptyStr
    """One of :data:`adapters.NAMES`."""
    enabled: bool = True
    connection: ConnectionConfig = msgspec.field(default_factory=ConnectionConfig)
    backoff: BackoffConfig = msgspec.field(default_factory=BackoffConfig)
    circuit_breaker: BreakerConfig = msgspec.field(default_factory=BreakerConfig)
    rest: RestConfig = msgspec.field(default_factory=RestConfig)
    liveness: LivenessConfig = msgspec.field(default_factory=LivenessConfig)
    credentials: dict[str, str] = msgspec.field(default_factory=dict)
    """``[venues.credentials]``: API keys for venues that need them, by the names the adapter
    lists in ``required_credentials``; usually ``"${VAR:-}"``, so that an unset variable
    leaves the venue disabled instead of failing the config. Never printed or logged."""
    subscriptions: Annotated[list[SubscriptionConfig], msgspec.Meta(min_length=1)]

    def __repr__(self) -> str:
        fields = (
            (name, {k: "***" for k in self.credentials} if name == "credentials" else value)
            for name, value in ((n, getattr(self, n)) for n in self.__struct_fields__)
        )
        return f"VenueConfig({', '.join(f'{n}={v!r}' for n, v in fields)})"

    def missing_credentials(self, adapter: Adapter) -> list[str]:
        """The credentials ``adapter`` needs that this venue's config does not give."""
        return [name for name in adapter.required_credentials if not self.credentials.get(name)]


class Config(_Section, frozen=True, kw_only=True):
    """A whole ``relay.toml``."""

    service: ServiceConfig = msgspec.field(default_factory=ServiceConfig)
    nats: NatsConfig = msgspec.field(default_factory=NatsConfig)
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    pipeline: PipelineConfig = msgspec.field(default_factory=PipelineConfig)
    venues: list[VenueConfig] = msgspec.field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Loading.


def load_config(path: Path | str, env: Mapping[str, str] | None = None) -> Config:
    """Read, substitute, convert and validate the config file at ``path``.

    ``env`` supplies the ``${VAR}`` values and defaults to :data:`os.environ`. Raises
    :class:`ConfigError` for every problem, including a missing or unreadable file.
    """
    try:
        text = Path(path).read_bytes().decode()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "", f"cannot read config file: {_reason(exc)}") from None
    try:
        tree = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        location, message = _split_toml_error(str(exc))
        raise ConfigError(path, location, f"invalid TOML: {message}") from None
    try:
        typed_values: list[tuple[KeyPath, str]] = []
        tree = _substitute_tree(tree, os.environ if env is None else env, (), typed_values)
        for key_path, placeholder in typed_values:
            _coerce_placeholder(tree, key_path, placeholder)
        try:
            config = msgspec.convert(tree, Config)
        except msgspec.ValidationError as exc:
            raise _translate_validation_error(str(exc), tree) from None
        _check_nats(config.nats)
        _check_venues(config.venues)
    except _Invalid as exc:
        raise ConfigError(path, _format_key_path(exc.key_path), exc.message) from None
    return config


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc)


_TOML_LOCATION = re.compile(r"^(?P<message>.*) \(at (?P<location>[^()]*)\)$", re.DOTALL)


def _split_toml_error(text: str) -> tuple[str, str]:
    """``'Invalid value (at line 3, column 9)'`` -> ``('line 3, column 9', 'invalid value')``."""
    match = _TOML_LOCATION.match(text)
    if match is None:
        return "", text
    message = match["message"]
    return match["location"], message[:1].lower() + message[1:]


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _format_key_path(key_path: KeyPath) -> str:
    """``('venues', 1, 'id')`` -> ``'venues[1].id'``; odd keys are TOML-quoted."""
    text = ""
    for part in key_path:
        if isinstance(part, int):
            text += f"[{part}]"
            continue
        if not _BARE_KEY.match(part):
            part = '"' + part.replace("\\", "\\\\").replace('"', '\\"') + '"'
        text += f".{part}" if text else part
    return text


# ---------------------------------------------------------------------------------------------
# ${VAR} substitution.

_PLACEHOLDER = re.compile(r"\$\$\{|\$\{(?P<body>[^}]*)\}|\$\{")
"""``$${`` (a literal ``${``), a complete ``${...}``, or an unterminated ``${``."""
_PLACEHOLDER_BODY = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?", re.DOTALL)
_WHOLE_PLACEHOLDER = re.compile(r"\$\{[^}]*\}")


def _substitute_tree(
    node: Any, env: Mapping[str, str], key_path: KeyPath, typed_values: list[tuple[KeyPath, str]]
) -> Any:
    """Return ``node`` with every string substituted.

    Strings that were exactly one ``${...}`` are recorded in ``typed_values`` with their
    placeholder text, because they may stand for a number or a boolean.
    """
    if isinstance(node, str):
        value = _substitute(node, env, key_path)
        if _WHOLE_PLACEHOLDER.fullmatch(node):
            typed_values.append((key_path, node))
        return value
    if isinstance(node, dict):
        return {
            key: _substitute_tree(value, env, (*key_path, key), typed_values)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [
            _substitute_tree(item, env, (*key_path, index), typed_values)
            for index, item in enumerate(node)
        ]
    return node


def _substitute(text: str, env: Mapping[str, str], key_path: KeyPath) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` (default when unset or empty) in ``text``."""

    def expand(match: re.Match[str]) -> str:
        if match[0] == "$${":
            return "${"
        body = match["body"]
        if body is None:
            raise _Invalid(key_path, "unterminated '${' (write '$${' for a literal '${')")
        parsed = _PLACEHOLDER_BODY.fullmatch(body)
        if parsed is None:
            raise _Invalid(key_path, f"malformed substitution '${{{body}}}'")
        value = env.get(parsed["name"])
        default = parsed["default"]
        if default is not None and not value:
            return default
        if value is None:
            raise _Invalid(key_path, f"environment variable {parsed['name']} is not set")
        return value

    return _PLACEHOLDER.sub(expand, text)


_SCALAR_TYPES: dict[type[msgspec.inspect.Type], type] = {
    msgspec.inspect.IntType: int,
    msgspec.inspect.FloatType: float,
    msgspec.inspect.BoolType: bool,
}


def _coerce_placeholder(tree: dict[str, Any], key_path: KeyPath, placeholder: str) -> None:
    """Turn the substituted string at ``key_path`` into the int, float or bool its field wants.

    Strings bound for any other field type are left for :func:`msgspec.convert` to judge.
    """
    target = _schema_type_at(key_path)
    if target is None:
        return
    members = target.types if isinstance(target, msgspec.inspect.UnionType) else (target,)
    if any(_is_text_type(member) for member in members):
        return
    scalars = [_SCALAR_TYPES[type(m)] for m in members if type(m) in _SCALAR_TYPES]
    if not scalars:
        return
    *parent_path, last = key_path
    parent = _lookup(tree, tuple(parent_path))
    text = parent[last]
    try:
        parent[last] = msgspec.convert(text, scalars[0], strict=False)
    except msgspec.ValidationError:
        message = f"expected {scalars[0].__name__}, got {text!r} from {placeholder}"
        raise _Invalid(key_path, message) from None


def _is_text_type(schema_type: msgspec.inspect.Type) -> bool:
    return isinstance(
        schema_type,
        msgspec.inspect.StrType | msgspec.inspect.LiteralType | msgspec.inspect.EnumType,
    )


@functools.cache
def _config_schema() -> msgspec.inspect.Type:
    return msgspec.inspect.type_info(Config)


def _schema_type_at(key_path: KeyPath) -> msgspec.inspect.Type | None:
    """The schema type of the value at ``key_path``, or ``None`` where the schema has none."""
    current: msgspec.inspect.Type = _config_schema()
    for part in key_path:
        if isinstance(current, msgspec.inspect.UnionType):
            wanted = (
                msgspec.inspect.ListType if isinstance(part, int) else msgspec.inspect.StructType
            )
            matching = [member for member in current.types if isinstance(member, wanted)]
            if not matching:
                return None
            current = matching[0]
        if isinstance(part, int) and isinstance(current, msgspec.inspect.ListType):
            current = current.item_type
        elif isinstance(part, str) and isinstance(current, msgspec.inspect.StructType):
            fields = {field.encode_name: field.type for field in current.fields}
            if part not in fields:
                return None
            current = fields[part]
        else:
            return None
    return current


_MISSING = object()


def _lookup(tree: Any, key_path: KeyPath) -> Any:
    """The value at ``key_path`` in the parsed tree, or ``_MISSING``."""
    node = tree
    for part in key_path:
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                return _MISSING
        elif not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


# ---------------------------------------------------------------------------------------------
# msgspec errors -> key path and message.

_VALIDATION_ERROR = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
# msgspec writes a table value whose key it does not name as "[...]"; the path then ends
# at the table, and the message says "a value".
_PATH_PART = re.compile(r"\.(?P<key>[^.\[]+)|\[(?P<index>\d+)\]")
_ANY_KEY = "[...]"
_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(?P<key>.*)`$", re.DOTALL)
_MISSING_FIELD = re.compile(r"^Object missing required field `(?P<key>.*)`$", re.DOTALL)
_MSGSPEC_TYPE_NAMES = {"object": "table"}
_OR_NULL = re.compile(r" \| null\b|\bnull \| ")


def _translate_validation_error(text: str, tree: dict[str, Any]) -> _Invalid:
    """Map msgspec's ``<message> - at `$.a[0].b``` onto the user's key path and words."""
    match = _VALIDATION_ERROR.match(text)
    assert match is not None  # the pattern matches any text
    message = match["message"]
    path = match["path"] or ""
    if _ANY_KEY in path:
        path = path[: path.index(_ANY_KEY)]
        message = f"a value: {message[:1].lower()}{message[1:]}"
    key_path: KeyPath = tuple(
        int(part["index"]) if part["index"] is not None else part["key"]
        for part in _PATH_PART.finditer(path)
    )
    if unknown := _UNKNOWN_FIELD.match(message):
        return _Invalid((*key_path, unknown["key"]), "unknown key")
    if missing := _MISSING_FIELD.match(message):
        return _Invalid((*key_path, missing["key"]), "required key is missing")
    value = _lookup(tree, key_path)
    if message.startswith("Invalid enum value"):
        return _Invalid(key_path, f"{_show(value)} is not one of {_allowed_values(key_path)}")
    if message.endswith("of length >= 1"):
        return _Invalid(key_path, "must not be empty")
    message = re.sub(r"`([^`]*)`", lambda quoted: _toml_type_name(quoted[1]), message)
    message = message[:1].lower() + message[1:]
    shows_value = value is not _MISSING and not (key_path and key_path[-1] in _SECRET_FIELDS)
    if message.startswith("expected ") and ", got " not in message and shows_value:
        message += f", got {_show(value)}"
    return _Invalid(key_path, message)


def _toml_type_name(msgspec_name: str) -> str:
    """msgspec's name of a type in TOML words: ``object`` is a table, and TOML has no null."""
    return _MSGSPEC_TYPE_NAMES.get(msgspec_name, _OR_NULL.sub("", msgspec_name))


def _allowed_values(key_path: KeyPath) -> str:
    """The values the enum or literal field at ``key_path`` allows, in declaration order."""
    schema_type = _schema_type_at(key_path)
    if isinstance(schema_type, msgspec.inspect.UnionType):
        schema_type = next((t for t in schema_type.types if _is_text_type(t)), None)
    if isinstance(schema_type, msgspec.inspect.LiteralType):
        values = _declared_literal_values(key_path) or list(schema_type.values)
    elif isinstance(schema_type, msgspec.inspect.EnumType):
        values = [member.value for member in schema_type.cls]
    else:  # unreachable for an enum error in this schema
        return "the allowed values"
    return ", ".join(_show(value) for value in values)


def _declared_literal_values(key_path: KeyPath) -> list[Any]:
    """The ``Literal[...]`` arguments of a struct field as written (``inspect`` sorts them)."""
    parent = _schema_type_at(key_path[:-1])
    if not key_path or not isinstance(parent, msgspec.inspect.StructType):
        return []
    annotations = {f.encode_name: f.type for f in msgspec.structs.fields(parent.cls)}
    pending = [annotations.get(key_path[-1])]
    while pending:
        annotation = pending.pop()
        if get_origin(annotation) is Literal:
            return list(get_args(annotation))
        pending.extend(get_args(annotation))
    return []


def _show(value: Any) -> str:
    """A value as the user would write it in TOML (strings quoted like Python reprs)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    return str(value)


# ---------------------------------------------------------------------------------------------
# Checks across fields, after conversion.

_NATS_URL_SCHEMES = ("nats", "tls", "ws", "wss")
_AUTH_FIELDS: dict[AuthMode, tuple[str, ...]] = {
    "none": (),
    "token": ("token",),
    "user_password": ("user", "password"),
    "nkey": ("nkey_seed_file",),
    "creds": ("creds_file",),
}


def _check_nats(nats: NatsConfig) -> None:
    for index, url in enumerate(nats.urls):
        _check_url(url, _NATS_URL_SCHEMES, ("nats", "urls", index))

    required = _AUTH_FIELDS[nats.auth]
    for mode, fields in _AUTH_FIELDS.items():
        for field in fields:
            value = getattr(nats, field)
            if field in required and not value:
                raise _Invalid(("nats", field), f"required when nats.auth = {nats.auth!r}")
            if field not in required and value is not None:
                message = f"only used with nats.auth = {mode!r}, but nats.auth = {nats.auth!r}"
                raise _Invalid(("nats", field), message)

    tls = nats.tls
    for field in ("ca_file", "cert_file", "key_file"):
        if getattr(tls, field) is not None and not tls.enabled:
            raise _Invalid(("nats", "tls", field), "set, but nats.tls.enabled is false")
    if (tls.cert_file is None) != (tls.key_file is None):
        missing, present = (
            ("key_file", "cert_file") if tls.key_file is None else ("cert_file", "key_file")
        )
        raise _Invalid(("nats", "tls", missing), f"required when nats.tls.{present} is set")

    _check_streams(nats.streams)
    _check_consumers(nats.consumers, nats.streams)


def _check_streams(streams: Sequence[StreamConfig]) -> None:
    first_index: dict[str, int] = {}
    claimed: list[tuple[str, KeyPath, str]] = []  # (subject pattern, its key path, stream)
    for index, stream in enumerate(streams):
        key: KeyPath = ("nats", "streams", index)
        if stream.name in first_index:
            where = _format_key_path(("nats", "streams", first_index[stream.name], "name"))
            raise _Invalid((*key, "name"), f"duplicate stream name {stream.name!r} (see {where})")
        first_index[stream.name] = index
        for field in ("max_bytes", "max_msg_size"):
            _check_limit(getattr(stream, field), (*key, field))
        if stream.max_age_secs and stream.duplicate_window_secs > stream.max_age_secs:
            message = f"must not exceed max_age_secs ({stream.max_age_secs})"
            raise _Invalid((*key, "duplicate_window_secs"), message)
        for subject_index, subject in enumerate(stream.subjects):
            subject_key = (*key, "subjects", subject_index)
            _check_subject(subject, subject_key)
            for other, other_key, other_stream in claimed:
                if _subjects_overlap(subject, other):
                    where = _format_key_path(other_key)
                    message = f"{subject!r} overlaps {other!r} of stream {other_stream} ({where})"
                    raise _Invalid(subject_key, message)
            claimed.append((subject, subject_key, stream.name))


def _check_consumers(consumers: Sequence[ConsumerConfig], streams: Sequence[StreamConfig]) -> None:
    streams_by_name = {stream.name: stream for stream in streams}
    first_index: dict[tuple[str, str], int] = {}
    for index, consumer in enumerate(consumers):
        key: KeyPath = ("nats", "consumers", index)
        stream = streams_by_name.get(consumer.stream)
        if stream is None:
            if streams_by_name:
                known = ", ".join(repr(name) for name in streams_by_name)
                message = f"{consumer.stream!r} is not a configured stream ({known})"
            else:
                message = f"{consumer.stream!r} is not a configured stream (none are configured)"
            raise _Invalid((*key, "stream"), message)
        identity = (consumer.stream, consumer.name)
        if identity in first_index:
            where = _format_key_path(("nats", "consumers", first_index[identity], "name"))
            message = (
                f"duplicate consumer {consumer.name!r} on stream {consumer.stream!r} (see {where})"
            )
            raise _Invalid((*key, "name"), message)
        first_index[identity] = index
        for field in ("max_deliver", "max_ack_pending"):
            _check_limit(getattr(consumer, field), (*key, field))
        if consumer.filter_subject is not None:
            _check_subject(consumer.filter_subject, (*key, "filter_subject"))
            if not any(_subject_within(consumer.filter_subject, s) for s in stream.subjects):
                subjects = ", ".join(stream.subjects)
                message = (
                    f"{consumer.filter_subject!r} is not within the subjects of stream "
                    f"{stream.name} ({subjects})"
                )
                raise _Invalid((*key, "filter_subject"), message)


def _check_limit(value: int, key_path: KeyPath) -> None:
    if value == 0:
        raise _Invalid(key_path, "must be positive, or -1 for unlimited")


def _check_subject(subject: str, key_path: KeyPath) -> None:
    tokens = subject.split(".")
    for position, token in enumerate(tokens):
        bad = (
            not token
            or any(c.isspace() for c in token)
            or (token != "*" and token != ">" and ("*" in token or ">" in token))
            or (token == ">" and position != len(tokens) - 1)
        )
        if bad:
            raise _Invalid(key_path, f"{subject!r} is not a valid NATS subject")


def _subject_matches(pattern: str, subject: str) -> bool:
    """Whether the literal ``subject`` is captured by ``pattern`` (``*`` one token, ``>`` rest)."""
    return _subject_within(subject, pattern)


def _subject_within(inner: str, outer: str) -> bool:
    """Whether every subject ``inner`` matches is also matched by ``outer``."""
    inner_tokens, outer_tokens = inner.split("."), outer.split(".")
    for position, outer_token in enumerate(outer_tokens):
        if outer_token == ">":
            return len(inner_tokens) > position
        if position >= len(inner_tokens):
            return False
        inner_token = inner_tokens[position]
        if inner_token == ">" or (outer_token != "*" and inner_token != outer_token):
            return False
    return len(inner_tokens) == len(outer_tokens)


def _subjects_overlap(first: str, second: str) -> bool:
    """Whether some literal subject matches both patterns."""
    first_tokens, second_tokens = first.split("."), second.split(".")
    for position in range(max(len(first_tokens), len(second_tokens))):
        a = first_tokens[position] if position < len(first_tokens) else None
        b = second_tokens[position] if position < len(second_tokens) else None
        if a is None or b is None:
            return False
        if a == ">" or b == ">":
            return True
        if a != b and a != "*" and b != "*":
            return False
    return True


def _check_url(url: str, schemes: Sequence[str], key_path: KeyPath) -> None:
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. "Invalid IPv6 URL": a config error, not a traceback
        raise _Invalid(key_path, f"{_redact_url(url)!r} is not a valid URL") from None
    if parts.scheme not in schemes or not parts.netloc:
        kinds = ", ".join(f"{scheme}://" for scheme in schemes[:-1]) + f" or {schemes[-1]}://"
        raise _Invalid(key_path, f"{_redact_url(url)!r} is not a {kinds} URL")


def _check_venues(venues: Sequence[VenueConfig]) -> None:
    first_index: dict[str, int] = {}
    for index, venue in enumerate(venues):
        key: KeyPath = ("venues", index)
        if venue.id in first_index:
            where = _format_key_path(("venues", first_index[venue.id], "id"))
            raise _Invalid((*key, "id"), f"duplicate venue id {venue.id!r} (see {where})")
        first_index[venue.id] = index
        adapter = _load_adapter(venue.adapter, (*key, "adapter"))
        if venue.connection.ws_url is not None:
            _check_url(venue.connection.ws_url, ("ws", "wss"), (*key, "connection", "ws_url"))
        if venue.connection.rest_url is not None:
            rest_key = (*key, "connection", "rest_url")
            _check_url(venue.connection.rest_url, ("http", "https"), rest_key)
        if venue.backoff.max_ms < venue.backoff.initial_ms:
            message = f"must be at least initial_ms ({venue.backoff.initial_ms})"
            raise _Invalid((*key, "backoff", "max_ms"), message)
        liveness = venue.liveness
        if liveness.stale_max_secs < liveness.stale_min_secs:
            message = f"must be at least stale_min_secs ({liveness.stale_min_secs:g})"
            raise _Invalid((*key, "liveness", "stale_max_secs"), message)
        for name in venue.credentials:
            if name not in adapter.required_credentials:
                takes = _quoted_list(adapter.required_credentials) or "none"
                message = f"unknown credential for adapter {adapter.name!r} (it takes {takes})"
                raise _Invalid((*key, "credentials", name), message)
        _resolve_subscriptions(venue, adapter, key)


def _load_adapter(name: str, key_path: KeyPath) -> Adapter:
    if name not in adapters.NAMES:
        raise _Invalid(key_path, f"{name!r} is not one of {_quoted_list(adapters.NAMES)}")
    try:
        return adapters.load(name)
    except Exception as exc:  # an adapter module that fails to import is a setup problem
        raise _Invalid(key_path, f"cannot load adapter {name!r}: {exc!r}") from exc


def _quoted_list(items: Sequence[str]) -> str:
    return ", ".join(repr(item) for item in items)


def _resolve_subscriptions(
    venue: VenueConfig, adapter: Adapter, venue_key: KeyPath
) -> list[Subscription]:
    """Merge a venue's subscription entries into one :class:`Subscription` per instrument.

    Raises :class:`_Invalid` (with key paths under ``venue_key``) for a data type the
    adapter does not support, a misplaced ``canonical_symbol``, an instrument without a
    canonical symbol, or two instruments that would publish on the same subjects.
    """
    symbols: dict[str, tuple[str, KeyPath]] = {}  # native -> (canonical, where it was set)
    natives_by_symbol: dict[str, tuple[str, KeyPath]] = {}  # canonical -> (native, where)
    data_types: dict[str, set[DataType]] = {}  # native -> merged data types, in first-seen order
    supported = [data_type for data_type in DataType if data_type in adapter.data_types]
    for entry_index, entry in enumerate(venue.subscriptions):
        entry_key: KeyPath = (*venue_key, "subscriptions", entry_index)
        for type_index, data_type in enumerate(entry.data_types):
            if data_type not in adapter.data_types:
                message = (
                    f"adapter {adapter.name!r} does not support {data_type.value!r} "
                    f"(it supports {_quoted_list([d.value for d in supported])})"
                )
                raise _Invalid((*entry_key, "data_types", type_index), message)
        if entry.canonical_symbol is not None and len(entry.instruments) != 1:
            message = (
                "allowed only when instruments has exactly one entry "
                f"(it has {len(entry.instruments)})"
            )
            raise _Invalid((*entry_key, "canonical_symbol"), message)
        for instrument_index, native in enumerate(entry.instruments):
            instrument_key: KeyPath = (*entry_key, "instruments", instrument_index)
            if entry.canonical_symbol is not None:
                symbol, symbol_key = entry.canonical_symbol, (*entry_key, "canonical_symbol")
            else:
                derived = adapter.canonical_symbol(native)
                if derived is None:
                    message = (
                        f"adapter {adapter.name!r} cannot derive a canonical symbol for "
                        f"{native!r}; set canonical_symbol"
                    )
                    raise _Invalid(instrument_key, message)
                symbol, symbol_key = derived, instrument_key
            if native in symbols and symbols[native][0] != symbol:
                earlier, earlier_key = symbols[native]
                message = (
                    f"{native!r} maps to {symbol!r} here but to {earlier!r} at "
                    f"{_format_key_path(earlier_key)}"
                )
                raise _Invalid(symbol_key, message)
            if symbol in natives_by_symbol and natives_by_symbol[symbol][0] != native:
                other, other_key = natives_by_symbol[symbol]
                message = (
                    f"{native!r} and {other!r} ({_format_key_path(other_key)}) would both "
                    f"publish as {symbol!r}"
                )
                raise _Invalid(instrument_key, message)
            symbols.setdefault(native, (symbol, symbol_key))
            natives_by_symbol.setdefault(symbol, (native, instrument_key))
            data_types.setdefault(native, set()).update(entry.data_types)
    return [
        Subscription(native_symbol=native, symbol=symbols[native][0], data_types=frozenset(types))
        for native, types in data_types.items()
    ]


# ---------------------------------------------------------------------------------------------
# What the runtime needs from a loaded config.


def venue_subscriptions(venue: VenueConfig) -> list[Subscription]:
    """One :class:`~relay.codec.Subscription` per instrument of ``venue``, entries merged.

    Instruments keep the order they first appear in; canonical symbols come from the
    entry's ``canonical_symbol`` or the adapter. Raises :class:`ValueError` for a venue
    :func:`load_config` would have rejected.
    """
    adapter = adapters.load(venue.adapter)
    try:
        return _resolve_subscriptions(venue, adapter, ())
    except _Invalid as exc:
        where = _format_key_path(exc.key_path)
        raise ValueError(f"venue {venue.id!r}: {where}: {exc.message}") from None


def venue_endpoints(venue: VenueConfig) -> Endpoints:
    """The adapter's default endpoints with the venue's ``[venues.connection]`` overrides."""
    defaults = adapters.load(venue.adapter).default_endpoints
    return Endpoints(
        ws_url=venue.connection.ws_url or defaults.ws_url,
        rest_url=venue.connection.rest_url or defaults.rest_url,
    )


def nats_connect_options(nats: NatsConfig) -> dict[str, Any]:
    """Keyword arguments for nats-py 2.x ``nats.connect()``.

    Times are converted to seconds, the credentials of the chosen auth mode are passed
    (``nkeys_seed`` and ``user_credentials`` as file paths, which nats-py reads itself), and
    ``tls`` is an :class:`ssl.SSLContext` when TLS is enabled. Raises :class:`OSError` or
    :class:`ssl.SSLError` when a TLS file cannot be loaded.
    """
    options: dict[str, Any] = {
        "servers": list(nats.urls),
        "connect_timeout": nats.connect_timeout_ms / 1000,
        "reconnect_time_wait": nats.reconnect_time_wait_ms / 1000,
        "max_reconnect_attempts": nats.max_reconnects,
        "ping_interval": nats.ping_interval_secs,
        "pending_size": nats.reconnect_buffer_size,
    }
    match nats.auth:
        case "token":
            options["token"] = nats.token
        case "user_password":
            options["user"] = nats.user
            options["password"] = nats.password
        case "nkey":
            options["nkeys_seed"] = nats.nkey_seed_file
        case "creds":
            options["user_credentials"] = nats.creds_file
    if nats.tls.enabled:
        options["tls"] = _tls_context(nats.tls)
    return options


def _tls_context(tls: TlsConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    if tls.cert_file is not None:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


def plan_text(config: Config) -> str:
    """The resolved plan ``relay check`` prints.

    For each enabled venue: its adapter, endpoints, the URL of every connection its codecs
    open, and the subjects each instrument publishes to with the stream capturing each.
    Then the streams and consumers. A subject no stream captures gets a ``WARNING:`` line at
    the end. Shows the NATS auth mode, never a credential; URLs have user info masked.
    """
    lines: list[str] = []
    uncaptured: list[str] = []

    def route(subject: str) -> str:
        for stream in config.nats.streams:
            if any(_subject_matches(pattern, subject) for pattern in stream.subjects):
                return f"{subject} -> {stream.name}"
        uncaptured.append(subject)
        return f"{subject} -> (no stream)"

    service, nats, http = config.service, config.nats, config.http
    lines.append(
        f"service {service.name}: log {service.log_level} ({service.log_format}), "
        f"shutdown timeout {service.shutdown_timeout_ms} ms"
        + (f", {service.workers} worker processes" if service.workers > 1 else "")
    )
    lines.append(f"http: {http.bind}:{http.port}")
    tls = "on" if nats.tls.enabled else "off"
    lines.append(
        f"nats: {', '.join(_redact_url(url) for url in nats.urls)} (auth {nats.auth}, tls {tls})"
    )
    retries = "/".join(str(delay) for delay in nats.retry_schedule_ms) or "none"
    lines.append(
        f"  publish window {nats.publish_window}, ack timeout {nats.ack_timeout_ms} ms, "
        f"retries after {retries} ms"
    )

    for venue in config.venues:
        lines.append("")
        if not venue.enabled:
            lines.append(f"venue {venue.id}: disabled")
            continue
        adapter = adapters.load(venue.adapter)
        if missing := venue.missing_credentials(adapter):
            lines.append(f"venue {venue.id}: disabled: no credentials ({', '.join(missing)})")
            continue
        endpoints = venue_endpoints(venue)
        subscriptions = venue_subscriptions(venue)
        codecs = adapter.make_codecs(
            venue.id, subscriptions, endpoints, credentials=venue.credentials
        )
        lines.append(f"venue {venue.id}: adapter {adapter.name}")
        if venue.credentials:
            lines.append(f"  credentials: {', '.join(sorted(venue.credentials))} (set, not shown)")
        lines.append(f"  ws endpoint: {_redact_url(endpoints.ws_url)}")
        lines.append(f"  rest endpoint: {_redact_url(endpoints.rest_url)}")
        lines.append(f"  connections ({len(codecs)}):")
        lines.extend(f"    {_redact_url(codec.url)}" for codec in codecs)
        lines.append("  subscriptions:")
        for subscription in subscriptions:
            lines.append(f"    {subscription.native_symbol} as {subscription.symbol}")
            token = symbol_token(subscription.symbol)
            for data_type in DataType:
                if data_type in subscription.data_types:
                    lines.append(f"      {route(f'market.{venue.id}.{token}.{data_type}')}")
        lines.append(f"  status: {route(f'market.{venue.id}._status')}")

    lines.append("")
    lines.append("streams:" if nats.streams else "streams: none configured")
    for stream in nats.streams:
        lines.append(f"  {stream.name}: {', '.join(stream.subjects)}")
        limits = [
            f"storage {stream.storage}",
            f"retention {stream.retention}",
            f"max age {_duration(stream.max_age_secs)}",
            f"max bytes {_size(stream.max_bytes)}",
            f"max msg size {_size(stream.max_msg_size, unlimited='server max_payload')}",
            f"discard {stream.discard}",
            f"replicas {stream.num_replicas}",
            f"duplicate window {_duration(stream.duplicate_window_secs, zero='server default')}",
        ]
        lines.append(f"    {', '.join(limits)}")
    if nats.consumers:
        lines.append("consumers:")
    for consumer in nats.consumers:
        kind = "durable" if consumer.durable else "ephemeral"
        filtered = f", filter {consumer.filter_subject}" if consumer.filter_subject else ""
        lines.append(
            f"  {consumer.stream}/{consumer.name}: {kind}, ack {consumer.ack_policy}, "
            f"deliver {consumer.deliver_policy}{filtered}"
        )

    if uncaptured:
        lines.append("")
    lines.extend(
        f"WARNING: no stream captures {subject}; publishing to it gets no PubAck"
        for subject in uncaptured
    )
    return "\n".join(lines)


_URL_AUTHORITY = re.compile(r"^(?:[^/]*//)?(?P<authority>[^/?#]*)")
"""Where a URL's user info can be: after the first ``//`` (if no ``/`` precedes it), up to
the path. Also for text that is not a URL (``user:pw@host``, ``nats//user:pw@host``)."""


def _redact_url(url: str) -> str:
    """``url`` with any user info (a token, user or password) replaced by ``***``, also
    when ``url`` is malformed (an error message quotes what the user wrote)."""
    match = _URL_AUTHORITY.match(url)
    assert match is not None  # the pattern matches any text
    start, end = match.span("authority")
    at = url.rfind("@", start, end)
    return url if at < 0 else f"{url[:start]}***{url[at:]}"


def _duration(seconds: int, zero: str = "unlimited") -> str:
    """``604800`` -> ``'7d'``; ``zero`` is what a setting of ``0`` means."""
    if seconds == 0:
        return zero
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _size(size: int, unlimited: str = "unlimited") -> str:
    """``10737418240`` -> ``'10 GiB'``; ``unlimited`` is what a setting of ``-1`` means."""
    if size < 0:
        return unlimited
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"
