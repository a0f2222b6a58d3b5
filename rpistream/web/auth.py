"""Access token: when `server.token` is set, every request must carry it.

Three ways to carry it:
- `Authorization: Bearer <token>` (RFC 6750 §2.1): WHEP players, Prometheus
  (`bearer_token`), curl.
- `GET /?token=<token>`, once: the answer is a cookie and a redirect to the same
  URL without the token, so the token leaves the address bar, the history and
  Referer headers, and a bookmark of the page works without it.
- that cookie, which the browser then sends with the page's own same-origin
  requests (static files, /api/*, WHEP), so the page needs no code for it.

Not required:
- `/healthz`, a liveness probe for monitors and supervisors that should not
  have to hold the secret. Without the token it answers only its status code
  and `{"status"}`: no camera names, errors or viewer counts.
- CORS preflights (OPTIONS with Access-Control-Request-Method): browsers send
  them without credentials (Fetch standard, CORS-preflight fetch), so the
  actual request that follows is the one checked. They are answered here,
  without reaching a handler, so they reveal nothing (not even camera names).
"""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web

PUBLIC_PATHS = frozenset({"/healthz"})
# Whether the request carried the token.
AUTHORIZED = web.RequestKey("authorized", bool)
REALM = 'Bearer realm="rpistream"'
QUERY = "token"
# A year: a bookmark of the page keeps working. Changing server.token revokes
# every cookie at once (the cookie holds a value derived from the token).
COOKIE_MAX_AGE = 365 * 24 * 3600
HOW = ("send the header 'Authorization: Bearer <token>', or open the viewer page "
       "once as /?token=<token>")


def _digest(value: str) -> bytes:
    # Comparing fixed-size digests: compare_digest's time then reveals
    # neither the token's value nor its length.
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


class AccessToken:
    """The configured token, and the cookie derived from it."""

    def __init__(self, token: str):
        self._digest = _digest(token)
        key = token.encode("utf-8")
        derived = hmac.new(key, b"rpistream viewer cookie", hashlib.sha256).hexdigest()
        # The value is hex, so any token (spaces, ';', non-ASCII) makes a valid
        # cookie; the name is per token, so two servers on one host (cookies
        # ignore ports) do not overwrite each other's cookie.
        self.cookie_name = "rpistream-" + derived[:8]
        self.cookie_value = derived
        self._cookie_digest = _digest(derived)

    def matches(self, presented: str) -> bool:
        """Whether `presented` is the token, in time independent of both."""
        return hmac.compare_digest(_digest(presented), self._digest)

    def cookie_matches(self, presented: str) -> bool:
        return hmac.compare_digest(_digest(presented), self._cookie_digest)

    def check(self, request: web.Request) -> bool | None:
        """True: the request carries the token; False: it carries a wrong one;
        None: it carries none."""
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, credentials = header.strip().partition(" ")
            # RFC 9110 §11.1: the scheme is case-insensitive.
            return scheme.lower() == "bearer" and self.matches(credentials.strip())
        cookie = request.cookies.get(self.cookie_name)
        if cookie is not None:
            return self.cookie_matches(cookie)
        return None


def unauthorized(wrong: bool, what: str = "the access token") -> web.HTTPUnauthorized:
    """401 with RFC 6750 §3's challenge, and one line on how to authenticate."""
    challenge = REALM + (', error="invalid_token"' if wrong else "")
    first = f"{what} is wrong" if wrong else "this server requires an access token"
    return web.HTTPUnauthorized(text=f"{first}: {HOW}\n", content_type="text/plain",
                                headers={"WWW-Authenticate": challenge})


def token_middleware(token: str):
    """The middleware requiring `token`; it goes inside errors_and_cors, so a
    401 carries CORS headers and a WHEP player on another origin can read it."""
    access = AccessToken(token)

    @web.middleware
    async def require_token(request: web.Request, handler):
        if request.path == "/" and QUERY in request.query and request.method in ("GET", "HEAD"):
            return _take_token_from_url(request, access)
        authorized = access.check(request)
        request[AUTHORIZED] = authorized is True
        if authorized or request.path in PUBLIC_PATHS:
            return await handler(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return web.Response(status=204)  # a preflight: errors_and_cors adds the CORS headers
        raise unauthorized(wrong=authorized is False)

    return require_token


def _take_token_from_url(request: web.Request, access: AccessToken) -> web.Response:
    if not access.matches(request.query[QUERY]):
        raise unauthorized(wrong=True, what="the token in the URL")
    response = web.Response(status=303, headers={
        "Location": str(request.rel_url.without_query_params(QUERY)),
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
    # HttpOnly: the page's scripts cannot read it. SameSite=Lax: a link from
    # another site (a home dashboard) opens the page, but other sites' scripts
    # and forms cannot make the browser send it with a WHEP POST or DELETE
    # (every GET here only reads). Secure when served over
    # TLS (a Secure cookie would not be kept over plain HTTP, the usual LAN case).
    response.set_cookie(access.cookie_name, access.cookie_value, max_age=COOKIE_MAX_AGE,
                        path="/", httponly=True, samesite="Lax", secure=request.secure)
    return response
