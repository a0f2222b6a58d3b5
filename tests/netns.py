"""Test hosts on this machine: network namespaces joined by veth pairs (two
hosts with random loss injected on one side; or a viewer and a camera that
reach each other only through a relay host). Everything is created by the test and
deleted when it ends; no traffic leaves the machine.

docs/DESIGN.md §7: the kernel here has no netem; random loss works with nftables in
the *input* hook of the receiving namespace (an output-hook drop would make
sendto() fail, which a real network never does).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import shutil
import subprocess
import time
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


def wait_for_carrier(namespace: str, device: str, timeout: float = 5.0) -> None:
    """Until the kernel says the veth has carrier (both ends up; its link
    watch takes a moment): programs that pick interfaces that are up and
    running (Janus's ICE) would otherwise find none."""
    deadline = time.monotonic() + timeout
    while "NO-CARRIER" in subprocess.run(inside(namespace, "ip", "-o", "link", "show", "dev", device),
                                         capture_output=True, text=True, timeout=10).stdout:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{device} in {namespace}: no carrier after {timeout:g} s")
        time.sleep(0.05)


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
            for ns, dev in ((self.server, veth_s), (self.client, veth_c)):
                wait_for_carrier(ns, dev)
            run(*inside(self.client, "nft", "add", "table", "inet", "loss"))
            run(*inside(self.client, "nft", "add", "chain", "inet", "loss",
                "input", "{ type filter hook input priority 0 ; }"))
            for ns in (self.server, self.client):
                run(*inside(ns, "nft", "add", "table", "inet", "cut"))
                run(*inside(ns, "nft", "add", "chain", "inet", "cut",
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

    def cut(self, cut: bool = True) -> None:
        """Drop everything between the two, both ways (on input: senders see
        no error, as when a cable is pulled or Wi-Fi is gone); cut(False)
        lets it through again."""
        for ns, peer in ((self.server, self.client_ip), (self.client, self.server_ip)):
            run(*inside(ns, "nft", "flush", "chain", "inet", "cut", "input"))
            if cut:
                run(*inside(ns, "nft", "add", "rule", "inet", "cut", "input",
                    "ip", "saddr", peer, "drop"))

    @contextlib.contextmanager
    def in_server(self):
        """Run this thread (and what it starts: sockets, child processes) in the
        server namespace, then come back."""
        with _in_namespace(self.server):
            yield

    @contextlib.contextmanager
    def in_client(self):
        """As `in_server`, in the client namespace: a socket opened meanwhile
        stays in it (for an in-process client on the far side of the link)."""
        with _in_namespace(self.client):
            yield

    def client_wrapper(self, directory: Path, program: str) -> Path:
        """An executable that runs `program` in the client namespace."""
        return _wrapper(directory, self.client, program)


class Relayed:
    """A viewer and a camera that cannot reach each other, and a relay host
    that both can: three namespaces, a veth pair from the relay host to each.
    The relay host answers on one service address (on its loopback; both
    route it through their veth) and forwards nothing between its links, so
    media can only go through a TURN server there, and HTTP through a TCP
    forwarder there (where a reverse proxy or port forward would be)."""

    def __init__(self, tag: str):
        unique, pid = os.getpid() % 250, os.getpid()
        self.viewer, self.camera, self.relay = (f"rp{role}{tag}{pid}"[:15] for role in "vcr")
        self.relay_viewer_ip, self.viewer_ip = f"10.214.{unique}.1", f"10.214.{unique}.2"
        self.relay_camera_ip, self.camera_ip = f"10.214.{unique}.5", f"10.214.{unique}.6"
        self.service_ip = f"10.214.{unique}.9"
        self.veths = {side: (f"v{pid}{side}r"[:15], f"v{pid}{side}"[:15]) for side in "vc"}

    def __enter__(self) -> Relayed:
        try:
            for ns in (self.viewer, self.camera, self.relay):
                run("ip", "netns", "add", ns)
                run(*inside(ns, "ip", "link", "set", "lo", "up"))
            run(*inside(self.relay, "ip", "addr", "add", f"{self.service_ip}/32", "dev", "lo"))
            for side, ns, ip, relay_ip in (("v", self.viewer, self.viewer_ip,
                                            self.relay_viewer_ip),
                                           ("c", self.camera, self.camera_ip,
                                            self.relay_camera_ip)):
                relay_end, end = self.veths[side]
                run("ip", "link", "add", relay_end, "netns", self.relay, "type", "veth",
                    "peer", "name", end, "netns", ns)
                for where, dev, address in ((self.relay, relay_end, relay_ip), (ns, end, ip)):
                    run(*inside(where, "ip", "addr", "add", f"{address}/30", "dev", dev))
                    run(*inside(where, "ip", "link", "set", dev, "up"))
                run(*inside(ns, "ip", "route", "add", f"{self.service_ip}/32", "via", relay_ip))
                wait_for_carrier(ns, end)
            run(*inside(self.relay, "nft", "add", "table", "inet", "block"))
            run(*inside(self.relay, "nft", "add", "chain", "inet", "block", "input",
                        "{ type filter hook input priority 0 ; }"))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for ns in (self.viewer, self.camera, self.relay):  # the veth pairs go with them
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)

    def block_viewer_udp(self) -> None:
        """The relay host drops all UDP from the viewer's side (an office
        firewall that lets only TCP out)."""
        run(*inside(self.relay, "nft", "add", "rule", "inet", "block", "input", "iifname",
                    self.veths["v"][0], "meta", "l4proto", "udp", "drop"))

    @contextlib.contextmanager
    def in_camera(self):
        """Run this thread (and the sockets it opens) in the camera's namespace."""
        with _in_namespace(self.camera):
            yield

    def viewer_wrapper(self, directory: Path, program: str, env: dict | None = None) -> Path:
        """An executable that runs `program` in the viewer's namespace, with
        `env` added to its environment."""
        return _wrapper(directory, self.viewer, program, env)


@contextlib.contextmanager
def _in_namespace(namespace: str):
    with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{namespace}") as target:
        if _libc.setns(target.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns to namespace {namespace} failed")
        try:
            yield
        finally:
            if _libc.setns(home.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back failed")


def _wrapper(directory: Path, namespace: str, program: str, env: dict | None = None) -> Path:
    wrapper = directory / f"{Path(program).name}-in-{namespace}"
    exports = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in (env or {}).items())
    wrapper.write_text("#!/bin/sh\n" + exports + "exec " + " ".join(inside(namespace, program))
                       + ' "$@"\n')
    wrapper.chmod(0o755)
    return wrapper
