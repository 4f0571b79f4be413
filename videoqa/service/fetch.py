"""Fetch a user-supplied video URL without becoming an SSRF proxy.

http(s) only; the host is resolved once and EVERY address it resolves to must be globally routable (no
private, loopback, link-local/metadata, CGNAT, multicast, reserved or unspecified addresses, v4 or v6,
including v4 embedded in v6: mapped, 6to4, NAT64, Teredo). The connection then goes to the vetted address
(Host header and TLS SNI keep the name), so DNS cannot be rebound between check and connect. Redirects are
followed by hand and every hop is checked again. Bytes are capped while streaming; connect/read/total
timeouts apply. `data:` URLs are decoded with the same cap. vLLM's own fetcher lacks the private-address
guard and follows redirects (vllm issue #57157); the engine here never fetches.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

import httpx


class FetchError(Exception):
    http_status = 400
    code = "fetch_failed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadURLError(FetchError):
    code = "invalid_url"


class BlockedAddressError(FetchError):
    http_status = 403
    code = "blocked_address"


class FetchTooLargeError(FetchError):
    http_status = 413
    code = "video_too_large"


class FetchTimeoutError(FetchError):
    http_status = 504
    code = "fetch_timeout"


class UpstreamError(FetchError):
    http_status = 502
    code = "upstream_error"


class UnsupportedContentTypeError(FetchError):
    """The server says the body is a web page or data document, not a video (e.g. an HTML error/login page)."""

    http_status = 415
    code = "unsupported_content_type"


# Bodies with these types are never videos; anything else (video/*, application/octet-stream, none) is left for
# the decoder to judge, since many hosts serve videos with generic types.
_NOT_VIDEO_TYPES = ("text/", "application/json", "application/xml", "application/xhtml", "image/svg")


@dataclass
class FetchOptions:
    max_bytes: int = 512 * 1024**2
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0
    total_timeout_s: float = 120.0
    max_redirects: int = 5
    allow_domains: list[str] = field(default_factory=list)
    """If set, only these domains (and their subdomains) may be fetched."""
    allow_cidrs: list[str] = field(default_factory=list)
    """Networks allowed despite not being global. Empty by default; tests use it for a loopback server."""
    ca_file: str | None = None
    """CA bundle for https instead of the default trust store (tests use a CA they make for a local TLS host)."""


@dataclass
class FetchResult:
    path: Path
    bytes: int
    sha256: str
    content_type: str | None
    final_url: str


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in ipaddress.ip_network("64:ff9b::/96") or ip in ipaddress.ip_network("::/96"):  # NAT64, v4-compatible
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def check_address(addr: str, allow: list[Network] | None = None) -> None:
    """Raise BlockedAddressError unless `addr` may be fetched from."""
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if allow and any(ip in net for net in allow if ip.version == net.version):
        return
    candidates = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and (v4 := _embedded_v4(ip)) is not None:
        candidates.append(v4)
    for c in candidates:
        if not c.is_global or c.is_multicast or c.is_reserved or c.is_unspecified:
            raise BlockedAddressError(
                f"refusing to fetch from {addr}: it is not a public internet address (private, loopback, "
                "link-local/metadata or reserved); host the video on a public URL or upload it"
            )


async def resolve(host: str, port: int) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise BadURLError(f"cannot resolve host {host!r}: {err.strerror}") from err
    # str(): an inet sockaddr's host is already a str; typeshed's sockaddr union also allows AF_PACKET's int.
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _domain_allowed(host: str, allowed: list[str]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in (a.lower().lstrip(".") for a in allowed))


async def _vet(url: str, opts: FetchOptions, allow_nets: list[Network]) -> tuple[str, str, int, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise BadURLError(f"only http(s) and data: URLs can be fetched, got scheme {parts.scheme!r}")
    if not parts.hostname:
        raise BadURLError(f"URL has no host: {url!r}")
    if parts.username or parts.password:
        raise BadURLError("URLs with credentials are not accepted")
    host = parts.hostname
    if opts.allow_domains and not _domain_allowed(host, opts.allow_domains):
        raise BlockedAddressError(f"host {host!r} is not in the allowed domains ({', '.join(opts.allow_domains)})")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addrs = await resolve(host, port)
    for addr in addrs:  # every address must pass: the OS could pick any of them
        check_address(addr, allow_nets)
    return parts.scheme, host, port, addrs[0]


async def fetch_to_file(url: str, dest: Path, opts: FetchOptions | None = None) -> FetchResult:
    """Download `url` (http(s) or data:) into `dest` under the limits in `opts`."""
    opts = opts or FetchOptions()
    dest.parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("data:"):
        return _decode_data_url(url, dest, opts)
    allow_nets = [ipaddress.ip_network(c, strict=False) for c in opts.allow_cidrs]
    timeout = httpx.Timeout(opts.read_timeout_s, connect=opts.connect_timeout_s)
    deadline = time.monotonic() + opts.total_timeout_s
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=opts.ca_file) if opts.ca_file else True
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False, verify=verify) as client:
        for _ in range(opts.max_redirects + 1):
            scheme, host, port, addr = await _vet(url, opts, allow_nets)
            parts = urlsplit(url)
            ip_host = f"[{addr}]" if ":" in addr else addr
            target = f"{scheme}://{ip_host}:{port}{parts.path or '/'}" + (f"?{parts.query}" if parts.query else "")
            headers = {"Host": host if parts.port is None else f"{host}:{parts.port}", "Accept": "video/*,*/*;q=0.5"}
            extensions = {"sni_hostname": host} if scheme == "https" else {}
            try:
                async with client.stream("GET", target, headers=headers, extensions=extensions) as resp:
                    if resp.status_code in (301, 302, 303, 307, 308):
                        location = resp.headers.get("location")
                        if not location:
                            raise UpstreamError(f"redirect from {url} has no Location")
                        url = urljoin(url, location)
                        continue
                    if resp.status_code >= 400:
                        raise UpstreamError(f"{url} answered HTTP {resp.status_code}")
                    ctype = resp.headers.get("content-type")
                    if ctype and ctype.lower().startswith(_NOT_VIDEO_TYPES):
                        raise UnsupportedContentTypeError(
                            f"{url} serves {ctype!r}, not a video; link the video file itself"
                        )
                    declared = int(resp.headers.get("content-length") or 0)
                    if declared > opts.max_bytes:
                        raise FetchTooLargeError(f"{url} is {declared} bytes, over the limit of {opts.max_bytes}")
                    digest, size = hashlib.sha256(), 0
                    try:
                        with dest.open("wb") as f:
                            async for chunk in resp.aiter_bytes():
                                size += len(chunk)
                                if size > opts.max_bytes:
                                    raise FetchTooLargeError(f"{url} is over the limit of {opts.max_bytes} bytes")
                                if time.monotonic() > deadline:
                                    raise FetchTimeoutError(
                                        f"fetching {url} took over {opts.total_timeout_s:g} s (total_timeout_s)"
                                    )
                                digest.update(chunk)
                                f.write(chunk)
                    except BaseException:
                        dest.unlink(missing_ok=True)  # never leave a truncated video behind for the decoder
                        raise
                    return FetchResult(dest, size, digest.hexdigest(), resp.headers.get("content-type"), url)
            except httpx.TimeoutException as err:
                raise FetchTimeoutError(f"fetching {url} timed out") from err
            except httpx.HTTPError as err:
                raise UpstreamError(f"fetching {url} failed: {err}") from err
        raise UpstreamError(f"more than {opts.max_redirects} redirects")


def _decode_data_url(url: str, dest: Path, opts: FetchOptions) -> FetchResult:
    header, sep, payload = url[5:].partition(",")
    if not sep:
        raise BadURLError("malformed data: URL (no comma)")
    media_type = header.split(";")[0].strip().lower()
    if media_type.startswith(_NOT_VIDEO_TYPES):  # same rule as a server's Content-Type; no type: the decoder judges
        raise UnsupportedContentTypeError(
            f"the data: URL says it holds {media_type!r}, not a video; send the video as data:video/mp4;base64,..."
        )
    if len(payload) > opts.max_bytes * 4 // 3 + 4:
        raise FetchTooLargeError(f"the data: URL holds over {opts.max_bytes} bytes")
    try:
        data = base64.b64decode(payload, validate=True) if header.endswith(";base64") else unquote_to_bytes(payload)
    except ValueError as err:
        raise BadURLError("the data: URL is not valid base64") from err
    if len(data) > opts.max_bytes:
        raise FetchTooLargeError(f"the data: URL holds {len(data)} bytes, over the limit of {opts.max_bytes}")
    dest.write_bytes(data)
    return FetchResult(dest, len(data), hashlib.sha256(data).hexdigest(), header.split(";")[0] or None, "data:")
