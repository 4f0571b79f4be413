"""fetch.py on its own: address vetting (v4, v6, embedded v4, odd spellings), refusal before any connection,
redirects re-checked per hop, byte cap, timeouts, content-type sanity, domain allow-list, data: URLs.

Test servers listen only on 127.0.0.0/8, in daemon threads, and are shut down by their fixture; handlers sleep
for bounded times. No test sends a packet to a non-loopback address: every such URL is refused before connect.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import videoqa.service.fetch as fetch_module
from tests.utils.net import free_port
from videoqa.service.fetch import (
    BadURLError,
    BlockedAddressError,
    FetchError,
    FetchOptions,
    FetchTimeoutError,
    FetchTooLargeError,
    UnsupportedContentTypeError,
    UpstreamError,
    _domain_allowed,
    check_address,
    fetch_to_file,
)

VIDEO = bytes(range(256)) * 64  # 16 KiB of stand-in video bytes; fetch never decodes


@dataclass
class Host:
    """A threaded HTTP server on one loopback address that records every request it gets."""

    ip: str
    port: int = 0
    hits: list[str] = field(default_factory=list)
    host_headers: list[str] = field(default_factory=list)
    server: _QuietServer | None = None

    @property
    def base(self) -> str:
        return f"http://{self.ip}:{self.port}"


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the fetcher hanging up mid-body (byte cap, timeout) is the point of several tests


def _serve(host: Host, peer: Host | None) -> None:
    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # a stuck client cannot hold a handler thread forever

        def _send(self, status: int, body: bytes = b"", ctype: str = "video/mp4", length: bool = True) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            if length:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            host.hits.append(self.path)
            host.host_headers.append(self.headers.get("Host", ""))
            path = self.path.split("?")[0]
            if path == "/clip.mp4":
                self._send(200, VIDEO)
            elif path == "/octet":
                self._send(200, VIDEO, ctype="application/octet-stream")
            elif path == "/page":
                self._send(200, b"<html>login</html>", ctype="text/html; charset=utf-8")
            elif path == "/big-declared":
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(10**9))
                self.end_headers()
            elif path == "/big-chunked":  # no Content-Length: only the streaming cap can stop it
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.end_headers()
                for _ in range(64):
                    self.wfile.write(VIDEO)
            elif path == "/slow-headers":
                time.sleep(1.5)
                self._send(200, VIDEO)
            elif path == "/trickle":
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(40 * 1024))
                self.end_headers()
                for _ in range(40):
                    self.wfile.write(b"\0" * 1024)
                    self.wfile.flush()
                    time.sleep(0.05)
            elif path == "/missing":
                self._send(404, b"no", ctype="text/plain")
            elif path == "/redirect-local":
                self._redirect(f"{host.base}/clip.mp4")
            elif path == "/redirect-relative":
                self._redirect("/clip.mp4")
            elif path == "/redirect-peer" and peer is not None:
                self._redirect(f"{peer.base}/clip.mp4")
            elif path == "/redirect-metadata":
                self._redirect("http://169.254.169.254/latest/meta-data/")
            elif path == "/redirect-file":
                self._redirect("file:///etc/passwd")
            elif path == "/loop":
                self._redirect("/loop")
            elif path.startswith("/status-"):  # /status-301 etc.: that redirect status to the clip
                self._redirect("/clip.mp4", int(path.rsplit("-", 1)[1]))
            elif path == "/no-location":
                self.send_response(302)
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif path == "/error-500":
                self._send(500, b"oops", ctype="text/plain")
            elif path == "/hangup":  # closes the connection without any response
                self.close_connection = True
            else:
                self._send(404, b"", ctype="text/plain")

        def _redirect(self, location: str, status: int = 302) -> None:
            self.send_response(status)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    host.port = free_port(host.ip)
    host.server = _QuietServer((host.ip, host.port), Handler)
    threading.Thread(target=host.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()


@pytest.fixture(scope="module")
def hosts() -> Iterator[tuple[Host, Host]]:
    """(allowed, forbidden): 127.0.0.2 is opted in by the tests' allow_cidrs, 127.0.0.1 never is."""
    forbidden = Host("127.0.0.1")
    allowed = Host("127.0.0.2")
    _serve(forbidden, None)
    _serve(allowed, forbidden)
    yield allowed, forbidden
    for h in (allowed, forbidden):
        assert h.server is not None
        h.server.shutdown()
        h.server.server_close()


