"""The harness: the fuzz server and the run's settings (``server``), and for each API the seeded world and
the loop that sends each input, asks the oracle and checks the answer and the ledger (``manager``,
``wallet``)."""
