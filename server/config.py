"""One definition of every option: the Config a server runs with. A field that ``syncledger serve`` takes as a flag
(and as an environment variable ``SYNCLEDGER_<OPTION>``, and a ``--config`` TOML file as a key) carries its
Option: help, how its text is read, its TOML type; the CLI's options (server/cli.py) and the TOML loader are
built from them, so a default is written once, here. Relative paths in a config file are resolved against the
file's folder. Every number is checked in its range, whichever of the three gives it."""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from typing import Any, Callable, NamedTuple

from syncledger.ledger import engine


class ConfigError(Exception):
    """A config file that cannot be used (one line, exit 2)."""


@dataclass(frozen=True)
class Option:
    """How a Config field is given on the command line and in a config file. ``parse``: its text (a flag's, or a
    TOML value's) to the field's value, ValueError saying what it wants; ``text``: the value back as it is
    given (for ``config show``); ``kind``: the TOML type it takes."""

    help: str
    parse: Callable[[str], Any] | None = None  # None: the text itself (a string), or a flag with no value (bool)
    text: Callable[[Any], Any] = lambda value: value
    kind: str = "string"  # string | integer | number | boolean
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    flag: str | None = None  # (when it is not the field's name)
    path: bool = False  # a path: a config file's is relative to the file's folder

    def name(self, f: Any) -> str:
        return self.flag or f.name.replace("_", "-")

    def envvar(self, f: Any) -> str:
        """The environment variable that gives it: ``SYNCLEDGER_`` and its name (``SYNCLEDGER_TCP_PORT``)."""
        return "SYNCLEDGER_" + self.name(f).upper().replace("-", "_")


def _option(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"option": Option(help, **kw)})


