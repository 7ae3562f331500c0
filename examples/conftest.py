"""This repository's suite collects examples/ (pyproject's testpaths) in pytest-trio's trio_mode, where an asyncio
test would be run by Trio: tests/server/testing/test_process.py runs the asyncio example as an integrator's project
runs it instead, under pytest-asyncio and without pytest-trio. (Your project needs no such file.)"""

collect_ignore = ["test_server_process_asyncio.py"]
