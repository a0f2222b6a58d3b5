"""A configured camera: its source, its ring, its packetizer and broadcaster, owned together."""

from __future__ import annotations

import asyncio

from rpistream.core.ring import FrameRing
from rpistream.core.rtp import H264Packetizer, Vp8Packetizer, headroom
from rpistream.sources import create_source
from rpistream.stream.broadcaster import Broadcaster

# libwebrtc's default largest RTP packet: with SRTP's tag, UDP and IPv6 headers
# it stays under the 1280-byte IPv6 minimum MTU, so no path fragments it.
MTU = 1200
# One-byte header-extension elements per packet: mid (RFC 8843, 1 + up to 7
# bytes; browsers use "0", "1", ...) and abs-send-time (1 + 3 bytes).
EXT_ROOM = 12
# The ring sits between the camera thread and the event loop. 4 MiB holds about
# 8 s of 4 Mbit/s video, or a dozen 1080p keyframes, so only a stalled event
# loop fills it (then frames drop and the ring waits for a keyframe) — and a
# frame up to 2 MiB (half the ring) always fits. Faster cameras get 1 s of video.
MIN_RING_BYTES = 4 * 1024 * 1024
# How long a source may take to deliver its first frame (a Pi camera and its
# hardware encoder start in about a second).
FIRST_FRAME_TIMEOUT = 15.0
# The codecs' RTP payload format names (RFC 6184 §8.1, RFC 7741 §6.1).
MIME_TYPES = {"h264": "video/H264", "vp8": "video/VP8"}


class CameraError(RuntimeError):
    """A camera could not start; the message says why."""


def ring_bytes(bitrate: int) -> int:
    return max(MIN_RING_BYTES, (bitrate // 8 + 7) & ~7)


def fec_schemes(codec: str, setting: str) -> tuple[str, ...]:
    """The FEC schemes a viewer of this camera may get, best first; each
    session takes the first its offer includes (docs/DESIGN.md §6). "auto":
    FlexFEC-03 for H.264, whose ULPFEC packets would leave gaps in the media
    sequence numbers that stall it until a keyframe; RED+ULPFEC for VP8, which
    Firefox decodes too, else FlexFEC-03."""
    if setting == "off":
        return ()
    if setting == "ulpfec":
        return ("ulpfec",)
    if setting == "flexfec" or codec == "h264":
        return ("flexfec-03",)
    return ("ulpfec", "flexfec-03")


class Camera:
    def __init__(self, config, *, keyframe_min_interval: float):
        self.name = config.name
        self.config = config
        self.ring = FrameRing(ring_bytes(config.bitrate))
        self.source = create_source(config, self.ring)
        self.fec_schemes = fec_schemes(config.codec, config.fec)
        packetizer_class = H264Packetizer if config.codec == "h264" else Vp8Packetizer
        room = headroom(EXT_ROOM, rtx=config.retransmit, ulpfec="ulpfec" in self.fec_schemes,
                        flexfec="flexfec-03" in self.fec_schemes)
        self.packetizer = packetizer_class(mtu=MTU, ext_room=EXT_ROOM, headroom=room)
        self.broadcaster = Broadcaster(self.name, self.ring, self.source, self.packetizer,
                                       keyframe_min_interval=keyframe_min_interval,
                                       fec_rate=config.fec_rate,
                                       fec_max_frames=config.fec_max_frames)
        # The codec's SDP format parameters (RFC 6184 §8.1 for H.264), known
        # once the first frame has come: the answer to every offer carries them.
        self.fmtp: dict[str, str] | None = None

    @property
    def ext_room(self) -> int:
        return self.packetizer.ext_room

    @property
    def rtp_header_size(self) -> int:
        return 12 + (4 + self.packetizer.ext_room if self.packetizer.ext_room else 0)

    async def start(self) -> None:
        """Start the source and wait for its first frame: only then is the
        H.264 profile known, which the SDP answer must carry."""
        self.source.start()
        ready = await asyncio.get_running_loop().run_in_executor(
            None, self.source.wait_ready, FIRST_FRAME_TIMEOUT)
        if not ready:
            self.source.stop()
            raise CameraError(f"camera {self.name}: "
                              f"{self.source.error or 'no frame within %g s' % FIRST_FRAME_TIMEOUT}")
        if self.config.codec == "h264":
            self.fmtp = {"level-asymmetry-allowed": "1", "packetization-mode": "1",
                         "profile-level-id": self.source.profile_level_id}
        else:
            self.fmtp = {}
        self.broadcaster.start()

    @property
    def mime_type(self) -> str:
        return MIME_TYPES[self.config.codec]

    def stop(self) -> None:
        self.broadcaster.stop()
        self.source.stop()
        self.ring.close()

    def info(self) -> dict:
        config = self.config
        return {
            "name": self.name, "source": config.source, "codec": config.codec,
            "width": config.width, "height": config.height, "fps": config.fps,
            "bitrate": config.bitrate, "whep": f"/cameras/{self.name}/whep",
            "viewers": len(self.broadcaster.viewers),
            "error": self.source.error,
            # Why a test pattern shows in place of the Pi camera, if it does.
            "fallback_reason": config.fallback_reason,
            "profile_level_id": self.source.profile_level_id,
        }