def int_in(low: int, high: int, what: str) -> Callable[[str], int]:
    """A parse: ``what``, an integer from ``low`` to ``high``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise ValueError(f"{what} from {low} to {high}")
        return value
    return parse


_port = int_in(0, 65535, "a port (0: a free one)")
_admin_port = int_in(-1, 65535, "a port (0: a free one; -1: none)")


INT_MAX = 2**31 - 1  # the largest count, rate or time an option takes (PostgreSQL's integer settings' too)
_positive = int_in(1, INT_MAX, "an integer")


def _rate(text: str) -> float | None:
    """A number a second, 0 for no limit (None)."""
    return float(int_in(0, INT_MAX, "a number a second (0: no limit)")(text)) or None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value <= INT_MAX):
        raise ValueError(f"a number of seconds greater than 0, at most {INT_MAX}")
    return value


def _currency(text: str) -> str:
    if len(text) != 3 or not text.isascii() or not text.isupper() or not text.isalpha():
        raise ValueError("a three-letter ISO 4217 code such as USD")
    return text


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip().lower() for name in text.split(",") if name.strip())


def _no_limit(value: float | None) -> int:
    return 0 if value is None else int(value)


# ---- game providers (server/ops/providers.py keeps them in the ledger; a config file may declare more)

PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
SETTLEMENTS = ("gamewise", "mixed")


def provider_name(text: str) -> str:
    if not PROVIDER_NAME.fullmatch(text):
        raise ValueError("a provider's name: 1 to 32 of a-z, 0-9, _ and -, starting with a letter or digit")
    return text


def currencies(text: str) -> tuple[str, ...]:
    """``EUR,USD`` (spaces allowed, each code once, in the order given); empty: any currency."""
    codes: list[str] = []
    for code in (c.strip() for c in text.split(",")):
        if code and code not in codes:
            codes.append(_currency(code))
    if not codes and text.strip():
        raise ValueError("three-letter ISO 4217 codes such as EUR,USD")
    return tuple(codes)


@dataclass(frozen=True)
class ProviderConfig:
    """A game provider declared in the config file (``[providers.NAME]``): kept in memory, never written to the
    ledger; its token is read from the environment variable ``token_env`` when the server starts."""

    name: str
    token_env: str
    settlement: str = "gamewise"
    currencies: tuple[str, ...] = ()  # empty: any
    promo: bool = False


@dataclass
class Config:
    db: str = _option("syncledger.db", "the ledger: an SQLite file or a postgresql:// URL", path=True,
                      metavar="PATH|URL")
    host: str = _option("127.0.0.1", "the address of the manager, WebSocket and wallet listeners",
                        metavar="ADDRESS")
    tcp_port: int = _option(7400, "the manager TCP API's port", parse=_port, kind="integer",
                            metavar="PORT")
    ws_port: int = _option(7401, "the event WebSocket's port", parse=_port, kind="integer", metavar="PORT")
    wallet_port: int = _option(7402, "the game-wallet HTTP API's port", parse=_port, kind="integer",
                               metavar="PORT")
    sync_timeout_ms: int = _option(5000, "milliseconds a …Sync request waits for its event", parse=_positive,
                                   kind="integer", metavar="MS")
    admin_port: int | None = _option(7403, "health (/healthz, /readyz) and metrics (/metrics); -1: none",
                                     parse=lambda text: None if _admin_port(text) < 0 else int(text),
                                     text=lambda port: -1 if port is None else port, kind="integer",
                                     metavar="PORT")
    admin_host: str = _option("127.0.0.1", "the admin listener's address", metavar="ADDRESS")
    admin_names: tuple[str, ...] = _option((), "comma-separated host names the admin listener is reached by (a "
                                           "proxy's, a DNS name): it answers only requests whose Host is its own "
                                           "address or one of these (421 otherwise)", parse=_names,
                                           text=",".join, metavar="NAMES")
    tls_cert: str | None = _option(None, "PEM certificate chain: TLS on every listener", metavar="PATH", path=True)
    tls_key: str | None = _option(None, "its private key", metavar="PATH", path=True)
    game_session_ttl: int = _option(1800, "idle time after which a game session (sid) expires and is forgotten",
                                    parse=_positive, kind="integer", metavar="SECONDS")
    log_format: str = _option("text", "the log's lines: text, or one JSON object a line", choices=("text", "json"))
    log_level: str = _option("info", "the least severe lines logged (the writer process's too)",
                             choices=("debug", "info", "warning", "error", "critical"))
    writer: str = _option("process", "where batches are applied: a process of its own (the server then uses a "
                          "second core) or a thread of the server (one process; see README, Benchmarks)",
                          choices=("process", "thread"))
    cluster: bool = _option(False, "one node of several serving one PostgreSQL ledger (each node takes its own "
                            "clients)", kind="boolean")
    idle_timeout: float = _option(60.0, "close a connection that has not presented a valid token this long after its "
                                  "first byte", parse=_seconds, kind="number", metavar="SECONDS")
    silent_timeout: float = _option(3600.0, "close a manager connection that has sent nothing at all after this long "
                                    "(the SDKs connect long before their first request)", parse=_seconds,
                                    kind="number", metavar="SECONDS")
    max_connections: int | None = _option(None, "connections per listener (default: sized to the open-file limit, "
                                          "which serve raises to its hard limit)", parse=_positive, kind="integer",
                                          metavar="N")
    admin_max_connections: int = _option(64, "connections to the admin listener (at most --max-connections)",
                                         parse=_positive, kind="integer", metavar="N")
    max_connect_rate: float | None = _option(200.0, "new connections a second from one address on each listener, "
                                             "after a first 1,000 (0: no limit, e.g. behind a proxy that keeps "
                                             "its connections open)", parse=_rate, text=_no_limit,
                                             kind="integer", metavar="N")
    tls_handshake_rate: float | None = _option(100.0, "with TLS, new connections a second on each listener, after a "
                                               "first 100 at once; the rest wait for their turn (0: no limit)",
                                               parse=_rate, text=_no_limit, kind="integer", metavar="N",
                                               flag="max-handshake-rate")
    max_subscribers_per_login: int = _option(16, "trade:event subscribers (TCP and WebSocket together) of one "
                                             "manager login, whatever tokens it holds",
                                             parse=_positive, kind="integer", metavar="N")
    max_subscribers_per_address: int = _option(64, "trade:event subscribers from one address",
                                               parse=_positive, kind="integer", metavar="N")
    replay_stall: float = _option(30.0, "drop a replaying subscriber that takes nothing for this long (it resumes "
                                  "with from_seq)", parse=_seconds, kind="number", metavar="SECONDS")
    default_currency: str = _option("USD", "currency of an account AddUser creates without one", parse=_currency,
                                    metavar="CODE")
    wallet_test_endpoints: bool = _option(False, "serve POST /v1/sid (a fresh sid for an account) for a provider's "
                                          "test suite; never in production", kind="boolean")
    batch_max: int = 1024  # commands per group commit at most
    inbox_size: int = 8192  # queued commands before submitters wait
    outbox_size: int = 16384  # unsent messages per connection before it is dropped as too slow
    outbox_bytes: int = 16 << 20  # unsent bytes per connection, likewise (an answer over half of it is refused)
    max_inflight: int = 8192  # unanswered requests per connection before 429
    tls_handshakes: int = 2  # TLS handshake steps that take their CPU at once, per listener
    tls_handshake_timeout: float = 10.0  # seconds from a connection's admission to the end of its TLS handshake
    shutdown_grace: float = 10.0
    read_timeout: float = 10.0  # seconds a read of the ledger may take before it is answered 503
    stall_after: float = 5.0  # seconds a read or a batch may take before /readyz names it
    threaded: bool = True  # False: SQLite runs on the Trio thread (deterministic MockClock tests)
    epoch: float | None = None  # wall time at trio.current_time() == 0; None: the real clock
    secret: str | None = None  # token secret; None: SYNCLEDGER_SECRET or the one kept in the database
    wallet_token: str | None = None  # the default provider's token; None: SYNCLEDGER_WALLET_TOKEN (unset: none)
    providers: tuple[ProviderConfig, ...] = ()  # the config file's [providers.NAME] tables


OPTIONS = [(f, f.metadata["option"]) for f in fields(Config) if "option" in f.metadata]


class Ports(NamedTuple):
    tcp: int
    ws: int
    wallet: int
    admin: int | None = None


_TOML = {"string": ((str,), "a string"), "integer": ((int,), "an integer"), "number": ((int, float), "a number"),
         "boolean": ((bool,), "true or false")}
_TOML_NAMES = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array",
               dict: "a table"}


def from_toml(path: str) -> dict[str, Any]:
    """The options in the TOML file at ``path`` (``tcp-port = 7400`` or ``tcp_port = 7400``) as Config values,
    each checked as its flag is; relative paths resolved against the file's folder."""
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from None
    known = {o.name(f).replace("-", "_"): (f, o) for f, o in OPTIONS}
    found: dict[str, Any] = {}
    for key, value in values.items():
        if key == "providers":
            found["providers"] = _providers(path, value)
            continue
        if key.replace("-", "_") not in known:
            raise ConfigError(f"{path}: unknown option {key} (see syncledger serve --help)")
        f, option = known[key.replace("-", "_")]
        kinds, wanted = _TOML[option.kind]
        if not isinstance(value, kinds) or isinstance(value, bool) != (option.kind == "boolean"):
            raise ConfigError(f"{path}: {key} = {value!s}: wants {wanted}, not "
                              f"{_TOML_NAMES.get(type(value), type(value).__name__)}")
        try:
            if option.parse is not None:
                value = option.parse(str(value))
            if option.choices is not None and value not in option.choices:
                raise ValueError(f"one of {', '.join(option.choices)}")
        except ValueError as e:
            raise ConfigError(f"{path}: {key} = {value!s}: {e}") from None
        if option.path and not _url_or_memory(value):
            value = os.path.join(os.path.dirname(os.path.abspath(path)), value)
        found[f.name] = value
    return found


