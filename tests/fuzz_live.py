"""The harness of tests/test_fuzz.py: a live federation on a loop thread, one request
sent and judged against every property, the store read for what a refusal may not change.

The federation runs on an event loop of its own in a background thread, so hypothesis
drives it from plain synchronous tests and the gateways keep serving between examples.
Its platforms are in manual mode: nothing moves unless a request moves it.

Certificate calls carry time-bound tokens inside their bodies (the holder's
authorization, and in a forward the consumer's signed request): each seed's is swapped,
when sent, for a fresh one of the same length (Live.now_ids), so the bytes a mutation
left intact stay valid however long the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import note
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from adapters.issuer_seed import COMPANY, DEMO_CERTIFICATES, DEMO_HOLDERS, ZHANG_SAN, DemoHolder
from gateway.cases import State
from gateway.certificates.authorization import authorize
from gateway.demo import GATEWAYS
from gateway.ids import new_ulid
from gateway.lifecycle import timestamp
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import certificate_pb2 as cpb
from gateway.pb.tongban.v1 import gateway_pb2 as gw
from gateway.signing import HEADER, SigningKey, load_private_key, sign
from tests import fuzz_values as values
from tests.federation import ROOT, Federation, federation, federation_text, until

T = TypeVar("T")
REPORT = os.environ.get("TONGBAN_FUZZ_REPORT")  # every violation as a JSON line, if set
HEALTH_EVERY = 100  # requests between health checks
SLOW_S = 5.0  # an answer later than this is a finding (2 shared cores, big bodies)
STREAM_WAIT_S = 0.25  # a stream with nothing to say by then is open, i.e. accepted
FORBIDDEN = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
                       grpc.StatusCode.DATA_LOSS, grpc.StatusCode.UNIMPLEMENTED,
                       grpc.StatusCode.DEADLINE_EXCEEDED})
GATEWAY = "320100-gw"  # the gateway under test
SERVICE = "/tongban.v1.Gateway/"
CERTIFICATE_METHODS = values.CERTIFICATE_METHODS
METHODS = ("SubmitCase", "GetCase", "UpdateCase", "CancelCase", "RateCase", "SubmitBundle",
           "GetBundle", "ListItems", "ForwardCase", "WatchCase", "Subscribe",
           *CERTIFICATE_METHODS)
REQUESTS: dict[str, type[Any]] = {m: getattr(gw, f"{m}Request", None)
                                  or getattr(cpb, f"{m}Request") for m in METHODS}
STREAMS = frozenset({"WatchCase", "Subscribe"})
# who may call what at 320100-gw: its partners, its linked peer, its supervisor
SIGNERS = {"ForwardCase": ("320000-gw",), "Subscribe": ("320100-jc",),
           "ForwardCertificateCall": ("320000-gw",)}
PARTNERS = ("320105", "320100")
CONSUMER = "320105"  # 建邺 asks its own gateway, 320100-gw, for certificates
FAR_CONSUMER = "310115"  # 浦东 at 310000-gw: its calls reach 320100-gw through 320000-gw
FAR_PATH = ("310000-gw", "320000-gw")
# role -> (target division, item) of the cases requests aim at; see _fresh for their state
ROLES = {"remote": ("310115", "shebao-zy"),  # two hops away, at 上海
         "local": ("320100", "jdc-wf"),  # 320100 sits at the same gateway: the target side
         "done": ("320681", "jdc-wf"),  # completed at 启东: may be rated
         "cancel": ("320681", "yb-ba"),
         "supplement": ("320100", "jdc-wf")}  # 补正 asked by 320100: resumes move deadlines
STEPS = {"done": ("320681", (State.ACCEPTED, State.PROCESSING, State.COMPLETED)),
         "supplement": ("320100", (State.ACCEPTED, State.PROCESSING,
                                   State.SUPPLEMENT_REQUESTED))}
CITIZEN = pb.Applicant(id_type=pb.ID_TYPE_RESIDENT, id_number=values.RESIDENT_ID, name="张三",
                       phone="13812345678")
MATERIAL = pb.MaterialRef(name="居民身份证", sha256="ab" * 32, size_bytes=1024,
                          media_type="application/pdf")


def key_of(party: str) -> SigningKey:
    return load_private_key((ROOT / "demo-keys" / f"{party}.pem").read_bytes(),
                            kid=f"{party}#k1")


def number_of(holder: DemoHolder, type_code: str) -> str:
    """The identifier of a demo certificate (adapters/issuer_seed.py)."""
    return next(c.number for c in DEMO_CERTIFICATES
                if c.holder == holder and c.type_code == type_code)


def same_length(old: bytes, new: str) -> bytes:
    """A fresh token in place of a seed's: the same length, so that every length prefix
    around it in the body stays right (the claims keep their sizes: ten-digit times,
    fixed-size jti and digests)."""
    fresh = new.encode()
    assert len(fresh) == len(old), (len(fresh), len(old))
    return fresh


@dataclass
class Answer:
    code: grpc.StatusCode
    details: str
    elapsed: float
    waiting: bool = False  # a stream still open with nothing to say yet (accepted)


class Bugs(logging.Handler):
    """What the gateway logged as a bug while serving (it runs in this process): the
    exception and where it was raised, so two INTERNALs can be told apart."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            frames = traceback.extract_tb(exc.__traceback__)
            where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames)
                          if "/gateway/" in f.filename or "/adapters/" in f.filename), "?")
            self.seen.append(f"{type(exc).__name__} at {where}: {str(exc)[:120]}")

    def take(self) -> str:
        out, self.seen = "; ".join(self.seen), []
        return out


