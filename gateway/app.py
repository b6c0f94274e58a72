"""Assemble one gateway process: store, adapters, engine, gRPC server, HTTP server."""

from __future__ import annotations

import logging
import ssl
from importlib.metadata import entry_points
from typing import Any

import grpc
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway.audit import AuditEntry, PendingAudit
from gateway.batchsign import BatchSigner
from gateway.breaker import BreakerState
from gateway.certificates.accounting import holder_secret
from gateway.certificates.service import METHODS as CERTIFICATE_METHODS
from gateway.certificates.service import REQUESTS as CERTIFICATE_REQUESTS
from gateway.certificates.service import SERVICE as SERVICE_PREFIX
from gateway.certificates.service import CertificateService
from gateway.certificates.servicer import CertificateServicer
from gateway.config import Config, Gateway, Partner
from gateway.engine import Engine
from gateway.errors import ConfigError, PermissionDenied, StoreUnavailable
from gateway.evidence import UPDATES
from gateway.faults import BadRequestFilter
from gateway.metrics import Metrics
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import gateway_pb2 as gw
from gateway.server import SERVICE, Edge, GatewayServicer, generic_handler
from gateway.sessions.hub import Live, SessionHub, guidance_of
from gateway.sessions.relay import RelayServicer
from gateway.signing import PublicKey, b64url
from gateway.store.base import SessionTranscript
from gateway.store.sqlite import SqliteStore
from gateway.supervision import Monitor
from gateway.tls import is_loopback, server_credentials, server_ssl_context
from gateway.types import AdapterContext, Clock, PartnerAdapter, SystemClock
from gateway.verifier import Verifier
from gateway.web.app import make_admin_app, make_app

log = logging.getLogger("tongban.app")


def adapter_factories() -> dict[str, Any]:
    """Adapter classes registered under the entry-point group tongban.adapters."""
    return {ep.name: ep.load() for ep in entry_points(group="tongban.adapters")}


METADATA_SOFT_LIMIT = 32 * 1024  # bytes of request headers gRPC always lets through


