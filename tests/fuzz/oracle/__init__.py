"""The oracles: independent models of the manager contract (``manager``) and of the game-wallet contract
(``wallet``), which predict each answer and ledger change from the state before it (TigerBeetle's auditor)."""
