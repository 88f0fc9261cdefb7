"""``sudo /usr/bin/python3 -m topo.mininet_run ...``: the lab on Mininet.

The command line is ``topo.lab.mininet_cli`` (its documentation lists the options), the
runner ``topo.lab.mininet_backend``. The runner's peer helpers are started as
``python -m topo.mininet_run peer ...`` in the Mininet hosts.
"""

from __future__ import annotations

import sys

from topo.lab.mininet_cli import main

if __name__ == "__main__":
    sys.exit(main())
