"""GStreamer as an independent RED + ULPFEC receiver, for tests/test_fec_gstreamer.py.

Runs under the system Python (/usr/bin/python3 with python3-gi), not the
project's venv. Two element chains, each fed in order from a pad of ours (as
GstHarness does; its constructors are not introspectable), stand in for
rtpbin's receive path:

- storage: rtpreddec ! rtpstorage — every packet that arrived, media and FEC,
  is stored (rtpbin's storage sits before the jitterbuffer, so it holds the
  FEC packets that follow a lost packet);
- decode:  rtpreddec ! rtpulpfecdec ! rtpvp8depay ! vp8dec — the media packets
  that arrived, in order, and for each lost one the GstRTPPacketLost event
  rtpjitterbuffer would send. rtpulpfecdec recovers from the storage.

Input: a file of records, each one byte of kind (M media that arrived, F FEC
that arrived, L media lost), a 16-bit length and the RTP packet (for L, the
packet as it was sent: its sequence number and timestamp name the loss).
Output: the decoded I420 frames to a file, and one JSON line on stdout with
rtpulpfecdec's recovered / unrecovered counters.

    python3 gst_ulpfec_receiver.py RECORDS OUT.yuv RED_PT ULPFEC_PT MEDIA_PT SSRC
"""

import json
import struct
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
from gi.repository import Gst, GstApp  # noqa: E402, F401  (GstApp: appsink methods)

CLOCK_RATE = 90_000
STORAGE_NS = 60 * Gst.SECOND  # keep the whole test stream


class Chain:
    """A parsed chain of elements fed synchronously from our own source pad."""

    def __init__(self, description: str, caps: str):
        self.pipeline = Gst.parse_launch(description)
        self.pad = Gst.Pad.new("src", Gst.PadDirection.SRC)
        first = self.pipeline.get_by_name("first")
        assert self.pad.link(first.get_static_pad("sink")) == Gst.PadLinkReturn.OK
        assert self.pipeline.set_state(Gst.State.PLAYING) != Gst.StateChangeReturn.FAILURE
        assert self.pipeline.get_state(10 * Gst.SECOND)[0] == Gst.StateChangeReturn.SUCCESS
        self.pad.set_active(True)
        segment = Gst.Segment()
        segment.init(Gst.Format.TIME)
        for event in (Gst.Event.new_stream_start("fec-test"),
                      Gst.Event.new_caps(Gst.Caps.from_string(caps)),
                      Gst.Event.new_segment(segment)):
            assert self.pad.push_event(event)

    def push(self, packet: bytes, pts: int) -> None:
        buffer = Gst.Buffer.new_wrapped(packet)
        buffer.pts = buffer.dts = pts
        assert self.pad.push(buffer) == Gst.FlowReturn.OK

    def element(self, name: str):
        return self.pipeline.get_by_name(name)

    def stop(self) -> None:
        self.pipeline.set_state(Gst.State.NULL)


def records(path):
    data = open(path, "rb").read()
    position = 0
    while position < len(data):
        kind, length = struct.unpack_from("!cH", data, position)
        yield kind, data[position + 3:position + 3 + length]
        position += 3 + length


def main():
    path, out_path, red_pt, ulpfec_pt, media_pt, ssrc = sys.argv[1:7]
    Gst.init(None)
    caps = (f"application/x-rtp,media=video,clock-rate={CLOCK_RATE},encoding-name=VP8,"
            f"payload={media_pt},ssrc=(uint){ssrc}")
    storage = Chain(f"rtpreddec name=first pt={red_pt} ! "
                    f"rtpstorage name=storage size-time={STORAGE_NS} ! "
                    f"fakesink sync=false async=false", caps)
    decode = Chain(f"rtpreddec name=first pt={red_pt} ! rtpulpfecdec name=fec pt={ulpfec_pt} ! "
                   f"rtpvp8depay ! vp8dec ! video/x-raw,format=I420 ! "
                   f"appsink name=sink sync=false async=false wait-on-eos=false", caps)
    fec = decode.element("fec")
    fec.set_property("storage", storage.element("storage").get_property("internal-storage"))

    entries = list(records(path))
    pts = [struct.unpack_from("!I", packet, 4)[0] * Gst.SECOND // CLOCK_RATE
           for _, packet in entries]
    for (kind, packet), time in zip(entries, pts):
        if kind in (b"M", b"F"):
            storage.push(packet, time)
    for (kind, packet), time in zip(entries, pts):
        if kind == b"M":
            decode.push(packet, time)
        elif kind == b"L":  # what rtpjitterbuffer sends when a packet is late
            seq, = struct.unpack_from("!H", packet, 2)
            lost = Gst.Structure.new_from_string(
                f"GstRTPPacketLost, seqnum=(uint){seq}, timestamp=(guint64){time}, "
                f"duration=(guint64)0, retry=(uint)0")
            decode.pad.push_event(Gst.Event.new_custom(Gst.EventType.CUSTOM_DOWNSTREAM, lost))
    decode.pad.push_event(Gst.Event.new_eos())
    sink = decode.element("sink")
    frames = 0
    with open(out_path, "wb") as out:
        while (sample := sink.try_pull_sample(0)) is not None:
            buffer = sample.get_buffer()
            ok, info = buffer.map(Gst.MapFlags.READ)
            assert ok
            out.write(bytes(info.data))
            buffer.unmap(info)
            frames += 1
    print(json.dumps({"recovered": fec.get_property("recovered"),
                      "unrecovered": fec.get_property("unrecovered"), "frames": frames}))
    decode.stop()
    storage.stop()


if __name__ == "__main__":
    main()