@dataclass
class Violation:
    test: str
    method: str
    problem: str
    code: str
    details: str
    body_hex: str
    token: str
    cause: str = ""
    signer: str = ""

    def key(self) -> str:
        """Violations that are the same bug: same method, problem and message shape."""
        shape = re.sub(r"[0-9A-Za-z_\-]{12,}|\d+", "#", self.details)[:60]
        cause = re.sub(r": .*", "", self.cause)
        return f"{self.method} {self.problem} {self.code} {shape} {cause}"


@dataclass(repr=False)
class Live:
    """The running federation, its loop thread, and what the fuzz tests need of it."""

    def __repr__(self) -> str:  # hypothesis and pytest print it; the fields are huge
        return f"<Live federation at {self.tmp}>"

    tmp: Path
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    loop_errors: list[str] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    bases: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)
    case_ids: list[str] = field(default_factory=list)  # as the seeds name them
    first: dict[str, str] = field(default_factory=dict)  # role -> the seeds' case id
    current: dict[str, str] = field(default_factory=dict)  # role -> the case aimed at now
    parts: list[str] = field(default_factory=list)
    codes: dict[tuple[str, str, str], int] = field(default_factory=dict)
    _made: int = 0
    bundle_ids: list[str] = field(default_factory=list)
    keys: dict[str, SigningKey] = field(default_factory=dict)
    generated: dict[str, st.SearchStrategy[tuple[str, bytes]]] = field(default_factory=dict)
    # seed token -> how to make a fresh one now (holder authorizations), or one over the
    # request bytes a statement carries now (the consumer's signed request in a forward)
    authorizations: dict[str, Callable[[float], str]] = field(default_factory=dict)
    statements: dict[str, Callable[[bytes, float], str]] = field(default_factory=dict)
    certs: values.Certs = field(default_factory=values.Certs)
    bugs: Bugs = field(default_factory=Bugs)
    _fed: Federation | None = None
    _stack: contextlib.AsyncExitStack | None = None
    _channel: grpc.aio.Channel | None = None
    _db: sqlite3.Connection | None = None
    _event_seq: int = 0
    _caller_events: int = 0

    # -- the loop thread ---------------------------------------------------------------
    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.loop_errors.append(f"{context.get('message')}: {context.get('exception')!r}")

    @property
    def fed(self) -> Federation:
        assert self._fed is not None
        return self._fed

    def start(self) -> None:
        logging.getLogger("tongban").addHandler(self.bugs)
        self.loop.set_exception_handler(self._on_loop_error)
        threading.Thread(target=self.loop.run_forever, name="fuzz-federation",
                         daemon=True).start()
        self.run(self._start())
        path = self.fed.apps[GATEWAY].config.data_dir / "gateway.sqlite3"
        # a reader of its own sees committed rows only, as any later request would
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                                   check_same_thread=False)
        self.keys = {p: key_of(p) for p in (*PARTNERS, "320000-gw", "320100-jc",
                                            FAR_CONSUMER)}

    async def _start(self) -> None:
        self._stack = contextlib.AsyncExitStack()
        # the per-address budget of failed authentications would answer most bad tokens
        # RESOURCE_EXHAUSTED before they reach the checks the fuzzer is after: off here
        text = federation_text("manual").replace(
            "max_message_bytes = 4194304\n",
            "max_message_bytes = 4194304\nauth_failures_per_second = 0\n", 1)
        assert "auth_failures_per_second = 0" in text
        self._fed = await self._stack.enter_async_context(
            federation(self.tmp, auto="manual", text=text))
        self._channel = grpc.aio.insecure_channel(self.fed.apps[GATEWAY].config.me.grpc)
        await self._cases()
        await self._certificates()

    def stop(self) -> None:
        logging.getLogger("tongban").removeHandler(self.bugs)
        if self._db is not None:
            self._db.close()

        async def close() -> None:
            if self._channel is not None:
                await self._channel.close()
            if self._stack is not None:
                await self._stack.aclose()

        try:
            self.run(close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            while self.loop.is_running():
                time.sleep(0.01)
            self.loop.close()

    # -- the cases the requests aim at ---------------------------------------------------
    async def _case(self, role: str) -> str:
        """A new case for role, made through the front door and settled in the state the
        requests aimed at that role expect."""
        target, item = ROLES[role]
        self._made += 1
        answer = await self.fed.client("320105").submit(
            case_number=f"FZ-{role.upper()}-{self._made}", target_division=target,
            item_code=item, applicant=CITIZEN, materials=[MATERIAL])
        case_id = answer.case.case_id
        if role in STEPS:  # the target platform's clerk moves it on
            partner, states = STEPS[role]
            platform = self.fed.platform(partner)
            await platform.wait_for(case_id)
            for state in states:
                await platform.transition(case_id, state, missing=(
                    ["行驶证"] if state is State.SUPPLEMENT_REQUESTED else []))
        origin = self.fed.apps[GATEWAY].store

        async def settled() -> bool:
            record = await origin.get_case(case_id)
            return record is not None and _fresh(role, record.case)

        await until(settled)
        return case_id

    def refresh(self) -> None:
        """After an accepted request: a case that left the state its role needs (cancelled,
        accepted, rated) is replaced by a new one, so requests keep reaching the engine's
        deeper paths instead of meeting FAILED_PRECONDITION forever."""
        assert self._db is not None
        for role, case_id in list(self.current.items()):
            row = self._db.execute("SELECT record FROM cases WHERE case_id=?",
                                   (case_id,)).fetchone()
            if row is None or not _fresh(role, pb.Case.FromString(row[0])):
                self.current[role] = self.run(self._case(role))

    def now_ids(self, body: bytes) -> bytes:
        """body as it is sent now: each role's first case id replaced by the role's
        current one (ULIDs all have 26 characters, so the message structure stays as it
        was), each seed's holder authorization by a fresh one and each seed's statement
        signed again, now, over the request it carries (both the same length)."""
        for role, first in self.first.items():
            body = body.replace(first.encode(), self.current[role].encode())
        now = time.time()
        for seed, mint in self.authorizations.items():
            old = seed.encode()
            if old in body:
                body = body.replace(old, same_length(old, mint(now)))
        if any(seed.encode() in body for seed in self.statements):
            body = self._restated(body, now)
        return body

    def _restated(self, body: bytes, now: float) -> bytes:
        """A forward whose statement still has its seed's token, that token replaced by
        the consumer's signature, now, over the request the statement carries (mutated
        or not): the statement checks pass and what it carries is judged. A body that
        does not parse is refused before any statement is read: left as it is."""
        try:
            request = cpb.ForwardCertificateCallRequest.FromString(body)
        except (DecodeError, RecursionError):
            return body
        seed = request.statement.token
        mint = self.statements.get(seed)
        if mint is None:
            return body
        old = seed.encode()
        return body.replace(old, same_length(old, mint(request.statement.request, now)))

    async def _cases(self) -> None:
        """Cases in several states, made through the front door, and one valid request
        per method built on them (the seeds the mutations start from)."""
        jy = self.fed.client("320105")
        for role in ROLES:
            self.first[role] = self.current[role] = await self._case(role)
        remote, local, done, cancel, supplement = (self.first[r] for r in ROLES)
        bundle = await jy.submit_bundle(bundle_number="FZ-BUNDLE", name="企业开办一件事", parts=[
            gw.SubmitCaseRequest(case_number="FZ-B1", target_division="320105",
                                 item_code="yyzz-bg", applicant=CITIZEN),
            gw.SubmitCaseRequest(case_number="FZ-B2", target_division="310115",
                                 item_code="yyzz-bg", applicant=CITIZEN)])
        self.parts = [c.case_id for c in bundle.bundle.parts]
        origin = self.fed.apps[GATEWAY].store

        async def delivered() -> bool:  # nothing of these parts moves by itself from now on
            records = [await origin.get_case(p) for p in self.parts]
            return all(r is not None and r.case.state == pb.CASE_STATE_FORWARDED
                       for r in records)

        await until(delivered)
        self.case_ids = [*self.first.values(), *self.parts]
        self.bundle_ids = [bundle.bundle.bundle_id]
        now = time.time()
        # a case 启东's neighbour 320000 submitted at 320000-gw, as that gateway builds it,
        # with 320000's own signed request (the statement every hop checks)
        origin_req = gw.SubmitCaseRequest(case_number="FZ-FWD", target_division="320105",
                                          item_code="jdc-wf", applicant=CITIZEN)
        origin_body = origin_req.SerializeToString()
        origin_token, _ = sign(key_of("320000"), iss="320000", aud="320000-gw",
                               method=SERVICE + "SubmitCase", body=origin_body, now=now)
        forwarded, _, _ = self.fed.apps["320000-gw"].engine.admission.build(
            "320000", origin_req, case_id=new_ulid(now), at=now, origin_gateway="320000-gw",
            bundle_id="", prefix="")
        forwarded.origin_statement.CopyFrom(pb.Statement(request=origin_body,
                                                         token=origin_token))
        submit_req = gw.SubmitCaseRequest(
            case_number="FZ-NEW", target_division="310115", item_code="shebao-zy",
            applicant=CITIZEN, form={"地址": "南京市建邺区", "备注": "无"}, materials=[MATERIAL],
            delivery_preference=pb.ResultDelivery(method=pb.DELIVERY_METHOD_POSTAL,
                                                  carrier="EMS", tracking_number="1234567890",
                                                  address="南京市"))
        bases: dict[str, list[tuple[str, Any]]] = {
            "SubmitCase": [("320105", submit_req)],
            "GetCase": [("320105", gw.GetCaseRequest(case_id=remote)),
                        ("320100", gw.GetCaseRequest(case_id=local))],
            "UpdateCase": [
                ("320105", gw.UpdateCaseRequest(update=pb.CaseUpdate(
                    case_id=remote, update_id="fz-supplement", supplement=[MATERIAL],
                    note="补正材料"))),
                ("320100", gw.UpdateCaseRequest(update=pb.CaseUpdate(
                    case_id=local, update_id="fz-accept", state=pb.CASE_STATE_ACCEPTED,
                    missing_materials=["股东会决议"],
                    commitment_deadline=timestamp(now + 86400 * 10)))),
                ("320100", gw.UpdateCaseRequest(update=pb.CaseUpdate(
                    case_id=supplement, update_id="fz-resume", state=pb.CASE_STATE_PROCESSING,
                    note="材料已齐", at=timestamp(now)))),
                ("320105", gw.UpdateCaseRequest(update=pb.CaseUpdate(
                    case_id=supplement, update_id="fz-owed", supplement=[
                        pb.MaterialRef(name="行驶证", sha256="cd" * 32, size_bytes=2048,
                                       media_type="image/jpeg")])))],
            "CancelCase": [("320105", gw.CancelCaseRequest(case_id=cancel, reason="撤件"))],
            "RateCase": [("320105", gw.RateCaseRequest(case_id=done, score=2,
                                                       channel=pb.RATING_CHANNEL_APP,
                                                       comment="太慢"))],
            "SubmitBundle": [("320105", gw.SubmitBundleRequest(
                bundle_number="FZ-BUNDLE-2", name="一件事", parts=[
                    gw.SubmitCaseRequest(case_number="FZ-B3", target_division="320105",
                                         item_code="yyzz-bg", applicant=CITIZEN),
                    gw.SubmitCaseRequest(case_number="FZ-B4", target_division="320681",
                                         item_code="jdc-wf", applicant=CITIZEN)]))],
            "GetBundle": [("320105", gw.GetBundleRequest(bundle_id=bundle.bundle.bundle_id))],
            "ListItems": [("320105", gw.ListItemsRequest(alliance="nanjing-metro"))],
            "ForwardCase": [("320000-gw", gw.ForwardCaseRequest(case=forwarded, hops=1,
                                                                path=["320000-gw"]))],
            "WatchCase": [("320105", gw.WatchCaseRequest(case_id=remote))],
            "Subscribe": [("320100-jc", gw.SubscribeRequest(after=0))],
        }
        self.bases = {m: [(s, r.SerializeToString()) for s, r in b] for m, b in bases.items()}

    # -- the certificate calls' seeds -------------------------------------------------
    def _authorization(self, holder: DemoHolder, item: str, consumer: str = CONSUMER) -> str:
        """A holder authorization the consumer itself signs (where the holder
        authenticated), kept fresh whenever a body carrying it is sent."""
        key = key_of(consumer)

        def mint(now: float) -> str:
            return authorize(key, holder=holder.holder, item=item, consumer=consumer, now=now)

        token = mint(time.time())
        self.authorizations[token] = mint
        return token

    def _statement(self, method: str, request: Message) -> pb.Statement:
        """浦东's own signed request, as its gateway forwards it; signed again, when sent,
        over the request bytes it then carries."""
        key = key_of(FAR_CONSUMER)

        def mint(body: bytes, now: float) -> str:
            return sign(key, iss=FAR_CONSUMER, aud=FAR_PATH[0], method=SERVICE + method,
                        body=body, now=now)[0]

        body = request.SerializeToString()
        token = mint(body, time.time())
        self.statements[token] = mint
        return pb.Statement(request=body, token=token)

    async def _certificates(self) -> None:
        """Seeds of the certificate calls: 建邺 (320105) asking its own gateway about the
        demo holders' certificates (issued here, one gateway away, two), and 浦东's calls
        for an issuer here as 320000-gw forwards them."""
        zhang, company = ZHANG_SAN.message(), COMPANY.message()
        authz = self._authorization
        found = await self.fed.client(CONSUMER).lookup_certificate(
            holder=zhang, cert_type="301", purpose_item="bdc-dy",
            certificate_id=number_of(ZHANG_SAN, "301"),
            authorization=authorize(key_of(CONSUMER), holder=ZHANG_SAN.holder, item="bdc-dy",
                                    consumer=CONSUMER, now=time.time()))
        married = found.certificate.document  # issued by 310000, two gateways away

        def forward(method: str, request: Message) -> tuple[str, Message]:
            return ("320000-gw", cpb.ForwardCertificateCallRequest(
                statement=self._statement(method, request), path=FAR_PATH, partner="320105"))

        far = {item: authz(ZHANG_SAN, item, FAR_CONSUMER) for item in ("bdc-dy", "tongban:uses")}
        bases: dict[str, list[tuple[str, Any]]] = {
            "LookupCertificate": [
                (CONSUMER, cpb.LookupCertificateRequest(  # issued here
                    holder=zhang, cert_type="401", purpose_item="bdc-dy",
                    authorization=authz(ZHANG_SAN, "bdc-dy"))),
                (CONSUMER, cpb.LookupCertificateRequest(  # routed by its issuer code: 上海
                    holder=zhang, cert_type="301", purpose_item="bdc-dy",
                    authorization=authz(ZHANG_SAN, "bdc-dy"),
                    certificate_id=number_of(ZHANG_SAN, "301"))),
                (CONSUMER, cpb.LookupCertificateRequest(
                    holder=company, cert_type="201", purpose_item="yyzz-bg",
                    authorization=authz(COMPANY, "yyzz-bg"),
                    claim=cpb.CertificateClaim(name="at_least", field="registered_capital",
                                               value=1_000_000))),
                (CONSUMER, cpb.LookupCertificateRequest(
                    holder=zhang, cert_type="111", purpose_item="shebao-zy",
                    authorization=authz(ZHANG_SAN, "shebao-zy"),
                    claim=cpb.CertificateClaim(name="age_at_least", years=18,
                                               on="2026-01-01"))),
                (CONSUMER, cpb.LookupCertificateRequest(  # the file through one relay
                    holder=zhang, cert_type="111", purpose_item="shebao-zy",
                    authorization=authz(ZHANG_SAN, "shebao-zy"), with_file=True)),
                (CONSUMER, cpb.LookupCertificateRequest(
                    holder=zhang, cert_type="401", purpose_item="gjj-tq",
                    authorization=authz(ZHANG_SAN, "gjj-tq"),
                    certificate_id=number_of(ZHANG_SAN, "401"), with_file=True))],
            "ListCertificates": [
                (CONSUMER, cpb.ListCertificatesRequest(  # here, 320000-gw and 310000-gw
                    holder=zhang, purpose_item="bdc-dy", authorization=authz(ZHANG_SAN,
                                                                             "bdc-dy"))),
                (CONSUMER, cpb.ListCertificatesRequest(
                    holder=company, purpose_item="yyzz-bg", cert_types=["201", "202"],
                    authorization=authz(COMPANY, "yyzz-bg")))],
            "VerifyCertificate": [
                (CONSUMER, cpb.VerifyCertificateRequest(
                    certificate_id=number_of(ZHANG_SAN, "401"))),
                (CONSUMER, cpb.VerifyCertificateRequest(document=married))],
            "VerifyIdentity": [
                (CONSUMER, cpb.VerifyIdentityRequest(
                    holder=zhang, name="张三", purpose_item="bdc-dy",
                    authorization=authz(ZHANG_SAN, "bdc-dy")))],
            "ListCertificateUses": [
                (CONSUMER, cpb.ListCertificateUsesRequest(
                    holder=zhang, authorization=authz(ZHANG_SAN, "tongban:uses")))],
            "ForwardCertificateCall": [
                forward("LookupCertificate", cpb.LookupCertificateRequest(
                    holder=zhang, cert_type="401", purpose_item="bdc-dy",
                    authorization=far["bdc-dy"])),
                forward("LookupCertificate", cpb.LookupCertificateRequest(
                    holder=zhang, cert_type="401", purpose_item="bdc-dy",
                    authorization=far["bdc-dy"],
                    claim=cpb.CertificateClaim(name="valid_on", on="2026-06-01"))),
                forward("ListCertificates", cpb.ListCertificatesRequest(
                    holder=zhang, purpose_item="bdc-dy", authorization=far["bdc-dy"])),
                forward("VerifyCertificate", cpb.VerifyCertificateRequest(
                    certificate_id=number_of(ZHANG_SAN, "401"))),
                forward("ListCertificateUses", cpb.ListCertificateUsesRequest(
                    holder=zhang, authorization=far["tongban:uses"]))],
        }
        self.bases |= {m: [(s, r.SerializeToString()) for s, r in b] for m, b in bases.items()}
        self.certs = values.Certs(
            holders=[h.number for h in DEMO_HOLDERS],
            numbers=[c.number for c in DEMO_CERTIFICATES],
            documents=[married], authorizations=list(self.authorizations),
            odd_authorizations=values.authorizations(
                key_of(CONSUMER), sbt=ZHANG_SAN.id_type.value, sub=ZHANG_SAN.number,
                item="bdc-dy", consumer=CONSUMER),
            statements=[r.statement for _, r in bases["ForwardCertificateCall"]])

    # -- one request and its properties -------------------------------------------------
    def token(self, signer: str, method: str, body: bytes) -> str:
        signed, _ = sign(self.keys[signer], iss=signer, aud=GATEWAY, method=SERVICE + method,
                         body=body, now=time.time())
        return signed

    async def _call(self, method: str, body: bytes, token: str) -> Answer:
        assert self._channel is not None
        metadata = ((HEADER, token),)
        start = time.perf_counter()
        code, details, waiting = grpc.StatusCode.OK, "", False
        try:
            if method in STREAMS:
                call = self._channel.unary_stream(SERVICE + method)(body, metadata=metadata,
                                                                    timeout=SLOW_S * 2)
                try:
                    first = await asyncio.wait_for(call.read(), STREAM_WAIT_S)
                    if first is grpc.aio.EOF:  # ended without a message: a refusal
                        code, details = await call.code(), await call.details()
                except TimeoutError:
                    waiting = True  # open and waiting for events: accepted
                finally:
                    call.cancel()
            else:
                await self._channel.unary_unary(SERVICE + method)(body, metadata=metadata,
                                                                  timeout=SLOW_S * 2)
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details() or ""
        return Answer(code, details, time.perf_counter() - start, waiting)

    def state(self) -> tuple[Any, ...]:
        """What a refused request must leave as it was (read with one consistent snapshot).

        Deliveries (`delivered:` updates and the events a gateway makes itself, actor
        320100-gw) and timers move on their own after an accepted request; they are left
        out, everything a caller can cause is in.
        """
        assert self._db is not None
        db = self._db
        db.execute("BEGIN")
        try:
            counts = db.execute(
                "SELECT (SELECT COUNT(*) FROM cases), (SELECT COUNT(*) FROM bundles), "
                "(SELECT COUNT(*) FROM timers), "
                "(SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name='outbox'), "
                "(SELECT COUNT(*) FROM applied_updates WHERE update_id NOT LIKE 'delivered:%' "
                " AND update_id NOT LIKE 'timer:%')").fetchone()
            for seq, body in db.execute("SELECT seq, body FROM events WHERE seq > ? ORDER BY seq",
                                        (self._event_seq,)):
                self._event_seq = seq
                if pb.CaseEvent.FromString(body).actor not in (GATEWAY, ""):
                    self._caller_events += 1
            aimed = list(self.current.values())  # rotated out once changed: no timers
            marks = ",".join("?" * len(aimed))
            records = db.execute(f"SELECT case_id, record FROM cases WHERE case_id IN ({marks}) "
                                 "ORDER BY case_id", aimed).fetchall()
        finally:
            db.execute("COMMIT")
        return (*counts, self._caller_events, tuple(records))

    def exchange(self, test: str, method: str, body: bytes, *, signer: str,
                 token: str | None = None) -> Answer:
        """Send one request and check every property on its answer."""
        body = self.now_ids(body)
        token = token if token is not None else self.token(signer, method, body)
        if currently_in_test_context():  # the seeds test sends without hypothesis
            note(f"{method} signed by {signer}: body {body[:4096].hex()} ({len(body)} bytes)")
            note(f"token {token[:2048]}")
        before = self.state()
        self.bugs.take()
        answer = self.run(self._call(method, body, token))
        if not answer.waiting:  # an open stream's wait is ours, not the gateway's
            self.latencies.append(answer.elapsed)
        self.requests[test] = self.requests.get(test, 0) + 1
        problems = []
        if answer.code in FORBIDDEN:
            problems.append("forbidden status")
        if answer.elapsed > SLOW_S:
            problems.append(f"slow answer ({answer.elapsed:.1f} s)")
        if answer.code is not grpc.StatusCode.OK:
            after = self.state()
            if after != before:
                problems.append(f"refusal changed state: {diff(before, after)}")
        cause = self.bugs.take()
        key = (test, method, answer.code.name)
        self.codes[key] = self.codes.get(key, 0) + 1
        for problem in problems:
            self.found(Violation(test, method, problem, answer.code.name, answer.details,
                                 body.hex(), token, cause, signer))
        if answer.code is grpc.StatusCode.OK:
            self.refresh()
        if sum(self.requests.values()) % HEALTH_EVERY == 0:
            self.check_health()
        return answer

    def http_exchange(self, test: str, raw: bytes) -> int | None:
        """Send raw bytes to the gateway's HTTP port; a 5xx other than 501/505 (what
        HTTP/1.1 lets a server say of a method or version it does not do) is a finding."""
        status = self.run(http_status(self.fed.apps[GATEWAY].config.me.http, raw, wait=0.5))
        self.requests[test] = self.requests.get(test, 0) + 1
        if status is not None and status >= 500 and status not in (501, 505):
            self.found(Violation(test, "HTTP", "server error", str(status), "", raw.hex(), ""))
        if sum(self.requests.values()) % HEALTH_EVERY == 0:
            self.check_health()
        return status

    def found(self, violation: Violation) -> None:
        self.violations.append(violation)
        if REPORT:
            with open(REPORT, "a", encoding="utf-8") as out:
                out.write(json.dumps(violation.__dict__, ensure_ascii=False) + "\n")

    def check_health(self) -> None:
        """Every gateway still answers: gRPC health SERVING and HTTP /healthz 200."""
        async def probe() -> list[str]:
            bad = []
            for gid in GATEWAYS:
                config = self.fed.apps[gid].config.me
                async with grpc.aio.insecure_channel(config.grpc) as channel:
                    reply = await health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(service="tongban.v1.Gateway"), timeout=5)
                if reply.status != health_pb2.HealthCheckResponse.SERVING:
                    bad.append(f"{gid} gRPC health {reply.status}")
                status = await http_status(config.http, b"GET /healthz HTTP/1.1\r\n"
                                           b"Host: fuzz\r\nConnection: close\r\n\r\n")
                if status != 200:
                    bad.append(f"{gid} /healthz answered {status}")
            return bad

        bad = self.run(probe())
        assert not bad, bad
        assert not self.loop_errors, self.loop_errors


