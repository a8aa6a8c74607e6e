"""A connection's lifecycle as one table: phases, the events that move it, and its outcome.

Every websocket connection bridge makes or accepts (a call, a simulated caller, an upstream
link, a test upstream) goes through the same four phases. What ends it decides its outcome,
once: the event that ends the OPEN phase (a call closed for being idle and then dropped by
the peer stays ``idle_timeout``); a connection whose end carried no outcome was
``completed`` if a close frame went either way, else ``dropped``. Logs and the
``bridge_calls_total{outcome=...}`` metric use :class:`Outcome`'s values.

Like h11's ``_state.py`` the table is data, so a test reads it row by row and an event that
makes no sense in a phase (a close before the handshake) is an error here, not a silent flag.

Import rule: standard library only.
"""

from __future__ import annotations

from enum import Enum, StrEnum


class Phase(Enum):
    #: TCP is up; the HTTP upgrade (request or response) is not done.
    HANDSHAKE = "handshake"
    #: The websocket is open: data flows both ways.
    OPEN = "open"
    #: A close frame or an HTTP answer went out or came in: TCP is about to go.
    CLOSING = "closing"
    #: TCP is gone.
    CLOSED = "closed"


class Outcome(StrEnum):
    """How a connection ended; the values are the ``outcome`` label of logs and metrics."""

    COMPLETED = "completed"
    DROPPED = "dropped"
    PROTOCOL_ERROR = "protocol_error"
    FIRST_MESSAGE_TIMEOUT = "first_message_timeout"
    HANDLER_ERROR = "handler_error"
    SHUTDOWN = "shutdown"
    IDLE_TIMEOUT = "idle_timeout"
    MAX_DURATION = "max_duration"


class Event(Enum):
    #: The 101 went out (server) or came in (client).
    UPGRADED = "upgraded"
    #: A plain HTTP answer or a refusal ended the handshake.
    ANSWERED = "answered"
    #: We close: the work is done (handler returned, caller hung up).
    CLOSE = "close"
    #: We close: the peer broke the protocol (bad frame, bad first message).
    PEER_FAULT = "peer_fault"
    #: We close: no first message in time.
    FIRST_MESSAGE_TIMEOUT = "first_message_timeout"
    #: We close: the handler raised.
    HANDLER_ERROR = "handler_error"
    #: We close: the server is shutting down.
    SHUTDOWN = "shutdown"
    #: We close: a limit (idle, call length).
    IDLE_TIMEOUT = "idle_timeout"
    MAX_DURATION = "max_duration"
    #: The peer's close frame came in.
    PEER_CLOSE = "peer_close"
    #: TCP is gone (after a closing handshake or not).
    LOST = "lost"


#: The outcome each closing event decides (when none was decided before).
OUTCOMES: dict[Event, Outcome] = {
    Event.PEER_FAULT: Outcome.PROTOCOL_ERROR,
    Event.FIRST_MESSAGE_TIMEOUT: Outcome.FIRST_MESSAGE_TIMEOUT,
    Event.HANDLER_ERROR: Outcome.HANDLER_ERROR,
    Event.SHUTDOWN: Outcome.SHUTDOWN,
    Event.IDLE_TIMEOUT: Outcome.IDLE_TIMEOUT,
    Event.MAX_DURATION: Outcome.MAX_DURATION,
}

_CLOSERS = (
    Event.CLOSE,
    Event.PEER_FAULT,
    Event.FIRST_MESSAGE_TIMEOUT,
    Event.HANDLER_ERROR,
    Event.SHUTDOWN,
    Event.IDLE_TIMEOUT,
    Event.MAX_DURATION,
    Event.PEER_CLOSE,
)

#: (phase, event) -> next phase. A pair not in the table is a bug in the caller.
TRANSITIONS: dict[tuple[Phase, Event], Phase] = {
    (Phase.HANDSHAKE, Event.UPGRADED): Phase.OPEN,
    (Phase.HANDSHAKE, Event.ANSWERED): Phase.CLOSING,
    # A peer that breaks the protocol during the handshake, or a timeout before it is done.
    (Phase.HANDSHAKE, Event.PEER_FAULT): Phase.CLOSING,
    (Phase.HANDSHAKE, Event.SHUTDOWN): Phase.CLOSING,
    (Phase.HANDSHAKE, Event.FIRST_MESSAGE_TIMEOUT): Phase.CLOSING,
    **{(Phase.OPEN, event): Phase.CLOSING for event in _CLOSERS},
    # Once closing, later reasons change nothing (the first one decided the outcome).
    **{(Phase.CLOSING, event): Phase.CLOSING for event in _CLOSERS},
    **{(phase, Event.LOST): Phase.CLOSED for phase in Phase},
    **{(Phase.CLOSED, event): Phase.CLOSED for event in Event},
}


class LifecycleError(RuntimeError):
    """An event that cannot happen in the current phase: a bug in bridge, not in the peer."""


class Lifecycle:
    """One connection's phase and outcome, moved only through :data:`TRANSITIONS`."""

    __slots__ = ("close_seen", "outcome", "phase", "upgraded")

    def __init__(self) -> None:
        self.phase = Phase.HANDSHAKE
        self.outcome: Outcome | None = None
        #: Whether the connection ever reached OPEN (what --max-calls and metrics count).
        self.upgraded = False
        #: Whether a close frame went either way (a clean end, as opposed to a drop).
        self.close_seen = False

    def on(self, event: Event) -> Phase:
        try:
            phase = TRANSITIONS[(self.phase, event)]
        except KeyError:
            raise LifecycleError(f"{event.value} in phase {self.phase.value}") from None
        if self.outcome is None and (self.phase is Phase.OPEN or self.phase is Phase.HANDSHAKE):
            # Only the event that leaves OPEN decides; later ones find the call closing.
            self.outcome = OUTCOMES.get(event)
        if event is Event.UPGRADED:
            self.upgraded = True
        elif event in _CLOSERS and self.phase is not Phase.HANDSHAKE:
            self.close_seen = True
        if event is Event.LOST and self.outcome is None:
            self.outcome = Outcome.COMPLETED if self.close_seen else Outcome.DROPPED
        self.phase = phase
        return phase

    @property
    def is_open(self) -> bool:
        return self.phase is Phase.OPEN
