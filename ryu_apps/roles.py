"""The election's role decisions as OpenFlow 1.3 messages, and the switch's answers as
the election's inputs: pure functions, no sending (``alg.election``)."""

from __future__ import annotations

from collections.abc import Iterable

from alg.election import Action, AskMaster, AskSlave, SwitchRole
from ryu_apps import wire

ROLES = {SwitchRole.EQUAL: wire.OFPCR_ROLE_EQUAL, SwitchRole.MASTER: wire.OFPCR_ROLE_MASTER,
         SwitchRole.SLAVE: wire.OFPCR_ROLE_SLAVE}
"""The election's roles by their ``OFPCR_ROLE_*`` value."""
_BY_VALUE = {value: role for role, value in ROLES.items()}


def role_messages(actions: Iterable[Action]) -> list[wire.Message]:
    """The role requests among ``actions``, in their order (the other actions are the
    store's and the core's)."""
    messages = []
    for action in actions:
        if isinstance(action, AskSlave):
            messages.append(wire.role_request(wire.OFPCR_ROLE_SLAVE, action.generation))
        elif isinstance(action, AskMaster):
            messages.append(wire.role_request(wire.OFPCR_ROLE_MASTER, action.generation))
    return messages


def decode_answer(buf: bytes) -> tuple[SwitchRole, int] | None:
    """The role and generation id of a ROLE_REPLY, or of the request a role request
    failure quotes; None for a role the election does not ask for (``NOCHANGE``).

    Raises:
        WireError: fewer bytes than a role message.
    """
    value, generation = wire.decode_role(buf)
    role = _BY_VALUE.get(value)
    return None if role is None else (role, generation)