@pytest.fixture
def opts() -> FetchOptions:
    return FetchOptions(
        max_bytes=64 * 1024, connect_timeout_s=2, read_timeout_s=2, total_timeout_s=10, allow_cidrs=["127.0.0.2/32"]
    )


# ------------------------------------------------------------------------ address vetting (no network)

BLOCKED = [
    "127.0.0.1",
    "127.1.2.3",
    "0.0.0.0",
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.10",
    "100.64.0.1",  # CGNAT
    "169.254.169.254",  # cloud metadata
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.2.1",  # documentation
    "198.18.0.1",  # benchmarking
    "::",
    "::1",
    "fe80::1",
    "fe80::1%eth0",
    "fc00::1",
    "fd00:ec2::254",  # AWS metadata over v6
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",  # v4-compatible
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
    "2001:db8::1",  # documentation
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "2a00:1450:4001:81c::200e"]
# Deliberately strict: v6 forms that merely wrap a public v4 are refused too (::ffff:0:0/96 is not global and
# 64:ff9b::/96 lies in the reserved ::/8); a real host never resolves to them, so refusing costs nothing.
STRICT = ["::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("addr", BLOCKED + STRICT)
def test_internal_addresses_are_blocked(addr: str) -> None:
    with pytest.raises(BlockedAddressError, match="not a public internet address") as info:
        check_address(addr)
    assert info.value.http_status == 403


@pytest.mark.parametrize("addr", PUBLIC)
def test_public_addresses_pass(addr: str) -> None:
    check_address(addr)  # must not raise


def test_allow_cidrs_opt_in_is_exact() -> None:
    allow = [ipaddress.ip_network("127.0.0.2/32")]
    check_address("127.0.0.2", allow)
    for addr in ("127.0.0.1", "10.0.0.1", "::ffff:127.0.0.2"):
        with pytest.raises(BlockedAddressError):
            check_address(addr, allow)


def test_domain_allow_list_matches_exact_and_subdomains() -> None:
    allowed = ["videos.example.com", ".cdn.example.org"]
    assert _domain_allowed("videos.example.com", allowed)
    assert _domain_allowed("VIDEOS.example.com.", allowed)
    assert _domain_allowed("eu.videos.example.com", allowed)
    assert _domain_allowed("a.cdn.example.org", allowed)
    assert not _domain_allowed("example.com", allowed)
    assert not _domain_allowed("evilvideos.example.com", allowed)
    assert not _domain_allowed("videos.example.com.evil.net", allowed)


# ------------------------------------------------------------------------ URLs refused before connecting


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "[::1]",
        "169.254.169.254",
        "10.0.0.1",
        "192.168.0.1",
        "172.16.0.1",
        "100.64.0.1",
        "0.0.0.0",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[64:ff9b::a00:1]",
        "[2002:a00:1::]",
        "2130706433",  # decimal 127.0.0.1
        "0x7f000001",  # hex
        "0177.0.0.1",  # octal
        "017700000001",  # octal, one number
        "127.1",  # short form
        "167772161",  # decimal 10.0.0.1
    ],
)
async def test_internal_urls_are_refused_before_any_request(
    host: str, hosts: tuple[Host, Host], opts: FetchOptions, tmp_path: Path
) -> None:
    _, forbidden = hosts
    before = len(forbidden.hits)
    with pytest.raises(BlockedAddressError):
        await fetch_to_file(f"http://{host}:{forbidden.port}/clip.mp4", tmp_path / "v.mp4", opts)
    assert len(forbidden.hits) == before  # refused before connecting
    assert not (tmp_path / "v.mp4").exists()


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("file:///etc/passwd", "scheme 'file'"),
        ("ftp://example.com/v.mp4", "scheme 'ftp'"),
        ("gopher://127.0.0.2/", "scheme 'gopher'"),
        ("http:///nohost", "no host"),
        ("http://user:pw@127.0.0.2/clip.mp4", "credentials"),
        ("http://no-such-host.invalid/v.mp4", "cannot resolve"),
    ],
)
async def test_bad_urls(url: str, match: str, opts: FetchOptions, tmp_path: Path) -> None:
    with pytest.raises(BadURLError, match=match) as info:
        await fetch_to_file(url, tmp_path / "v.mp4", opts)
    assert info.value.http_status == 400


