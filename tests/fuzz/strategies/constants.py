"""The fuzz world's secrets and the contract's limits that every part of the workload draws with."""

from __future__ import annotations

# The fuzz servers' own secrets (tests/fuzz/harness/server.py passes them in the Config).
SECRET = "syncledger-fuzz-secret-long-enough-for-hs256-and-hs384!"
WALLET_TOKEN = "provider-shared-token-for-fuzzing"
MAX_ID = 2**63 - 1
MAX_LINE = 64 * 1024
MAX_EXT_ID = 256
U = 1_000_000  # micro-units per unit
MAX_UNITS = 10**12
