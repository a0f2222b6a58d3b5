"""Run rpistream's picamera2 source on picamera2's REAL code, with only the camera faked.

    PYTHON tests/picamera2_probe.py [--size WxH] [--fps N] [--frames N] [--timeout S]

PYTHON is a Python where rpistream and the real picamera2 import (picamera2
from Raspberry Pi OS or PyPI, with libcamera's bindings, or a stand-in for them
where there are none, e.g. a Debian bookworm root). Nothing from
tests/picamera2_standin/ is used: the probe refuses a picamera2 from there.

What is real: picamera2's Picamera2 methods that do not talk to libcamera
(start_recording, start_encoder, start, start_, _make_requests, the NullPreview
event loop thread and process_requests, dispatch_functions and Job, stop, stop_,
stop_encoder, stop_recording), its Controls (FrameRate reaches the "sensor" as
FrameDurationLimits through get_libcamera_controls), CompletedRequest,
MappedArray, Helpers._make_array_shared, the LibavH264Encoder (what
picamera2.encoders.H264Encoder is on a Pi 5: the module is re-imported with
picamera2's platform set to PISP, as its import on a Pi 5 does) with its
Encoder base class, the Output base class, PyAV and libx264; and all of
rpistream's source: create_source, Picamera2Source, RingOutput, FrameRing.

What is fake (FakePicamera2 in place of picamera2.Picamera2): what libcamera
does. Opening the camera (global_camera_info, __init__), the configuration
libcamera would validate (create_video_configuration, configure: a YUV420
main stream whose stride is the width rounded up to 64 bytes, as libcamera's
Raspberry Pi pipelines give), the frame buffers (memfd-backed, mapped once as
picamera2's DmaAllocator does; its dma-buf cache syncs are no-ops here), and
the libcamera camera: create_request/queue_request/start/stop, with a sensor
thread that films rpistream's moving picture with the block code (frame
number) at the frame duration picamera2's controls ask for, stamps
SensorTimestamp (CLOCK_BOOTTIME ns), and completes requests into
picam2._requests with a byte on notifyme_w, as picamera2's CameraManager does.

Checks, each named when it fails (exit 1; 2 on the hard timeout):
frames reach the ring, the first is a keyframe, every access unit is Annex-B
with SPS, PPS and IDR on keyframes only, pts (from the sensor timestamps,
through picamera2's microsecond timestamps) increase by one frame duration,
source.request_keyframe() mid-stream (keyframe_interval 60 s) gives an IDR
within a few frames, and PyAV decodes every
frame to the picture the sensor filmed (block code frame numbers consecutive;
planes close to the original, which proves the stride and chroma layout).
When a picamera2 thread dies, the failure names the exception and the line.

What this probe found first (picamera2 0.3.38, December 2026): picamera2's
own LibavH264Encoder.force_key_frame() fails with every PyAV rpistream accepts
(>= 14): _encode then sets frame.pict_type = "I", which PyAV 14 (its
PictureType became an IntEnum) refuses with "TypeError: an integer is
required"; the exception kills picamera2's event loop thread, so no frame
follows and Picamera2.stop() then waits for that dead loop. PyAV 13 would take
"I" but lacks from_numpy_buffer(width=), which the same _encode needs. So
rpistream asks that encoder's PyAV stream for the keyframe instead
(rpistream/sources/picamera2.py); the step below says which way was taken.

Where libcamera's bindings are absent (Debian bookworm), picamera2 imports
with stand-ins for two modules: libcamera (Transform, ColorSpace with Sycc,
Smpte170m, Rec709, Size, Rectangle, ControlType, Orientation with its eight
members, StreamRole with Raw, StillCapture, VideoRecording, Viewfinder,
CameraManager, and the module controls) and pykms (PixelFormat with RGB888,
BGR888, XRGB8888, XBGR8888, YUV420, YVU420, NV12); this probe's fake camera
also uses libcamera.FrameMetadata.Status.Success, Request.Status.Complete and
controls.SensorTimestamp, ExposureTime, AnalogueGain.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import itertools
import mmap
import os
import sys
import threading
import time
import traceback
from collections import deque
from pathlib import Path
from types import SimpleNamespace

STEP = "start"
THREAD_DEATHS = []  # (thread name, type, exception, traceback) of threads that died


def step(name: str) -> None:
    global STEP
    STEP = name


def fail(message: str) -> None:
    lines = [message]
    for name, exc_type, exc, tb in THREAD_DEATHS:
        where = traceback.extract_tb(tb)[-3:] if tb is not None else []
        lines.append(f"picamera2 thread {name!r} died of {exc_type.__name__}: {exc}, at "
                     + " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.line!r}"
                                   for f in reversed(where)))
    print(f"FAILED at step {STEP!r}: " + "\n    ".join(lines), flush=True)
    sys.stdout.flush()
    os._exit(1)


def check(condition, message: str) -> None:
    if not condition:
        fail(message)


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "(no package metadata)"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="600x340",
                        help="WxH asked of the camera; the default's width is not a multiple "
                             "of 64, so the buffers have a padded stride (default %(default)s)")
    parser.add_argument("--fps", type=int, default=30,
                        help="frames per second, a whole number as rpistream's config has it")
    parser.add_argument("--frames", type=int, default=45,
                        help="frames collected before the keyframe request (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="hard limit for the whole probe, s (default %(default)s)")
    args = parser.parse_args()
    args.width, args.height = (int(v) for v in args.size.lower().split("x"))
    return args


def main() -> None:
    args = parse_args()
    watchdog = threading.Timer(args.timeout, lambda: (
        print(f"FAILED at step {STEP!r}: hard timeout of {args.timeout:g} s", flush=True),
        os._exit(2)))
    watchdog.daemon = True
    watchdog.start()
    try:
        probe(args)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - name the step, show the traceback
        traceback.print_exc()
        fail(f"{type(exc).__name__}: {exc}")
    watchdog.cancel()
    print("OK", flush=True)
    sys.stdout.flush()
    # picamera2 registers nothing at exit for the fake; exit now, whatever
    # daemon threads (none expected) are left.
    os._exit(0)


# --- imports -------------------------------------------------------------------

def import_real():
    step("import picamera2 and its dependencies")
    import numpy as np
    import av
    import libcamera
    import picamera2
    import picamera2.encoders
    import picamera2.outputs
    import picamera2.platform
    import picamera2.picamera2 as pc2_module
    import rpistream

    path = Path(picamera2.__file__).resolve()
    check("picamera2_standin" not in path.parts,
          f"picamera2 imported from rpistream's test stand-in ({path}), not the real one")
    check(hasattr(picamera2.encoders, "LibavH264Encoder"),
          f"picamera2 at {path} has no encoders.LibavH264Encoder: not the real picamera2")
    print(f"python    {sys.version.split()[0]} at {sys.executable}")
    print(f"picamera2 {version('picamera2')} at {path.parent}")
    print(f"numpy     {np.__version__} at {Path(np.__file__).parent}")
    print(f"av        {av.__version__} at {Path(av.__file__).parent}"
          f" (FFmpeg {'.'.join(map(str, av.library_versions.get('libavcodec', ())))} libavcodec)")
    libcamera_file = getattr(libcamera, "__file__", None) or "(built in)"
    print(f"libcamera {'STAND-IN' if getattr(libcamera, 'STANDIN', False) else 'bindings'}"
          f" at {libcamera_file}")
    print(f"rpistream at {Path(rpistream.__file__).parent}")
    return SimpleNamespace(np=np, av=av, libcamera=libcamera, picamera2=picamera2,
                           pc2_module=pc2_module)


def pi5_encoders(mods):
    """picamera2.encoders as imported on a Pi 5: its __init__ picks the encoders by
    picamera2.platform.get_platform(), VC4 (hardware V4L2 H.264 at /dev/video11)
    unless a /dev/video* card is "pispbe". This machine has none, so set PISP and
    re-run that __init__, exactly the code a Pi 5 runs."""
    step("picamera2.encoders with the Pi 5 platform (PISP)")
    platform = importlib.import_module("picamera2.platform")
    detected = platform.get_platform()
    platform._platform = platform.Platform.PISP
    encoders = importlib.reload(importlib.import_module("picamera2.encoders"))
    check(encoders.H264Encoder is encoders.LibavH264Encoder,
          f"with platform PISP picamera2.encoders.H264Encoder is {encoders.H264Encoder!r}, "
          f"not LibavH264Encoder")
    print(f"platform  detected here: {detected.name}; set to PISP (Pi 5): "
          f"picamera2.encoders.H264Encoder is {encoders.H264Encoder.__module__}."
          f"{encoders.H264Encoder.__qualname__}")
    return encoders


# --- the fake camera -------------------------------------------------------------

STRIDE_ALIGN = 64  # bytes: the Y stride libcamera gives a YUV420 stream on a Pi


class FakeStream:
    """A libcamera Stream: a hashable handle."""

    def __init__(self, name: str):
        self.name = name


class FakeControlId:
    """A libcamera ControlId this camera advertises."""

    def __init__(self, name: str, control_type):
        self.name, self.type = name, control_type


class FakeFrameBuffer:
    """A libcamera FrameBuffer: one plane, on a memfd (a dma-buf on a Pi)."""

    def __init__(self, index: int, size: int, success):
        self.fd = os.memfd_create(f"picamera2-probe-{index}")
        os.ftruncate(self.fd, size)
        self.planes = [SimpleNamespace(fd=self.fd, offset=0, length=size)]
        self.metadata = SimpleNamespace(status=success, sequence=0,
                                        planes=[SimpleNamespace(bytes_used=size)])


class FakeLibcameraRequest:
    """A libcamera Request: buffers per stream, controls to apply, metadata out."""

    def __init__(self, cookie: int):
        self.cookie = cookie
        self.buffers = {}
        self.controls = {}
        self.metadata = {}
        self.status = None

    def add_buffer(self, stream, buffer):
        self.buffers[stream] = buffer

    def set_control(self, control_id, value):
        self.controls[control_id] = value

    def reuse(self):
        self.controls = {}
        self.metadata = {}
        self.status = None


class FakeAllocator:
    """Does what picamera2's DmaAllocator does (one mmap per buffer, kept for the
    configuration's life, handed out by its sync object) on memfds; its
    DMA_BUF_IOCTL_SYNC cache maintenance has nothing to do here."""

    needs_sync = False

    def __init__(self, allocator_base, sync_base):
        # Made a subclass of picamera2's Allocator and Sync at run time.
        allocator = self

        class Sync(sync_base):
            def __init__(self, _allocator, fb, write):
                self._fb = fb

            def __enter__(self):
                return allocator.mapped_buffers[self._fb]

            def __exit__(self, exc_type=None, exc_value=None, exc_traceback=None):
                pass

        self.sync = Sync
        self.mapped_buffers = {}
        self.frame_buffers = {}
        self.in_use = {}
        self.base = allocator_base

    def allocate(self, stream, count: int, size: int, success):
        self.close()
        buffers = []
        for i in range(count):
            fb = FakeFrameBuffer(i, size, success)
            self.mapped_buffers[fb] = mmap.mmap(fb.fd, size, mmap.MAP_SHARED,
                                                mmap.PROT_READ | mmap.PROT_WRITE)
            self.in_use[fb] = 0
            buffers.append(fb)
        self.frame_buffers[stream] = buffers

    def buffers(self, stream):
        return self.frame_buffers[stream]

    def acquire(self, bufs):
        for fb in bufs.values():
            self.in_use[fb] += 1

    def release(self, bufs):
        for fb in bufs.values():
            self.in_use[fb] -= 1

    def close(self):
        for fb, memory in self.mapped_buffers.items():
            try:
                memory.close()
            except BufferError:
                pass  # a numpy view is still alive somewhere: the GC unmaps it
            os.close(fb.fd)
        self.mapped_buffers, self.frame_buffers, self.in_use = {}, {}, {}


class FakeSensor:
    """The libcamera Camera: queued requests come back filled at the frame rate."""

    def __init__(self, picam2, libcamera, picture_class, blockcode, completed_request):
        self.picam2 = picam2
        self.libcamera = libcamera
        self.picture_class = picture_class
        self.blockcode = blockcode
        self.completed_request = completed_request
        self.queue = deque()
        self.cond = threading.Condition()
        self.thread = None
        self.running = False
        self.frame_duration_us = 33333
        self.frames = 0
        self.dropped = 0
        self.dropped_sequences = set()  # frames never filmed: gaps in what reaches the ring
        self.controls_seen = []

    def create_request(self, cookie):
        return FakeLibcameraRequest(cookie)

    def queue_request(self, request):
        with self.cond:
            self.queue.append(request)
            self.cond.notify()

    def _apply(self, controls):
        self.controls_seen.append({getattr(k, "name", str(k)): v for k, v in controls.items()})
        for control_id, value in controls.items():
            if getattr(control_id, "name", None) == "FrameDurationLimits":
                self.frame_duration_us = max(value)

    def start(self, controls):
        self._apply(controls)
        self.running = True
        self.thread = threading.Thread(target=self._run, name="fake-sensor", daemon=True)
        self.thread.start()

    def stop(self):
        with self.cond:
            self.running = False
            self.cond.notify_all()
        if self.thread is not None:
            self.thread.join()
        self.queue.clear()

    def release(self):
        pass

    def _run(self):
        picam2 = self.picam2
        config = picam2.camera_config
        width, height = config["main"]["size"]
        stride = config["main"]["stride"]
        transform = config.get("transform")
        picture = self.picture_class(width, height)
        import numpy as np
        scratch = np.empty((height * 3 // 2, width), dtype=np.uint8)
        stream = picam2.stream_map["main"]
        next_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        for sequence in itertools.count():
            next_ns += self.frame_duration_us * 1000
            delay = (next_ns - time.clock_gettime_ns(time.CLOCK_BOOTTIME)) / 1e9
            with self.cond:
                if delay > 0:
                    self.cond.wait_for(lambda: not self.running, timeout=delay)
                if not self.running:
                    return
                request = self.queue.popleft() if self.queue else None
            if request is None:
                # Every buffer is held: libcamera would drop the frame too,
                # and its sequence number with it.
                self.dropped += 1
                self.dropped_sequences.add(sequence)
                continue
            if request.controls:
                self._apply(request.controls)
            # Film the frame: rpistream's moving picture with the block code,
            # flipped as the configuration's Transform asks the ISP.
            picture.draw(scratch, sequence)
            y, u, v = picture.planes(scratch)
            self.blockcode.draw(y, u, v, sequence, time.time_ns() // 1_000_000)
            if transform is not None and (transform.hflip or transform.vflip):
                cols = slice(None, None, -1 if transform.hflip else 1)
                rows = slice(None, None, -1 if transform.vflip else 1)
                y[:], u[:], v[:] = y[rows, cols].copy(), u[rows, cols].copy(), v[rows, cols].copy()
            fb = request.buffers[stream]
            buf = np.frombuffer(picam2.allocator.mapped_buffers[fb], dtype=np.uint8)
            layout = yuv420_layout(buf, width, height, stride)
            layout[0][:, :width] = y
            layout[1][:, :width // 2] = u
            layout[2][:, :width // 2] = v
            del buf, layout
            ts = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
            fb.metadata.sequence = sequence
            fb.metadata.status = self.libcamera.FrameMetadata.Status.Success
            request.metadata = {self.libcamera.controls.SensorTimestamp: ts}
            request.status = self.libcamera.Request.Status.Complete
            self.frames += 1
            # What picamera2's CameraManager.handle_request does with a completed request.
            with picam2._requestslock:
                picam2._requests += [self.completed_request(request, picam2)]
            os.write(picam2.notifyme_w, b"\x00")


def yuv420_layout(buf, width, height, stride):
    """Y, U, V views (rows of stride, stride/2, stride/2 bytes) of a libcamera YUV420 buffer."""
    y_size, c_stride = stride * height, stride // 2
    c_size = c_stride * (height // 2)
    y = buf[:y_size].reshape(height, stride)
    u = buf[y_size:y_size + c_size].reshape(height // 2, c_stride)
    v = buf[y_size + c_size:y_size + 2 * c_size].reshape(height // 2, c_stride)
    return y, u, v


def make_fake_picamera2(mods):
    """A Picamera2 whose libcamera-facing half is faked and whose other methods
    are picamera2's own, taken from the real class."""
    libcamera = mods.libcamera
    real = mods.pc2_module.Picamera2
    from picamera2.allocators.allocator import Allocator, Sync
    from picamera2.controls import Controls
    from picamera2.request import CompletedRequest, Helpers
    from rpistream.sources import blockcode
    from rpistream.sources.picture import MovingPicture

    class FakePicamera2:
        instances = []
        cameras = [{"Model": "imx708_wide", "Location": 2, "Rotation": 180,
                    "Id": "/base/axi/pcie@120000/rp1/i2c@88000/imx708@1a", "Num": 0}]

        @staticmethod
        def global_camera_info():
            return [dict(c) for c in FakePicamera2.cameras]

        def __init__(self, camera_num=0, verbose_console=None, tuning=None, allocator=None):
            # As Picamera2.__init__, less libcamera.
            self.notifyme_r, self.notifyme_w = os.pipe2(os.O_NONBLOCK)
            self.notifymeread = os.fdopen(self.notifyme_r, "rb")
            self._preview = None
            self.is_open = False
            if camera_num >= len(self.global_camera_info()):
                raise RuntimeError(f'No camera number {camera_num} found - use '
                                   f'"rpicam-hello --list-cameras" to check connected cameras')
            self.camera_idx = self.global_camera_info()[camera_num]["Num"]
            self.request_lock = threading.Lock()
            self._requestslock = threading.Lock()
            self._requests = []
            self.verbose_console = 0
            self._reset_flags()
            self.helpers = Helpers(self)
            # _open_camera: the libcamera camera and what it advertises.
            self.camera = FakeSensor(self, libcamera, MovingPicture, blockcode, CompletedRequest)
            frame_duration_id = FakeControlId("FrameDurationLimits",
                                              getattr(libcamera.ControlType, "Integer64", None))
            self.camera_ctrl_info = {"FrameDurationLimits": (
                frame_duration_id, SimpleNamespace(min=16666, max=1_000_000, default=33333))}
            self.camera_properties_ = {"Model": self.cameras[camera_num]["Model"],
                                       "ColorFilterArrangement": 0}
            self.is_open = True
            self._cm = SimpleNamespace(handle_request=lambda flushid=None: None,
                                       cleanup=lambda index: None)
            self.allocator = FakeAllocator(Allocator, Sync)
            FakePicamera2.instances.append(self)

        def create_video_configuration(self, main={}, lores=None, raw={}, transform=None,
                                       colour_space=None, buffer_count=6, controls={},
                                       display="main", encode="main", queue=True, sensor={},
                                       use_case="video"):
            # The shape of Picamera2.create_video_configuration's result, with its
            # own helpers; no raw or lores stream (rpistream asks for neither).
            if transform is None:
                transform = libcamera.Transform()
            main = real._make_initial_stream_config(
                {"format": "XBGR8888", "size": (1280, 720), "preserve_ar": True}, main)
            real.align_stream(main, optimal=False)
            if colour_space is None:
                colour_space = (libcamera.ColorSpace.Smpte170m()
                                if main["size"][0] < 1280 or main["size"][1] < 720
                                else libcamera.ColorSpace.Rec709())
            config = {"use_case": use_case, "transform": transform,
                      "colour_space": colour_space, "buffer_count": buffer_count,
                      "queue": queue, "main": main, "lores": None, "raw": None,
                      "controls": {"FrameDurationLimits": (33333, 33333)} | controls,
                      "sensor": sensor}
            real._add_display_and_encode(config, display, encode)
            return config

        def configure(self, camera_config=None):
            # Picamera2.configure_'s bookkeeping; libcamera's validation and the
            # stride/frame size it fills in are done here.
            if self.started:
                raise RuntimeError("Camera must be stopped before configuring")
            main = dict(camera_config["main"])
            if main["format"] != "YUV420":
                raise RuntimeError(f"the probe's fake camera makes YUV420 only, "
                                   f"not {main['format']}")
            width, height = main["size"]
            stride = -(-width // STRIDE_ALIGN) * STRIDE_ALIGN
            main["stride"] = stride
            main["framesize"] = stride * height * 3 // 2
            camera_config = dict(camera_config, main=main)
            stream = FakeStream("main")
            self.stream_map = {"main": stream, "lores": None, "raw": None}
            self.display_stream_name = camera_config["display"]
            self.encode_stream_name = camera_config["encode"]
            self._max_queue_len = (1 if camera_config["queue"] and camera_config["buffer_count"] > 1
                                   else 0)
            self.streams = [stream]
            self.allocator.allocate(stream, camera_config["buffer_count"], main["framesize"],
                                    libcamera.FrameMetadata.Status.Success)
            self.libcamera_config = camera_config
            self.camera_config = camera_config
            self.controls = Controls(self, controls=self.camera_config["controls"])
            self.configure_count += 1

        def close(self):
            # Picamera2.close, less libcamera.
            if self._preview:
                self.stop_preview()
            if not self.is_open:
                return
            self.stop()
            self.camera.release()
            self.buffers_held_at_close = sum(1 for n in self.allocator.in_use.values() if n)
            self.is_open = False
            self.streams = []
            self.stream_map = {}
            self.camera_config = {}
            self.notifymeread.close()
            os.close(self.notifyme_w)
            self.allocator.close()

    borrowed = ("_reset_flags", "camera_configuration", "camera_controls", "camera_properties",
                "attach_preview", "detach_preview", "start_preview", "stop_preview",
                "start", "start_", "_make_requests", "stop", "stop_", "dispatch_functions",
                "_run_process_requests", "process_requests", "start_encoder", "stop_encoder",
                "start_recording", "stop_recording", "encoders")
    for name in borrowed:
        check(name in real.__dict__,
              f"picamera2's Picamera2 has no {name}: the probe needs updating")
        setattr(FakePicamera2, name, real.__dict__[name])
    return FakePicamera2


# --- the run --------------------------------------------------------------------

def collect(ring, count, timeout, until=None):
    """Pop up to `count` frames (bytes, capture_ns, pts, keyframe, arrival_ns)."""
    import select
    frames = []
    deadline = time.monotonic() + timeout
    while len(frames) < count and time.monotonic() < deadline:
        if until is not None and frames and until(frames):
            break
        select.select([ring.fileno()], [], [], max(0.0, min(0.1, deadline - time.monotonic())))
        while len(frames) < count and (frame := ring.pop()) is not None:
            frames.append((bytes(frame.data), frame.capture_ns, frame.pts, frame.keyframe,
                           time.monotonic_ns()))
            ring.release()
    return frames


def drain(ring):
    """The frames in the ring now, without waiting."""
    frames = []
    while (frame := ring.pop()) is not None:
        frames.append((bytes(frame.data), frame.capture_ns, frame.pts, frame.keyframe,
                       time.monotonic_ns()))
        ring.release()
    return frames


def check_access_units(h264, frames, what):
    for i, (data, _c, _p, keyframe, _a) in enumerate(frames):
        check(data[:4] == b"\x00\x00\x00\x01" or data[:3] == b"\x00\x00\x01",
              f"{what} frame {i} does not start with an Annex-B start code: {data[:8].hex()}")
        types = h264.nal_types(data)
        check(types, f"{what} frame {i}: no NAL units")
        check((h264.NAL_IDR in types) == bool(keyframe),
              f"{what} frame {i}: keyframe flag {keyframe} but NAL types {types}")
        if keyframe:
            check(h264.NAL_SPS in types and h264.NAL_PPS in types
                  and types.index(h264.NAL_SPS) < types.index(h264.NAL_PPS)
                  < types.index(h264.NAL_IDR),
                  f"{what} frame {i}: a keyframe without SPS, PPS before its IDR: {types}")


def record_thread_deaths():
    """picamera2's threads (the NullPreview event loop that runs process_requests
    and the encoder) die silently but for the traceback: keep what killed them."""
    previous = threading.excepthook

    def hook(hook_args):
        THREAD_DEATHS.append((hook_args.thread.name if hook_args.thread else "?",
                              hook_args.exc_type, hook_args.exc_value,
                              hook_args.exc_traceback))
        previous(hook_args)

    threading.excepthook = hook


def keyframe_failure(source, camera, encoder, after):
    """No keyframe after the request: say why, as precisely as can be seen."""
    lines = [f"{len(after)} frame(s) after the request, none a keyframe "
             f"(flags {[f[3] for f in after]}); source error: {source.error}"]
    import av
    probe_frame = av.VideoFrame(16, 16, "yuv420p")
    try:
        probe_frame.pict_type = "I"
        lines.append(f"PyAV {av.__version__} accepts frame.pict_type = 'I'")
    except TypeError as exc:
        lines.append(f"PyAV {av.__version__} refuses frame.pict_type = 'I' ({exc}): its "
                     f"PictureType is an IntEnum since PyAV 14; picamera2's "
                     f"LibavH264Encoder._encode sets the string when force_key_frame() was "
                     f"called, which kills the camera's event loop: no frame follows")
    # Does stopping still work? picamera2's stop() waits for the dead event loop.
    stopped_at = time.monotonic()
    source.stop(timeout=3)
    lines.append("source.stop(timeout=3): its thread "
                 + ("is STILL RUNNING (blocked in picamera2's stop_recording: "
                    "Picamera2.stop() waits for the dead event loop to run stop_)"
                    if source.running else
                    f"ended in {time.monotonic() - stopped_at:.1f} s"))
    fail("\n    ".join(lines))


def probe(args):
    record_thread_deaths()
    mods = import_real()
    np, av = mods.np, mods.av
    encoders = pi5_encoders(mods)

    step("fake camera in place of picamera2.Picamera2")
    fake = make_fake_picamera2(mods)
    mods.picamera2.Picamera2 = fake

    step("create the picamera2 source")
    from rpistream.core import h264
    from rpistream.core.ring import FrameRing
    from rpistream.config import parse_config
    from rpistream.sources import create_source
    from rpistream.sources.base import PTS_HZ
    ring = FrameRing(8 << 20)
    (camera,) = parse_config({"camera": [{
        "source": "picamera2", "width": args.width, "height": args.height, "fps": args.fps,
        "bitrate": 1_000_000, "keyframe_interval": 60, "options": {"camera_num": 0}}]},
        "the probe's arguments").cameras
    source = create_source(camera, ring)
    check(source._picamera2 is fake, "the source did not take picamera2.Picamera2")
    check(source._h264_encoder is encoders.LibavH264Encoder,
          f"the source's encoder class is {source._h264_encoder!r}")

    step("start the source; first frame")
    started = time.monotonic()
    source.start()
    check(source.wait_ready(10), f"no frame within 10 s; source error: {source.error}")
    camera = fake.instances[-1]
    encoder = next(iter(camera.encoders))
    check(type(encoder) is encoders.LibavH264Encoder,
          f"the camera's encoder is a {type(encoder)!r}")
    config = camera.camera_config["main"]
    print(f"camera    {config['size'][0]}x{config['size'][1]} {config['format']} stride "
          f"{config['stride']}, {camera.camera_config['buffer_count']} buffers; controls at start "
          f"{camera.camera.controls_seen[0]}")
    print(f"encoder   {type(encoder).__module__}.{type(encoder).__name__}: {encoder.width}x"
          f"{encoder.height} stride {encoder.stride} format {encoder.format} framerate "
          f"{encoder.framerate} iperiod {encoder.iperiod} bitrate {encoder.bitrate} profile "
          f"{encoder.profile} -> libav {encoder._codec} {encoder._av_input_format}, "
          f"first frame after {time.monotonic() - started:.2f} s")

    step(f"collect {args.frames} frames from the ring")
    frames = collect(ring, args.frames, timeout=args.frames / args.fps + 10)
    check(len(frames) == args.frames,
          f"{len(frames)} of {args.frames} frames arrived; source error: {source.error}")
    check(frames[0][3], "the first frame is not a keyframe")
    check(not any(f[3] for f in frames[1:]),
          "a keyframe after the first with keyframe_interval 60 s: "
          f"{[i for i, f in enumerate(frames) if f[3]]}")
    check_access_units(h264, frames, "stream")
    steps = [b[2] - a[2] for a, b in zip(frames, frames[1:])]
    check(all(s > 0 for s in steps), f"pts do not increase: steps {steps}")
    expected = PTS_HZ / args.fps
    mean = sum(steps) / len(steps)
    check(0.8 * expected < mean < 1.2 * expected,
          f"pts step {mean:.0f} (90 kHz) is not one frame ({expected:.0f}): picamera2's "
          f"timestamps are not microseconds (steps {steps[:8]}...)")
    lags = [f[4] - f[1] for f in frames]
    check(all(0 <= lag < 1_000_000_000 for lag in lags),
          f"capture times are not shortly before arrival: lags (ms) {[x // 10**6 for x in lags]}")
    sps = h264.find_sps(frames[0][0])
    print(f"stream    {len(frames)} frames, the first a keyframe with NAL types "
          f"{h264.nal_types(frames[0][0])}, then none; pts step {mean:.0f}/90 kHz "
          f"(one frame: {expected:.0f}); capture-to-ring {min(lags) / 1e6:.1f}.."
          f"{max(lags) / 1e6:.1f} ms (median {sorted(lags)[len(lags) // 2] * args.fps / 1e9:.1f} "
          f"frame periods); "
          f"profile-level-id {h264.profile_level_id_from_sps(sps)}")

    decode_and_compare(args, np, av, frames, "the first", camera.camera.dropped_sequences)

    step("source.request_keyframe() -> an IDR")
    requested = getattr(encoder, "_key_frames_requested", None)
    # Frames that reached the ring while the first ones were checked came
    # before the request: take them out first (they are decoded with the rest).
    backlog = drain(ring)
    check(not any(f[3] for f in backlog), "a keyframe nobody asked for")
    frames += backlog
    source.request_keyframe()
    after = collect(ring, 8, timeout=5, until=lambda got: got[-1][3])
    if not after or not after[-1][3]:
        keyframe_failure(source, camera, encoder, after)
    check_access_units(h264, after, "after the request")
    how = ("encoder.force_key_frame()"
           if requested is not None and encoder._key_frames_requested > requested
           else f"the PyAV stream, {type(encoder._stream).__name__}")
    print(f"keyframe  requested after frame {len(frames) - 1} (through {how}): an IDR "
          f"{len(after)} frame(s) later, NAL types {h264.nal_types(after[-1][0])}")

    step("stop the source")
    source.stop()
    check(not source.running, "the source's thread is still running")
    check(source.error is None, f"source error: {source.error}")
    check(not camera.is_open and not camera.started, "picamera2 did not stop and close the camera")
    check(not encoder.running, "the encoder is still running")
    check(camera.buffers_held_at_close == 0,
          f"{camera.buffers_held_at_close} frame buffers still held by requests at close")
    print(f"stopped   sensor filmed {camera.camera.frames} frames (dropped {camera.camera.dropped} "
          f"for want of a free buffer); source pushed {source.frames}; the camera closed")

    decode_and_compare(args, np, av, frames + after, "all", camera.camera.dropped_sequences)


def decode_and_compare(args, np, av, frames, what, dropped):
    """PyAV decodes every frame to the picture the sensor filmed, in order;
    the only frame numbers missing are those the sensor `dropped`."""
    step(f"decode {what} frames with PyAV")
    from rpistream.sources import blockcode
    from rpistream.sources.picture import MovingPicture
    decoder = av.CodecContext.create("h264", "r")
    pictures = []
    for data, *_ in frames:
        pictures += decoder.decode(av.Packet(data))
    pictures += decoder.decode(None)
    check(len(pictures) == len(frames), f"{len(frames)} frames decoded to {len(pictures)} pictures")
    width, height = args.width, args.height
    check((pictures[0].width, pictures[0].height) == (width, height),
          f"decoded size {pictures[0].width}x{pictures[0].height}")
    codes = []
    worst = 99.0
    reference = np.empty((height * 3 // 2, width), dtype=np.uint8)
    picture = MovingPicture(width, height)
    skip = blockcode.ROWS * blockcode.cell_size(width, height)
    for i, p in enumerate(pictures):
        planes = p.to_ndarray(format="yuv420p")
        code = blockcode.read(planes[:height])
        check(code is not None, f"decoded picture {i} carries no readable block code")
        codes.append(code[0])
        picture.draw(reference, code[0])
        for got, want in zip(picture.planes(planes), picture.planes(reference)):
            rows = skip * got.shape[0] // height
            diff = got[rows:].astype(np.int32) - want[rows:]
            mse = float((diff * diff).mean())
            worst = min(worst, 99.0 if mse == 0 else 10 * np.log10(255 ** 2 / mse))
    missing = sorted(set(range(codes[0], codes[-1] + 1)) - set(codes))
    check(codes == sorted(set(codes)) and set(missing) <= dropped,
          f"block code frame numbers are not those filmed, in order: {codes} "
          f"(the sensor dropped {sorted(dropped)})")
    check(worst > 28, f"a decoded plane differs from what the sensor filmed: PSNR {worst:.1f} dB "
                      f"(stride or chroma layout mangled?)")
    gaps = f" but {missing}, which the sensor dropped" if missing else ""
    print(f"decoded   {what}: {len(pictures)} pictures {width}x{height}, block code frames "
          f"{codes[0]}..{codes[-1]} in order{gaps}, worst plane PSNR {worst:.1f} dB against "
          f"the filmed picture")


if __name__ == "__main__":
    main()
