"""syncledger: a single-node wallet-ledger server. Its two packages are ``syncledger.ledger`` (the
append-only ledger on SQLite or PostgreSQL, no I/O beyond it) and ``syncledger.server`` (the Trio servers
and the CLI)."""
