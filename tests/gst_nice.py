"""Keeping GStreamer's ICE (libnice, under webrtcbin) on one address, for the
GStreamer test programs (tests/gst_whep_client.py, tests/gst_whip_server.py),
which Debian's /usr/bin/python3 runs."""

from __future__ import annotations

import ctypes

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402


class Failed(Exception):
    """What a test program reports as its failure, on one line."""


_get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_get_pointer.restype = ctypes.c_void_p


def gobject_pointer(obj) -> int:
    return _get_pointer(obj.__gpointer__, None)


def restrict_nice_to_address(webrtc: Gst.Element, address: str) -> tuple:
    """Make libnice gather a host candidate on `address` only, and nothing else.

    libnice otherwise takes every interface's address (and skips loopback), and
    Debian builds it with UPnP-IGD, which multicasts SSDP discovery. There is no
    GObject-introspection data for libnice installed (gir1.2-nice-0.1), so the
    one call this needs, nice_agent_add_local_address(), goes through ctypes on
    the libnice10 shared library the GStreamer plugin itself links.

    Returns the (ICE, agent) wrappers, which the caller must keep while the
    webrtcbin lives: webrtcbin 1.22 never sinks the floating reference of its
    GstWebRTCNice, so PyGObject takes it over, and dropping the wrapper would
    free the ICE agent from under webrtcbin (a crash in add_stream). As this
    server drops webrtcbins while it runs, it also gives webrtcbin a reference
    of its own back (webrtcbin's finalize unrefs the agent), so the wrappers
    and the webrtcbin can then go in either order.
    """
    ice = webrtc.get_property("ice-agent")  # GstWebRTCNice
    if ice.__grefcount__ == 1:  # ours alone: webrtcbin's floating ref was taken over
        gobject = ctypes.CDLL("libgobject-2.0.so.0")
        gobject.g_object_ref.argtypes = [ctypes.c_void_p]
        gobject.g_object_ref.restype = ctypes.c_void_p
        gobject.g_object_ref(gobject_pointer(ice))
    ice.set_property("ice-tcp", False)  # aiortc is UDP only
    agent = ice.get_property("agent")  # NiceAgent
    agent.set_property("upnp", False)
    agent.set_property("ice-tcp", False)
    # Keepalives that must be answered: a publisher that vanished without its
    # DELETE then fails ICE, and the session ends. With libnice's default
    # (unanswered binding indications) webrtcbin 1.22 stays "connected" for ever;
    # consent freshness (RFC 7675) would do it too, but it is construct-only.
    agent.set_property("keepalive-conncheck", True)
    try:
        nice = ctypes.CDLL("libnice.so.10")
    except OSError as exc:
        raise Failed(f"cannot load libnice.so.10 to restrict ICE to {address} ({exc})") from None
    nice.nice_address_new.restype = ctypes.c_void_p
    nice.nice_address_set_from_string.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    nice.nice_address_set_from_string.restype = ctypes.c_int
    nice.nice_agent_add_local_address.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    nice.nice_agent_add_local_address.restype = ctypes.c_int
    nice.nice_address_free.argtypes = [ctypes.c_void_p]
    pointer = nice.nice_address_new()
    try:
        if not nice.nice_address_set_from_string(pointer, address.encode()):
            raise Failed(f"libnice rejected the address {address}")
        if not nice.nice_agent_add_local_address(gobject_pointer(agent), pointer):
            raise Failed(f"libnice refused {address} as its local address")
    finally:
        nice.nice_address_free(pointer)
    return ice, agent


def candidate_addresses(sdp: str) -> list[str]:
    """The connection address of every a=candidate line (RFC 8839 §5.1)."""
    return [line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")]
