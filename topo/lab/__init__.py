"""The lab: client and server namespaces around one OVS bridge that the gateway app drives.

Every lab has a name (``lab`` by default); labs of different names run side by side.
Layout of lab ``NAME`` (see the design's "The lab" section):

- clients: network namespaces ``c1`` .. ``cN`` (``NAME-c1`` .. ``NAME-cN`` when NAME is
  not ``lab``), each with ``eth0`` at ``192.168.1.<i>/24`` and a default route via the
  gateway address ``192.168.1.254``;
- server: namespace ``srv`` (``NAME-srv``) with ``eth0`` at ``203.0.113.1/24`` (the
  outside subnet is on-link, so it needs no other route);
- the gateway: OVS bridge ``br-NAME`` on the userspace datapath (``datapath_type=netdev``,
  ``fail-mode=secure``, OpenFlow 1.3, in-band control off), whose ports are the root-side
  ends of the veth pairs: ``NAME-c<i>`` is OpenFlow port ``i`` and ``NAME-srv`` is port
  100; its datapath ID is 1 for ``lab`` and derived from the name otherwise; with
  ``gre_demux``, the GRE demultiplexer's port ``NAME-dmx`` is port 99 (``topo.gre_demux``,
  its BPF filesystem in the lab's folder);
- the controller: ``pptp-alg-gateway`` (the command an installation has) running the
  gateway app, listening for the switch on ``127.0.0.1:6653`` and serving REST on
  ``127.0.0.1:8723`` for ``lab``; any other lab
  gets two free ports of 127.0.0.1, picked at ``up`` and recorded in its state.

The addresses are the same in every lab: each lab has its own namespaces and bridge.

With ``--bridges K`` (2 .. 9) the lab has K gateways, ``g1`` .. ``gK``, each a bridge of
its own around namespaces of its own, with the same addresses, all driven by the one
controller (one OpenFlow port, one REST port). Gateway 1 (``g1``) keeps the names
above; gateway ``j`` >= 2 has namespaces ``g<j>c1`` .. ``g<j>cN`` and ``g<j>srv``
(``NAME-g<j>c1`` ... when NAME is not ``lab``), OVS ports ``NAME-<j>c<i>`` and
``NAME-<j>srv`` (at most 15 characters for every name of 10), bridge ``br-NAME-<j>``,
datapath ID ``0x50 + j - 1`` in the top byte and the name below, the connection
tracker's zone after gateway ``j - 1``'s, its store ``gateway-state-g<j>.sqlite`` and,
with the demultiplexer, port ``NAME-<j>dmx`` and folder ``bpf-g<j>``. The app's
configuration then has ``[nat]`` with what is common to every gateway and a section
``[gateway:g<j>]`` per gateway; the app serves gateway ``g<j>``'s views under
``/pptp-alg/gateways/g<j>/``. ``lab.json`` records every gateway in ``gateways`` (its
other keys are gateway 1's, as in a lab of one bridge, which has no ``gateways``).

Everything lab ``NAME`` writes goes to its folder, ``/run/pptp-alg-lab/`` for ``lab`` and
``/run/pptp-alg-lab-NAME/`` otherwise: ``gateway.conf`` (the app's options, oslo.config
INI), ``lab.json`` (the ``LabState``, for tests and tools), ``ryu.pid``,
``ryu.log`` (the previous run's log is kept as ``ryu.log.1``) and a lock file that
serialises ``up``, ``down`` and the restarts of that lab. ``/run/pptp-alg-lab.lock``
serialises the choice of ports between labs.

Two commands make a running lab live through what a gateway in service does:
``restart-controller`` stops the lab's ``pptp-alg-gateway`` and starts it again with the same
configuration (the bridges keep their flows meanwhile: ``fail-mode=secure``);
``restart-switch`` makes one bridge of the lab alone (gateway 1's, or ``--gateway
g<j>``'s) look like an ``ovs-vswitchd`` restart without saved flows (its controller
connection, every flow and every meter are removed, then the controller is set again),
leaving other bridges and the OVS daemons alone. Both return when the switches are
connected again and the app's pipeline is installed.

With ``--controllers N --store etcd`` the lab runs N controller processes (1 .. 9,
``c1`` .. ``cN``) for all its bridges, each with an OpenFlow port and a REST port of its
own, and a local etcd cluster of three members on 127.0.0.1 (data and logs in ``etcd/``
of the lab's folder). Each controller has its file ``gateway-c<I>.conf``: ``[nat]`` with
its ``rest_port``, ``store = etcd``, ``etcd_cluster`` the lab's name, ``controller_id``
``c<I>`` and ``etcd_endpoints`` the ports of its own etcd proxy (``topo.etcd_proxy``),
which forwards to the members, so that one controller can be cut from etcd while it
keeps its switch connections; no gateway has a ``state_file``. Every bridge has every
controller as a target. Each controller runs under ``topo.watch``, which records its exit
status (``ryu-c<I>.exit``; its log is ``ryu-c<I>.log``). Every port of such a lab is
picked free at ``up`` (the default lab's too). ``status`` shows one line per controller
(``controller 1 (pid 1234, c1): default master``; ``not running (exited 3)`` for one that
ended after losing its mastership); ``kill-controller``, ``start-controller``,
``cut-controller``, ``uncut-controller`` and ``wait-master`` act on them
(``topo.lab.standbys``); ``restart-controller`` is refused there, ``restart-switch``
gives the bridge every controller again.

Command line, from the repo root, as root::

    .venv/bin/python -m topo.lab up --clients 3 [--name NAME] [--bridges K] [--replace]
                                    [--controllers N --store etcd]
                                    [--policy open|strict] [--public-ips K]
                                    [--no-alg] [--app PATH] [--timeout SECONDS]
    .venv/bin/python -m topo.lab status [--name NAME] [--gateway g<j>]  # exit 0 when up, 3 when not
    .venv/bin/python -m topo.lab display [--name NAME] [--gateway g<j>] VIEW
    .venv/bin/python -m topo.lab down [--name NAME] [--purge]
    .venv/bin/python -m topo.lab restart-controller [--name NAME] [--timeout SECONDS]
    .venv/bin/python -m topo.lab restart-switch [--name NAME] [--gateway g<j>]
                                                [--timeout SECONDS]
    .venv/bin/python -m topo.lab kill-controller [--name NAME] (--index I | --master)
                                                 [--gateway g<j>]
    .venv/bin/python -m topo.lab start-controller [--name NAME] --index I [--timeout SECONDS]
    .venv/bin/python -m topo.lab cut-controller [--name NAME] --index I
    .venv/bin/python -m topo.lab uncut-controller [--name NAME] --index I
    .venv/bin/python -m topo.lab wait-master [--name NAME] [--gateway g<j>] [--timeout SECONDS]
    .venv/bin/python -m topo.lab list

The same from Python: ``up``, ``down``, ``restart_controller``, ``restart_switch``,
``status``, ``describe``, ``read_state`` and ``labs``, each with the keyword ``name``
(``up`` with ``bridges``, ``controllers`` and ``store``; ``status``, ``describe`` and
``restart_switch`` with ``gateway``); ``LabState.gateway("g2")`` and
``LabState.all_gateways`` give the gateways (``GatewayState``); ``kill_controller``,
``start_controller``, ``cut_controller``, ``current_master`` and ``wait_master`` the
controllers of a lab on etcd (``LabState.controller_at(i)``: ``ControllerState``).

The modules, by concern: ``names`` (names, folders, fixed addresses), ``state``
(``LabState``, ``plan``, the app's configuration file), ``ovs`` (the bridge), ``ports``
(the controller's TCP ports), ``controller`` (the app's process), ``health``
(``status``, ``describe``), ``netns_backend`` (``up``, ``down``), ``restarts``,
``standbys`` (the etcd cluster, the proxies and the controllers of a lab on etcd),
``cli``; ``mininet_backend`` and ``mininet_cli`` run the same lab on Mininet
(``topo.mininet_run``).
"""