# ------------------------------------------------------------------------ real fetches from the opted-in host


async def test_fetch_from_allowed_test_host(hosts: tuple[Host, Host], opts: FetchOptions, tmp_path: Path) -> None:
    allowed, _ = hosts
    res = await fetch_to_file(f"{allowed.base}/clip.mp4?x=1", tmp_path / "v.mp4", opts)
    assert res.bytes == len(VIDEO) and res.path.read_bytes() == VIDEO
    assert res.sha256 == hashlib.sha256(VIDEO).hexdigest()
    assert res.content_type == "video/mp4"
    assert "/clip.mp4?x=1" in allowed.hits


async def test_default_options_refuse_loopback(hosts: tuple[Host, Host], tmp_path: Path) -> None:
    allowed, _ = hosts
    with pytest.raises(BlockedAddressError):
        await fetch_to_file(f"{allowed.base}/clip.mp4", tmp_path / "v.mp4")  # no opt-in: loopback refused


async def test_redirects_are_followed_and_rechecked(
    hosts: tuple[Host, Host], opts: FetchOptions, tmp_path: Path
) -> None:
    allowed, forbidden = hosts
    res = await fetch_to_file(f"{allowed.base}/redirect-relative", tmp_path / "a.mp4", opts)
    assert res.final_url == f"{allowed.base}/clip.mp4" and res.bytes == len(VIDEO)
    before = len(forbidden.hits)
    with pytest.raises(BlockedAddressError):
        await fetch_to_file(f"{allowed.base}/redirect-peer", tmp_path / "b.mp4", opts)  # -> 127.0.0.1
    assert len(forbidden.hits) == before  # the loopback hop was never requested
    with pytest.raises(BlockedAddressError):
        await fetch_to_file(f"{allowed.base}/redirect-metadata", tmp_path / "c.mp4", opts)
    with pytest.raises(BadURLError):
        await fetch_to_file(f"{allowed.base}/redirect-file", tmp_path / "d.mp4", opts)
    with pytest.raises(UpstreamError, match="redirects"):
        await fetch_to_file(f"{allowed.base}/loop", tmp_path / "e.mp4", opts)


async def test_byte_cap(hosts: tuple[Host, Host], opts: FetchOptions, tmp_path: Path) -> None:
    allowed, _ = hosts
    with pytest.raises(FetchTooLargeError, match="over the limit") as info:
        await fetch_to_file(f"{allowed.base}/big-declared", tmp_path / "a.mp4", opts)
    assert info.value.http_status == 413
    with pytest.raises(FetchTooLargeError):
        await fetch_to_file(f"{allowed.base}/big-chunked", tmp_path / "b.mp4", opts)
    assert not (tmp_path / "b.mp4").exists()  # no truncated file left behind


async def test_timeouts(hosts: tuple[Host, Host], tmp_path: Path) -> None:
    allowed, _ = hosts
    read = FetchOptions(read_timeout_s=0.3, allow_cidrs=["127.0.0.2/32"])
    with pytest.raises(FetchTimeoutError) as info:
        await fetch_to_file(f"{allowed.base}/slow-headers", tmp_path / "a.mp4", read)
    assert info.value.http_status == 504
    # Every chunk arrives well within the read timeout (one per 50 ms), so only the total deadline, checked
    # between chunks, can stop this 2 s body.
    total = FetchOptions(read_timeout_s=1, total_timeout_s=0.5, allow_cidrs=["127.0.0.2/32"])
    with pytest.raises(FetchTimeoutError, match="total_timeout_s"):
        await fetch_to_file(f"{allowed.base}/trickle", tmp_path / "b.mp4", total)
    assert not (tmp_path / "b.mp4").exists()


async def test_content_type_and_upstream_errors(hosts: tuple[Host, Host], opts: FetchOptions, tmp_path: Path) -> None:
    allowed, _ = hosts
    with pytest.raises(UnsupportedContentTypeError, match="text/html") as info:
        await fetch_to_file(f"{allowed.base}/page", tmp_path / "a.mp4", opts)
    assert info.value.http_status == 415
    res = await fetch_to_file(f"{allowed.base}/octet", tmp_path / "b.mp4", opts)  # generic type: decoder decides
    assert res.bytes == len(VIDEO)
    with pytest.raises(UpstreamError, match="HTTP 404") as err:
        await fetch_to_file(f"{allowed.base}/missing", tmp_path / "c.mp4", opts)
    assert err.value.http_status == 502
    with pytest.raises(UpstreamError, match="HTTP 500") as err:
        await fetch_to_file(f"{allowed.base}/error-500", tmp_path / "d.mp4", opts)
    assert err.value.http_status == 502
    with pytest.raises(UpstreamError, match="failed") as err:  # no response at all: a protocol error, still 502
        await fetch_to_file(f"{allowed.base}/hangup", tmp_path / "e.mp4", opts)
    assert err.value.http_status == 502 and not (tmp_path / "e.mp4").exists()


