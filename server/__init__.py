"""syncledger's servers: manager TCP API, event WebSocket, game-wallet HTTP API, all on Trio."""

from __future__ import annotations


def version() -> str:
    """The installed distribution's version (pyproject.toml's, the one place it is written): what
    ``syncledger --version`` prints and ``syncledger_build_info{version}`` says."""
    import importlib.metadata  # (here: every start of the CLI imports this package, few ask its version)
    try:
        return importlib.metadata.version("syncledger")
    except importlib.metadata.PackageNotFoundError:  # (run from a checkout that was never installed)
        return "unknown"
