"""HTTP for observability: /metrics (Prometheus), /api/stats (JSON) and, when
enabled, /api/debug/tracemalloc. The figures come from rpistream/monitor/."""

from __future__ import annotations

from aiohttp import web

from rpistream.monitor.debug import AllocationDiff
from rpistream.monitor.metrics import CONTENT_TYPE, exposition, metrics_registry
from rpistream.monitor.stats import ServerStats

STATS = web.AppKey("stats", ServerStats)
METRICS = web.AppKey("metrics", object)  # a prometheus_client CollectorRegistry
ALLOCATIONS = web.AppKey("allocations", AllocationDiff)


async def metrics(request: web.Request) -> web.Response:
    body = exposition(request.app[METRICS])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def api_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATS].snapshot())


async def api_debug_tracemalloc(request: web.Request) -> web.Response:
    """The allocation sites that grew since the previous call (the first
    call starts tracing); `?stop=1` stops tracing."""
    allocations = request.app[ALLOCATIONS]
    if request.query.get("stop") in ("1", "true", "yes"):
        return web.json_response(allocations.stop())
    return web.json_response(allocations.diff())


def add_monitoring(app: web.Application, cameras: dict, sessions, memory, *,
                   debug_api: bool, forwards: list) -> None:
    """The routes, and the objects behind them. The debug route exists only
    when enabled: otherwise it is a plain 404, like any unknown path."""
    app[STATS] = ServerStats(cameras, sessions, memory, forwards)
    app[METRICS] = metrics_registry(cameras, sessions, memory, forwards)
    app.add_routes([web.get("/metrics", metrics), web.get("/api/stats", api_stats)])
    if debug_api:
        app[ALLOCATIONS] = AllocationDiff()
        app.add_routes([web.get("/api/debug/tracemalloc", api_debug_tracemalloc)])
        app.on_cleanup.append(_stop_tracing)


async def _stop_tracing(app: web.Application) -> None:
    app[ALLOCATIONS].stop()
