"""A one-shot event-loop timer that fires at a monotonic nanosecond, not on a whole millisecond.

uvloop's ``call_later`` hands libuv a delay in whole milliseconds, and libuv measures it from
its cached loop time, itself a whole millisecond read at the start of the iteration: a timer
fires anywhere from about 1.5 ms early to 1.5 ms late before the kernel adds its own wake-up
latency. Traced on this project's 2-core VM (docs/architecture.md s.5), bridge's pacing timer
was late by more than 2 ms in 1-3 % of its wake-ups while the process was not even waiting
for a CPU, which put the outbound pacing error's p99 at 5 ms in two of three 8-second calls.

On Linux this timer is a ``timerfd`` armed with an absolute ``CLOCK_MONOTONIC`` deadline (the
clock of ``time.monotonic_ns``, so deadlines come straight from :class:`bridge.pacing.Clock`)
and watched with ``loop.add_reader``: it fires when the kernel's high-resolution timer
expires, and re-arming it is one system call, no handle object. Elsewhere (or when the loop
cannot watch a file descriptor) it falls back to ``call_later`` with the delay rounded *up*
to the next whole millisecond, never early. ``timerfd_create`` is in ``os`` only from
Python 3.13, so the two calls come from the C library through ``ctypes``.

Import rule: standard library and ``bridge.units``.
"""

from __future__ import annotations

import asyncio
import ctypes
import math
import os
import sys
import time
from collections.abc import Callable

from bridge.units import MS, SECOND

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _Itimerspec(ctypes.Structure):
    _fields_ = (("it_interval", _Timespec), ("it_value", _Timespec))


def _libc_timerfd() -> tuple[Callable[..., int], Callable[..., int]] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        create = libc.timerfd_create
        settime = libc.timerfd_settime
    except (OSError, AttributeError):
        return None
    create.argtypes = (ctypes.c_int, ctypes.c_int)
    create.restype = ctypes.c_int
    settime.argtypes = (
        ctypes.c_int,
        ctypes.c_int,
        ctypes.POINTER(_Itimerspec),
        ctypes.POINTER(_Itimerspec),
    )
    settime.restype = ctypes.c_int
    return create, settime


_TIMERFD = _libc_timerfd()


class LoopTimer:
    """One pending wake-up at a time: :meth:`arm_at` moves it, :meth:`cancel` drops it.

    ``callback`` runs on the loop once per arming: at or after the deadline with a timerfd;
    within about a millisecond of it with the fallback. ``precise`` says which kind this is.
    """

    __slots__ = (
        "_closed",
        "_fd",
        "_handle",
        "_settime",
        "_spec",
        "_spec_ref",
        "callback",
        "loop",
        "precise",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        callback: Callable[[], None],
        *,
        precise: bool = True,
    ) -> None:
        """``precise=False`` takes the millisecond fallback even where a timerfd exists."""
        self.loop = loop
        self._closed = False
        self.callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._fd = -1
        self._spec = _Itimerspec()
        self._spec_ref = ctypes.byref(self._spec)
        self._settime: Callable[..., int] | None = None
        if precise and _TIMERFD is not None:
            create, settime = _TIMERFD
            fd = create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
            if fd >= 0:
                try:
                    loop.add_reader(fd, self._readable)
                except (NotImplementedError, OSError, ValueError):
                    os.close(fd)
                else:
                    self._fd = fd
                    self._settime = settime
        self.precise = self._fd >= 0

    def arm_at(self, deadline_ns: int) -> None:
        """Fire at ``deadline_ns`` (``time.monotonic_ns``), replacing any pending wake-up."""
        if self._closed:
            raise RuntimeError("this LoopTimer is closed")
        settime = self._settime
        if settime is not None:
            if deadline_ns <= 0:
                deadline_ns = 1  # zero would disarm it: the earliest real deadline instead
            value = self._spec.it_value
            value.tv_sec, value.tv_nsec = divmod(deadline_ns, SECOND)
            if settime(self._fd, _TFD_TIMER_ABSTIME, self._spec_ref, None) != 0:
                raise OSError(ctypes.get_errno(), "timerfd_settime failed")
            return
        if self._handle is not None:
            self._handle.cancel()
        delay_ms = math.ceil(max(0, deadline_ns - time.monotonic_ns()) / MS)
        self._handle = self.loop.call_later(delay_ms / 1000, self._fallback_fired)

    def cancel(self) -> None:
        """Drop the pending wake-up, if any (the callback will not run for it)."""
        if self._settime is not None:
            value = self._spec.it_value
            value.tv_sec = value.tv_nsec = 0
            self._settime(self._fd, _TFD_TIMER_ABSTIME, self._spec_ref, None)
        elif self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def close(self) -> None:
        """Cancel and release the file descriptor; the timer cannot be armed again."""
        self.cancel()
        self._closed = True
        if self._fd >= 0:
            self.loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
            self._settime = None

    def _readable(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            return  # re-armed or cancelled after it expired: not this arming's wake-up
        self.callback()

    def _fallback_fired(self) -> None:
        self._handle = None
        self.callback()
