"""A browser's part of a sign-in, for tests: a cookie jar and redirects followed one by one.

Envoy's ``oauth2`` filter marks every cookie ``Secure``. Browsers count ``http://localhost``
and ``http://127.0.0.1`` as secure contexts and send such cookies there; httpx's jar (the
standard library's policy) does not, so the tests keep cookies here: one jar per host, a cookie
replaced by name, dropped when its ``Max-Age`` runs out or it is deleted (``Max-Age=0`` or an
``expires`` in the past), and sent back as one ``Cookie`` header. Redirects are followed by
hand so a test can look at every hop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit

import httpx


@dataclass
class Cookie:
    name: str
    value: str
    #: Epoch seconds after which the browser forgets it; None: at the end of the session.
    expires: float | None
    attributes: dict[str, str]


def parse_set_cookie(header: str, now: float) -> Cookie:
    """One ``Set-Cookie`` header (RFC 6265 §5.2, the parts the tests need)."""
    pair, *attrs = header.split(";")
    name, _, value = pair.strip().partition("=")
    attributes: dict[str, str] = {}
    for attr in attrs:
        key, _, val = attr.strip().partition("=")
        attributes[key.strip().lower()] = val.strip()
    expires: float | None = None
    if "max-age" in attributes:
        expires = now + int(attributes["max-age"])
    elif "expires" in attributes:
        expires = parsedate_to_datetime(attributes["expires"]).timestamp()
    return Cookie(name.strip(), value.strip(), expires, attributes)


@dataclass
class Browser:
    """Cookies per host (``host:port``), and the hops of the last navigation."""

    jar: dict[str, dict[str, Cookie]] = field(default_factory=dict)
    hops: list[httpx.Response] = field(default_factory=list)
    timeout: float = 5.0

    def cookies(self, url: str) -> dict[str, str]:
        """The cookies the browser would send to ``url`` now."""
        now = time.time()
        host = urlsplit(url).netloc
        live = {
            n: c for n, c in self.jar.get(host, {}).items() if c.expires is None or c.expires > now
        }
        self.jar[host] = live
        return {n: c.value for n, c in live.items()}

    def set_cookie(self, url: str, name: str, value: str) -> None:
        """Change a cookie as a client can (tampering)."""
        cookie = self.jar.setdefault(urlsplit(url).netloc, {})[name]
        cookie.value = value

    def store(self, url: str, response: httpx.Response) -> None:
        now = time.time()
        bucket = self.jar.setdefault(urlsplit(url).netloc, {})
        for header in response.headers.get_list("set-cookie"):
            cookie = parse_set_cookie(header, now)
            if cookie.expires is not None and cookie.expires <= now:
                bucket.pop(cookie.name, None)
            else:
                bucket[cookie.name] = cookie

    def get(self, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
        """One request, cookies sent and stored, no redirect followed."""
        sent = dict(headers or {})
        cookies = self.cookies(url)
        if cookies:
            sent["cookie"] = "; ".join(f"{n}={v}" for n, v in cookies.items())
        response = httpx.get(url, headers=sent, follow_redirects=False, timeout=self.timeout)
        self.store(url, response)
        return response

    def navigate(self, url: str, max_hops: int = 10) -> httpx.Response:
        """Follow redirects as a browser would; :attr:`hops` keeps every response."""
        self.hops = []
        for _ in range(max_hops):
            response = self.get(url)
            self.hops.append(response)
            if response.status_code not in (301, 302, 303, 307, 308):
                return response
            url = urljoin(url, response.headers["location"])
        raise AssertionError(f"more than {max_hops} redirects: {[str(h.url) for h in self.hops]}")
