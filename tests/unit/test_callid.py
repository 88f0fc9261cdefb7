"""Unit tests of alg.callid."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alg.callid import CALL_ID_SPACE, CallIdAllocator, _PairState
from alg.config import AlgConfig
from alg.errors import AllocationError, CallIdExhaustedError, ConfigError, LimitError

PUB = IPv4Address("203.0.113.2")
PUB2 = IPv4Address("203.0.113.3")
SRV = IPv4Address("203.0.113.1")
SRV2 = IPv4Address("198.51.100.7")
HOLD = 60.0


def make() -> CallIdAllocator:
    return CallIdAllocator(HOLD)


@pytest.mark.parametrize("preferred", [0, 1, 1234, 65535])
def test_preferred_kept_when_free(preferred: int) -> None:
    alloc = make()
    assert alloc.allocate(PUB, SRV, preferred, 0.0) == preferred
    assert alloc.in_use(PUB, SRV, preferred)
    assert alloc.count_in_use() == 1


@pytest.mark.parametrize(
    ("taken", "preferred", "expected"),
    [
        ([5], 5, 6),
        ([5, 6, 7], 5, 8),
        ([5, 7], 5, 6),
        ([65535], 65535, 0),
        ([65534, 65535, 0], 65534, 1),
        ([0], 0, 1),
    ],
)
def test_collision_scans_upward_with_wraparound(
    taken: list[int], preferred: int, expected: int
) -> None:
    alloc = make()
    for call_id in taken:
        assert alloc.allocate(PUB, SRV, call_id, 0.0) == call_id
    assert alloc.allocate(PUB, SRV, preferred, 0.0) == expected
    assert alloc.count_in_use() == len(taken) + 1


def test_in_use_never_handed_out_twice() -> None:
    alloc = make()
    got = [alloc.allocate(PUB, SRV, 100, 0.0) for _ in range(50)]
    assert len(set(got)) == 50
    assert got[0] == 100
    assert got == list(range(100, 150))


def test_hold_down_blocks_reuse_until_it_expires() -> None:
    alloc = make()
    assert alloc.allocate(PUB, SRV, 7, 0.0) == 7
    alloc.release(PUB, SRV, 7, 10.0)
    assert not alloc.in_use(PUB, SRV, 7)
    assert alloc.held_down(PUB, SRV, 7, 10.0)
    assert alloc.held_down(PUB, SRV, 7, 10.0 + HOLD - 0.001)
    assert not alloc.held_down(PUB, SRV, 7, 10.0 + HOLD)
    assert alloc.count_in_use() == 0

    assert alloc.allocate(PUB, SRV, 7, 10.0 + HOLD - 0.001) == 8
    assert alloc.allocate(PUB, SRV, 7, 10.0 + HOLD) == 7


def test_release_is_idempotent_and_does_not_extend_hold_down() -> None:
    alloc = make()
    alloc.allocate(PUB, SRV, 7, 0.0)
    alloc.release(PUB, SRV, 7, 0.0)
    alloc.release(PUB, SRV, 7, 30.0)
    alloc.release(PUB, SRV, 9, 30.0)
    alloc.release(PUB2, SRV2, 7, 30.0)
    assert alloc.count_in_use() == 0
    assert not alloc.held_down(PUB, SRV, 7, HOLD)
    assert alloc.allocate(PUB, SRV, 7, HOLD) == 7


def test_pairs_are_independent() -> None:
    alloc = make()
    pairs = [(PUB, SRV), (PUB, SRV2), (PUB2, SRV), (PUB2, SRV2)]
    for public_ip, server_ip in pairs:
        assert alloc.allocate(public_ip, server_ip, 42, 0.0) == 42
    alloc.release(PUB, SRV, 42, 1.0)
    assert alloc.held_down(PUB, SRV, 42, 1.0)
    for public_ip, server_ip in pairs[1:]:
        assert alloc.in_use(public_ip, server_ip, 42)
        assert not alloc.held_down(public_ip, server_ip, 42, 1.0)
    assert alloc.allocate(PUB, SRV, 42, 1.0) == 43
    assert alloc.count_in_use() == 4
    assert alloc.pair_count() == 4


def test_queries_on_unknown_pair() -> None:
    alloc = make()
    assert not alloc.in_use(PUB, SRV, 1)
    assert not alloc.held_down(PUB, SRV, 1, 0.0)
    alloc.allocate(PUB, SRV, 2, 0.0)
    assert not alloc.held_down(PUB, SRV, 1, 0.0)


def fill_pair(alloc: CallIdAllocator, now: float) -> None:
    for call_id in range(CALL_ID_SPACE):
        assert alloc.allocate(PUB, SRV, call_id, now) == call_id


def test_exhaustion_names_the_pair_and_is_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    alloc = make()
    fill_pair(alloc, 0.0)
    looked_at: list[int] = []
    is_free = _PairState.is_free

    def counting(state: _PairState, call_id: int) -> bool:
        looked_at.append(call_id)
        return is_free(state, call_id)

    monkeypatch.setattr(_PairState, "is_free", counting)
    with pytest.raises(CallIdExhaustedError) as info:
        alloc.allocate(PUB, SRV, 123, 0.0)
    assert looked_at == [123]  # refused without a scan of the 65,536 IDs
    assert isinstance(info.value, AllocationError)
    assert str(PUB) in str(info.value)
    assert str(SRV) in str(info.value)
    assert alloc.count_in_use() == CALL_ID_SPACE
    assert alloc.allocate(PUB2, SRV, 123, 0.0) == 123


def test_many_clients_numbering_from_one_do_not_rescan_the_block(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """100 clients behind one address each number their calls 1, 2, 3, ... (as pptp-linux
    does); the IDs handed out form one block, and a search that began at each client's
    own ID walked the whole block again: 10,000 calls took 50 million probes."""
    alloc = make()
    probes = 0
    is_free = _PairState.is_free

    def counting(state: _PairState, call_id: int) -> bool:
        nonlocal probes
        probes += 1
        return is_free(state, call_id)

    monkeypatch.setattr(_PairState, "is_free", counting)
    got = {alloc.allocate(PUB, SRV, n, 0.0) for n in range(1, 101) for _client in range(100)}
    assert len(got) == 10_000
    assert probes < 3 * 10_000


def test_exhaustion_counts_held_down_ids() -> None:
    alloc = make()
    fill_pair(alloc, 0.0)
    alloc.release(PUB, SRV, 500, 1.0)
    with pytest.raises(CallIdExhaustedError):
        alloc.allocate(PUB, SRV, 0, 1.0 + HOLD - 0.5)
    assert alloc.allocate(PUB, SRV, 0, 1.0 + HOLD) == 500


def test_nearly_full_pair_finds_last_free_id_after_wrap() -> None:
    alloc = make()
    fill_pair(alloc, 0.0)
    alloc.release(PUB, SRV, 3, 0.0)
    assert alloc.allocate(PUB, SRV, 65000, HOLD) == 3


def test_empty_pairs_are_forgotten() -> None:
    alloc = make()
    alloc.allocate(PUB, SRV, 1, 0.0)
    alloc.allocate(PUB2, SRV, 1, 0.0)
    alloc.release(PUB, SRV, 1, 0.0)
    alloc.release(PUB2, SRV, 1, 30.0)
    assert alloc.pair_count() == 2
    assert alloc.count_held_down() == 2
    assert alloc.purge(HOLD) == 1
    assert alloc.pair_count() == 1
    assert alloc.purge(HOLD + 30.0) == 1
    assert alloc.pair_count() == 0
    assert alloc.count_held_down() == 0
    assert alloc.purge(1000.0) == 0


def test_allocation_purges_other_pairs() -> None:
    alloc = make()
    alloc.allocate(PUB, SRV, 1, 0.0)
    alloc.release(PUB, SRV, 1, 0.0)
    alloc.allocate(PUB2, SRV2, 1, HOLD)
    assert alloc.pair_count() == 1


@pytest.mark.parametrize("hold_down", [0.0, -1.0])
def test_hold_down_follows_the_options_rule(hold_down: float) -> None:
    # One rule for the option and the allocator: a positive number of seconds.
    with pytest.raises(ConfigError) as info:
        CallIdAllocator(hold_down)
    assert info.value.key == "call_id_hold_down"
    with pytest.raises(ConfigError):
        AlgConfig(call_id_hold_down=hold_down)


def test_a_short_hold_down_frees_the_pair_when_it_ends() -> None:
    alloc = CallIdAllocator(0.5)
    alloc.allocate(PUB, SRV, 1, 0.0)
    alloc.release(PUB, SRV, 1, 0.0)
    assert alloc.held_down(PUB, SRV, 1, 0.4)
    assert alloc.allocate(PUB, SRV, 1, 0.5) == 1
    alloc.release(PUB, SRV, 1, 0.5)
    alloc.purge(1.0)
    assert alloc.pair_count() == 0


@pytest.mark.parametrize("preferred", [-1, 65536, 1 << 20])
def test_preferred_out_of_range(preferred: int) -> None:
    with pytest.raises(ValueError, match="Call ID"):
        make().allocate(PUB, SRV, preferred, 0.0)


def test_negative_hold_down_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        CallIdAllocator(-1.0)
    assert info.value.key == "call_id_hold_down"


_PAIRS = [(PUB, SRV), (PUB, SRV2), (PUB2, SRV)]
_OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("allocate"),
            st.integers(0, len(_PAIRS) - 1),
            st.one_of(st.integers(0, 6), st.integers(65530, 65535)),
        ),
        st.tuples(st.just("release"), st.integers(0, len(_PAIRS) - 1), st.integers(0, 50)),
        st.tuples(st.just("wait"), st.just(0), st.integers(0, 40)),
    ),
    max_size=120,
)


def _held(
    released_at: dict[tuple[int, int], float],
    index: int,
    call_id: int,
    now: float,
    hold_down: float,
) -> bool:
    last = released_at.get((index, call_id))
    return last is not None and now < last + hold_down


@settings(max_examples=300, deadline=None)
@given(ops=_OPS, hold_down=st.sampled_from([0.5, 1.0, 30.0, 60.0]))
def test_property_no_shared_live_id_and_no_reuse_in_hold_down(
    ops: list[tuple[str, int, int]], hold_down: float
) -> None:
    alloc = CallIdAllocator(hold_down)
    now = 0.0
    live: dict[int, list[int]] = {index: [] for index in range(len(_PAIRS))}
    released_at: dict[tuple[int, int], float] = {}
    cursor: dict[int, int | None] = {index: None for index in range(len(_PAIRS))}
    for op, index, value in ops:
        public_ip, server_ip = _PAIRS[index]
        if op == "wait":
            now += value
        elif op == "release":
            calls = live[index]
            if calls:
                call_id = calls.pop(value % len(calls))
                alloc.release(public_ip, server_ip, call_id, now)
                released_at[(index, call_id)] = now
        else:
            call_id = alloc.allocate(public_ip, server_ip, value, now)
            assert call_id not in live[index]
            last = released_at.get((index, call_id))
            assert last is None or now >= last + hold_down

            def taken(c: int, index: int = index, now: float = now) -> bool:
                return c in live[index] or _held(released_at, index, c, now, hold_down)

            if not live[index] and not any(taken(c) for i, c in released_at if i == index):
                cursor[index] = None  # an empty pair is forgotten, its cursor with it
            expected = value
            if taken(expected):
                start = cursor[index]
                expected = (value + 1 if start is None else start) % CALL_ID_SPACE
                while taken(expected):
                    expected = (expected + 1) % CALL_ID_SPACE
                cursor[index] = (expected + 1) % CALL_ID_SPACE
            assert call_id == expected
            live[index].append(call_id)
        assert alloc.count_in_use() == sum(len(calls) for calls in live.values())
        for pair_index, calls in live.items():
            for call_id in calls:
                assert alloc.in_use(*_PAIRS[pair_index], call_id)


# Each inside host's share of a pair's IDs.

H1 = IPv4Address("192.168.1.1")
H2 = IPv4Address("192.168.1.2")


def test_a_hosts_share_counts_ids_in_use_and_held_down_until_the_hold_down_ends() -> None:
    alloc = CallIdAllocator(HOLD)
    for call_id in (1, 2, 3):
        alloc.allocate(PUB, SRV, call_id, 0.0, H1, 3)
    alloc.release(PUB, SRV, 1, 1.0)
    alloc.release(PUB, SRV, 2, 1.0)
    assert alloc.held_by(PUB, SRV, H1) == 3
    with pytest.raises(LimitError, match=r"192\.168\.1\.1 holds 3") as refused:
        alloc.allocate(PUB, SRV, 4, 2.0, H1, 3)
    assert refused.value.limit == "max_call_ids_per_host"
    assert alloc.allocate(PUB, SRV, 4, 2.0, H2, 3) == 4  # another host is not refused
    assert alloc.allocate(PUB2, SRV, 4, 2.0, H1, 3) == 4  # nor the host on another pair
    assert alloc.allocate(PUB, SRV, 5, 1.0 + HOLD, H1, 3) == 5  # two hold-downs ended
    assert alloc.held_by(PUB, SRV, H1) == 2


def test_ids_adopted_after_a_restart_count_against_their_host() -> None:
    alloc = CallIdAllocator(HOLD)
    assert alloc.adopt(PUB, SRV, 7, host=H1)
    assert alloc.adopt(PUB, SRV, 8, until=30.0, host=H1)
    with pytest.raises(LimitError):
        alloc.allocate(PUB, SRV, 9, 0.0, H1, 2)
    alloc.purge(30.0)
    assert alloc.allocate(PUB, SRV, 9, 30.0, H1, 2) == 9


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([H1, H2]), st.booleans(), st.floats(0, 5)),
                max_size=60))
def test_property_a_host_never_holds_more_than_its_share(
    steps: list[tuple[IPv4Address, bool, float]],
) -> None:
    alloc = CallIdAllocator(10.0)
    now = 0.0
    live: dict[IPv4Address, list[int]] = {H1: [], H2: []}
    for host, allocate, dt in steps:
        now += dt
        if allocate or not live[host]:
            try:
                live[host].append(alloc.allocate(PUB, SRV, 100, now, host, 4))
            except LimitError:
                assert alloc.held_by(PUB, SRV, host) == 4
        else:
            alloc.release(PUB, SRV, live[host].pop(0), now)
        for h in (H1, H2):
            assert len(live[h]) <= alloc.held_by(PUB, SRV, h) <= 4
