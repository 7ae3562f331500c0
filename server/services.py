"""What an adapter (the manager API, the wallet, the event stream, the admin listener) may ask of the server:
the Services Protocol, which app.Server satisfies. The adapters are typed against it, never against Server, so
that they depend on the core and the shared leaves alone."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:
    from syncledger.ledger import Store

    from .auth import Claims, LoginThrottle, ManagerKeys, ProviderKeys, Tokens
    from .config import Config, Ports
    from .core.broker import Broker
    from .core.mainloop import MainLoop
    from .core.timeouts import Timeouts
    from .limits import Gate
    from .logs import LineBudget
    from .metrics import Metrics


class Services(Protocol):
    config: Config
    tokens: Tokens
    keys: ManagerKeys
    providers: ProviderKeys  # which game provider a wallet call's token is
    throttle: LoginThrottle
    metrics: Metrics
    broker: Broker
    mainloop: MainLoop
    timeouts: Timeouts
    store: Store
    ports: Ports | None
    connection_lines: LineBudget  # "opened"/"closed" lines a second, in all
    gates: dict[str, Gate]  # each listener's, by name (its refusals are counted there)
    stopping: bool

    async def authorize(self, claims: Claims) -> None:
        """Refuse a revoked token (AuthError)."""

    async def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(connection, *args)``, a function of ledger.reads, on committed state."""

    async def newest_seq(self, wanted: int) -> int:
        """The newest event published (a node of a cluster first catches up to ``wanted``)."""

    async def offload(self, fn: Callable[..., Any], *args: Any) -> Any:
        """CPU-heavy work (password hashing) off the event loop."""

    def now(self) -> int:
        """Wall time, whole seconds, on the server's clock (Trio's: MockClock in tests)."""

    def wall_time(self) -> float:
        """Wall time on the server's clock."""
