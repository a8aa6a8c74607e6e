"""The connection lifecycle table (``bridge.transport.lifecycle``), row by row."""

from __future__ import annotations

import pytest

from bridge.transport.lifecycle import (
    OUTCOMES,
    TRANSITIONS,
    Event,
    Lifecycle,
    LifecycleError,
    Outcome,
    Phase,
)


def run(*events: Event) -> Lifecycle:
    life = Lifecycle()
    for event in events:
        life.on(event)
    return life


@pytest.mark.parametrize(
    ("events", "outcome"),
    [
        ((Event.UPGRADED, Event.CLOSE, Event.LOST), Outcome.COMPLETED),
        ((Event.UPGRADED, Event.PEER_CLOSE, Event.LOST), Outcome.COMPLETED),
        ((Event.UPGRADED, Event.LOST), Outcome.DROPPED),
        ((Event.UPGRADED, Event.PEER_FAULT, Event.LOST), Outcome.PROTOCOL_ERROR),
        ((Event.UPGRADED, Event.HANDLER_ERROR, Event.LOST), Outcome.HANDLER_ERROR),
        ((Event.UPGRADED, Event.SHUTDOWN, Event.PEER_CLOSE, Event.LOST), Outcome.SHUTDOWN),
        # The first reason wins: an idle call the peer then closes stays idle_timeout.
        ((Event.UPGRADED, Event.IDLE_TIMEOUT, Event.PEER_CLOSE, Event.LOST), Outcome.IDLE_TIMEOUT),
        ((Event.UPGRADED, Event.MAX_DURATION, Event.SHUTDOWN, Event.LOST), Outcome.MAX_DURATION),
        ((Event.UPGRADED, Event.FIRST_MESSAGE_TIMEOUT, Event.LOST), Outcome.FIRST_MESSAGE_TIMEOUT),
        # A peer's close then our shutdown: the call had completed.
        ((Event.UPGRADED, Event.PEER_CLOSE, Event.SHUTDOWN, Event.LOST), Outcome.COMPLETED),
    ],
)
def test_outcome_is_decided_once_by_the_first_reason(
    events: tuple[Event, ...], outcome: Outcome
) -> None:
    life = run(*events)
    assert life.phase is Phase.CLOSED
    assert life.outcome is outcome
    assert life.upgraded


def test_phases_follow_the_table() -> None:
    life = Lifecycle()
    assert life.phase is Phase.HANDSHAKE and not life.is_open
    assert life.on(Event.UPGRADED) is Phase.OPEN and life.is_open
    assert life.on(Event.CLOSE) is Phase.CLOSING
    assert life.on(Event.PEER_CLOSE) is Phase.CLOSING
    assert life.on(Event.LOST) is Phase.CLOSED
    assert life.on(Event.LOST) is Phase.CLOSED  # connection_lost after an abort: harmless


def test_an_http_answer_never_upgrades_and_counts_no_outcome_of_a_call() -> None:
    life = run(Event.ANSWERED, Event.LOST)
    assert not life.upgraded
    assert life.outcome is Outcome.DROPPED  # (the server counts only upgraded connections)


@pytest.mark.parametrize(
    "event", [Event.CLOSE, Event.PEER_CLOSE, Event.HANDLER_ERROR, Event.IDLE_TIMEOUT]
)
def test_events_that_cannot_happen_before_the_upgrade_are_errors(event: Event) -> None:
    with pytest.raises(LifecycleError):
        run(event)


def test_no_upgrade_after_closing() -> None:
    with pytest.raises(LifecycleError):
        run(Event.UPGRADED, Event.CLOSE, Event.UPGRADED)


def test_every_outcome_but_the_derived_two_has_its_event() -> None:
    assert set(OUTCOMES.values()) == set(Outcome) - {Outcome.COMPLETED, Outcome.DROPPED}
    assert all((Phase.OPEN, event) in TRANSITIONS for event in OUTCOMES)
