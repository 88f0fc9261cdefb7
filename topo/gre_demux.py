"""The GRE demultiplexer's port on a bridge, for the lab and the tests: ``demux.attach``
(the ``pptp-alg-demux`` command), whose functions this module names.

``python -m topo.gre_demux attach|detach ...`` is ``pptp-alg-demux attach|detach ...``.
"""

from __future__ import annotations

import sys

from demux.attach import attach, detach, main, peer_name, start_program, stop_program

__all__ = ["attach", "detach", "main", "peer_name", "start_program", "stop_program"]

if __name__ == "__main__":
    sys.exit(main())
