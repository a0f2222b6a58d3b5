"""sd_notify(3) without libsystemd: readiness, watchdog pings and status for Type=notify units."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable

logger = logging.getLogger("rpistream.systemd")

# How often STATUS= (what `systemctl status` shows) is refreshed.
STATUS_INTERVAL = 10.0


def notify_address(value: str | None) -> str | bytes | None:
    """$NOTIFY_SOCKET as a socket address: a path, or a Linux abstract socket
    when it starts with '@' (sd_notify(3): the '@' stands for a NUL byte)."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock: addresses (systemd 253+) are for VMs, not a Pi service


def watchdog_interval(environ=os.environ) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of $WATCHDOG_USEC, as
    sd_watchdog_enabled(3) advises; None when the unit has no watchdog or
    it is meant for another process ($WATCHDOG_PID)."""
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        usec = int(usec)
    except ValueError:
        return None
    return usec / 2 / 1e6 if usec > 0 else None


class SystemdNotifier:
    """Tells systemd READY=1 once serving, pings WATCHDOG=1 from an event-loop
    timer (a stalled loop stops the pings and systemd restarts the service),
    refreshes STATUS=, and says STOPPING=1 on shutdown. Every method is a
    no-op when $NOTIFY_SOCKET is unset (not run by systemd)."""

    def __init__(self, status: Callable[[], str], *, environ=os.environ,
                 status_interval: float | None = None):
        self._status = status
        self._address = notify_address(environ.get("NOTIFY_SOCKET"))
        self.watchdog_interval = watchdog_interval(environ) if self._address else None
        self._status_interval = status_interval or STATUS_INTERVAL
        self._socket: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, message: str) -> bool:
        """One datagram; a failure is logged once and never raised: systemd
        going away must not take the camera server with it."""
        if self._address is None:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX,
                                             socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.setblocking(False)
            self._socket.sendto(message.encode(), self._address)
            return True
        except OSError as exc:
            if not self._failed:
                logger.warning("cannot notify systemd at %s: %s", self._address, exc)
                self._failed = True
            return False

    def start(self) -> None:
        """READY=1 with the first STATUS=, then the timers."""
        if self._address is None:
            return
        self._loop = asyncio.get_running_loop()
        self.send(f"READY=1\nSTATUS={self._status()}")
        self._timers["status"] = self._loop.call_later(self._status_interval, self._tick_status)
        if self.watchdog_interval is not None:
            self._tick_watchdog()

    def _tick_watchdog(self) -> None:
        self.send("WATCHDOG=1")
        if self._loop is not None:
            self._timers["watchdog"] = self._loop.call_later(self.watchdog_interval,
                                                             self._tick_watchdog)

    def _tick_status(self) -> None:
        try:
            self.send(f"STATUS={self._status()}")
        except Exception:  # a status line must never stop the timer
            logger.exception("status line failed")
        if self._loop is not None:
            self._timers["status"] = self._loop.call_later(self._status_interval,
                                                           self._tick_status)

    def stopping(self) -> None:
        """STOPPING=1 and no more pings: systemd now waits for the exit."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._loop = None
        if self._address is not None:
            self.send("STOPPING=1\nSTATUS=shutting down")
        if self._socket is not None:
            self._socket.close()
            self._socket = None
