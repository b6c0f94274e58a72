"""Recording the uses of certificates (docs/certificates.md, Accounting and who used my
certificate): what one call's use rows say, filled in as the call goes, and keeping them
with the call's audit entry in one transaction at the two gateways that count them (the
consumer's and the issuer's)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from gateway.audit import PendingAudit
from gateway.certificate_ids import parse
from gateway.config import Config
from gateway.errors import GatewayError, Unavailable
from gateway.ids import new_ulid
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.store.base import CertificateUse, CertificateUseStore
from gateway.types import Clock

from .accounting import holder_key
from .directory import Directory
from .documents import Holder

USES_ITEM: Final = "tongban:uses"  # the purpose of a holder's own "who used my certificate"


@dataclass(slots=True)
class Uses:
    """The use rows of one call so far: one for the call, then one per certificate."""

    rows: list[CertificateUse] = field(default_factory=list)

    def issuer(self, partner: str) -> None:
        """The issuer the directory named: a use that fails from now on is still theirs."""
        if self.rows and not self.rows[0].issuer:
            self.rows[0] = dataclasses.replace(self.rows[0], issuer=partner)

    def number(self, number: str, cert_type: str = "", issuer: str = "") -> None:
        """A certificate the call named or returned."""
        if not self.rows:
            return
        base = self.rows[0]
        row = dataclasses.replace(base, number=number, cert_type=cert_type or base.cert_type,
                                  issuer=issuer or base.issuer)
        if not base.number and len(self.rows) == 1:
            self.rows[0] = row
        else:
            self.rows.append(row)


class UseLog:
    def __init__(self, config: Config, store: CertificateUseStore, directory: Directory,
                 clock: Clock, holder_secret: bytes, local: Callable[[str], bool],
                 on_uses: Callable[[Sequence[CertificateUse]], None] | None = None) -> None:
        """local: whether a partner is attached to this gateway; on_uses: told the rows
        once they are stored (the Prometheus counter)."""
        self.config, self.store, self.directory, self._clock = config, store, directory, clock
        self._secret, self._local, self._on_uses = holder_secret, local, on_uses
        self._known_types = frozenset(t for p in config.partners.values() for t in p.issues)

    def holder_key(self, holder: Holder) -> str:
        return holder_key(self._secret, holder.id_type.value, holder.number)

    def begin(self, method: str, consumer: str, statement: pb.Statement,
              holder: Holder | None, cert_type: str, item: str) -> Uses:
        """What the use rows of a call will say. A type or item nobody configured is kept
        as "?" (they label metrics: a caller must not be able to mint new series)."""
        item = item if item in self.config.items or item == USES_ITEM else "?" if item else ""
        cert_type = cert_type if cert_type in self._known_types else "?" if cert_type else ""
        return Uses([CertificateUse(
            use_id="", at=0.0, method=method, consumer=consumer, item=item,
            cert_type=cert_type, number="", issuer="", outcome="",
            holder_key=self.holder_key(holder) if holder else "", role="",
            statement=statement.SerializeToString())])

    async def record(self, uses: Uses, *, first: bool, only: str, audit: PendingAudit | None,
                     outcome: str, detail: str = "") -> None:
        """Keep the call's uses with its audit entry, in one transaction: at the
        consumer's gateway (``first``) and at the issuer's; a gateway between counts
        nothing (its audit entry is written as for any call)."""
        if not uses.rows or audit is None:
            return
        now = self._clock.now()
        rows = []
        for use in uses.rows:
            if outcome != "OK":  # evidence of what was handed out; a refusal hands out
                use = dataclasses.replace(use, statement=b"")  # nothing (and may be huge)
            issuer = use.issuer or only or self._issuer_guess(use)
            local = bool(issuer) and issuer in self.config.partners and self._local(issuer)
            role = "both" if first and local else "origin" if first else "issuer"
            if not first and not local:
                continue
            rows.append(dataclasses.replace(use, use_id=new_ulid(), at=now, issuer=issuer,
                                            outcome=outcome, role=role))
        if not rows:
            return
        entry = audit.entry
        if outcome != "OK":
            entry = dataclasses.replace(entry, outcome=outcome, detail=detail)
        try:
            audit.seq = await self.store.record_uses(rows, entry)
        except GatewayError as exc:
            raise Unavailable(f"the use could not be recorded: {exc.message}") from None
        if self._on_uses is not None:
            self._on_uses(rows)

    def _issuer_guess(self, use: CertificateUse) -> str:
        """The issuer of a use that failed before one answered: the one the directory
        names for the certificate it named, if any."""
        if not use.number:
            return ""
        try:
            cid = parse(use.number)
            return self.directory.issuer_for(cid.type_code, cid.issuer_division).partner
        except GatewayError:
            return ""