@pytest.mark.parametrize("status", [301, 303, 307, 308])
async def test_every_redirect_status_is_followed(
    status: int, hosts: tuple[Host, Host], opts: FetchOptions, tmp_path: Path
) -> None:
    allowed, _ = hosts
    res = await fetch_to_file(f"{allowed.base}/status-{status}", tmp_path / "v.mp4", opts)
    assert res.final_url == f"{allowed.base}/clip.mp4" and res.path.read_bytes() == VIDEO


async def test_a_redirect_without_location_is_an_upstream_error(
    hosts: tuple[Host, Host], opts: FetchOptions, tmp_path: Path
) -> None:
    allowed, _ = hosts
    with pytest.raises(UpstreamError, match="no Location") as err:
        await fetch_to_file(f"{allowed.base}/no-location", tmp_path / "v.mp4", opts)
    assert err.value.http_status == 502


# ------------------------------------------------------------------------ names: DNS answers, Host and SNI


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Answers for made-up names (a test cannot add records to the system resolver); other names resolve normally.
    What is under test is what the fetcher does with the answer: vet every address, then connect to the vetted one."""
    answers: dict[str, list[str]] = {}
    real = fetch_module.resolve

    async def resolve(host: str, port: int) -> list[str]:
        return list(answers[host]) if host in answers else await real(host, port)

    monkeypatch.setattr(fetch_module, "resolve", resolve)
    return answers


@pytest.mark.parametrize(
    "answer",
    [["127.0.0.2", "127.0.0.1"], ["127.0.0.1", "127.0.0.2"], ["127.0.0.2", "10.0.0.1"], ["127.0.0.2", "::1"]],
    ids=["allowed-then-loopback", "loopback-first", "allowed-then-private", "allowed-then-v6-loopback"],
)
async def test_a_name_with_any_non_public_address_is_refused(
    answer: list[str], dns: dict[str, list[str]], hosts: tuple[Host, Host], opts: FetchOptions, tmp_path: Path
) -> None:
    allowed, forbidden = hosts
    dns["mixed.test"] = answer  # 127.0.0.2 alone would be fetched (opted in); the other address poisons the name
    before = (len(allowed.hits), len(forbidden.hits))
    with pytest.raises(BlockedAddressError):
        await fetch_to_file(f"http://mixed.test:{allowed.port}/clip.mp4", tmp_path / "v.mp4", opts)
    assert (len(allowed.hits), len(forbidden.hits)) == before  # refused before any connection


async def test_http_goes_to_the_vetted_address_with_the_original_host_header(
    dns: dict[str, list[str]], hosts: tuple[Host, Host], opts: FetchOptions, tmp_path: Path
) -> None:
    allowed, _ = hosts
    dns["videos.test"] = ["127.0.0.2"]
    res = await fetch_to_file(f"http://videos.test:{allowed.port}/clip.mp4", tmp_path / "v.mp4", opts)
    assert res.path.read_bytes() == VIDEO and res.final_url == f"http://videos.test:{allowed.port}/clip.mp4"
    assert allowed.host_headers[-1] == f"videos.test:{allowed.port}"


@dataclass
class TLSHost:
    port: int
    ca_file: Path
    server_names: list[str | None] = field(default_factory=list)
    host_headers: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def tls_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSHost]:
    """An https server on 127.0.0.2 with a certificate for videos.test only, from a CA made here."""
    import datetime
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.UTC)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "videoqa test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "videos.test")]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("videos.test")]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (d / "ca.pem").write_bytes(ca.public_bytes(pem))
    (d / "leaf.pem").write_bytes(leaf.public_bytes(pem))
    (d / "leaf.key").write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    host = TLSHost(port=free_port("127.0.0.2"), ca_file=d / "ca.pem")

    class Handler(BaseHTTPRequestHandler):
        timeout = 10

        def do_GET(self) -> None:  # noqa: N802
            host.host_headers.append(self.headers.get("Host", ""))
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(VIDEO)))
            self.end_headers()
            self.wfile.write(VIDEO)

        def log_message(self, *args: object) -> None:
            pass

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "leaf.pem", d / "leaf.key")
    ctx.sni_callback = lambda sock, name, _ctx: host.server_names.append(name)  # type: ignore[assignment,misc]
    server = _QuietServer(("127.0.0.2", host.port), Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    yield host
    server.shutdown()
    server.server_close()


async def test_https_goes_to_the_vetted_address_with_the_right_sni_and_host(
    dns: dict[str, list[str]], tls_host: TLSHost, opts: FetchOptions, tmp_path: Path
) -> None:
    dns["videos.test"] = ["127.0.0.2"]  # the server listens only there
    opts.ca_file = str(tls_host.ca_file)
    url = f"https://videos.test:{tls_host.port}/clip.mp4"
    res = await fetch_to_file(url, tmp_path / "v.mp4", opts)
    assert res.path.read_bytes() == VIDEO and res.final_url == url
    # The TLS handshake named the host (so the certificate for videos.test was checked against that name, not the
    # IP), and the request carried the original Host.
    assert tls_host.server_names[-1] == "videos.test"
    assert tls_host.host_headers[-1] == f"videos.test:{tls_host.port}"
    # Without our CA the same server is refused: the certificate really is verified.
    opts.ca_file = None
    with pytest.raises(UpstreamError, match="CERTIFICATE_VERIFY_FAILED"):
        await fetch_to_file(url, tmp_path / "w.mp4", opts)


async def test_domain_allow_list_refuses_before_resolving(
    hosts: tuple[Host, Host], opts: FetchOptions, tmp_path: Path
) -> None:
    allowed, _ = hosts
    opts.allow_domains = ["videos.example.com"]
    before = len(allowed.hits)
    with pytest.raises(BlockedAddressError, match="allowed domains"):
        await fetch_to_file(f"{allowed.base}/clip.mp4", tmp_path / "v.mp4", opts)
    assert len(allowed.hits) == before


# ------------------------------------------------------------------------ data: URLs


async def test_data_urls(opts: FetchOptions, tmp_path: Path) -> None:
    url = "data:video/mp4;base64," + base64.b64encode(VIDEO).decode()
    res = await fetch_to_file(url, tmp_path / "v.mp4", opts)
    assert res.path.read_bytes() == VIDEO and res.content_type == "video/mp4"
    assert res.sha256 == hashlib.sha256(VIDEO).hexdigest()
    too_big = "data:video/mp4;base64," + base64.b64encode(VIDEO * 5).decode()
    with pytest.raises(FetchTooLargeError):
        await fetch_to_file(too_big, tmp_path / "big.mp4", opts)
    with pytest.raises(BadURLError, match="base64"):
        await fetch_to_file("data:video/mp4;base64,@@not base64@@", tmp_path / "bad.mp4", opts)
    with pytest.raises(BadURLError, match="no comma"):
        await fetch_to_file("data:video/mp4;base64", tmp_path / "bad.mp4", opts)
    generic = await fetch_to_file(
        "data:application/octet-stream;base64," + base64.b64encode(VIDEO).decode(), tmp_path / "g.mp4", opts
    )  # generic type: the decoder decides, as for servers
    assert generic.bytes == len(VIDEO)


@pytest.mark.parametrize(
    "url",
    [
        "data:text/html,<html>login</html>",
        "data:text/plain;base64,aGVsbG8=",
        "data:application/json,{}",
        "data:TEXT/HTML;charset=utf-8,<p>",
    ],
)
async def test_data_urls_declaring_a_non_video_type_are_refused(url: str, opts: FetchOptions, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedContentTypeError, match="not a video") as info:
        await fetch_to_file(url, tmp_path / "v.mp4", opts)
    assert info.value.http_status == 415 and not (tmp_path / "v.mp4").exists()


def test_every_error_is_a_fetch_error_with_a_status() -> None:
    errors = (BadURLError, BlockedAddressError, FetchTooLargeError, FetchTimeoutError, UpstreamError)
    for cls in (*errors, UnsupportedContentTypeError):
        assert issubclass(cls, FetchError) and 400 <= cls.http_status < 600 and cls.code
