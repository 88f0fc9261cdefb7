"""Which store a gateway's records go to, and how a gateway is made with it: a SQLite
file (``state_file``, one controller), or etcd (``store = etcd``), whose gateways take
their switch over only once elected (``ryu_apps.mastership``)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

from alg.config import GatewayConfig
from alg.errors import StoreError
from ryu_apps.etcd_election import ElectionKey
from ryu_apps.etcd_store import EtcdStore
from ryu_apps.store import Store
from ryu_apps.unit import GatewayUnit
from ryu_apps.warm_copy import WarmCopy

ELECTION_REQUEST_TIMEOUT = 0.5
"""Seconds one request of the election may take on one member."""
ELECTION_DEADLINE = 1.0
"""Seconds one request of the election may take over every member: a keep-alive that
takes longer is answered too late for a lease of three keep-alive intervals."""


def controller_id(config: GatewayConfig) -> str:
    """This process's name among the controllers: ``controller_id``, else the host's
    name and the process's ID."""
    return config.controller_id or f"{socket.gethostname()}-{os.getpid()}"


def gateway_unit(name: str, config: GatewayConfig, section: str, now: Callable[[], float],
                 end: Callable[[int, str], None]) -> GatewayUnit:
    """A gateway with the store its configuration names.

    Raises:
        StoreError: naming ``<section>.state_file``, the SQLite file cannot be used.
    """
    if config.store == "etcd":
        store = EtcdStore(config.etcd_endpoints, config.etcd_cluster, name)
        key = ElectionKey(EtcdStore(config.etcd_endpoints, config.etcd_cluster, name,
                                    request_timeout=ELECTION_REQUEST_TIMEOUT,
                                    deadline=ELECTION_DEADLINE),
                          config.etcd_cluster, name, controller_id(config))
        unit = GatewayUnit(name, config, store, now, key, end)
        assert unit.mastership is not None
        store.guard = unit.mastership.guard
        store.warm = unit.warm_copy = WarmCopy(store)
        return unit
    if not config.state_file:
        return GatewayUnit(name, config, None, now)
    try:
        sqlite = Store(config.state_file)
    except StoreError as exc:
        raise StoreError(f"{section}.state_file: {exc} (move the file away to start "
                         "without the saved state)") from exc
    return GatewayUnit(name, config, sqlite, now)