def _fresh(role: str, case: pb.Case) -> bool:
    """Whether a case is still in the state its role's requests aim at."""
    if role == "done":
        return case.state == pb.CASE_STATE_COMPLETED and not case.HasField("rating")
    if role == "supplement":
        return case.state == pb.CASE_STATE_SUPPLEMENT_REQUESTED
    return case.state == pb.CASE_STATE_FORWARDED and not case.missing_materials


def diff(before: tuple[Any, ...], after: tuple[Any, ...]) -> str:
    names = ("cases", "bundles", "timers", "outbox rows", "applied updates", "caller events")
    out = [f"{n} {b}→{a}" for n, b, a in zip(names, before, after, strict=False) if a != b]
    if before[-1] != after[-1]:
        changed = {cid for (cid, rec), (_, old) in zip(after[-1], before[-1], strict=False)
                   if rec != old}
        out.append(f"records of {sorted(changed)} changed")
    return ", ".join(out)


async def http_status(address: str, raw: bytes, wait: float = SLOW_S) -> int | None:
    """Send raw bytes to an HTTP address; the status code of the answer, None if the
    server closed without one or still waits for more (a body it was promised).

    The write side stays open: aiohttp drops the answer to a half-closed connection.
    """
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(raw)
        with contextlib.suppress(OSError):
            await writer.drain()
        line = await asyncio.wait_for(reader.readline(), wait)
    except (ConnectionError, TimeoutError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    match = re.match(rb"HTTP/\d(?:\.\d)? (\d{3})", line)
    return int(match.group(1)) if match else None


def verdict(live: Live, test: str) -> None:
    """After a test's examples: the gateways are up, and no property was violated (one
    reproducer per distinct violation otherwise)."""
    live.check_health()
    distinct: dict[str, Violation] = {}
    for v in live.violations:
        if v.test == test:
            distinct.setdefault(v.key(), v)
    lines = [f"{len(distinct)} distinct violations ({test}):"]
    for v in distinct.values():
        lines.append(f"- {v.method}: {v.problem}: {v.code} {v.details[:200]!r}\n"
                     f"  gateway logged: {v.cause or 'nothing'}\n"
                     f"  signer {v.signer}, body ({len(v.body_hex) // 2} bytes) "
                     f"{v.body_hex[:400]}{'…' if len(v.body_hex) > 400 else ''}\n"
                     f"  token {v.token[:400]}{'…' if len(v.token) > 400 else ''}")
    assert not distinct, "\n".join(lines)
