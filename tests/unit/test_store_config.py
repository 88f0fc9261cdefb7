"""The store's options (``store``, ``etcd_endpoints``, ``etcd_cluster``,
``controller_id``): the process's, refused at start naming the key when bad."""

from __future__ import annotations

from typing import Any

import pytest

from alg.config import load_gateways
from alg.errors import ConfigError
from tests.unit.app_env import OPTIONS

ETCD = {"store": "etcd", "etcd_endpoints": "http://127.0.0.1:2379, http://[::1]:2379"}


def test_sqlite_is_the_default_and_etcd_takes_its_members() -> None:
    default = load_gateways(OPTIONS, {})["default"]
    assert (default.store, default.etcd_endpoints, default.etcd_cluster) == (
        "sqlite", (), "pptp-alg")
    config = load_gateways({**OPTIONS, "state_file": "", **ETCD,
                            "controller_id": "edge-a.1"}, {})["default"]
    assert config.etcd_endpoints == ("http://127.0.0.1:2379", "http://[::1]:2379")
    assert config.controller_id == "edge-a.1"


@pytest.mark.parametrize(("values", "key"), [
    ({"store": "zookeeper"}, "nat.store"),
    ({"store": "etcd"}, "nat.etcd_endpoints"),
    ({**ETCD, "etcd_endpoints": "127.0.0.1:2379"}, "nat.etcd_endpoints"),
    ({**ETCD, "etcd_endpoints": "http://127.0.0.1"}, "nat.etcd_endpoints"),
    ({**ETCD, "state_file": "/var/lib/pptp-alg/state.db"}, "nat.state_file"),
    ({**ETCD, "etcd_cluster": "Has Spaces"}, "nat.etcd_cluster"),
    ({"controller_id": "-starts-with-a-dash"}, "nat.controller_id"),
    ({"controller_id": "x" * 65}, "nat.controller_id"),
])
def test_a_bad_store_option_is_refused_naming_the_key(values: dict[str, Any], key: str
                                                      ) -> None:
    with pytest.raises(ConfigError) as caught:
        load_gateways({**OPTIONS, "state_file": "", **values}, {})
    assert caught.value.key == key


@pytest.mark.parametrize("key", ["store", "etcd_endpoints", "etcd_cluster", "controller_id"])
def test_the_store_is_the_processs_not_a_gateways(key: str) -> None:
    nat = {k: v for k, v in OPTIONS.items() if k not in ("bridge", "inside_ports",
                                                         "outside_port")}
    section = {"bridge": "br-x", "inside_ports": ["x1"], "outside_port": "xout",
               key: "etcd" if key == "store" else "x"}
    with pytest.raises(ConfigError) as caught:
        load_gateways(nat, {"edge1": section})
    assert caught.value.key == f"gateway:edge1.{key}"
