"""Authentication: managers (salted scrypt password hashes, HS256 session tokens with PyJWT, claims cached, key
versions) and game providers (their tokens, known by their SHA-256)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable, Hashable

import jwt

from syncledger.ledger import engine

log = logging.getLogger("syncledger.admin")  # (the key file's lines: their logger's name of old)
wallet_log = logging.getLogger("syncledger.wallet")

SESSION_USER, SESSION_MANAGER, SESSION_DEALER, SESSION_ADMIN = 0, 1, 2, 3
SESSIONS = {"USER": SESSION_USER, "MANAGER": SESSION_MANAGER, "DEALER": SESSION_DEALER, "ADMIN": SESSION_ADMIN}
FINANCE_SESSIONS = frozenset({SESSION_MANAGER, SESSION_DEALER, SESSION_ADMIN})

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    """A salted scrypt hash, self-describing: ``scrypt$n$r$p$salt$hash`` (base64)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    """Constant-time check of ``password`` against a :func:`hash_password` string (slow on purpose)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


class AuthError(Exception):
    """401: a missing, malformed, forged or expired token."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True, slots=True)
class Claims:
    login: int
    session: int
    exp: int
    kv: int = 1  # the manager's key version when the token was issued (tokens from before it existed: 1)


class Tokens:
    """Issues and verifies HS256 tokens; a verified token's claims are cached until it expires."""

    def __init__(self, secret: str, *, ttl: int = 24 * 3600, clock: Callable[[], float] = time.time,
                 cache_size: int = 10_000):
        self._secret, self.ttl, self._clock, self._cache_size = secret, ttl, clock, cache_size
        self._cache: dict[str, Claims] = {}

    def issue(self, login: int, session: int, ttl: int | None = None, kv: int = 1) -> tuple[str, int]:
        exp = int(self._clock()) + (self.ttl if ttl is None else ttl)
        token = jwt.encode({"sub": str(login), "session": session, "exp": exp, "kv": kv}, self._secret,
                           algorithm="HS256")
        return token, exp

    def verify(self, token: object) -> Claims:
        if not isinstance(token, str) or not token:
            raise AuthError("UNAUTHORIZED", "__token is required")
        claims = self._cache.get(token)
        if claims is None:
            claims = self._decode(token)
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[token] = claims
        if claims.exp <= self._clock():
            self._cache.pop(token, None)
            raise AuthError("TOKEN_EXPIRED", "token has expired")
        return claims

    def _decode(self, token: str) -> Claims:
        try:
            # Expiry is checked by verify() against the server's clock (which tests may mock).
            raw = jwt.decode(token, self._secret, algorithms=["HS256"],
                             options={"require": ["sub", "exp"], "verify_exp": False})
        except jwt.InvalidTokenError as e:
            raise AuthError("INVALID_TOKEN", f"invalid token: {e}") from None
        try:
            login, session, exp, kv = int(raw["sub"]), raw["session"], raw["exp"], raw.get("kv", 1)
        except (KeyError, TypeError, ValueError):
            raise AuthError("INVALID_TOKEN", "invalid token claims") from None
        if type(session) is not int or session not in SESSIONS.values() or type(exp) is not int or type(kv) is not int:
            raise AuthError("INVALID_TOKEN", "invalid token claims")
        return Claims(login, session, exp, kv)


class ManagerKeys:
    """The key version of every manager, so that a token of a removed or re-added manager (or of one that
    never existed) is refused at once, across restarts. Cached, and read again by the server (off the event
    loop, see ``Server.authorize``) when :meth:`due`: at most every ``every`` seconds, never two reads at once,
    so the hot path stays one dict lookup."""

    def __init__(self, versions: dict[int, int], clock: Callable[[], float], every: float = 0.25):
        self.versions, self._clock, self._every = versions, clock, every
        self._next = clock() + every
        self.reading = False  # a read of the versions is under way (perhaps stalled: its callers did not wait)

    def due(self, claims: Claims) -> bool:
        """Should the versions be read again before ``claims`` is checked? (USER tokens, whose sessions can do
        nothing but Ping, are not looked up.)"""
        if claims.session == SESSION_USER or self.reading:
            return False
        now = self._clock()
        if now < self._next:
            return False
        self._next = now + self._every
        return True

    def check(self, claims: Claims) -> None:
        """Refuse a manager's token whose key version is not the manager's now."""
        if claims.session != SESSION_USER and self.versions.get(claims.login) != claims.kv:
            raise AuthError("TOKEN_REVOKED", "this token was revoked (its manager was removed or changed): log in "
                                             "again")


