"""What every handler of a camera's resources needs: the cameras, and a 404 naming the known ones."""

from __future__ import annotations

from aiohttp import web

CAMERAS = web.AppKey("cameras", dict)


def error(status: type[web.HTTPException], message: str, **kwargs) -> web.HTTPException:
    return status(text=message + "\n", content_type="text/plain", **kwargs)


def camera_or_404(request: web.Request):
    name = request.match_info["camera"]
    camera = request.app[CAMERAS].get(name)
    if camera is None:
        known = ", ".join(request.app[CAMERAS]) or "none"
        raise error(web.HTTPNotFound, f"no camera named {name!r}; cameras: {known}")
    return camera
