"""The access token (rpistream/web/auth.py) on every route, and the per-address
rate limit on new WHEP sessions (rpistream/web/ratelimit.py)."""

from __future__ import annotations

import hmac
import re
import urllib.parse

import aiohttp
import pytest

from rpistream.web.auth import AccessToken
from rpistream.web.ratelimit import OfferRateLimit, client_key
from serving import base_url, camera, serving
from waiting import until

TOKEN = "correct-horse-battery-staple"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
SDP = {"Content-Type": "application/sdp"}
HOW = ("send the header 'Authorization: Bearer <token>', or open the viewer page once "
       "as /?token=<token>")


def cookie(token: str = TOKEN) -> dict:
    access = AccessToken(token)
    return {"Cookie": f"{access.cookie_name}={access.cookie_value}"}


@pytest.fixture
async def server(tmp_path):
    # Recording, which one of the routes starts, goes to the test's directory.
    async with serving(camera("cam0", record={"directory": str(tmp_path)}),
                       server={"token": TOKEN}) as server:
        yield server


@pytest.fixture
async def http():
    # Cookies only as the tests set them: the jar would keep the redirect's.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


def every_route(app) -> list[tuple[str, str]]:
    """(method, path) of every route the server has, those added later too,
    with its placeholders filled in; HEAD is GET's twin."""
    routes = []
    for route in app.router.routes():
        info = route.resource.get_info()
        path = info.get("path") or info.get("formatter") or info.get("prefix") + "/viewer.js"
        path = path.replace("{camera}", "cam0").replace("{session}", "no-such-session")
        if route.method != "HEAD":
            routes.append((route.method, path))
    return sorted(set(routes))


async def request(http, server, method, path, headers=None, data=None):
    async with http.request(method, base_url(server) + path, headers=headers, data=data,
                            allow_redirects=False) as response:
        # Some routes answer binary (a snapshot, a recording): text for the asserts.
        return (response.status, (await response.read()).decode("utf-8", "replace"),
                response.headers)


def test_the_route_list_covers_the_known_routes():
    from rpistream.web.app import create_app

    routes = set(every_route(create_app({}, None, ice_servers=(), max_body_bytes=65536)))
    assert {("GET", "/"), ("GET", "/static/viewer.js"), ("GET", "/api/cameras"),
            ("GET", "/healthz"), ("POST", "/cameras/cam0/whep"),
            ("OPTIONS", "/cameras/cam0/whep"), ("PATCH", "/cameras/cam0/whep/no-such-session"),
            ("DELETE", "/cameras/cam0/whep/no-such-session")} <= routes, routes


@pytest.mark.parametrize("credentials, wrong", [
    ({}, False),
    ({"Authorization": "Bearer not-the-token-at-all"}, True),
    ({"Authorization": f"Bearer {TOKEN}x"}, True),
    ({"Authorization": f"Bearer {TOKEN[:-1]}"}, True),
    ({"Authorization": f"Basic {TOKEN}"}, True),
    ({"Authorization": "Bearer"}, True),
    ({"Cookie": f"{AccessToken(TOKEN).cookie_name}={'0' * 64}"}, True),
    ({"Cookie": f"{AccessToken(TOKEN).cookie_name}={TOKEN}"}, True),  # the token is not the cookie
    (cookie("another-server-token"), False),  # another server's cookie: not ours to judge
], ids=["none", "wrong", "longer", "shorter", "basic", "empty", "bad-cookie", "raw-cookie",
        "other-cookie"])
async def test_every_route_refuses_without_the_right_token(server, http, credentials, wrong):
    routes = [r for r in every_route(server.app) if r[1] != "/healthz"]
    assert len(routes) >= 7
    for method, path in routes:
        body = "v=0\r\n" if method in ("POST", "PATCH") else None
        status, text, headers = await request(http, server, method, path, credentials, body)
        assert status == 401, (method, path, status, text)
        assert headers["WWW-Authenticate"] == 'Bearer realm="rpistream"' + (
            ', error="invalid_token"' if wrong else ""), (method, path)
        first = "the access token is wrong" if wrong else "this server requires an access token"
        assert text == f"{first}: {HOW}\n", (method, path)
        if path.startswith(("/cameras/", "/api/")):  # a WHEP player elsewhere can read why
            assert headers["Access-Control-Allow-Origin"] == "*"
    assert server.sessions.count() == 0


@pytest.mark.parametrize("credentials", [BEARER, {"Authorization": f"bearer  {TOKEN} "},
                                         cookie()], ids=["bearer", "bearer-lowercase", "cookie"])