def token_hash(token: str | bytes) -> str:
    """How a provider's token is stored (``providers.token_hash``): the hex SHA-256 of its bytes."""
    return hashlib.sha256(token.encode() if isinstance(token, str) else token).hexdigest()


@dataclass(frozen=True, slots=True)
class Provider:
    """A game provider as the wallet knows it: who a call comes from, and that provider's settings."""

    name: str
    settlement: str = "gamewise"
    currencies: frozenset[str] = frozenset()  # empty: any
    promo: bool = False

    def takes(self, currency: str | None) -> bool:
        return not self.currencies or currency is None or currency in self.currencies


class ProviderKeys:
    """Which provider a token is: a map of the tokens' SHA-256 digests to providers, made from the providers
    table (each row's stored token, and for ``default`` the token of SYNCLEDGER_WALLET_TOKEN) and the config
    file's providers. A call's lookup is one digest and one dict lookup; the server reads the table again off
    the event loop (``Server._watch_providers``) every ``every`` seconds, sooner after a miss (:meth:`missed`), and
    puts the new map in place at once (:meth:`load`).

    ``fixed``: name -> token given to the server itself (the default provider's, the config file's); the
    config file's providers also bring their settings (``configured``), the default one takes its row's."""

    def __init__(self, fixed: dict[str, str], configured: dict[str, Provider], clock: Callable[[], float],
                 every: float = 0.5):
        self.fixed = {name: hashlib.sha256(token.encode()).digest() for name, token in fixed.items()}
        self.configured, self._clock, self.every = configured, clock, every
        self.by_digest: dict[bytes, Provider] = {}
        self.ignored: frozenset[str] = frozenset()  # rows of the table named as a config file's provider
        self.loaded = -math.inf  # when the map was last made
        self.wake: Callable[[], None] | None = None  # set by the server: read the table again soon

    def load(self, rows: list[tuple]) -> None:
        """The map from the table's rows ``(name, token_hash, settlement, currencies, promo, removed)``."""
        by_digest: dict[bytes, Provider] = {}
        named = set()
        for name, stored, settlement, currencies, promo, removed in rows:
            named.add(name)
            if removed or name in self.configured:
                continue
            provider = Provider(name, settlement, frozenset(c for c in currencies.split(",") if c), bool(promo))
            if stored:
                by_digest[bytes.fromhex(stored)] = provider
            if name in self.fixed:
                by_digest[self.fixed[name]] = provider
        if "default" in self.fixed and "default" not in named:  # (a ledger with no row for it: its defaults)
            by_digest[self.fixed["default"]] = Provider("default")
        for name, provider in self.configured.items():
            by_digest[self.fixed[name]] = provider
        ignored = frozenset(named & set(self.configured))
        if ignored != self.ignored and ignored:
            wallet_log.error("providers %s are in the config file and in the ledger's providers table: the table's rows "
                      "are not used (remove them, or the provider from the config file)", ", ".join(sorted(ignored)))
        self.by_digest, self.ignored, self.loaded = by_digest, ignored, self._clock()

    def find(self, tokens: list[bytes]) -> Provider | None:
        """The provider the tokens a call carries name (any that matches; None if none does, or if they name
        two providers)."""
        found = None
        for token in tokens:
            provider = self.by_digest.get(hashlib.sha256(token).digest())
            if provider is not None:
                if found is not None and found.name != provider.name:
                    return None
                found = provider
        if found is None and tokens:
            self.missed()
        return found

    def missed(self) -> None:
        """A token no provider has: perhaps one added since the map was made; read the table again soon (the
        server reads it at most every ``every`` / 2 seconds however many come)."""
        if self.wake is not None:
            self.wake()


