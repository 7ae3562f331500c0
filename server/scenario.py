"""``python -m syncledger.server.scenario --seeds 0-99``: the seeded scenario runner of the testing toolkit
(syncledger.server.testing.scenario), at the path the README has always given."""

from .testing.scenario import ScenarioResult, main, run, run_scenario  # noqa: F401

if __name__ == "__main__":
    raise SystemExit(main())
