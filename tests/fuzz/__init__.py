"""The fuzz suite of the manager TCP API and the game-wallet HTTP API: the workload (``strategies/``), the
oracles (``oracle/``), and what the tests read and compare (``strict``, ``snapshot``, ``connection``)."""
