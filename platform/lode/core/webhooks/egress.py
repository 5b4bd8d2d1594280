"""What a webhook may reach, and the one POST that reaches it.

A tenant names the URL, so the platform must not become its way into our own network (SSRF):
only https, and only hosts whose every address is public. The check runs when an endpoint is
saved and again at each send, and the send connects to the very address that was checked (no
second DNS lookup a rebinding resolver could answer differently). Loopback (127.0.0.1, ::1,
localhost, plain http) is allowed only in development and tests (DEBUG or
WEBHOOKS_ALLOW_LOCALHOST). No proxy from the environment, no redirects, a short timeout."""
from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import urllib3
from django.conf import settings
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from lode.core.errors import ValidationFailed

MAX_URL_LENGTH = 2000
RESPONSE_BODY_LIMIT = 500  # characters of a response body that are kept
LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "127.0.0.1", "::1"})
USER_AGENT = "Lode-Webhooks/1"


def localhost_allowed() -> bool:
    return bool(settings.DEBUG or getattr(settings, "WEBHOOKS_ALLOW_LOCALHOST", False))


def _refused(message: str) -> ValidationFailed:
    return ValidationFailed(f"url: {message}", details={"field": "url"})


@dataclass(frozen=True)
class WebhookTarget:
    scheme: str
    hostname: str  # lower case, without brackets
    port: int
    netloc: str  # what the Host header says
    path: str  # path and query

    @property
    def is_https(self) -> bool:
        return self.scheme == "https"


def webhook_url_parse(url: object, *, allow_localhost: bool | None = None) -> WebhookTarget:
    """Checks a URL's form (no DNS): https, a host, no credentials, no odd characters."""
    allow_localhost = localhost_allowed() if allow_localhost is None else allow_localhost
    if not isinstance(url, str) or not url.strip():
        raise _refused("required, an https URL")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise _refused(f"at most {MAX_URL_LENGTH} characters")
    if any(ord(char) < 33 or ord(char) == 127 for char in url):
        raise _refused("may not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _refused(f"not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    hostname = (parts.hostname or "").lower()
    if scheme not in {"https", "http"}:
        raise _refused(f"the scheme must be https, not {scheme or 'none'}")
    if not hostname:
        raise _refused("a host name is required")
    if parts.username is not None or parts.password is not None:
        raise _refused("may not carry credentials (user:password@); authenticate the request by its signature")
    if scheme == "http" and not (allow_localhost and hostname in LOOPBACK_NAMES):
        raise _refused("must use https")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return WebhookTarget(scheme=scheme, hostname=hostname, port=port or (443 if scheme == "https" else 80),
                         netloc=parts.netloc.rsplit("@", 1)[-1], path=path)


def _address_refusal(address: str, *, allow_localhost: bool) -> str | None:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return None if allow_localhost else "a loopback address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private or not ip.is_global:
        return "a private or reserved address"
    return None


def webhook_url_resolve(target: WebhookTarget, *, allow_localhost: bool | None = None) -> list[str]:
    """The host's addresses, all of which must be allowed (one private address among public ones
    is refused: the connection could land on it)."""
    allow_localhost = localhost_allowed() if allow_localhost is None else allow_localhost
    try:
        infos = socket.getaddrinfo(target.hostname, target.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise _refused(f"the host {target.hostname} does not resolve") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise _refused(f"the host {target.hostname} does not resolve")
    for address in addresses:
        refusal = _address_refusal(address, allow_localhost=allow_localhost)
        if refusal:
            # The address itself is not named: it would tell a tenant about our network.
            raise _refused(f"the host {target.hostname} resolves to {refusal}; only public addresses are allowed")
    return addresses


def webhook_url_check(url: object) -> str:
    """The endpoint-saving check: form and addresses. Returns the URL, stripped."""
    target = webhook_url_parse(url)
    webhook_url_resolve(target)
    return str(url).strip()


@dataclass(frozen=True)
class WebhookResponse:
    status_code: int | None  # None when no response came (refused, unreachable, timed out)
    body: str  # at most RESPONSE_BODY_LIMIT characters
    error: str
    elapsed_ms: int

    @property
    def is_success(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def webhook_post(*, url: str, body: bytes, headers: dict[str, str], timeout: float) -> WebhookResponse:
    """POSTs body to url once: checked again, to the checked address, no redirects followed."""
    started = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        target = webhook_url_parse(url)
        addresses = webhook_url_resolve(target)
    except ValidationFailed as exc:
        return WebhookResponse(None, "", f"refused: {exc.message}"[:500], elapsed())
    request_headers = {
        "Host": target.netloc,
        "User-Agent": USER_AGENT,
        "Content-Type": "application/json",
        **headers,
    }
    error = ""
    for address in addresses[:3]:
        pool_kwargs = {
            "host": address, "port": target.port, "maxsize": 1, "retries": False,
            "timeout": urllib3.Timeout(total=timeout),
        }
        if target.is_https:
            pool = urllib3.HTTPSConnectionPool(**pool_kwargs, cert_reqs="CERT_REQUIRED", server_hostname=target.hostname,
                                               assert_hostname=target.hostname)
        else:
            pool = urllib3.HTTPConnectionPool(**pool_kwargs)
        try:
            response = pool.urlopen("POST", target.path, body=body, headers=request_headers, redirect=False,
                                    retries=False, assert_same_host=False, preload_content=False)
        except (NewConnectionError, ConnectTimeoutError) as exc:
            error = _describe(exc)
            pool.close()
            continue  # the next address, as a browser would
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            pool.close()
            return WebhookResponse(None, "", _describe(exc), elapsed())
        try:
            raw = response.read(RESPONSE_BODY_LIMIT * 4, decode_content=False)
        except (urllib3.exceptions.HTTPError, OSError):
            raw = b""  # the status is what counts; the body is for the tenant's diagnosis only
        finally:
            response.release_conn()
            pool.close()
        text = raw.decode("utf-8", errors="replace")[:RESPONSE_BODY_LIMIT]
        error = "" if 200 <= response.status < 300 else f"HTTP {response.status}"
        return WebhookResponse(response.status, text, error, elapsed())
    return WebhookResponse(None, "", error or "could not connect", elapsed())
