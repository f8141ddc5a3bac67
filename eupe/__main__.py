"""``python -m eupe``: the ``eupe`` command line."""

import sys

from .cli.main import main

sys.exit(main())