async def test_every_route_passes_with_the_right_token(server, http, credentials):
    for method, path in every_route(server.app):
        body = "v=0\r\n" if method in ("POST", "PATCH") else None
        status, text, _ = await request(http, server, method, path, credentials, body)
        # Past the token check the handler answers: 2xx, or its own 4xx
        # (the offer "v=0" is bad, the session does not exist).
        assert status != 401 and status < 500, (method, path, status, text)
    status, text, _ = await request(http, server, "GET", "/", credentials)
    assert status == 200 and "<title>rpistream</title>" in text
    status, text, _ = await request(http, server, "GET", "/api/cameras", credentials)
    assert status == 200 and '"cam0"' in text


async def test_token_in_the_url_becomes_a_cookie_and_leaves_the_url(http):
    token = "with spaces; and ü-0123456789"  # any token: the cookie value is hex
    async with serving(camera("cam0"), server={"token": token}) as server:
        query = urllib.parse.urlencode([("camera", "cam0"), ("token", token), ("x", "1")])
        status, _, headers = await request(http, server, "GET", "/?" + query)
        assert status == 303
        assert headers["Location"] == "/?camera=cam0&x=1"
        assert headers["Cache-Control"] == "no-store"
        assert headers["Referrer-Policy"] == "no-referrer"
        set_cookie = headers["Set-Cookie"]
        name, value = re.match(r"([^=]+)=([0-9a-f]{64});", set_cookie).groups()
        attributes = {a.strip().split("=")[0].lower() for a in set_cookie.split(";")[1:]}
        assert {"httponly", "samesite", "path", "max-age"} <= attributes, set_cookie
        assert "SameSite=Lax" in set_cookie and "Path=/" in set_cookie
        assert "secure" not in attributes  # plain HTTP: a Secure cookie would not be kept
        assert token not in set_cookie and urllib.parse.quote(token) not in set_cookie
        for path in ("/?camera=cam0&x=1", "/static/viewer.css", "/api/cameras"):
            status, _, _ = await request(http, server, "GET", path, {"Cookie": f"{name}={value}"})
            assert status == 200, path
        status, text, _ = await request(http, server, "GET", "/", {"Authorization": f"Bearer {token}"})
        assert status == 200
        server_line = server.urls()[0]
        assert server_line.endswith("/?token=" + urllib.parse.quote(token, safe=""))


async def test_a_wrong_token_in_the_url_is_refused(server, http):
    status, text, headers = await request(http, server, "GET", "/?token=guess-guess-guess-1")
    assert status == 401 and "Set-Cookie" not in headers
    assert text == f"the token in the URL is wrong: {HOW}\n"
    assert headers["WWW-Authenticate"] == 'Bearer realm="rpistream", error="invalid_token"'


async def test_the_url_token_counts_only_on_the_page(server, http):
    for path in ("/api/cameras", "/static/viewer.js"):
        status, _, _ = await request(http, server, "GET", f"{path}?token={TOKEN}")
        assert status == 401, path


async def test_healthz_answers_probes_without_details(server, http):
    status, text, _ = await request(http, server, "GET", "/healthz")
    assert status == 200 and text == '{"status": "ok"}'
    status, text, _ = await request(http, server, "GET", "/healthz", BEARER)
    assert status == 200 and '"viewers": 0' in text
    server.cameras["cam0"].source.stop()  # it restarts a second after this is seen
    await until(lambda: not server.cameras["cam0"].health.live, "the stopped source to be seen")
    status, text, _ = await request(http, server, "GET", "/healthz")
    assert status == 503 and text == '{"status": "failing"}'  # no camera names, no errors


