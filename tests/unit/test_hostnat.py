"""Ordinary NAT in the datapath (``alg.hostnat``, ``ryu_apps.ctflows``): each inside
host's address and block of ports, the core's routing of TCP and UDP to it, and the
entries that carry it."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alg.events import (
    TCP_SYN,
    Direction,
    EntryKind,
    HostEntries,
    RemoveEntries,
    TcpSegment,
)
from alg.hostnat import REDECIDE_AFTER, RESUBMITS
from alg.neighbours import L2, Side
from ryu_apps import ctflows, switch, wire
from ryu_apps.framework import ofproto_v1_3 as ofp
from ryu_apps.framework import ofproto_v1_3_parser as parser
from tests.unit.pptp_flows import C1, C2, PUBLIC, PUBLIC2, SERVER, gateway

WEB = IPv4Address("198.51.100.80")
C3 = IPv4Address("192.168.1.30")
CONNTRACK = {"ordinary_nat": "conntrack", "ct_zone": 9, "ct_ports_per_host": 1024}


def syn(src: IPv4Address, dport: int = 80) -> TcpSegment:
    return TcpSegment(src, 40000, WEB, dport, 100, 0, TCP_SYN, 1000)


def bound(out: object) -> HostEntries:
    [decision] = out.decisions  # type: ignore[attr-defined]
    assert isinstance(decision, HostEntries)
    return decision


def test_a_hosts_first_packet_binds_it_and_goes_back_through_the_switch() -> None:
    gw = gateway(**CONNTRACK)
    out = gw.handle_tcp(Direction.OUTBOUND, syn(C1), 0.0)
    assert out.resubmit and out.emits == []
    entries = bound(out)
    b = entries.binding
    assert (b.inside_ip, b.public_ip, b.ports) == (C1, PUBLIC, (1024, 2047))
    assert (entries.idle_timeout, entries.zone) == (gw.config.tcp_idle, 9)
    assert gw.counters.hosts_bound == 1 and len(gw.nat) == 0
    out = gw.handle_udp(Direction.OUTBOUND, C2, 5353, WEB, 53, 0.0)
    assert bound(out).binding.ports == (2048, 3071)


def test_a_bound_hosts_packets_go_back_through_the_switch_a_bounded_number_of_times(
        ) -> None:
    gw = gateway(**CONNTRACK)
    first = bound(gw.handle_tcp(Direction.OUTBOUND, syn(C1), 0.0)).binding
    soon = [gw.handle_tcp(Direction.OUTBOUND, syn(C1), REDECIDE_AFTER / 2)
            for _ in range(RESUBMITS + 1)]
    assert all(out.decisions == [] for out in soon)
    assert [out.resubmit for out in soon] == [True] * RESUBMITS + [False]
    assert soon[-1].drop_reason
    later = gw.handle_tcp(Direction.OUTBOUND, syn(C1), REDECIDE_AFTER * 2)
    assert later.resubmit and bound(later).binding is first
    assert gw.handle_tcp(Direction.OUTBOUND, syn(C1), REDECIDE_AFTER * 2).resubmit
    assert gw.counters.hosts_bound == 1


def test_blocks_run_out_per_address_and_the_refused_host_is_counted() -> None:
    gw = gateway(**CONNTRACK, port_min=1024, port_max=3071)  # two blocks of 1024
    assert gw.hosts.blocks_per_address == 2
    bound(gw.handle_tcp(Direction.OUTBOUND, syn(C1), 0.0))
    bound(gw.handle_tcp(Direction.OUTBOUND, syn(C2), 0.0))
    out = gw.handle_tcp(Direction.OUTBOUND, syn(C3), 0.0)
    assert out.decisions == [] and not out.resubmit and out.errors
    assert gw.counters.hosts_refused == 1
    assert gw.nat.pool.lookup(C3) is None  # its address's reference went back


def test_a_binding_ends_when_its_entry_goes_idle_and_its_block_is_free_again() -> None:
    gw = gateway(**CONNTRACK, port_min=1024, port_max=2047)  # one block
    b = bound(gw.handle_tcp(Direction.OUTBOUND, syn(C1), 0.0)).binding
    assert gw.handle_tcp(Direction.OUTBOUND, syn(C2), 0.0).decisions == []
    out = gw.flow_removed(EntryKind.HOST, b.id)
    assert out.decisions == [RemoveEntries(EntryKind.HOST, b.id)]
    assert gw.hosts.get(C1) is None and gw.nat.pool.lookup(C1) is None
    assert bound(gw.handle_tcp(Direction.OUTBOUND, syn(C2), 1.0)).binding.ports == (1024, 2047)
    assert gw.flow_removed(EntryKind.HOST, b.id).decisions == []  # reported twice


def test_a_host_keeps_the_address_its_control_connection_has() -> None:
    gw = gateway(**CONNTRACK, public_ips=(PUBLIC, PUBLIC2))
    gw.nat.pool.acquire(C1)
    gw.nat.pool.acquire(C2)  # C2 on the other address
    assert gw.nat.pool.lookup(C2) == PUBLIC2
    assert bound(gw.handle_udp(Direction.OUTBOUND, C2, 5353, WEB, 53, 0.0)).binding.public_ip \
        == PUBLIC2


def test_inbound_and_policy_denied_packets_bind_nothing() -> None:
    gw = gateway(**CONNTRACK)
    out = gw.handle_udp(Direction.INBOUND, WEB, 53, PUBLIC, 2000, 0.0)
    assert out.decisions == [] and gw.counters.no_session_drops == 1
    strict = gateway(**CONNTRACK, policy="strict")
    out = strict.handle_udp(Direction.OUTBOUND, C1, 5353, WEB, 53, 0.0)
    assert out.decisions == [] and strict.counters.policy_denied == 1
    assert len(strict.hosts) == 0


def test_echo_and_pptp_stay_with_the_controller() -> None:
    gw = gateway(**CONNTRACK)
    out = gw.handle_icmp_echo(Direction.OUTBOUND, C1, SERVER, 7, True, 0.0)
    assert out.emits and len(gw.hosts) == 0  # translated by the controller as before
    out = gw.handle_tcp(Direction.OUTBOUND, syn(C1, 1723), 0.0)
    assert not out.resubmit and len(gw.hosts) == 0


# The entries.

def parsed(message: wire.Message) -> object:
    buf = message.buf
    return parser.OFPFlowMod.parser(None, 4, ofp.OFPT_FLOW_MOD, len(buf), 0, buf)


def test_a_hosts_entries_track_its_packets_commit_into_its_block_and_deliver_replies() -> None:
    gw = gateway(**CONNTRACK)
    decision = bound(gw.handle_tcp(Direction.OUTBOUND, syn(C1), 0.0))
    mods = [parsed(m) for m in ctflows.host_entries(decision, L2(5, "0a:00:00:00:00:01"),
                                                     "02:00:5e:00:01:fe", 9)]
    classify, commit, commit_udp, *deliver = mods
    assert {dict(m.match.items())["ip_proto"]  # type: ignore[attr-defined]
            for m in (commit, commit_udp)} == {6, 17}
    key = switch.cookie(EntryKind.HOST, decision.binding.id)
    assert all(m.cookie == key for m in mods)  # type: ignore[attr-defined]
    assert classify.table_id == switch.TABLE_CLASSIFY  # type: ignore[attr-defined]
    assert classify.flags == ofp.OFPFF_SEND_FLOW_REM  # type: ignore[attr-defined]
    assert dict(classify.match.items())["in_port"] == 5  # type: ignore[attr-defined]
    [ct] = [a for a in commit.instructions[0].actions  # type: ignore[attr-defined]
            if isinstance(a, parser.NXActionCT)]
    assert ct.flags == wire.NX_CT_F_COMMIT and ct.zone_ofs_nbits == 9
    assert ct.recirc_table == switch.TABLE_ROUTE
    [nat] = ct.actions
    assert (nat.range_ipv4_min, nat.range_proto_min, nat.range_proto_max) == (
        str(PUBLIC), 1024, 2047)
    assert {m.table_id for m in deliver} == {switch.TABLE_CT_IN}  # type: ignore[attr-defined]
    assert [a.port for m in deliver  # type: ignore[attr-defined]
            for a in m.instructions[0].actions if isinstance(a, parser.OFPActionOutput)
            ] == [5, 5]


def test_only_what_the_tracker_translated_is_routed() -> None:
    gw = gateway(**CONNTRACK)
    mods = [parsed(m) for m in ctflows.static([1, 2], 100, gw.config,
                                               IPv4Network("192.168.1.0/24"), [])]
    route = [m for m in mods if m.table_id == switch.TABLE_ROUTE]  # type: ignore[attr-defined]
    for m in route:
        state, mask = dict(m.match.items())["ct_state"]  # type: ignore[attr-defined]
        assert state & mask & ctflows.SNAT
    entry = parsed(ctflows.route_entry(WEB, L2(100, "0a:00:00:00:00:64"), "02:00:5e:00:01:fe"))
    state, mask = dict(entry.match.items())["ct_state"]  # type: ignore[attr-defined]
    assert state & mask & ctflows.SNAT and entry.hard_timeout == ctflows.ROUTE_SECONDS  # type: ignore[attr-defined]
    # GRE and echo never reach the tracker: they rank above its entries.
    keep = [m for m in mods if m.priority == ctflows.PRIORITY_KEEP]  # type: ignore[attr-defined]
    assert {dict(m.match.items()).get("ip_proto") for m in keep} == {47, 1}  # type: ignore[attr-defined]
    assert ctflows.PRIORITY_KEEP > ctflows.PRIORITY_TRACK


@pytest.mark.parametrize("ordinary_nat", ["controller", "conntrack"])
def test_the_pipeline_has_the_trackers_tables_only_with_conntrack(ordinary_nat: str) -> None:
    from alg.config import load
    from ryu_apps import flowmods
    from tests.unit.app_env import OPTIONS

    config = load({**OPTIONS, "ordinary_nat": ordinary_nat})
    tables = {parsed(m).table_id for m in flowmods.pipeline_again([1, 2], 100, config)[1:]}  # type: ignore[attr-defined]
    expected = {0, 1, 2, 3} if ordinary_nat == "conntrack" else {0}
    assert tables == expected


# Restarts.

def restarted(gw: object, installed: dict[tuple[EntryKind, int], int]) -> object:
    from alg.engine import Gateway
    from alg.snapshot import Snapshot

    snapshot = Snapshot()
    snapshot.apply(gw.journal.drain())  # type: ignore[attr-defined]
    new = Gateway(gw.config)  # type: ignore[attr-defined]
    out = new.restore(snapshot, installed, 10.0)
    return new, out


def test_a_restart_keeps_each_hosts_address_and_block_and_their_entries() -> None:
    gw = gateway(**CONNTRACK, public_ips=(PUBLIC, PUBLIC2))
    b1 = bound(gw.handle_tcp(Direction.OUTBOUND, syn(C1), 0.0)).binding
    b2 = bound(gw.handle_tcp(Direction.OUTBOUND, syn(C2), 0.0)).binding
    new, out = restarted(gw, {(EntryKind.HOST, b1.id): 5, (EntryKind.HOST, b2.id): 2})
    kept = {b.inside_ip: (b.public_ip, b.ports) for b in new.hosts.bindings()}  # type: ignore[attr-defined]
    assert kept == {C1: (b1.public_ip, b1.ports), C2: (b2.public_ip, b2.ports)}
    # The switch had all of C1's entries and half of C2's: C2's go in again, none goes.
    again = [d for d in out.decisions if isinstance(d, HostEntries)]  # type: ignore[attr-defined]
    assert [d.binding.inside_ip for d in again] == [C2]
    assert not [d for d in out.decisions if isinstance(d, RemoveEntries)]  # type: ignore[attr-defined]
    # A new host after the restart takes a block nobody holds, and ids stay unique.
    b3 = bound(new.handle_tcp(Direction.OUTBOUND, syn(C3), 11.0)).binding  # type: ignore[attr-defined]
    assert (b3.public_ip, b3.ports) not in set(kept.values())
    assert b3.id > max(b1.id, b2.id)
    # A bound host's packet right after the restart decides its entries (the switch
    # may lack them), not dropped as "decided just now".
    assert new.handle_tcp(Direction.OUTBOUND, syn(C1), 10.5).resubmit  # type: ignore[attr-defined]


def test_a_restart_leaves_out_a_binding_whose_block_is_gone_or_whose_host_moved() -> None:
    gw = gateway(**CONNTRACK)
    b1 = bound(gw.handle_tcp(Direction.OUTBOUND, syn(C1), 0.0)).binding
    smaller = gateway(**CONNTRACK, port_min=1024, port_max=1024 + 1023)
    smaller.nat.pool.acquire(C2)
    from alg.snapshot import HostRecord, Snapshot

    snapshot = Snapshot(hosts=[HostRecord(b1.id, C1, PUBLIC, 0), HostRecord(50, C2, PUBLIC, 5)])
    out = smaller.restore(snapshot, {}, 1.0)
    assert [b.inside_ip for b in smaller.hosts.bindings()] == [C1]
    assert smaller.counters.restore_skipped == 1
    from alg.snapshot import Forget

    assert Forget("host", C2) in out.records


def test_the_zone_limit_is_set_with_ovs_appctl_and_a_failure_is_said() -> None:
    from ryu_apps import ctlimits

    ran: list[list[str]] = []

    def ok(argv: object) -> tuple[int, str]:
        ran.append(list(argv))  # type: ignore[call-overload]
        return 0, ""

    assert ctlimits.set_zone_limit(9, 200, ok) is None
    assert ran == [["ovs-appctl", "dpctl/ct-set-limits", "zone=9,limit=200"]]
    problem = ctlimits.set_zone_limit(9, 200, lambda _argv: (2, "no datapath\n"))
    assert problem is not None and "exit status 2: no datapath" in problem

    def missing(_argv: object) -> tuple[int, str]:
        raise FileNotFoundError("ovs-appctl")

    problem = ctlimits.set_zone_limit(9, 200, missing)
    assert problem is not None and "ovs-appctl" in problem


class FakeVsctl:
    """``ovs-vsctl`` over a dict of datapath records: type -> {zone: policy}."""

    def __init__(self, datapath_type: str = "netdev", records: dict[str, dict[int, str]]
                 | None = None) -> None:
        self.type = datapath_type
        self.records = records if records is not None else {}
        self.ran: list[list[str]] = []

    def __call__(self, argv: object) -> tuple[int, str]:
        args = list(argv)[2:]  # type: ignore[call-overload]
        self.ran.append(args)
        match args:
            case ["get", "bridge", _, "datapath_type"]:
                return 0, f'"{self.type}"\n' if self.type else '""\n'
            case ["--if-exists", "get", "Open_vSwitch", ".", key]:
                return 0, "uuid\n" if key.split(":")[1] in self.records else ""
            case ["--", "--id=@dp", "create", "Datapath", *_rest]:
                self.records[args[-1].split("=")[0].split(":")[1]] = {}
                return 0, "uuid\n"
            case ["--if-exists", "del-zone-tp", kind, zone]:
                self.records.get(kind, {}).pop(int(zone.split("=")[1]), None)
                return 0, ""
            case ["add-zone-tp", kind, zone, *policy]:
                if kind not in self.records:
                    return 1, f"ovs-vsctl: datapath {kind} does not exist\n"
                self.records[kind][int(zone.split("=")[1])] = " ".join(policy)
                return 0, ""
            case ["list-zone-tp", kind]:
                return 0, "".join(f"Zone:{z}, Timeout Policies: {p}\n"
                                  for z, p in self.records.get(kind, {}).items())
        raise AssertionError(args)


def test_the_zones_timeout_policy_keeps_closed_connections_on_the_bridges_datapath() -> None:
    from ryu_apps import ctlimits

    vsctl = FakeVsctl("netdev")
    assert ctlimits.set_zone_timeouts("br-x", 9, 120, vsctl) is None
    assert vsctl.records == {"netdev": {9: "tcp_time_wait=120 tcp_close=120"}}
    # The record is made only when missing: made anew it would replace another zone's.
    vsctl.records["netdev"][7] = "tcp_close=60"
    assert ctlimits.set_zone_timeouts("br-x", 9, 90, vsctl) is None
    assert vsctl.records == {"netdev": {7: "tcp_close=60", 9: "tcp_time_wait=90 tcp_close=90"}}
    assert sum(1 for args in vsctl.ran if "create" in args) == 1
    # The kernel datapath's bridges say no type.
    kernel = FakeVsctl("")
    assert ctlimits.set_zone_timeouts("br-k", 9, 120, kernel) is None
    assert list(kernel.records) == ["system"]
    assert ctlimits.clear_zone_timeouts("system", 9, kernel) is None
    assert kernel.records == {"system": {}}


def test_a_timeout_policy_that_cannot_be_set_is_said() -> None:
    from ryu_apps import ctlimits

    problem = ctlimits.set_zone_timeouts("br-x", 9, 120,
                                         lambda _argv: (1, 'no row "br-x" in table Bridge'))
    assert problem is not None and "no row" in problem

    class Lost(FakeVsctl):
        def __call__(self, argv: object) -> tuple[int, str]:
            answer = super().__call__(argv)
            if self.ran[-1][0] == "add-zone-tp":
                self.records["netdev"] = {}  # another process made the record anew
            return answer

    problem = ctlimits.set_zone_timeouts("br-x", 9, 120, Lost("netdev"))
    assert problem is not None and "not in netdev's record" in problem

    def missing(_argv: object) -> tuple[int, str]:
        raise FileNotFoundError("ovs-vsctl")

    problem = ctlimits.set_zone_timeouts("br-x", 9, 120, missing)
    assert problem is not None and "ovs-vsctl" in problem


def test_with_the_strict_policy_the_alg_off_tcp_1723_binds_nothing() -> None:
    """A host's TCP/1723 with the ALG off is ordinary TCP; under ``strict`` it must not
    bind the host, whose entries would let all its traffic by."""
    from alg.events import SessionEntries

    gw = gateway(**CONNTRACK, policy="strict", alg_enabled=False)
    out = gw.handle_tcp(Direction.OUTBOUND, syn(C1, 1723), 0.0)
    assert not out.resubmit and len(gw.hosts) == 0
    assert any(isinstance(d, SessionEntries) for d in out.decisions)
    assert gw.handle_udp(Direction.OUTBOUND, C1, 5353, WEB, 53, 0.0).decisions == []
    assert len(gw.hosts) == 0


def test_a_binding_whose_entries_cannot_go_in_ends_and_gives_its_block_back() -> None:
    gw = gateway(**CONNTRACK, port_min=1024, port_max=2047)  # one block
    entries = bound(gw.handle_tcp(Direction.OUTBOUND, syn(C1), 0.0))
    gw.journal.drain()
    out = gw.entry_failed(entries, 1.0)
    assert out.decisions == [RemoveEntries(EntryKind.HOST, entries.binding.id)]
    from alg.snapshot import Forget

    assert Forget("host", C1) in out.records
    assert len(gw.hosts) == 0
    assert bound(gw.handle_tcp(Direction.OUTBOUND, syn(C2), 2.0)).binding.ports == (1024, 2047)
    removed = gw.flow_removed(EntryKind.HOST, gw.hosts.get(C2).id)  # type: ignore[union-attr]
    assert Forget("host", C2) in removed.records  # the store hears it with the removal


def test_other_protocols_and_unrelated_icmp_never_enter_the_trackers_commit() -> None:
    gw = gateway(**CONNTRACK)
    mods = [parsed(m) for m in ctflows.static([1, 2], 100, gw.config,
                                               IPv4Network("192.168.1.0/24"), [])]
    ask = [m for m in mods if m.table_id == switch.TABLE_CT_OUT  # type: ignore[attr-defined]
           and m.priority == ctflows.PRIORITY_ICMP]  # type: ignore[attr-defined]
    assert sorted(dict(m.match.items())["in_port"] for m in ask) == [1, 2]  # type: ignore[attr-defined]
    for m in ask:
        fields = dict(m.match.items())  # type: ignore[attr-defined]
        state, mask = fields["ct_state"]
        assert fields["ip_proto"] == 1 and not state & (wire.CT_ESTABLISHED | wire.CT_RELATED)
        assert mask & wire.CT_ESTABLISHED and mask & wire.CT_RELATED
    # Every route punt is metered per inside port.
    route = [m for m in mods if m.table_id == switch.TABLE_ROUTE]  # type: ignore[attr-defined]
    assert sorted(dict(m.match.items())["in_port"] for m in route) == [1, 2]  # type: ignore[attr-defined]


def test_a_bound_hosts_pin_stays_so_another_port_cannot_take_its_replies() -> None:
    """The review's attack: the victim is bound and quiet (its packets never reach the
    controller) past the pin's age; a frame from another port with its address must not
    move the pin, or the binding's entries would deliver its replies there."""
    from alg.config import load
    from alg.neighbours import PIN_SECONDS, NeighbourTable, Route
    from tests.unit.app_env import OPTIONS

    gw = gateway(**CONNTRACK)
    config = load({**OPTIONS, "ordinary_nat": "conntrack"})
    table: NeighbourTable[object] = NeighbourTable(
        config, lambda ip: gw.hosts.get(ip) is not None)
    table.set_ports([1, 2], 100)
    victim = IPv4Address("192.168.1.1")
    assert table.admit_inside(1, "0a:00:00:00:00:01", victim, WEB, 0.0) is Route.OUTSIDE
    bound(gw.handle_tcp(Direction.OUTBOUND, syn(victim), 0.0))
    table.tick(PIN_SECONDS * 3)
    assert table.lookup(Side.INSIDE, victim) == L2(1, "0a:00:00:00:00:01")
    assert table.admit_inside(2, "0a:00:00:00:00:02", victim, WEB, PIN_SECONDS * 3) \
        is Route.SPOOFED
    assert table.lookup(Side.INSIDE, victim) == L2(1, "0a:00:00:00:00:01")
    # Without a binding the pin ages and the address can move, as before.
    gw.flow_removed(EntryKind.HOST, gw.hosts.get(victim).id)  # type: ignore[union-attr]
    table.tick(PIN_SECONDS * 5)
    assert table.admit_inside(2, "0a:00:00:00:00:02", victim, WEB, PIN_SECONDS * 5) \
        is Route.OUTSIDE



