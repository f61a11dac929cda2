"""``python -m cobalt_executors.agent``: the agent, as executors start it."""

import sys

from cobalt_executors.agent._cli import main

sys.exit(main())
