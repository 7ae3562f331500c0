"""syncledger's servers: manager TCP API, event WebSocket, game-wallet HTTP API, all on Trio."""

from __future__ import annotations

import importlib.metadata


def version() -> str:
    """The installed distribution's version (pyproject.toml's, the one place it is written): what
    ``syncledger --version`` prints and ``syncledger_build_info{version}`` says."""
    try:
        return importlib.metadata.version("syncledger")
    except importlib.metadata.PackageNotFoundError:  # (run from a checkout that was never installed)
        return "unknown"
