"""Two test hosts on this machine: network namespaces joined by a veth pair,
with random loss injected on one side. Everything is created by the test and
deleted when it ends; no traffic leaves the machine.

docs/DESIGN.md §7: the kernel here has no netem; random loss works with nftables in
the *input* hook of the receiving namespace (an output-hook drop would make
sendto() fail, which a real network never does).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
from pathlib import Path

CLONE_NEWNET = 0x40000000  # linux/sched.h
_libc = ctypes.CDLL(None, use_errno=True)


def available() -> str | None:
    """None if namespaces, veth and nftables can be used here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (iproute2, nftables)"
    return None


def run(*args: str) -> None:
    result = subprocess.run(args, capture_output=True, text=True, timeout=10)
    if result.returncode:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): "
                           f"{result.stderr.strip()}")


def inside(namespace: str, *args: str) -> tuple[str, ...]:
    """A command line that runs `args` in `namespace`. nsenter switches only
    the network namespace; `ip netns exec` / `ip -n` also remount /sys, which
    fails where / is not a mount point (a chroot)."""
    return ("nsenter", f"--net=/run/netns/{namespace}", *args)


class Link:
    """`server` and `client` namespaces, `server_ip` <-> `client_ip` on a veth pair."""

    def __init__(self, tag: str):
        # Names and a /30 unique to this process, so parallel runs do not meet.
        unique = os.getpid() % 250
        self.server, self.client = f"rps{tag}{os.getpid()}", f"rpc{tag}{os.getpid()}"
        self.server_ip, self.client_ip = f"10.213.{unique}.1", f"10.213.{unique}.2"
        self.server_veth, self.client_veth = f"v{os.getpid()}s"[:15], f"v{os.getpid()}c"[:15]

    def __enter__(self) -> Link:
        run("ip", "netns", "add", self.server)
        try:
            run("ip", "netns", "add", self.client)
            veth_s, veth_c = self.server_veth, self.client_veth
            run("ip", "link", "add", veth_s, "netns", self.server, "type", "veth",
                "peer", "name", veth_c, "netns", self.client)
            for ns, dev, ip in ((self.server, veth_s, self.server_ip),
                                (self.client, veth_c, self.client_ip)):
                run(*inside(ns, "ip", "addr", "add", f"{ip}/30", "dev", dev))
                run(*inside(ns, "ip", "link", "set", dev, "up"))
                run(*inside(ns, "ip", "link", "set", "lo", "up"))
            run(*inside(self.client, "nft", "add", "table", "inet", "loss"))
            run(*inside(self.client, "nft", "add", "chain", "inet", "loss",
                "input", "{ type filter hook input priority 0 ; }"))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for ns in (self.client, self.server):  # the veth pair goes with them
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)

    def loss(self, percent: int) -> None:
        """Drop `percent` % of the UDP datagrams the server sends the client, at random."""
        run(*inside(self.client, "nft", "flush", "chain", "inet", "loss", "input"))
        if percent:
            run(*inside(self.client, "nft", "add", "rule", "inet", "loss",
                "input", "ip", "saddr", self.server_ip, "meta", "l4proto", "udp",
                "numgen", "random", "mod", "100", "<", str(percent), "drop"))

    @contextlib.contextmanager
    def in_server(self):
        """Run this thread (and what it starts: sockets, child processes) in the
        server namespace, then come back."""
        with self._in(self.server):
            yield

    @contextlib.contextmanager
    def in_client(self):
        """As `in_server`, in the client namespace: a socket opened meanwhile
        stays in it (for an in-process client on the far side of the link)."""
        with self._in(self.client):
            yield

    @contextlib.contextmanager
    def _in(self, namespace: str):
        with open("/proc/thread-self/ns/net") as home, \
                open(f"/run/netns/{namespace}") as target:
            if _libc.setns(target.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns to namespace {namespace} failed")
            try:
                yield
            finally:
                if _libc.setns(home.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back failed")

    def client_wrapper(self, directory: Path, program: str) -> Path:
        """An executable that runs `program` in the client namespace."""
        wrapper = directory / f"{Path(program).name}-in-{self.client}"
        wrapper.write_text("#!/bin/sh\nexec " + " ".join(inside(self.client, program))
                           + ' "$@"\n')
        wrapper.chmod(0o755)
        return wrapper