class LoginThrottle:
    """Failed logins by (address, login) and by address: after ``free`` failures of one login from an address
    (or ``spray`` failures of any logins from it) the next try waits, twice as long after each further failure
    (at most ``longest`` seconds); forgotten ``window`` seconds after the last failure. One login's failures
    count against its address only up to ``free``, so they never lock out another login. Pure bookkeeping on
    the caller's clock (no I/O)."""

    def __init__(self, clock: Callable[[], float], *, free: int = 5, spray: int = 50, longest: float = 300.0,
                 window: float = 900.0, size: int = 100_000):
        self._clock, self.free, self.spray, self.longest = clock, free, spray, longest
        self.window, self.size = window, size
        self._failures: dict[Hashable, tuple[int, float]] = {}  # key -> (failures, time of the last)

    def wait(self, key: Hashable, free: int | None = None) -> float:
        """Seconds ``key`` (an address, or an (address, login) pair) must still wait before it may try again
        (0: it may now), once it has failed more than ``free`` (default: the throttle's) times."""
        entry = self._failures.get(key)
        if entry is None:
            return 0.0
        failures, last = entry
        now = self._clock()
        if now - last > self.window:
            del self._failures[key]
            return 0.0
        free = self.free if free is None else free
        if failures < free:
            return 0.0
        return max(0.0, last + min(2.0 ** (failures - free), self.longest) - now)

    def attempt(self, address: str, login: int) -> float:
        """Begin a login to ``login`` from ``address``: the seconds it must still wait (nothing recorded), or 0
        and the attempt counted as a failure until ``succeeded`` says otherwise, so that many concurrent tries
        cannot all pass before the first of them fails."""
        pair = (address, login)
        wait = max(self.wait(pair), self.wait(address, self.spray))
        if wait == 0.0:
            if self._failures.get(pair, (0, 0.0))[0] < self.free:
                self.failed(address)
            self.failed(pair)
        return wait

    def failed(self, key: Hashable) -> None:
        now = self._clock()
        if len(self._failures) >= self.size and key not in self._failures:  # bounded: forget the oldest
            for old in [a for a, (_, t) in self._failures.items() if now - t > self.window] or \
                    [min(self._failures, key=lambda a: self._failures[a][1])]:
                del self._failures[old]
        failures, _ = self._failures.get(key, (0, now))
        self._failures[key] = (failures + 1, now)

    def succeeded(self, address: str, login: int) -> None:
        """A login that passed: its own failures are forgotten (the address's stay, against a spray)."""
        self._failures.pop((address, login), None)


# ---- the token secret's key file

class SecretExposed(Exception):
    """The token-signing key file can be read by other users: anyone of them could mint an ADMIN token."""


class SecretMissing(Exception):
    """A PostgreSQL ledger has no file to keep a secret beside: SYNCLEDGER_SECRET must be set."""


def key_path(db_path: str) -> str:
    """Where the token-signing secret of a ledger is kept: beside it, mode 0600."""
    return os.path.realpath(db_path) + ".key"


def load_secret(db_path: str, db: Any) -> str:
    """``SYNCLEDGER_SECRET`` if set; else the key file beside the ledger (made on first use, 0600, and
    refused if others can read it); a secret that an earlier release kept in the database is moved there
    once. An in-memory ledger gets a secret for this process only; a PostgreSQL ledger needs the variable
    (every node of it signs with the same secret, and the database is no place for it)."""
    secret = os.environ.get("SYNCLEDGER_SECRET")
    if secret:
        return secret
    if db_path == ":memory:":
        return secrets.token_hex(32)
    if engine.is_postgres(db_path):
        raise SecretMissing("a PostgreSQL ledger signs tokens with SYNCLEDGER_SECRET: set it (the same on every "
                            "node), e.g. to the output of: openssl rand -hex 32")
    path = key_path(db_path)
    row = db.execute("SELECT value FROM meta WHERE key = 'secret'").fetchone()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write((row[0] if row else secrets.token_hex(32)) + "\n")
            f.flush()
            os.fsync(f.fileno())
    mode = os.stat(path).st_mode
    if mode & 0o077:
        raise SecretExposed(f"{path} holds the token secret but others may read it (mode {mode & 0o777:o}): "
                            f"chmod 600 {path}")
    with open(path) as f:
        secret = f.read().strip()
    if row is not None:  # moved out of the database (which any reader of the file could see)
        # secure_delete overwrites the row's bytes in its page (SQLite's own default leaves them in the free
        # space); the checkpoint then writes that page over the old one in the file and empties the -wal, which
        # may hold other copies of it.
        was = db.execute("PRAGMA secure_delete").fetchone()[0]
        db.execute("PRAGMA secure_delete = ON")
        db.execute("DELETE FROM meta WHERE key = 'secret'")
        db.execute(f"PRAGMA secure_delete = {was}")
        busy, logged, moved = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy or logged != moved:
            log.warning("the token secret moved out of %s may still be read in its -wal until its next checkpoint "
                        "(another process has the ledger open)", db_path)
    return secret