MARTIAN_EDGES = ["0.0.0.0", "0.255.255.255", "1.0.0.0", "126.255.255.255", "127.0.0.1",
                 "128.0.0.0", "223.255.255.255", "224.0.0.1", "239.255.255.255", "240.0.0.0",
                 "255.255.255.254", "255.255.255.255", "192.168.0.255", "192.168.1.0",
                 "192.168.1.255", "192.168.2.0", "203.0.113.2", "203.0.113.3",
                 "203.0.113.255", "203.0.113.254", "192.168.1.254"]


@given(st.one_of(st.sampled_from(MARTIAN_EDGES).map(IPv4Address),
                 st.integers(0, 2**32 - 1).map(IPv4Address)))
def test_the_martian_networks_hold_exactly_the_martians(address: IPv4Address) -> None:
    from alg.icmp import Martians

    martians = Martians((PUBLIC, IPv4Address("192.168.1.254")),
                        IPv4Network("192.168.1.0/24"), IPv4Network("203.0.113.0/24"))
    assert (address in martians) == any(address in net for net in martians.networks())


def test_icmp_from_a_martian_source_reaches_the_controller_before_the_tracker() -> None:
    """The tracker would relate an error from any source to the connection it quotes."""
    gw = gateway(**CONNTRACK)
    nets = [IPv4Network("127.0.0.0/8"), IPv4Network("192.168.1.0/24")]
    mods = [parsed(m) for m in ctflows.static([1, 2], 100, gw.config,
                                               IPv4Network("192.168.1.0/24"), nets)]
    classify = [m for m in mods if m.table_id == switch.TABLE_CLASSIFY]  # type: ignore[attr-defined]
    guards = [m for m in classify if "ipv4_src" in dict(m.match.items())]  # type: ignore[attr-defined]
    assert sorted(dict(m.match.items())["ipv4_src"] for m in guards) == sorted(  # type: ignore[attr-defined]
        (str(n.network_address), str(n.netmask)) for n in nets)
    track = [m for m in classify if m.priority == ctflows.PRIORITY_TRACK]  # type: ignore[attr-defined]
    for guard in guards:
        fields = dict(guard.match.items())  # type: ignore[attr-defined]
        assert (fields["in_port"], fields["ip_proto"]) == (100, 1)
        assert guard.priority > max(m.priority for m in track)  # type: ignore[attr-defined]
        [meter, apply] = guard.instructions  # type: ignore[attr-defined]
        assert meter.meter_id == switch.METER_OUTSIDE_NEW
        assert [a.port for a in apply.actions] == [ofp.OFPP_CONTROLLER]
