"""``python -m syncledger``: the ``syncledger`` command."""

import sys

from syncledger.server.cli import main

sys.exit(main())