from ryu_apps.managers import MANAGERS
from topo.lab.cli import main
from topo.lab.controller import gateway_command
from topo.lab.health import describe, status
from topo.lab.names import (
    CONFIG_FILE,
    DEFAULT_APP,
    DEFAULT_DATAPATH_ID,
    DEFAULT_FRAMEWORK,
    DEFAULT_NAME,
    DEMUX_OFPORT,
    EXIT_NOT_UP,
    FRAMEWORKS,
    GATEWAY_COMMAND,
    GATEWAY_STATE_FILES,
    INSIDE_GATEWAY,
    INSIDE_SUBNET,
    LOG_FILE,
    MAX_BRIDGES,
    MAX_CLIENTS,
    MAX_CONTROLLERS,
    MAX_NAME_LENGTH,
    MAX_PUBLIC_IPS,
    MININET_RUN_DIR,
    OFP_HOST,
    OUTSIDE_SUBNET,
    PID_FILE,
    POLICIES,
    PORTS_LOCK_PATH,
    REPO,
    REST_HOST,
    SERVER_HOST,
    SERVER_IP,
    STATE_FILE,
    STORES,
    LabError,
    bridge_name,
    check_name,
    client_address,
    client_namespace,
    command,
    datapath_id,
    demux_dir,
    demux_port_name,
    gateway_name,
    gateway_number,
    gateway_state_file,
    mininet_run_dir,
    namespace,
    namespace_pattern,
    port_name,
    port_pattern,
    public_addresses,
    run_dir,
)
from topo.lab.netns_backend import down, up
from topo.lab.ports import pick_ports
from topo.lab.restarts import restart_controller, restart_switch
from topo.lab.standbys import (
    current_master,
    cut_controller,
    kill_controller,
    start_controller,
    wait_master,
)
from topo.lab.state import (
    ControllerState,
    EtcdMemberState,
    GatewayState,
    LabState,
    gateway_zone,
    lab_zone,
    labs,
    owned,
    plan,
    read_state,
    render_config,
    write_state,
)

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_APP",
    "DEFAULT_DATAPATH_ID",
    "DEFAULT_FRAMEWORK",
    "DEFAULT_NAME",
    "DEMUX_OFPORT",
    "EXIT_NOT_UP",
    "FRAMEWORKS",
    "GATEWAY_COMMAND",
    "GATEWAY_STATE_FILES",
    "INSIDE_GATEWAY",
    "INSIDE_SUBNET",
    "LOG_FILE",
    "MANAGERS",
    "MAX_BRIDGES",
    "MAX_CLIENTS",
    "MAX_CONTROLLERS",
    "MAX_NAME_LENGTH",
    "MAX_PUBLIC_IPS",
    "MININET_RUN_DIR",
    "OFP_HOST",
    "OUTSIDE_SUBNET",
    "PID_FILE",
    "POLICIES",
    "PORTS_LOCK_PATH",
    "REPO",
    "REST_HOST",
    "SERVER_HOST",
    "SERVER_IP",
    "STATE_FILE",
    "STORES",
    "ControllerState",
    "EtcdMemberState",
    "GatewayState",
    "LabError",
    "LabState",
    "bridge_name",
    "check_name",
    "client_address",
    "client_namespace",
    "command",
    "current_master",
    "cut_controller",
    "datapath_id",
    "demux_dir",
    "demux_port_name",
    "describe",
    "down",
    "gateway_command",
    "gateway_name",
    "gateway_number",
    "gateway_state_file",
    "gateway_zone",
    "kill_controller",
    "lab_zone",
    "labs",
    "main",
    "mininet_run_dir",
    "namespace",
    "namespace_pattern",
    "owned",
    "pick_ports",
    "plan",
    "port_name",
    "port_pattern",
    "public_addresses",
    "read_state",
    "render_config",
    "restart_controller",
    "restart_switch",
    "run_dir",
    "start_controller",
    "status",
    "up",
    "wait_master",
    "write_state",
]
