"""``python -m topo.lab``: the lab's command line (``topo.lab.cli``)."""

import sys

from topo.lab.cli import main

try:
    sys.exit(main())
except BrokenPipeError:  # e.g. `status | head -1`
    sys.exit(1)
