"""Transport security over real sockets, with certificates minted at test time: mutual TLS
between gateways and towards a grpc_partner platform, handshake refusals, the admin
address, `tongban serve`'s refusals, the store's file mode, one-sided links."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway.app import GatewayApp
from gateway.client import CallError
from gateway.config import load_config
from gateway.demo import free_port
from gateway.errors import ConfigError
from gateway.partner_client import PartnerClient
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import gateway_pb2 as gw
from gateway.signing import b64url, generate_private_key, load_private_key, sign
from gateway.tls import ChannelTls
from tests.federation import PARTNERS_TOML, ROOT, federation, federation_text
from tests.platform import Platform, grpc_partner_text

CITIZEN = pb.Applicant(id_type=pb.ID_TYPE_RESIDENT, id_number="11010519491231002X", name="张三")
TEXT = PARTNERS_TOML.read_text(encoding="utf-8")
SERVER_AUTH, CLIENT_AUTH = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH


class Pki:
    """One certificate authority writing PEM files (keys 0600) under a folder."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder, self.name = folder, name
        folder.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
        self.cert = self._builder(subject, subject, self.key.public_key()).add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True,
        ).sign(self.key, hashes.SHA256())
        self.ca_path = folder / f"{name}-ca.crt"
        self.ca_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    @staticmethod
    def _builder(subject: x509.Name, issuer: x509.Name, public: Any) -> x509.CertificateBuilder:
        now = dt.datetime.now(dt.UTC)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                .public_key(public).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=1)))

    def issue(self, name: str, *usages: x509.ObjectIdentifier) -> tuple[Path, Path]:
        """A leaf for SAN IP 127.0.0.1 and DNS localhost; returns (cert, key) paths."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = self._builder(subject, self.cert.subject, key.public_key()).add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        ).add_extension(
            x509.ExtendedKeyUsage(list(usages or (SERVER_AUTH, CLIENT_AUTH))), critical=False,
        ).sign(self.key, hashes.SHA256())
        cert_path, key_path = self.folder / f"{name}.crt", self.folder / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_path.chmod(0o600)
        return cert_path, key_path

    def channel(self, client: str | None = None, server_name: str | None = None) -> ChannelTls:
        """What a caller trusting this CA needs; client: present that issued certificate."""
        cert = key = None
        if client is not None:
            cert = (self.folder / f"{client}.crt").read_bytes()
            key = (self.folder / f"{client}.key").read_bytes()
        return ChannelTls(ca=self.ca_path.read_bytes(), server_name=server_name, cert=cert,
                          key=key)


def with_tls(text: str, pki: Pki, *, gateways: tuple[str, ...] = ("320000-gw", "310000-gw"),
             self_tls: str | None = None) -> str:
    """text with [self.tls] from pki and a tls table on each of gateways."""
    for gid in ("320100-gw", "320000-gw", "310000-gw"):  # [self.tls] serves any of them
        pki.issue(gid)
    folder = pki.folder
    self_tls = self_tls or (f'cert = "{folder}/{{id}}.crt"\nkey = "{folder}/{{id}}.key"\n'
                            f'client_ca = "{pki.ca_path}"\nrequire_client_cert = true\n')
    text = text.replace("\n[limits]\n", f"\n[self.tls]\n{self_tls}\n[limits]\n", 1)
    for gid in gateways:
        block = text.index(f'id = "{gid}"\nname =')
        end = text.index("\n", text.index("http = ", block)) + 1
        # 310000-gw is reached by IP (SAN 127.0.0.1), 320000-gw by the name in its cert
        name = ', server_name = "localhost"' if gid == "320000-gw" else ""
        text = text[:end] + f'tls = {{ ca = "{pki.ca_path}"{name} }}\n' + text[end:]
    return text


@asynccontextmanager
async def tls_platform(platform: Platform, port: int, own: Pki,
                       clients: Pki) -> AsyncIterator[None]:
    """tests/platform.py's platform on TLS: its own CA's server certificate, and only
    callers with a client certificate from `clients` (the gateways' CA)."""
    cert, key = own.issue("platform-310115", SERVER_AUTH)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "tongban.v1.PartnerPlatform",
        {"ReceiveCase": grpc.unary_unary_rpc_method_handler(platform.receive),
         "ReceiveUpdate": grpc.unary_unary_rpc_method_handler(platform.receive_update)}),))
    credentials = grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())], root_certificates=clients.ca_path.read_bytes(),
        require_client_auth=True)
    assert server.add_secure_port(f"127.0.0.1:{port}", credentials) == port
    await server.start()
    try:
        yield
    finally:
        await server.stop(0)


