"""What the process holds, counted where it is held: each figure is read from
its owner (ring, viewer, session registry, event loop, kernel) at the moment
it is asked for, never kept in a second set of books."""

from __future__ import annotations

import asyncio

import psutil

MiB = 1024 * 1024


def live_viewers(sessions) -> list:
    """(session, viewer) of every session whose viewer is streaming or waiting."""
    return [(s, s.viewer) for s in list(sessions.sessions.values())
            if s.viewer is not None and s.viewer.state != "closed"]


def camera_holdings(camera) -> dict:
    """One camera's buffers: its ring (allocated once, whole) and the frame
    batches its viewers keep alive, forwards to SFUs included (queues and
    NACK histories share them, so they are counted once per batch, not once
    per viewer)."""
    ring = camera.ring
    viewers = list(camera.broadcaster.viewers.values())
    held: dict = {}
    for viewer in viewers:
        held.update(viewer.held_batches())
    return {
        "ring_bytes": ring.capacity,
        "ring_used_bytes": ring.used,
        "ring_high_water_bytes": ring.high_water,
        "batches_held": len(held),
        "batch_bytes_held": sum(batch.nbytes for batch in held.values()),
        "queued_frames": sum(viewer.queue_depth for viewer in viewers),
        # Frames waiting for the recording's disk (bounded: record/recorder.py).
        "recorder_bytes_held": camera.recorder.held_bytes if camera.recorder else 0,
        # Frames kept for snapshots while someone asks for them (stream/snapshot.py).
        "snapshot_bytes_held": camera.snapshots.held_bytes,
    }


def holdings(cameras: dict, sessions, process: psutil.Process | None = None) -> dict:
    """Everything rpistream holds that can grow, by owner."""
    viewers = live_viewers(sessions)
    by_camera = {name: camera_holdings(camera) for name, camera in cameras.items()}
    deepest = max(viewers, key=lambda sv: sv[1].queue_depth, default=None)
    process = process or psutil.Process()
    return {
        "cameras": by_camera,
        "peers": len(sessions.sessions),
        "viewers": len(viewers),
        "deepest_queue": (deepest[1].queue_depth, deepest[0].id) if deepest else (0, None),
        "tasks": len(asyncio.all_tasks()),
        "fds": process.num_fds(),
    }


def describe(held: dict) -> str:
    """A log line's worth of `holdings()`: the biggest buffers first."""
    cams = held["cameras"]
    rings = ", ".join(
        f"{name} {h['ring_bytes'] / MiB:.1f} MiB ({h['ring_used_bytes'] / MiB:.1f} used)"
        for name, h in cams.items()) or "none"
    batches = sum(h["batches_held"] for h in cams.values())
    batch_bytes = sum(h["batch_bytes_held"] for h in cams.values())
    queued = sum(h["queued_frames"] for h in cams.values())
    recording = sum(h["recorder_bytes_held"] for h in cams.values())
    snapshots = sum(h["snapshot_bytes_held"] for h in cams.values())
    depth, session = held["deepest_queue"]
    deepest = f", deepest {depth} (session {session})" if session and depth else ""
    return (f"rings: {rings}; frame batches held by viewers' queues and NACK histories: "
            f"{batches} ({batch_bytes / MiB:.1f} MiB); viewer queues: {queued} frames{deepest}; "
            f"waiting for the recordings' disks: {recording / MiB:.1f} MiB; "
            f"kept for snapshots: {snapshots / MiB:.1f} MiB; "
            f"open peers: {held['peers']} ({held['viewers']} streaming); "
            f"asyncio tasks: {held['tasks']}; open fds: {held['fds']}")