def _quiet_bad_requests() -> None:
    """aiohttp logs a traceback for every malformed request, with text the sender chose:
    once per interval is enough (attached once per process)."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, BadRequestFilter) for f in server_log.filters):
        server_log.addFilter(BadRequestFilter())


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def _reflect(server: grpc.aio.Server) -> None:
    reflection.enable_server_reflection(
        (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server)


def _bind(server: grpc.aio.Server, address: str, config: Config | None) -> None:
    """Listen on address: TLS when config's gateway speaks it, else plaintext (the config
    allows that only on loopback or with allow_plaintext)."""
    host, port = _split(address)
    tls = config.listener_tls if config is not None else None
    try:
        if tls is not None:
            bound = server.add_secure_port(f"{host}:{port}", server_credentials(tls))
        else:
            bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:  # grpc raises on a port in use
        bound = 0
    if bound == 0:
        raise ConfigError(f"cannot listen on {address}: address in use or invalid")


async def _site(app: web.Application, address: str, ssl_context: ssl.SSLContext | None,
                reuse_port: bool) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = _split(address)
    try:
        await web.TCPSite(runner, host, port, ssl_context=ssl_context,
                          reuse_port=reuse_port or None).start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {address}: {exc.strerror}") from exc
    return runner


class GatewayApp:
    """One running gateway. ``memory=True`` keeps the store in memory (tests, demo)."""

    def __init__(self, config: Config, *, clock: Clock | None = None,
                 memory: bool = False, reuse_port: bool = False,
                 store: SqliteStore | None = None) -> None:
        """store: one made by the caller (a test's faulty disk); by default the SQLite
        file under data_dir."""
        self.config = config
        self.clock = clock or SystemClock()
        path = ":memory:" if memory else config.data_dir / "gateway.sqlite3"
        # reuse_port: one of several processes on one port and one store (SO_REUSEPORT)
        self.reuse_port = reuse_port
        self.store = store or SqliteStore(path, clock=self.clock, exclusive=not reuse_port)
        self.verifier = Verifier(audience=config.self_id, keys_for=self._keys_for,
                                 skew_s=config.limits.clock_skew_s,
                                 max_ttl_s=config.limits.max_token_ttl_s)
        self.batch_signer = BatchSigner(config.signing_key, config.self_id)
        self.adapters: dict[str, PartnerAdapter] = {}
        self.metrics = Metrics(config.self_id)
        self.engine = Engine(config, self.store, self.adapters, self.clock,
                             on_events=self.metrics.record_events)
        self.engine.outbox.observe(self.metrics.record_delivery)
        self.monitor = Monitor(self.engine, self.clock, config.supervision.sweep_interval_s)
        self.edge = Edge(config, self.store, self.verifier, self.batch_signer, self.clock)
        self.servicer = GatewayServicer(self.engine, self.edge)
        self.certificates = CertificateService(
            config, self.store, self.engine.routes, self.adapters, self._platform_keys,
            self.clock, holder_secret(config.signing_key),
            on_uses=self.metrics.record_certificate_uses)
        self.certificate_servicer = CertificateServicer(self.certificates, self.edge)
        self.sessions = SessionHub(config, self.clock, self._platform_keys,
                                   config.signing_key, self.batch_signer,
                                   guidance_of(config), on_transcript=self._keep_transcript)
        self.relay_servicer = RelayServicer(self.edge, self.sessions.accept_relay, self.clock,
                                            linked=config.linked)
        self.metrics.watch_totals(self._totals)
        self._grpc: grpc.aio.Server | None = None
        self._admin_grpc: grpc.aio.Server | None = None
        self._web: web.AppRunner | None = None
        self._admin_web: web.AppRunner | None = None
        self._ready = False

    def _totals(self) -> dict[str, int]:
        """How well batching works here: commits, signatures made and checked."""
        return {"store_commits": self.store.commits,
                "batch_signed_messages": self.batch_signer.messages,
                "batch_signatures": self.batch_signer.signatures,
                "signature_checks": self.verifier.signature_checks,
                # refused before the caller was known: counted, never audited per call
                "unauthenticated_calls": self.edge.unauthenticated,
                "limited_calls": sum(self.edge.limits.refused.values())}

    def _keys_for(self, party_id: str) -> tuple[PublicKey, ...]:
        party = self.config.party(party_id)
        return party.keys if party is not None else ()

    def _platform_keys(self, party_id: str) -> tuple[PublicKey, ...]:
        """Any platform's keys (partners.toml): documents, authorizations and answers are
        signed by platforms anywhere in the federation, not only by our callers."""
        partner = self.config.partners.get(party_id)
        return partner.keys if partner is not None else ()

    def _build_adapters(self) -> None:
        factories = adapter_factories()
        ctx = AdapterContext(gateway_id=self.config.self_id, signing_key=self.config.signing_key,
                             verifier=self.verifier, clock=self.clock,
                             data_dir=self.config.data_dir, report=self._report,
                             batch_signer=self.batch_signer,
                             config_dir=self.config.source.parent,
                             statements=self.engine.statements,
                             keys_for=self._platform_keys,
                             certificates=self._certificate_call)
        parties: list[Partner | Gateway] = [*self.config.local_partners()]
        parties += self.config.peers()
        for party in parties:
            name = party.adapter if isinstance(party, Partner) else "peer"
            factory = factories.get(name)
            if factory is None:
                raise ConfigError(f"{party.id}: no adapter {name!r} is installed "
                                  f"(have {', '.join(sorted(factories))})")
            self.adapters[party.id] = factory(party, ctx)

    async def _report(self, partner: str, statement: pb.Statement) -> gw.UpdateCaseResponse:
        """An in-process platform's signed update: checked as if it came over the wire."""
        claims = self.engine.statements.check(statement, methods=UPDATES,
                                              field="update.statement")
        if claims.iss != partner or claims.aud != self.config.self_id:
            raise PermissionDenied(f"{partner} reports its own updates, to this gateway",
                                   field="update.statement")
        return await self.engine.report(partner, statement, claims)

    async def _keep_transcript(self, live: Live) -> None:
        """A session both gateways signed: its transcript joins the case's evidence."""
        await self.store.save_transcript(SessionTranscript(
            session_id=live.id, case_id=live.case, n=live.session.transcript.n,
            head=b64url(live.session.transcript.head), events=list(live.session.transcript.events),
            signatures=dict(live.signatures), at=self.clock.now()))

    async def _certificate_call(self, partner: str, statement: pb.Statement) -> bytes:
        """An in-process platform's signed certificate call: checked as if it came over
        the wire (its signature, addressed to us, a certificate method), then served and
        audited like one."""
        claims = self.engine.statements.check(statement, methods=CERTIFICATE_METHODS,
                                              field="statement")
        if claims.iss != partner or claims.aud != self.config.self_id:
            raise PermissionDenied(f"{partner} signs its own calls, to this gateway",
                                   field="statement")
        name = claims.mth.removeprefix(SERVICE_PREFIX)
        request = Edge.parse(CERTIFICATE_REQUESTS[name], statement.request)
        audit = PendingAudit(AuditEntry(
            at=self.clock.now(), caller=partner, method=claims.mth, case_id="",
            digest=claims.bdg, kid=claims.kid, jti=claims.jti, outcome="OK"))
        answer = await self.certificates.call(name, partner, request, statement, audit)
        if audit.seq is None:
            await self.store.append_audit(audit.entry)
        return answer

    async def start(self) -> None:
        _quiet_bad_requests()
        await self.store.open()
        now = self.clock.now()  # a restart must not reopen the replay window (signing.md)
        self.verifier.preload(await self.store.recent_jtis(now - self.verifier.replay_window_s),
                              now)
        await self.certificates.preload(now)
        self._build_adapters()
        for adapter in self.adapters.values():
            await adapter.start()
        limit = self.config.limits.max_message_bytes
        server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.so_reuseport", int(self.reuse_port)),
            # gRPC refuses metadata past 8 KiB at random up to 16 KiB (a soft limit): a
            # signature at our own 8,192-character cap plus the other headers must reach
            # the verifier, which answers UNAUTHENTICATED the same way every time
            ("grpc.max_metadata_size", METADATA_SOFT_LIMIT),
            ("grpc.absolute_max_metadata_size", 2 * METADATA_SOFT_LIMIT)])
        server.add_generic_rpc_handlers((generic_handler(
            self.servicer.handlers(), self.certificate_servicer.handlers(),
            self.relay_servicer.handlers()),))
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        me, admin_grpc, admin_http = self.config.me, self.config.admin_grpc, self.config.admin_http
        # reflection describes every method to whoever asks: loopback or admin address only
        if admin_grpc is None and is_loopback(me.grpc):
            _reflect(server)
        _bind(server, me.grpc, self.config)
        await server.start()
        self._grpc = server
        if admin_grpc is not None:
            self._admin_grpc = grpc.aio.server(
                options=[("grpc.so_reuseport", int(self.reuse_port))])
            health_pb2_grpc.add_HealthServicer_to_server(health_servicer, self._admin_grpc)
            _reflect(self._admin_grpc)
            _bind(self._admin_grpc, admin_grpc, None)
            await self._admin_grpc.start()
        # /metrics tells anyone the federation's load and partners: admin site, or a
        # loopback main site when no admin site is configured
        main_metrics = self._metrics if admin_http is None and is_loopback(me.http) else None
        tls = self.config.listener_tls
        ssl_context = server_ssl_context(tls) if tls is not None else None
        self._web = await _site(make_app(self.config, lambda: self._ready, main_metrics,
                                         writable=self.store.check_writable,
                                         sessions=self.sessions),
                                me.http, ssl_context, self.reuse_port)
        if admin_http is not None:
            self._admin_web = await _site(make_admin_app(self._metrics), admin_http, None,
                                          self.reuse_port)
        self.engine.outbox.start()
        self.monitor.start()
        await health_servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        self._ready = True
        log.info("gateway %s serving gRPC on %s, HTTP on %s", self.config.self_id,
                 self.config.me.grpc, self.config.me.http)

    async def _metrics(self) -> bytes:
        """Gauges are read from the store at scrape time, so they are never stale (while
        the store cannot answer they keep their last values and the scrape still works)."""
        try:
            counts: dict[str, int] | None = await self.store.case_counts()
        except StoreUnavailable:
            counts = None
        breakers = {d: state is not BreakerState.CLOSED
                    for d, state in self.engine.outbox.breaker_states().items()}
        self.metrics.set_counts(counts, breakers, writable=self.store.writable)
        return self.metrics.render()

    async def stop(self, grace_s: float = 1.0) -> None:
        self._ready = False
        await self.sessions.close()
        await self.monitor.stop()
        await self.engine.outbox.stop()
        for server in (self._grpc, self._admin_grpc):
            if server is not None:
                await server.stop(grace_s)
        self._grpc = self._admin_grpc = None
        for runner in (self._web, self._admin_web):
            if runner is not None:
                await runner.cleanup()
        self._web = self._admin_web = None
        for adapter in self.adapters.values():
            await adapter.close()
        await self.store.close()