def partner_client(app: GatewayApp, partner: str, tls: ChannelTls | None) -> PartnerClient:
    key = load_private_key((ROOT / "demo-keys" / f"{partner}.pem").read_bytes(),
                           kid=f"{partner}#k1")
    return PartnerClient(app.config.me.grpc, partner_id=partner, gateway_id=app.config.self_id,
                         key=key, gateway_keys=app.config.me.keys, tls=tls)


@pytest.mark.asyncio
async def test_a_case_crosses_mutual_tls_to_a_tls_platform(tmp_path: Path) -> None:
    fed_ca, platform_ca = Pki(tmp_path / "fed", "federation"), Pki(tmp_path / "pd", "pudong")
    port = free_port()
    text = grpc_partner_text(port, with_tls(federation_text(), fed_ca))
    text = text.replace(f'address = "127.0.0.1:{port}", timeout_s = 2 }}\n',
                        f'address = "127.0.0.1:{port}", timeout_s = 2 }}\n'
                        f'tls = {{ ca = "{platform_ca.ca_path}", server_name = "localhost" }}\n')
    fed_ca.issue("client-320000", CLIENT_AUTH)
    fed_ca.issue("client-310115", CLIENT_AUTH)
    async with federation(tmp_path, text=text, gateways=("320000-gw", "310000-gw")) as fed:
        jiangsu, shanghai = fed.apps["320000-gw"], fed.apps["310000-gw"]
        assert jiangsu.config.me.tls is not None and shanghai.config.listener_tls is not None
        origin = partner_client(jiangsu, "320000", fed_ca.channel("client-320000", "localhost"))
        pudong = partner_client(shanghai, "310115", fed_ca.channel("client-310115"))
        platform = Platform(shanghai.config.me.keys)
        try:
            async with tls_platform(platform, port, platform_ca, fed_ca):
                case = (await origin.submit(case_number="TLS-1", target_division="310115",
                                            item_code="shebao-zy", applicant=CITIZEN)).case
                async with asyncio.timeout(20):
                    await platform.arrived.wait()  # 320000-gw → 310000-gw → platform, all TLS
                assert list(platform.cases) == [case.case_id]
                accepted = await pudong.update(pb.CaseUpdate(
                    case_id=case.case_id, update_id="pd-acc-1", state=pb.CASE_STATE_ACCEPTED))
                assert accepted.case.state == pb.CASE_STATE_ACCEPTED
                async with asyncio.timeout(10):  # the stream channel speaks TLS too
                    async for seen in origin.watch(case.case_id):
                        if seen.state == pb.CASE_STATE_ACCEPTED:
                            break
        finally:
            await origin.close()
            await pudong.close()