async def test_cors_preflight_passes_without_credentials_and_reveals_nothing(server, http):
    preflight = {"Origin": "http://elsewhere.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    for path in ("/cameras/cam0/whep", "/cameras/garage/whep", "/cameras/cam0/whep/x"):
        status, text, headers = await request(http, server, "OPTIONS", path, preflight)
        assert status == 204 and text == "", path  # not a 404 naming the cameras
        assert "Authorization" in headers["Access-Control-Allow-Headers"]
        assert headers["Access-Control-Allow-Origin"] == "*"
    status, _, _ = await request(http, server, "OPTIONS", "/cameras/cam0/whep")
    assert status == 401  # not a preflight: needs the token like anything else


async def test_comparisons_are_constant_time(server, http, monkeypatch):
    calls = []
    original = hmac.compare_digest

    def counting(a, b):
        calls.append((len(a), len(b)))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    name = AccessToken(TOKEN).cookie_name
    for headers in (BEARER, {"Authorization": "Bearer x"}, cookie(), {"Cookie": f"{name}=zz"}):
        await request(http, server, "GET", "/api/cameras", headers)
    await request(http, server, "GET", "/?token=short")
    # Every check went through compare_digest, on digests of equal length
    # whatever was presented: neither value nor length shows in the time.
    assert calls == [(32, 32)] * 5


async def test_no_token_configured_means_open():
    async with serving(camera("cam0")) as server, aiohttp.ClientSession() as http:
        for path in ("/", "/api/cameras", "/static/viewer.js", "/?token=anything"):
            status, _, _ = await request(http, server, "GET", path)
            assert status == 200, path
        assert server.urls()[0].endswith(f":{server.port}/")


# ── rate limit ───────────────────────────────────────────────────────────────


async def post_from(address: str, server, count: int) -> list[tuple[int, str | None, str]]:
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector) as http:
        out = []
        for _ in range(count):
            status, text, headers = await request(
                http, server, "POST", "/cameras/cam0/whep", {**BEARER, **SDP}, "v=0\r\n")
            out.append((status, headers.get("Retry-After"), text))
        return out


async def test_offers_past_the_burst_get_429_and_other_addresses_do_not():
    async with serving(camera("cam0"), server={"token": TOKEN},
                       limits={"offer_burst": 3, "offers_per_minute": 30}) as server:
        answers = await post_from("127.0.0.1", server, 5)
        # The bad offer is refused (400) after the limit let it through.
        assert [status for status, _, _ in answers] == [400, 400, 400, 429, 429]
        status, retry, text = answers[3]
        assert retry == "2"  # 30 a minute: one every 2 s
        assert text == ("too many new sessions from 127.0.0.1: at most 3 at once, then 1 every "
                        "2 s; try again in 2 s\n")
        assert [status for status, _, _ in await post_from("127.0.0.2", server, 3)] == [400] * 3
        # Unauthenticated offers are refused before they cost a token of the
        # bucket: a stranger cannot use up a viewer's allowance.
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(local_addr=("127.0.0.3", 0))) as http:
            for _ in range(5):
                assert (await request(http, server, "POST", "/cameras/cam0/whep", SDP, "v=0"))[0] == 401
        assert [status for status, _, _ in await post_from("127.0.0.3", server, 4)] == [
            400, 400, 400, 429]


async def test_without_a_token_every_offer_counts():
    async with serving(camera("cam0"), limits={"offer_burst": 1}) as server, \
            aiohttp.ClientSession() as http:
        statuses = [(await request(http, server, "POST", "/cameras/cam0/whep", SDP, "v=0"))[0]
                    for _ in range(2)]
        assert statuses == [400, 429]


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_bucket_refills_at_the_rate_up_to_the_burst():
    clock = Clock()
    limit = OfferRateLimit(burst=2, per_minute=60, clock=clock)
    assert [limit.take("10.0.0.1") for _ in range(3)] == [0, 0, 1.0]
    clock.now += 0.5
    assert limit.take("10.0.0.1") == pytest.approx(0.5)  # the refused try cost nothing
    clock.now += 1.0
    assert limit.take("10.0.0.1") == 0
    clock.now += 3600  # a long rest refills to the burst, not past it
    assert [limit.take("10.0.0.1") for _ in range(3)] == [0, 0, 1.0]


def test_memory_is_bounded_by_the_lru():
    clock = Clock()
    limit = OfferRateLimit(burst=1, per_minute=1, max_addresses=100, clock=clock)
    for i in range(10_000):
        limit.take(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
        assert len(limit) <= 100
    assert len(limit) == 100
    assert limit.take("10.0.39.15") > 0  # among the 100 most recent: still limited
    assert limit.take("10.0.0.0") == 0  # forgotten: a fresh bucket
    assert limit.take("10.0.0.0") > 0
    # Touching an address keeps it: the least recently *seen* goes first.
    limit = OfferRateLimit(burst=1, per_minute=1, max_addresses=2, clock=clock)
    limit.take("a"), limit.take("b"), limit.take("a"), limit.take("c")
    assert limit.take("a") > 0 and limit.take("b") == 0


@pytest.mark.parametrize("remote, key", [
    ("192.168.1.20", "192.168.1.20"),
    ("::ffff:192.168.1.20", "192.168.1.20"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    (None, "local"),
])
def test_clients_are_ipv4_addresses_or_ipv6_64s(remote, key):
    assert client_key(remote) == key
