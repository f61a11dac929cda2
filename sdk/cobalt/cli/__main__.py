"""``python -m cobalt.cli``: the ``cobalt`` command without its console script."""

import sys

from cobalt.cli.entry_point import main

sys.exit(main())
