"""A device's Plug and Play state, and the table of the transitions PnP IRPs make (reference 8.2).

Sans-I/O: the table says which minor function moves a device from which state to which, and
nothing else.  The PnP manager (``airp._iomanager._pnp``) sends the IRPs and applies the table;
drivers read ``device.pnp_state``; ``docs/lifecycle.md`` draws its state diagram from
:data:`PNP_TRANSITIONS` with :func:`pnp_state_diagram`.
"""

from __future__ import annotations

import enum
from contextvars import ContextVar
from dataclasses import dataclass

from ._codes import PnpMinor
from ._misuse import must_be

__all__ = [
    "PNP_TRANSITIONS",
    "DeviceRelationType",
    "PnpState",
    "PnpStateError",
    "QueryDeviceRelationsParameters",
    "next_pnp_state",
    "pnp_state_diagram",
]


class PnpState(enum.Enum):
    """Where a device is in its Plug and Play life (the states the WDM samples keep).

    A device that no PnP manager built (made with :meth:`airp.IoManager.create_device` and
    attached by hand) has ``pnp_state`` ``None``: nothing here applies to it.
    """

    #: AddDevice has run; IRP_MN_START_DEVICE has not succeeded yet.  No I/O is expected.
    NOT_STARTED = "not started"
    #: IRP_MN_START_DEVICE succeeded: the device serves I/O.
    STARTED = "started"
    #: IRP_MN_QUERY_REMOVE_DEVICE succeeded: creates are refused, other I/O goes on.
    REMOVE_PENDING = "remove pending"
    #: IRP_MN_SURPRISE_REMOVAL: the hardware is gone.  Outstanding I/O fails, new I/O is refused,
    #: the stack stays built (no detach, no delete) until the last handle closes.
    SURPRISE_REMOVED = "surprise removed"
    #: IRP_MN_REMOVE_DEVICE: the drivers detach and delete their devices.  Final.
    REMOVED = "removed"


class PnpStateError(ValueError):
    """A PnP request that the device's state does not allow (the PnP manager never sends one).

    :ivar state: the state the device was in.
    :ivar minor: the minor function that was asked for.
    """

    def __init__(self, state: PnpState, minor: PnpMinor, allowed: tuple[PnpMinor, ...]) -> None:
        self.state = state
        self.minor = minor
        names = ", ".join(m.name for m in allowed) or "nothing: the device is gone"
        super().__init__(f"{minor.name} cannot be sent to a device that is {state.value} (allowed: {names})")


#: ``(state, minor) -> next state``.  Every pair not listed is refused with :class:`PnpStateError`.
#: CANCEL_REMOVE_DEVICE is also accepted in STARTED: the PnP manager sends it to every device of a
#: stack when any of them failed the query, including those that never saw the query (8.2).  A
#: query is only sent to a started device, so the state CANCEL_REMOVE_DEVICE restores ("the
#: previous PnP state" of 8.2) is always STARTED.
PNP_TRANSITIONS: dict[tuple[PnpState, PnpMinor], PnpState] = {
    (PnpState.NOT_STARTED, PnpMinor.START_DEVICE): PnpState.STARTED,
    (PnpState.NOT_STARTED, PnpMinor.REMOVE_DEVICE): PnpState.REMOVED,
    (PnpState.NOT_STARTED, PnpMinor.SURPRISE_REMOVAL): PnpState.SURPRISE_REMOVED,
    (PnpState.STARTED, PnpMinor.QUERY_REMOVE_DEVICE): PnpState.REMOVE_PENDING,
    (PnpState.STARTED, PnpMinor.CANCEL_REMOVE_DEVICE): PnpState.STARTED,
    (PnpState.STARTED, PnpMinor.SURPRISE_REMOVAL): PnpState.SURPRISE_REMOVED,
    (PnpState.REMOVE_PENDING, PnpMinor.CANCEL_REMOVE_DEVICE): PnpState.STARTED,
    (PnpState.REMOVE_PENDING, PnpMinor.REMOVE_DEVICE): PnpState.REMOVED,
    (PnpState.REMOVE_PENDING, PnpMinor.SURPRISE_REMOVAL): PnpState.SURPRISE_REMOVED,
    (PnpState.SURPRISE_REMOVED, PnpMinor.REMOVE_DEVICE): PnpState.REMOVED,
}


def next_pnp_state(state: PnpState, minor: PnpMinor) -> PnpState:
    """The state a device moves to when *minor* is sent to it in *state*.

    :raises PnpStateError: if the table has no entry for *state* and *minor*.
    :raises TypeError: if *state* is not a PnpState or *minor* not a PnpMinor.
    """
    try:
        return PNP_TRANSITIONS[state, minor]
    except (KeyError, TypeError):
        # Checked on the way out only: a lookup that succeeds had the right types.
        if not isinstance(state, PnpState):
            raise must_be("state", "a PnpState", state) from None
        if not isinstance(minor, PnpMinor):
            if not isinstance(minor, int) or isinstance(minor, bool) or minor not in PnpMinor._value2member_map_:
                raise must_be("minor", "a PnpMinor", minor) from None
            minor = PnpMinor(minor)
        allowed = tuple(m for (s, m) in PNP_TRANSITIONS if s is state)
        raise PnpStateError(state, minor, allowed) from None


def pnp_state_diagram() -> str:
    """:data:`PNP_TRANSITIONS` as a Mermaid ``stateDiagram-v2`` (what ``docs/lifecycle.md`` shows)."""
    lines = ["stateDiagram-v2", "    [*] --> NOT_STARTED: AddDevice"]
    for (state, minor), target in PNP_TRANSITIONS.items():
        lines.append(f"    {state.name} --> {target.name}: {minor.name}")
    lines.append("    REMOVED --> [*]")
    return "\n".join(lines) + "\n"


class DeviceRelationType(enum.IntEnum):
    """``DEVICE_RELATION_TYPE``: what IRP_MN_QUERY_DEVICE_RELATIONS asks for."""

    BUS_RELATIONS = 0
    EJECTION_RELATIONS = 1
    POWER_RELATIONS = 2
    REMOVAL_RELATIONS = 3
    TARGET_DEVICE_RELATION = 4


@dataclass(frozen=True, slots=True)
class QueryDeviceRelationsParameters:
    """``Parameters.QueryDeviceRelations``, with the answer's list.

    Windows returns a ``DEVICE_RELATIONS`` the driver allocates, through ``IoStatus.Information``,
    and a filter may add to the one a lower driver returned.  airp gives the request one list,
    :attr:`relations`, that the drivers of the stack fill in place (a bus driver's FDO puts its
    child PDOs there and passes the IRP down); the PnP manager reads it once the IRP completes
    with success.

    :ivar type: the relation asked for (BUS_RELATIONS to enumerate children).
    :ivar relations: the devices reported, filled by the drivers.
    """

    type: DeviceRelationType
    relations: list[object]


#: True while a driver's AddDevice runs: devices created then start with DO_DEVICE_INITIALIZING,
#: which the driver must clear before AddDevice returns (Verifier 0x243), as IoCreateDevice sets it.
adding_device: ContextVar[bool] = ContextVar("airp_adding_device", default=False)
