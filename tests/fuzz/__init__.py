"""The fuzz suite of the manager TCP API and the game-wallet HTTP API: the workload (``strategies/``)."""
