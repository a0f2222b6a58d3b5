"""HTTP for recordings: list a camera's segments, download one (with HTTP
ranges, so a browser can seek in it), delete one; start and stop recording.

All behind the access token like every route but /healthz. Directory
listings and deletions run in a worker thread: a recording disk may be slow.
A segment is found by its name among the camera's completed segments, never
by joining the URL to a path, so no URL reaches another file.
"""

from __future__ import annotations

import asyncio
import os

from aiohttp import web

from rpistream.web.cameras import camera_or_404, error

MEDIA_TYPES = {".mp4": "video/mp4", ".webm": "video/webm"}


async def _off_loop(function, *args):
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


def _describe(camera, segment) -> dict:
    name = segment.path.name
    return {"name": name, "start": segment.start, "duration": segment.duration,
            "size": segment.size, "url": f"/cameras/{camera.name}/recordings/{name}"}


async def _segment_or_404(request: web.Request):
    camera = camera_or_404(request)
    name = request.match_info["name"]
    for segment in await _off_loop(camera.recordings):
        if segment.path.name == name:
            return camera, segment
    raise error(web.HTTPNotFound, f"camera {camera.name} has no recording named {name!r}; "
                                  f"GET /api/cameras/{camera.name}/recordings lists them")


async def api_recordings(request: web.Request) -> web.Response:
    camera = camera_or_404(request)
    segments = await _off_loop(camera.recordings)
    return web.json_response({"recording": camera.recorder is not None,
                              "segments": [_describe(camera, s) for s in segments]})


async def recording_get(request: web.Request) -> web.StreamResponse:
    _, segment = await _segment_or_404(request)
    # aiohttp answers Range (206) and If-Range itself. A completed segment
    # never changes: caching it is safe.
    return web.FileResponse(segment.path, headers={
        "Content-Type": MEDIA_TYPES[segment.path.suffix], "Cache-Control": "private, max-age=86400"})


async def recording_delete(request: web.Request) -> web.Response:
    _, segment = await _segment_or_404(request)
    try:
        await _off_loop(os.unlink, segment.path)
    except FileNotFoundError:
        pass  # retention took it meanwhile: gone either way
    return web.Response(status=204)


async def recording_start(request: web.Request) -> web.Response:
    camera = camera_or_404(request)
    problem = await camera.start_recording()
    if problem is not None:
        raise error(web.HTTPServiceUnavailable, f"cannot record: {problem}")
    return web.json_response(camera.recorder.stats(), status=201)


async def recording_stop(request: web.Request) -> web.Response:
    await camera_or_404(request).stop_recording()
    return web.Response(status=204)


def add_recordings(app: web.Application) -> None:
    app.add_routes([
        web.get("/api/cameras/{camera}/recordings", api_recordings),
        web.get("/cameras/{camera}/recordings/{name}", recording_get),
        web.delete("/cameras/{camera}/recordings/{name}", recording_delete),
        web.post("/cameras/{camera}/recording", recording_start),
        web.delete("/cameras/{camera}/recording", recording_stop),
    ])
