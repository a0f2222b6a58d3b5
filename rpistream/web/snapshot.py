"""HTTP for snapshots: GET /cameras/<camera>/snapshot.jpg, a JPEG of the
camera's current picture (rpistream/stream/snapshot.py makes and caches it).

Behind the access token like every route but /healthz. The decode runs in a
worker thread; many callers at once share one decode and its cached JPEG.
"""

from __future__ import annotations

import math

from aiohttp import web

from rpistream.web.cameras import camera_or_404, error


async def snapshot_get(request: web.Request) -> web.Response:
    camera = camera_or_404(request)
    snapshots = camera.snapshots
    try:
        jpeg = await snapshots.snapshot()
    except snapshots.Unavailable as exc:  # through the object: web does not import stream
        state = "" if camera.health.live else (
            f" (camera {camera.health.state}: {camera.health.reason})")
        # Worth retrying once a keyframe has had time to come.
        raise error(web.HTTPServiceUnavailable, f"no snapshot: {exc}{state}; try again later",
                    headers={"Retry-After": str(math.ceil(snapshots.keyframe_wait))}) from None
    # Each answer is a picture of that moment: nobody may serve it again later.
    return web.Response(body=jpeg, content_type="image/jpeg",
                        headers={"Cache-Control": "no-store"})


def add_snapshot(app: web.Application) -> None:
    app.add_routes([web.get("/cameras/{camera}/snapshot.jpg", snapshot_get)])
