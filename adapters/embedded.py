"""A complete reference regional platform on aiosqlite, run inside the gateway process.

It is the default for the demo and the tests: it receives cases (dedup by case_id),
keeps its own numbers and states, and reports every change back through the gateway as
its partner would over UpdateCase. Settings:

- ``database``: file name under the gateway's data_dir, or ":memory:" (default)
- ``auto``: "complete" (accept, process and complete each case), "accept" (accept and
  start processing), or "manual" (a clerk moves cases, see `transition`)
- ``step_delay_s``: pause between automatic steps (default 0.05)
- ``private_key``: the platform's own PEM key, relative to partners.toml (``{id}`` is
  replaced by the partner id; default ``demo-keys/{id}.pem``), and ``key_id`` (default
  ``k1``): it signs every update it makes, as a platform over the wire would, so its
  statements can be checked at every gateway on the way back (docs/signing.md §8)
- ``certificates``: for a platform that ``issues`` certificate types, its register
  (adapters/issuer.py, in the same database, on a connection of its own): "demo" (the
  default: at start it registers the demo certificates it issues and does not hold yet,
  adapters/issuer_seed.py) or "none" (empty until `issuer.issue` is called). A platform
  that issues none answers every certificate call NOT_FOUND.

Like any target platform it checks what it is handed: a case's origin statement, an
update's author statement (it refuses, and the gateway retries, what does not verify).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import aiosqlite

from gateway.cases import Side, State, plan
from gateway.config import Partner, Party
from gateway.errors import ConfigError, GatewayError, NotFound
from gateway.evidence import SUBMISSIONS, UPDATE, UPDATES
from gateway.ids import new_ulid
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import certificate_pb2 as cpb
from gateway.pb.tongban.v1 import gateway_pb2 as gw
from gateway.pb.tongban.v1 import partner_pb2 as pp
from gateway.signing import load_private_key, sign
from gateway.types import AdapterContext

from .issuer import Issuer
from .issuer_seed import seed

log = logging.getLogger("tongban.embedded")
VERIFY_CERTIFICATE = "/tongban.v1.Gateway/VerifyCertificate"
CERTIFICATES = ("demo", "none")
AUTO = {"complete": (State.ACCEPTED, State.PROCESSING, State.COMPLETED),
        "accept": (State.ACCEPTED, State.PROCESSING), "manual": ()}
SCHEMA = """
CREATE TABLE IF NOT EXISTS cases (case_id TEXT PRIMARY KEY, platform_number TEXT NOT NULL,
  state INTEGER NOT NULL, record BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS updates (update_id TEXT PRIMARY KEY, case_id TEXT NOT NULL,
  state INTEGER NOT NULL, note TEXT NOT NULL);
"""


class EmbeddedAdapter:
    def __init__(self, party: Party, ctx: AdapterContext) -> None:
        assert isinstance(party, Partner)
        self.partner, self._ctx = party, ctx
        settings = party.settings
        self.auto = str(settings.get("auto", "complete"))
        if self.auto not in AUTO:
            raise ConfigError(f"partners {party.id}: settings.auto must be one of "
                              f"{', '.join(AUTO)}")
        self.step_delay_s = float(settings.get("step_delay_s", 0.05))
        key_file = ctx.config_dir / str(settings.get("private_key", "demo-keys/{id}.pem")
                                        ).replace("{id}", party.id)
        try:
            self._key = load_private_key(key_file.read_bytes(),
                                         kid=f"{party.id}#{settings.get('key_id', 'k1')}")
        except (OSError, ValueError) as exc:
            raise ConfigError(f"partners {party.id}: settings.private_key: cannot load "
                              f"{key_file}: {exc}") from None
        name = str(settings.get("database", ":memory:"))
        self._path = name if name == ":memory:" else str(ctx.data_dir / name)
        self.certificates = str(settings.get("certificates", "demo"))
        if self.certificates not in CERTIFICATES:
            raise ConfigError(f"partners {party.id}: settings.certificates must be one of "
                              f"{', '.join(CERTIFICATES)}")
        # the register of the certificates it issues, for tests and the demo to issue
        # and revoke; None for a platform that issues none
        self.issuer: Issuer | None = None
        if party.issues:
            self.issuer = Issuer(partner_id=party.id, key=self._key, database=self._path,
                                 clock=ctx.clock, statements=ctx.statements,
                                 keys_for=ctx.keys_for)
        self._db: aiosqlite.Connection | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self.received = asyncio.Condition()

    async def start(self) -> None:
        if self._path != ":memory:":
            self._ctx.data_dir.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self._path)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.executescript(SCHEMA)
        await self._db.commit()
        if self.issuer is not None:
            await self.issuer.start()
            if self.certificates == "demo":
                issued = await seed(self.issuer, self.partner.id, self.partner.issues,
                                    self.partner.prefixes, self._ctx.clock.now())
                if issued:
                    log.info("platform %s registered %d demo certificates", self.partner.id,
                             len(issued))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.issuer is not None:
            await self.issuer.close()
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise GatewayError("embedded platform is not started")
        return self._db

    # -- the gateway hands us work ---------------------------------------------------
    async def deliver_case(self, payload: bytes) -> None:
        case = pp.ReceiveCaseRequest.FromString(payload).case
        claims = self._ctx.statements.check(case.origin_statement, methods=SUBMISSIONS,
                                            field="case.origin_statement")
        if claims.iss != case.origin_partner:
            raise NotFound(f"case {case.case_id} is not signed by its origin")
        async with self._lock:
            cursor = await self.db.execute(
                "INSERT OR IGNORE INTO cases VALUES (?,?,?,?)",
                (case.case_id, f"{self.partner.id}-{new_ulid()[-10:]}", case.state,
                 case.SerializeToString()))
            await self.db.commit()
        if cursor.rowcount and self.auto != "manual":
            task = asyncio.create_task(self._autopilot(case.case_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        async with self.received:
            self.received.notify_all()

    async def deliver_update(self, payload: bytes) -> None:
        update = gw.UpdateCaseRequest.FromString(payload).update
        claims = self._ctx.statements.check(update.statement, methods=UPDATES,
                                            field="update.statement")
        if claims.iss != update.actor:
            raise NotFound(f"update {update.update_id} is not signed by its author")
        async with self._lock:
            await self.db.execute("INSERT OR IGNORE INTO updates VALUES (?,?,?,?)",
                                  (update.update_id, update.case_id, update.state, update.note))
            if update.state:
                await self.db.execute("UPDATE cases SET state=? WHERE case_id=?",
                                      (update.state, update.case_id))
            await self.db.commit()
        async with self.received:
            self.received.notify_all()

    async def list_items(self) -> Sequence[pb.Item]:
        return []

    # -- CertificateSource: the gateway asks for certificates this platform issued -------
    def _register(self) -> Issuer:
        if self.issuer is None:
            raise NotFound(f"platform {self.partner.id} issues no certificates")
        return self.issuer

    async def fetch_certificates(self, request: bytes) -> bytes:
        return await self._register().fetch(request)

    async def certificate_status(self, request: bytes) -> bytes:
        return await self._register().status(request)

    async def answer_claim(self, request: bytes) -> bytes:
        return await self._register().answer(request)

    # -- the clerk (or the autopilot) moves cases --------------------------------------
    async def state_of(self, case_id: str) -> State | None:
        async with self.db.execute("SELECT state FROM cases WHERE case_id=?",
                                   (case_id,)) as cursor:
            row = await cursor.fetchone()
        return None if row is None else State(row[0])

    async def wait_for(self, case_id: str, states: frozenset[State] | None = None) -> State:
        """Until the case is here (and in one of states); for clerks' screens and tests."""
        async with self.received:
            while True:
                state = await self.state_of(case_id)
                if state is not None and (states is None or state in states):
                    return state
                await self.received.wait()

    async def transition(self, case_id: str, state: State, *, note: str = "",
                         missing: Sequence[str] = ()) -> None:
        """Move a case this platform handles and report it through the gateway."""
        async with self._lock:
            current = await self.state_of(case_id)
            if current is None:
                raise NotFound(f"case {case_id} is not on platform {self.partner.id}")
            plan(current if current is not State.SUBMITTED else State.FORWARDED, state,
                 Side.TARGET)
            update_id = new_ulid()
            await self.db.execute("UPDATE cases SET state=? WHERE case_id=?", (state, case_id))
            await self.db.execute("INSERT INTO updates VALUES (?,?,?,?)",
                                  (update_id, case_id, state, note))
            await self.db.commit()
        update = pb.CaseUpdate(case_id=case_id, update_id=update_id, state=int(state),  # type: ignore[arg-type]
                               note=note, missing_materials=missing)
        await self._report(update)

    async def _cited_certificates(self, case_id: str) -> str:
        """Before accepting a case that cites certificates instead of materials, ask the
        issuers (VerifyCertificate through the gateway, signed as this platform) whether
        each is valid now: what a target must do (docs/certificates.md). Returns what is
        wrong, or "" when every certificate is valid."""
        async with self.db.execute("SELECT record FROM cases WHERE case_id=?",
                                   (case_id,)) as cursor:
            row = await cursor.fetchone()
        if row is None or self._ctx.certificates is None:
            return ""
        for citation in pb.Case.FromString(row[0]).certificates:
            body = cpb.VerifyCertificateRequest(document=citation.document).SerializeToString()
            token, _ = sign(self._key, iss=self.partner.id, aud=self.partner.gateway,
                            method=VERIFY_CERTIFICATE, body=body, now=self._ctx.clock.now())
            try:
                raw = await self._ctx.certificates(self.partner.id,
                                                   pb.Statement(request=body, token=token))
            except GatewayError as exc:
                return f"{citation.material}: {exc.code.name} {exc.message[:80]}"
            answer = cpb.VerifyCertificateResponse.FromString(raw)
            if answer.status != cpb.CERTIFICATE_STATUS_VALID:
                status = cpb.CertificateStatus.Name(answer.status).removeprefix(
                    "CERTIFICATE_STATUS_").lower()
                return f"{citation.material}: {answer.number} is {status}"
        return ""

    async def _report(self, update: pb.CaseUpdate) -> None:
        body = gw.UpdateCaseRequest(update=update).SerializeToString()
        for attempt in range(6):
            token, _ = sign(self._key, iss=self.partner.id, aud=self.partner.gateway,
                            method=UPDATE, body=body, now=self._ctx.clock.now())
            try:
                await self._ctx.report(self.partner.id, pb.Statement(request=body, token=token))
                return
            except GatewayError as exc:
                if attempt == 5:
                    log.error("platform %s could not report %s: %s", self.partner.id,
                              update.update_id, exc)
                    return
                await asyncio.sleep(0.05 * 2 ** attempt)

    async def _autopilot(self, case_id: str) -> None:
        notes = {State.ACCEPTED: "已受理", State.PROCESSING: "办理中", State.COMPLETED: "已办结"}
        fault = await self._cited_certificates(case_id)
        if fault and self.auto != "manual":
            await asyncio.sleep(self.step_delay_s)
            with contextlib.suppress(GatewayError):
                await self.transition(case_id, State.REJECTED, note=f"证照核验未通过: {fault}")
            return
        for state in AUTO[self.auto]:
            await asyncio.sleep(self.step_delay_s)
            try:
                await self.transition(case_id, state, note=notes[state])
            except GatewayError as exc:  # e.g. cancelled meanwhile
                log.info("platform %s stops on %s: %s", self.partner.id, case_id, exc)
                return
