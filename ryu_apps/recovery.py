"""A switch's entries are known: the core restores its state, or reconciles it.

On the first connection after the controller started, the core restores the store's
records against the switch's entries (:meth:`~alg.engine.Gateway.restore`); on a later
one (the switch restarted, or reconnected) it reconciles its state with the entries
the switch still has (:meth:`~alg.engine.Gateway.reconcile`). Either way nothing of the
switch's is deleted first.
"""

from __future__ import annotations

import logging

from alg.engine import Gateway, Installed
from alg.errors import StoreError
from alg.events import Output
from alg.snapshot import Snapshot
from ryu_apps.effects import Effects

LOG = logging.getLogger("pptp_alg.gateway")


def recover(core: Gateway, effects: Effects, installed: Installed, restored: bool,
            now: float) -> Output:
    """The core's output for a switch whose entries of ours are ``installed``.

    Args:
        restored: the core was restored already (this is a reconnection).
    """
    if restored:
        effects.counters.reconciliations += 1
        return core.reconcile(installed)
    snapshot = Snapshot()
    if effects.store is not None:
        try:
            snapshot = effects.store.load()
        except StoreError as exc:
            effects.store_unreadable(exc)
    effects.counters.restores += 1
    output = core.restore(snapshot, installed, now)
    LOG.info("restored %d sessions, %d control connections, %d calls (from %s); %d of the "
             "switch's entries are the gateway's", len(core.nat), len(core.connections()),
             len(list(core.calls())),
             effects.store.loaded_from if effects.store is not None else "no store",
             sum(installed.values()))
    return output