_PROVIDER_KEYS = {"token_env": "string", "settlement": "string", "currencies": "string", "promo": "boolean"}


def _providers(path: str, value: Any) -> tuple[ProviderConfig, ...]:
    """``[providers.NAME]`` tables: ``token_env`` (required), ``settlement``, ``currencies``, ``promo``."""
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: providers wants tables [providers.NAME], not "
                          f"{_TOML_NAMES.get(type(value), type(value).__name__)}")
    found = []
    for name, table in value.items():
        where = f"{path}: [providers.{name}]"
        try:
            provider_name(name)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
        if not isinstance(table, dict):
            raise ConfigError(f"{where} wants a table, not {_TOML_NAMES.get(type(table), type(table).__name__)}")
        given: dict[str, Any] = {}
        for key, item in table.items():
            k = key.replace("-", "_")
            if k not in _PROVIDER_KEYS:
                raise ConfigError(f"{where}: unknown key {key} (token_env, settlement, currencies, promo)")
            kinds, wanted = _TOML[_PROVIDER_KEYS[k]]
            if k == "currencies" and isinstance(item, list) and all(isinstance(c, str) for c in item):
                item = ",".join(item)  # (an array of codes, or one string "EUR,USD")
            if not isinstance(item, kinds) or isinstance(item, bool) != (_PROVIDER_KEYS[k] == "boolean"):
                raise ConfigError(f"{where}: {key} = {item!s}: wants {wanted}, not "
                                  f"{_TOML_NAMES.get(type(item), type(item).__name__)}")
            given[k] = item
        if not given.get("token_env"):
            raise ConfigError(f"{where}: token_env names the environment variable that holds its token")
        if given.setdefault("settlement", "gamewise") not in SETTLEMENTS:
            raise ConfigError(f"{where}: settlement = {given['settlement']}: one of {', '.join(SETTLEMENTS)}")
        try:
            given["currencies"] = currencies(given.get("currencies", ""))
        except ValueError as e:
            raise ConfigError(f"{where}: currencies = {table.get('currencies')!s}: {e}") from None
        found.append(ProviderConfig(name, **given))
    return tuple(found)


def _url_or_memory(value: str) -> bool:
    return value == ":memory:" or engine.is_postgres(value) or os.path.isabs(value)