@pytest.mark.asyncio
async def test_the_handshake_refuses_callers_without_a_trusted_certificate(
        tmp_path: Path) -> None:
    fed_ca, rogue_ca = Pki(tmp_path / "fed", "federation"), Pki(tmp_path / "rogue", "rogue")
    fed_ca.issue("client-320000", CLIENT_AUTH)
    rogue_ca.issue("client-320000", CLIENT_AUTH)
    text = with_tls(federation_text(), fed_ca)
    async with federation(tmp_path, text=text, gateways=("320000-gw",)) as fed:
        app = fed.apps["320000-gw"]
        good = partner_client(app, "320000", fed_ca.channel("client-320000", "localhost"))
        assert await good.items()  # a signed call with a trusted certificate goes through
        await good.close()
        # the same signed call: no certificate, a certificate from another CA, plaintext
        trusting_rogue = ChannelTls(ca=fed_ca.ca_path.read_bytes(), server_name="localhost",
                                    cert=rogue_ca.channel("client-320000").cert,
                                    key=rogue_ca.channel("client-320000").key)
        for tls in (fed_ca.channel(None, "localhost"), trusting_rogue, None):
            client = partner_client(app, "320000", tls)
            try:
                with pytest.raises(CallError) as err:
                    await client.items()
            finally:
                await client.close()
            assert err.value.status is grpc.StatusCode.UNAVAILABLE, err.value.message
        # and a caller refuses a gateway whose certificate its own CA did not sign
        faking = partner_client(app, "320000", rogue_ca.channel("client-320000", "localhost"))
        try:
            with pytest.raises(CallError) as err:
                await faking.items()
        finally:
            await faking.close()
        assert err.value.status is grpc.StatusCode.UNAVAILABLE
        # the HTTP site speaks TLS too (and asks for no client certificate: public data)
        context = ssl.create_default_context(cafile=str(fed_ca.ca_path))
        async with aiohttp.ClientSession() as http:
            async with http.get(f"https://{app.config.me.http}/healthz", ssl=context) as resp:
                assert resp.status == 200
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"http://{app.config.me.http}/healthz") as resp:
                    await resp.read()


@pytest.mark.asyncio
async def test_metrics_and_reflection_only_on_the_admin_address(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "fed", "federation")
    ports = {name: free_port() for name in ("grpc", "http", "admin_http", "admin_grpc")}
    text = with_tls(TEXT, pki, gateways=("310000-gw",))
    text = text.replace('"127.0.0.1:7103"', f'"0.0.0.0:{ports["grpc"]}"')
    text = text.replace('"127.0.0.1:8103"', f'"0.0.0.0:{ports["http"]}"')
    text = text.replace("[self.tls]\n", f'admin_http = "127.0.0.1:{ports["admin_http"]}"\n'
                        f'admin_grpc = "127.0.0.1:{ports["admin_grpc"]}"\n[self.tls]\n')
    app = GatewayApp(load_config(PARTNERS_TOML, text=text, self_id="310000-gw"), memory=True)
    await app.start()
    try:
        context = ssl.create_default_context(cafile=str(pki.ca_path))
        async with aiohttp.ClientSession() as http:
            main = f"https://127.0.0.1:{ports['http']}"
            async with http.get(f"{main}/metrics", ssl=context) as resp:
                assert resp.status == 404
            async with http.get(f"{main}/.well-known/jwks.json", ssl=context) as resp:
                assert resp.status == 200
            async with http.get(f"http://127.0.0.1:{ports['admin_http']}/metrics") as resp:
                assert resp.status == 200 and "tongban_" in await resp.text()

        async def services(channel: grpc.aio.Channel) -> list[str]:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            async for answer in stub.ServerReflectionInfo(iter([request])):
                return [s.name for s in answer.list_services_response.service]
            return []

        async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['admin_grpc']}") as admin:
            assert "tongban.v1.Gateway" in await services(admin)
        pki.issue("client", CLIENT_AUTH)
        tls = pki.channel("client")
        async with grpc.aio.secure_channel(f"127.0.0.1:{ports['grpc']}",
                                           tls.credentials()) as main_channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await services(main_channel)
            assert err.value.code() is grpc.StatusCode.UNIMPLEMENTED
    finally:
        await app.stop(grace_s=0.1)


def test_tls_key_must_belong_to_the_certificate(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "fed", "federation")
    pki.issue("other")
    text = with_tls(TEXT, pki, gateways=("320100-gw",), self_tls=(
        f'cert = "{pki.folder}/{{id}}.crt"\nkey = "{pki.folder}/other.key"\n'))
    with pytest.raises(ConfigError) as err:
        load_config(PARTNERS_TOML, text=text)
    line = text.splitlines().index(f'key = "{pki.folder}/other.key"') + 1
    assert f"partners.toml:{line}: self.tls.key:" in str(err.value)
    assert "does not belong to the certificate" in str(err.value)


