"""Role requests (``ryu_apps.wire.role_request``) byte for byte as the framework's own
``OFPRoleRequest``; role replies decoded as its parser does; the election's decisions
as messages (``ryu_apps.roles``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alg.election import AskMaster, AskSlave, Campaign, Demote, Restore, SwitchRole
from alg.errors import WireError
from ryu_apps import roles, wire
from ryu_apps.framework import ofproto_v1_3 as ofp
from ryu_apps.framework import ofproto_v1_3_parser as parser
from tests.unit.fake_switch import FakeDatapath

ROLE = st.sampled_from([ofp.OFPCR_ROLE_NOCHANGE, ofp.OFPCR_ROLE_EQUAL,
                        ofp.OFPCR_ROLE_MASTER, ofp.OFPCR_ROLE_SLAVE])
GENERATION = st.integers(0, 2**64 - 1)


def ryu_role_request(role: int, generation: int, xid: int = 1) -> bytes:
    msg = parser.OFPRoleRequest(FakeDatapath(), role, generation)
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


@given(role=ROLE, generation=GENERATION)
def test_a_role_request_is_byte_for_byte_ryus(role: int, generation: int) -> None:
    ours = wire.encode([wire.role_request(role, generation)], wire.Xids())
    assert ours == ryu_role_request(role, generation)


@given(role=ROLE, generation=GENERATION)
def test_a_role_reply_decodes_as_ryus_parser_reads_it(role: int, generation: int) -> None:
    buf = ryu_role_request(role, generation, xid=9)
    buf = buf[:1] + bytes([ofp.OFPT_ROLE_REPLY]) + buf[2:]
    reply = parser.OFPRoleReply.parser(None, 4, ofp.OFPT_ROLE_REPLY, len(buf), 9, buf)
    assert wire.decode_role(buf) == (reply.role, reply.generation_id) == (role, generation)


def test_the_request_a_stale_refusal_quotes_is_decoded() -> None:
    request = ryu_role_request(ofp.OFPCR_ROLE_MASTER, 41)
    error = parser.OFPErrorMsg(FakeDatapath(), ofp.OFPET_ROLE_REQUEST_FAILED,
                               ofp.OFPRRFC_STALE, request)
    error.set_xid(1)
    error.serialize()
    quoted = bytes(error.buf)[12:]
    assert roles.decode_answer(quoted) == (SwitchRole.MASTER, 41)


@pytest.mark.parametrize("cut", [0, 8, 23])
def test_a_short_role_message_is_refused(cut: int) -> None:
    with pytest.raises(WireError):
        wire.decode_role(ryu_role_request(ofp.OFPCR_ROLE_SLAVE, 3)[:cut])


def test_nochange_is_no_role_of_the_election() -> None:
    assert roles.decode_answer(ryu_role_request(ofp.OFPCR_ROLE_NOCHANGE, 3)) is None
    assert roles.decode_answer(ryu_role_request(ofp.OFPCR_ROLE_EQUAL, 3)) == (
        SwitchRole.EQUAL, 3)


def test_the_elections_role_decisions_become_role_requests_in_order() -> None:
    actions = [AskSlave(0), Campaign(3.0, 1), AskMaster(7), Restore(), Demote(), AskSlave(7)]
    assert [m.buf for m in roles.role_messages(actions)] == [
        wire.role_request(ofp.OFPCR_ROLE_SLAVE, 0).buf,
        wire.role_request(ofp.OFPCR_ROLE_MASTER, 7).buf,
        wire.role_request(ofp.OFPCR_ROLE_SLAVE, 7).buf,
    ]
    assert roles.role_messages([Campaign(3.0, 1)]) == []
    assert {v: getattr(ofp, f"OFPCR_ROLE_{r.name}") for r, v in roles.ROLES.items()} == {
        v: v for v in roles.ROLES.values()}
