"""The certificate part of `tongban demo` (docs/certificates.md): a lookup across provinces
that the consumer checks offline, a listing that finds a certificate issued outside the
holder's home region, a refusal for a wrong purpose, yes/no claims, an identity check, a
case that cites a certificate instead of a material, and the holder's "who used my
certificate". The holders are the reference issuer's demo holders (adapters/issuer_seed)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from adapters.issuer_seed import COMPANY, ZHANG_SAN, DemoHolder
from gateway.certificates.authorization import authorize
from gateway.certificates.claims import verify_answer
from gateway.certificates.documents import open_document
from gateway.client import CallError
from gateway.config import Config
from gateway.partner_client import PartnerClient
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import certificate_pb2 as cpb
from gateway.signing import PublicKey, load_private_key

CONSUMER = "310115"  # 浦东新区企业服务中心: the window where the holder stands


def _status(value: int) -> str:
    return cpb.CertificateStatus.Name(value).removeprefix("CERTIFICATE_STATUS_").lower()  # type: ignore[arg-type]


class _Window:
    """The consumer platform: signs the holder's authorization after the holder
    authenticated there, and checks what comes back with the issuer's public key."""

    def __init__(self, config: Config, client: PartnerClient, now: Callable[[], float]) -> None:
        self.config, self.client, self.now = config, client, now
        key_file = config.source.parent / "demo-keys" / f"{CONSUMER}.pem"
        self.key = load_private_key(key_file.read_bytes(), kid=f"{CONSUMER}#k1")

    def authz(self, holder: DemoHolder, item: str) -> str:
        return authorize(self.key, holder=holder.holder, item=item, consumer=CONSUMER,
                         now=self.now())

    def keys(self, partner: str) -> Callable[[str], Sequence[PublicKey]]:
        """Only the issuer's keys, as from `tongban keys jwks`."""
        keys: Mapping[str, Sequence[PublicKey]] = {partner: self.config.partners[partner].keys}
        return lambda owner: keys.get(owner, ())


async def certificate_demo(config: Config, clients: dict[str, PartnerClient],
                           client_for: Callable[[Config, str], PartnerClient],
                           now: Callable[[], float]) -> None:
    for partner in (CONSUMER, "320105"):
        clients.setdefault(partner, client_for(config, partner))
    window = _Window(config, clients[CONSUMER], now)
    client = window.client
    print("● 电子证照: 张三 (home 320105) at the 浦东 window (310115, 310000-gw)")
    got = (await client.lookup_certificate(
        holder=ZHANG_SAN.message(), cert_type="401", purpose_item="bdc-dy",
        authorization=window.authz(ZHANG_SAN, "bdc-dy"), with_file=True)).certificate
    where = got.found_at
    offline = open_document(got.document, window.keys(where.partner), now=now(),
                            status=got.status_statement)
    print(f"    LookupCertificate 不动产权证书 for 不动产抵押登记: {got.metadata.number}\n"
          f"      found at {where.partner} via {where.gateway} (division {where.division_used})"
          f", {_status(got.metadata.status)}; checked offline with {where.partner}'s key "
          f"alone: {offline.metadata.status.value}, file {len(got.file)} bytes")
    listing = await client.list_certificates(
        holder=ZHANG_SAN.message(), purpose_item="bdc-dy",
        authorization=window.authz(ZHANG_SAN, "bdc-dy"))
    for certificate in listing.certificates:
        home = "home region" if certificate.found_at.home else "elsewhere"
        print(f"    ListCertificates: {certificate.metadata.name} from "
              f"{certificate.found_at.partner} ({home})")
    try:
        await client.lookup_certificate(
            holder=ZHANG_SAN.message(), cert_type="401", purpose_item="jdc-wf",
            authorization=window.authz(ZHANG_SAN, "jdc-wf"))
    except CallError as exc:
        print(f"    wrong purpose refused: {exc.status.name}: {exc.message}")
    claim = await client.lookup_certificate(
        holder=COMPANY.message(), cert_type="201", purpose_item="yyzz-bg",
        authorization=window.authz(COMPANY, "yyzz-bg"),
        claim=cpb.CertificateClaim(name="at_least", field="registered_capital",
                                   value=1_000_000))
    checked = verify_answer(claim.claim_answer.token, window.keys(claim.claim_answer.found_at
                                                                  .partner),
                            consumer=CONSUMER, now=now())
    print(f"    yes/no claim: {COMPANY.name} registered capital ≥ 1,000,000? "
          f"{'yes' if checked.answer else 'no'} (signed by {checked.iss}; the amount is "
          "not told)")
    identity = await client.verify_identity(holder=ZHANG_SAN.message(), name="张三",
                                            purpose_item="bdc-dy",
                                            authorization=window.authz(ZHANG_SAN, "bdc-dy"))
    print(f"    VerifyIdentity 张三 at home ({identity.found_at.partner}): "
          f"{'match' if identity.match else 'no match'}")
    answer = await client.submit(
        case_number="PD-2026-CERT-1", target_division="320105", item_code="gjj-tq",
        applicant=pb.Applicant(id_type=pb.ID_TYPE_RESIDENT, id_number=ZHANG_SAN.number,
                               name=ZHANG_SAN.name),
        certificates=[pb.CertificateCitation(material="购房合同", document=got.document)])
    print(f"    case {answer.case.case_id} cites the 不动产权证书 instead of uploading 购房合同;"
          " the target asks the issuer before it accepts")
    uses = await clients["320105"].certificate_uses(
        holder=ZHANG_SAN.message(),
        authorization=authorize(load_private_key(
            (config.source.parent / "demo-keys" / "320105.pem").read_bytes(), kid="320105#k1"),
            holder=ZHANG_SAN.holder, item="tongban:uses", consumer="320105", now=now()))
    print(f"    who used 张三's certificates (asked at 建邺, where he authenticated): "
          f"{len(uses.uses)} uses")
    for use in uses.uses:
        what = f"type {use.cert_type} {use.number[-18:]}" if use.number else "nothing found"
        print(f"      {use.method:18} by {use.consumer} for {use.item or '-':8} at "
              f"{use.issuer}: {what} ({use.outcome}, recorded at {use.gateway})")
    print()