def test_a_gateway_said_to_speak_tls_needs_a_certificate(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "fed", "federation")
    text = with_tls(TEXT, pki, gateways=("310000-gw",))
    start = text.index("\n[self.tls]\n")
    text = text[:start] + text[text.index("\n[limits]\n"):]  # no [self.tls]
    with pytest.raises(ConfigError) as err:
        load_config(PARTNERS_TOML, text=text, self_id="310000-gw")
    assert "self.tls: is required: gateways[2].tls says 310000-gw speaks TLS" in str(err.value)
    # the other gateways of the file reach 310000-gw by TLS but listen in plaintext
    assert load_config(PARTNERS_TOML, text=text, self_id="320000-gw").listener_tls is None
    text = with_tls(TEXT, pki, gateways=("310000-gw",), self_tls=(
        f'cert = "{pki.folder}/{{id}}.crt"\nkey = "{pki.folder}/{{id}}.key"\n'
        "require_client_cert = true\n"))
    with pytest.raises(ConfigError) as err:
        load_config(PARTNERS_TOML, text=text, self_id="310000-gw")
    assert "self.tls.require_client_cert: needs client_ca" in str(err.value)


def serve(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`tongban serve` that must refuse at once (the old code would serve until killed)."""
    return subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--config",
                           str(config), "--as", "310000-gw", *extra], capture_output=True,
                          text=True, cwd=ROOT, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def own_key_config(tmp_path: Path, mode: int) -> Path:
    """partners.toml where 310000-gw signs with a fresh key of file mode `mode`."""
    pem, jwk = generate_private_key("EdDSA")
    key = tmp_path / "keys" / "310000-gw.pem"
    key.parent.mkdir()
    key.write_bytes(pem)
    key.chmod(mode)
    text = TEXT.replace("7aks6fcVDizPJBpuOYGjvwlMCGZcLUkW9E8Jt8Wt2UY", jwk["x"])
    text = text.replace('private_key = "demo-keys/{id}.pem"', f'private_key = "{key}"')
    text = text.replace('"127.0.0.1:7103"', f'"127.0.0.1:{free_port()}"')
    text = text.replace('"127.0.0.1:8103"', f'"127.0.0.1:{free_port()}"')
    text = text.replace('data_dir = "var/{id}"', f'data_dir = "{tmp_path}/var/{{id}}"')
    path = tmp_path / "partners.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_serve_refuses_a_private_key_others_can_read(tmp_path: Path) -> None:
    result = serve(own_key_config(tmp_path, 0o644))
    assert result.returncode == 2, result.stderr
    assert "mode 0644" in result.stderr and "chmod 600" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_serve_refuses_a_tls_key_others_can_read(tmp_path: Path) -> None:
    config = own_key_config(tmp_path, 0o600)
    pki = Pki(tmp_path / "tls", "federation")
    config.write_text(with_tls(config.read_text(encoding="utf-8"), pki,
                               gateways=("310000-gw",)), encoding="utf-8")
    (pki.folder / "310000-gw.key").chmod(0o640)
    result = serve(config)
    assert result.returncode == 2, result.stderr
    assert "[self.tls] key" in result.stderr and "mode 0640" in result.stderr


def test_serve_refuses_the_demo_keys_off_loopback(tmp_path: Path) -> None:
    # a copy of a demo key under another name is still a demo key
    key = tmp_path / "mine.pem"
    key.write_bytes((ROOT / "demo-keys" / "310000-gw.pem").read_bytes())
    key.chmod(0o600)
    text = TEXT.replace('private_key = "demo-keys/{id}.pem"', f'private_key = "{key}"')
    text = text.replace('"127.0.0.1:7103"', f'"0.0.0.0:{free_port()}"')
    text = text.replace('"127.0.0.1:8103"', f'"127.0.0.1:{free_port()}"')
    text = text.replace('data_dir = "var/{id}"',
                        f'data_dir = "{tmp_path}/var/{{id}}"\nallow_plaintext = true')
    config = tmp_path / "partners.toml"
    config.write_text(text, encoding="utf-8")
    result = serve(config)
    assert result.returncode == 2, result.stderr
    assert "published demo keys" in result.stderr and "0.0.0.0:" in result.stderr


def test_serve_refuses_a_federation_that_trusts_demo_keys_off_loopback(
        tmp_path: Path) -> None:
    """Its own key is fresh, but partners.toml still lists the other parties' published
    demo keys: anyone could sign as them (their calls, their statements), so the gateway
    does not listen off loopback."""
    config = own_key_config(tmp_path, 0o600)
    text = config.read_text(encoding="utf-8")
    port = text.split('grpc = "127.0.0.1:')[3].split('"')[0]  # 310000-gw's fresh port
    text = text.replace(f'"127.0.0.1:{port}"', f'"0.0.0.0:{port}"')
    text = text.replace('[self]\n', '[self]\nallow_plaintext = true\n', 1)
    config.write_text(text, encoding="utf-8")
    result = serve(config)
    assert result.returncode == 2, result.stderr
    assert "lists 320100-gw#k1 with one of the published demo keys" in result.stderr
    assert "0.0.0.0:" in result.stderr, result.stderr


@pytest.mark.asyncio
async def test_the_store_file_is_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask, which made the store 0644
    try:
        async with federation(tmp_path, gateways=("320100-gw",)) as fed:
            app = fed.apps["320100-gw"]
            await fed.client("320105").submit(case_number="MODE-1", target_division="320100",
                                              item_code="gjj-tq", applicant=CITIZEN)
            store = app.config.data_dir / "gateway.sqlite3"
            files = [store, store.with_name("gateway.sqlite3-wal"),
                     store.with_name("gateway.sqlite3-shm")]
            assert all(f.exists() for f in files)
            assert {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {
                f.name: "0o600" for f in files}
    finally:
        os.umask(old)


@pytest.mark.asyncio
async def test_a_one_sided_link_cannot_forward(tmp_path: Path) -> None:
    """310000-gw lists 320000-gw, but 320000-gw does not list 310000-gw: no link.

    The refusal is UNAUTHENTICATED ("unknown key"), not PERMISSION_DENIED: a gateway that
    is not a party of this one has no keys here, like any stranger, so its signature
    cannot be checked at all."""
    text = federation_text().replace('links = ["320100-gw", "310000-gw"]',
                                     'links = ["320100-gw"]')
    async with federation(tmp_path, text=text, gateways=("310000-gw",)) as fed:
        app = fed.apps["310000-gw"]
        method = "/tongban.v1.Gateway/ForwardCase"
        case = pb.Case(case_id="01ONESIDED", case_number="OS-1", origin_partner="320105",
                       target_division="310115", item_code="shebao-zy", applicant=CITIZEN,
                       state=pb.CASE_STATE_SUBMITTED)
        body = gw.ForwardCaseRequest(case=case, hops=1, path=["320000-gw"]).SerializeToString()
        key = load_private_key((ROOT / "demo-keys" / "320000-gw.pem").read_bytes(),
                               kid="320000-gw#k1")
        token, _ = sign(key, iss="320000-gw", aud="310000-gw", method=method, body=body,
                        now=time.time())
        async with grpc.aio.insecure_channel(app.config.me.grpc) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await channel.unary_unary(method)(body, metadata=(("x-tongban-signature",
                                                                   token),), timeout=5)
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED, err.value.details()
        assert "unknown key" in (err.value.details() or "")
        assert await app.store.count_cases() == 0
        assert "320000-gw" not in app.adapters  # and nothing is sent to it either
        assert "320000-gw" in app.config.me.links and not app.config.linked("320000-gw")


def test_demo_key_table_matches_the_shipped_keys() -> None:
    from gateway.exposure import DEMO_KEYS

    shipped = {b64url(load_private_key(p.read_bytes(), kid="x#k1").raw_public)
               for p in (ROOT / "demo-keys").glob("*.pem")}
    assert shipped == DEMO_KEYS
