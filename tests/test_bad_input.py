"""Every bad request gets a precise status, a field path where one applies, and changes nothing."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import gateway_pb2 as gw
from gateway.signing import (
    HEADER,
    SigningKey,
    b64url,
    body_digest,
    generate_private_key,
    load_private_key,
    sign,
)
from gateway.store.offline import read_audit
from tests.federation import ROOT, Federation

SUBMIT = "/tongban.v1.Gateway/SubmitCase"
CITIZEN = pb.Applicant(id_type=pb.ID_TYPE_RESIDENT, id_number="11010519491231002X", name="张三")


def key_of(party: str) -> SigningKey:
    return load_private_key((ROOT / "demo-keys" / f"{party}.pem").read_bytes(), kid=f"{party}#k1")


def request(**overrides: object) -> bytes:
    fields: dict[str, object] = dict(case_number="BAD-1", target_division="310115",
                                     item_code="shebao-zy", applicant=CITIZEN)
    fields.update(overrides)
    return gw.SubmitCaseRequest(**fields).SerializeToString()  # type: ignore[arg-type]


async def raw_call(fed: Federation, body: bytes, token: str | None, *,
                   method: str = SUBMIT, gateway: str = "320100-gw") -> grpc.aio.AioRpcError:
    address = fed.apps[gateway].config.me.grpc
    async with grpc.aio.insecure_channel(address) as channel:
        metadata = ((HEADER, token),) if token is not None else ()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary(method)(body, metadata=metadata, timeout=5)
    return err.value


async def expect(fed: Federation, body: bytes, token: str | None, code: grpc.StatusCode,
                 text: str, *, method: str = SUBMIT) -> grpc.aio.AioRpcError:
    before = await fed.apps["320100-gw"].store.count_cases()
    err = await raw_call(fed, body, token, method=method)
    assert err.code() is code, err.details()
    assert text in (err.details() or ""), err.details()
    assert await fed.apps["320100-gw"].store.count_cases() == before  # nothing changed
    return err


def token(body: bytes, *, party: str = "320105", key: SigningKey | None = None,
          aud: str = "320100-gw", method: str = SUBMIT, now: float | None = None,
          ttl: int = 120) -> str:
    signed, _ = sign(key or key_of(party), iss=party, aud=aud, method=method, body=body,
                     now=time.time() if now is None else now, ttl=ttl)
    return signed


@pytest.mark.asyncio
async def test_signature_failures_are_unauthenticated(fed: Federation) -> None:
    body = request()
    unauth = grpc.StatusCode.UNAUTHENTICATED
    await expect(fed, body, None, unauth, "missing x-tongban-signature")
    await expect(fed, body, "not.a.jws", unauth, "malformed")
    await expect(fed, body, token(body, now=time.time() - 400), unauth, "expired")
    await expect(fed, body, token(body, now=time.time() + 600), unauth, "in the future")
    await expect(fed, body, token(body, ttl=3600), unauth, "exp - iat")
    await expect(fed, body, token(body, aud="310000-gw"), unauth, "aud")
    await expect(fed, body, token(body, method="/tongban.v1.Gateway/GetCase"), unauth,
                 "signature is for")
    await expect(fed, request(case_number="OTHER"), token(body), unauth, "bdg")
    pem, _ = generate_private_key()
    stranger = load_private_key(pem, kid="320105#k1")
    await expect(fed, body, token(body, key=stranger), unauth, "bad signature")
    rogue = load_private_key(pem, kid="320105#k9")
    await expect(fed, body, token(body, key=rogue), unauth, "unknown key 320105#k9")
    # a partner of another gateway is unknown here
    await expect(fed, body, token(body, party="310115"), unauth, "unknown key 310115#k1")


@pytest.mark.asyncio
async def test_replayed_request_is_refused_and_changes_nothing(fed: Federation) -> None:
    body = request(case_number="REPLAY-1")
    signed = token(body)
    address = fed.apps["320100-gw"].config.me.grpc
    async with grpc.aio.insecure_channel(address) as channel:
        first = await channel.unary_unary(SUBMIT)(body, metadata=((HEADER, signed),))
    assert gw.SubmitCaseResponse.FromString(first).case.case_number == "REPLAY-1"
    await expect(fed, body, signed, grpc.StatusCode.UNAUTHENTICATED, "replayed jti")


def details(err: grpc.aio.AioRpcError) -> tuple[str, list[str]]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    reason, fields = "", []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [v.field for v in bad.field_violations]
    return reason, fields


BAD_FIELDS = [
    (dict(case_number=""), grpc.StatusCode.INVALID_ARGUMENT, "case_number"),
    (dict(target_division="31011"), grpc.StatusCode.INVALID_ARGUMENT, "target_division"),
    (dict(target_division="999999"), grpc.StatusCode.NOT_FOUND, "target_division"),
    (dict(target_division="540000"), grpc.StatusCode.NOT_FOUND, "target_division"),
    (dict(item_code="no-such-item"), grpc.StatusCode.NOT_FOUND, "item_code"),
    (dict(item_code="jdc-wf"), grpc.StatusCode.PERMISSION_DENIED, "item_code"),
    (dict(mode=pb.HANDLING_MODE_FULLY_ONLINE), grpc.StatusCode.INVALID_ARGUMENT, "mode"),
    (dict(applicant=pb.Applicant(id_type=pb.ID_TYPE_RESIDENT, id_number="110105194912310021",
                                 name="张三")),
     grpc.StatusCode.INVALID_ARGUMENT, "applicant.id_number"),
    (dict(applicant=pb.Applicant(id_type=pb.ID_TYPE_RESIDENT, id_number="11010519491331002X",
                                 name="张三")),
     grpc.StatusCode.INVALID_ARGUMENT, "applicant.id_number"),
    (dict(applicant=pb.Applicant(id_type=pb.ID_TYPE_USCC, id_number="91320105MA1MXXXX0A",
                                 name="某公司")),
     grpc.StatusCode.INVALID_ARGUMENT, "applicant.id_number"),
    (dict(applicant=pb.Applicant(id_type=pb.ID_TYPE_RESIDENT, id_number="11010519491231002X")),
     grpc.StatusCode.INVALID_ARGUMENT, "applicant.name"),
    (dict(applicant=pb.Applicant(name="张三")), grpc.StatusCode.INVALID_ARGUMENT,
     "applicant.id_type"),
    (dict(materials=[pb.MaterialRef(name="x", sha256="XYZ", size_bytes=1,
                                    media_type="application/pdf")]),
     grpc.StatusCode.INVALID_ARGUMENT, "materials[0].sha256"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("fields", "code", "path"), BAD_FIELDS)
async def test_bad_fields_name_their_path(fed: Federation, fields: dict[str, object],
                                          code: grpc.StatusCode, path: str) -> None:
    body = request(**fields)
    err = await expect(fed, body, token(body), code, path)
    reason, violations = details(err)
    assert violations == [path]
    assert reason


@pytest.mark.asyncio
async def test_garbage_bytes_are_invalid_argument(fed: Federation) -> None:
    body = b"\xff\xff\xff\xff"
    await expect(fed, body, token(body), grpc.StatusCode.INVALID_ARGUMENT, "not a valid")


@pytest.mark.asyncio
async def test_partner_may_not_forward_and_peer_may_not_submit(fed: Federation) -> None:
    forward = "/tongban.v1.Gateway/ForwardCase"
    body = gw.ForwardCaseRequest(case=pb.Case(case_id="X")).SerializeToString()
    await expect(fed, body, token(body, method=forward), grpc.StatusCode.PERMISSION_DENIED,
                 "not a gateway linked", method=forward)
    body = request()
    signed = token(body, party="320000-gw")
    await expect(fed, body, signed, grpc.StatusCode.PERMISSION_DENIED, "not a partner")


@pytest.mark.asyncio
async def test_forwarding_loops_and_hop_cap_are_refused(fed: Federation) -> None:
    forward = "/tongban.v1.Gateway/ForwardCase"
    case = pb.Case(case_id="01LOOP", case_number="L-1", origin_partner="320105",
                   target_division="310115", state=pb.CASE_STATE_SUBMITTED)
    # 320000-gw receives a case whose path already contains it
    for hops, path in ((1, ["320000-gw"]), (4, ["a", "b", "c", "d"])):
        body = gw.ForwardCaseRequest(case=case, hops=hops, path=path).SerializeToString()
        signed, _ = sign(key_of("320100-gw"), iss="320100-gw", aud="320000-gw",
                         method=forward, body=body, now=time.time())
        err = await raw_call(fed, body, signed, method=forward, gateway="320000-gw")
        assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "hops" in (err.details() or "")
    assert await fed.apps["320000-gw"].store.count_cases() == 0


@pytest.mark.asyncio
async def test_a_peer_cannot_read_a_case_by_forwarding_its_id(fed: Federation) -> None:
    client = fed.client("320105")
    real = (await client.submit(case_number="LEAK-1", target_division="320681",
                                item_code="jdc-wf", applicant=CITIZEN)).case
    forward = "/tongban.v1.Gateway/ForwardCase"
    # 320000-gw pretends to bring the same case id to 320100-gw, which originated it
    probe = pb.Case(case_id=real.case_id, case_number="other", origin_partner="320000",
                    target_division="320105", state=pb.CASE_STATE_SUBMITTED)
    body = gw.ForwardCaseRequest(case=probe, hops=1, path=["320000-gw"]).SerializeToString()
    signed, _ = sign(key_of("320000-gw"), iss="320000-gw", aud="320100-gw", method=forward,
                     body=body, now=time.time())
    err = await raw_call(fed, body, signed, method=forward)
    # refused before any look-up: a forwarded case needs its origin's signed statement
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "LEAK-1" not in (err.details() or "") and "张三" not in (err.details() or "")


# -- issue #12 §3: the edge refuses cleanly and cheaply ----------------------------------
UPDATE = "/tongban.v1.Gateway/UpdateCase"
LIST_ITEMS = "/tongban.v1.Gateway/ListItems"


async def call_ok(fed: Federation, body: bytes, signed: str, *, method: str = SUBMIT,
                  gateway: str = "320100-gw") -> tuple[bytes, str]:
    """The answer's bytes and its response signature."""
    async with grpc.aio.insecure_channel(fed.apps[gateway].config.me.grpc) as channel:
        call = channel.unary_unary(method)(body, metadata=((HEADER, signed),), timeout=5)
        answer: bytes = await call
        trailing = await call.trailing_metadata()
    return answer, next(str(v) for k, v in trailing or () if k == HEADER)


@pytest.mark.asyncio
async def test_a_token_is_a_replay_until_exp_plus_skew(fed: Federation) -> None:
    """Accepted until exp + skew (60 s), so remembered as long: a token 10 s past its
    exp was accepted again and again when the cache forgot it at exp."""
    body = request(case_number="REPLAY-LATE")
    signed = token(body, now=time.time() - 130, ttl=120)  # exp was 10 s ago
    await call_ok(fed, body, signed)
    for _ in range(3):
        await expect(fed, body, signed, grpc.StatusCode.UNAUTHENTICATED, "replayed jti")


@pytest.mark.asyncio
async def test_a_response_token_is_not_accepted_as_a_request(fed: Federation) -> None:
    """320100-gw's answer to 320000-gw (aud 320000-gw, mth ListItems, bdg of the answer)
    sent back to 320000-gw as if 320100-gw asked ListItems with the answer's bytes."""
    body = gw.ListItemsRequest().SerializeToString()
    signed, _ = sign(key_of("320000-gw"), iss="320000-gw", aud="320100-gw",
                     method=LIST_ITEMS, body=body, now=time.time())
    answer, answer_token = await call_ok(fed, body, signed, method=LIST_ITEMS)
    err = await raw_call(fed, answer, answer_token, method=LIST_ITEMS, gateway="320000-gw")
    assert err.code() is grpc.StatusCode.UNAUTHENTICATED, err.details()
    assert "response signature (rti/rdg) is not a request" in (err.details() or "")


def forged(header: object, claims: object, *, party: str = "320105") -> str:
    """A token over any header and claims bytes, signed with the party's real key."""
    from tests.test_signing import _forge

    return _forge(key_of(party), header, claims)


def submit_claims(body: bytes, **changes: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {"iss": "320105", "aud": "320100-gw", "iat": now,
                                 "exp": now + 60, "jti": b64url(os.urandom(16)),
                                 "mth": SUBMIT, "bdg": body_digest(body)}
    return claims | changes


GOOD_HEADER = {"alg": "EdDSA", "kid": "320105#k1", "typ": "tongban+jwt"}


@pytest.mark.asyncio
async def test_bad_tokens_are_unauthenticated_over_grpc(fed: Federation) -> None:
    body = request(case_number="BAD-TOKEN")
    unauth = grpc.StatusCode.UNAUTHENTICATED
    deep = ("[" * 1500 + "]" * 1500).encode()  # past Python's recursion limit, under 8 KiB
    cases = [
        (forged(GOOD_HEADER, submit_claims(body, jti="not base64url!!!!!!!!!!")),
         "jti is not base64url"),
        (forged(deep, submit_claims(body)), "nests too deeply"),  # before the signature
        (forged(GOOD_HEADER, deep), "nests too deeply"),
        (forged(GOOD_HEADER, b'{"iss":"\xff"}'), "UTF-8"),
        (forged(b'{"typ":"\xff"}', submit_claims(body)), "UTF-8"),
        (forged(GOOD_HEADER, submit_claims(body, pad="x" * 4000)), "more than 4096"),
        (forged(GOOD_HEADER, submit_claims(body, pad="x" * 6000)), "more than 8192"),
        (forged(GOOD_HEADER, submit_claims(body, rti="A" * 22, rdg="B")), "rti/rdg"),
    ]
    for signed, text in cases:
        err = await expect(fed, body, signed, unauth, text)
        assert len(err.details() or "") <= 300
    # and what RFC 7519/7515 allow is accepted: aud as an array, typ with application/
    ok = forged(GOOD_HEADER | {"typ": "application/tongban+jwt"},
                submit_claims(body, aud=["320000-gw", "320100-gw"]))
    answer, _ = await call_ok(fed, body, ok)
    assert gw.SubmitCaseResponse.FromString(answer).case.case_number == "BAD-TOKEN"


@pytest.mark.asyncio
async def test_a_trailing_newline_is_not_a_case_number(fed: Federation) -> None:
    body = request(case_number="JY-2026-9\n")
    err = await expect(fed, body, token(body), grpc.StatusCode.INVALID_ARGUMENT, "case_number")
    assert details(err)[1] == ["case_number"]


@pytest.mark.asyncio
@pytest.mark.parametrize(("set_time", "path"), [
    (lambda u: u.at.__setattr__("seconds", 10**12), "update.at"),
    (lambda u: u.at.__setattr__("nanos", -1), "update.at"),
    (lambda u: u.rating.rectification_deadline.__setattr__("seconds", -10**12),
     "update.rating.rectification_deadline"),
])
async def test_timestamps_out_of_range_are_invalid_argument(
        fed: Federation, set_time: Callable[[pb.CaseUpdate], None], path: str) -> None:
    client = fed.client("320105")
    case = (await client.submit(case_number="TIME-1", target_division="320681",
                                item_code="jdc-wf", applicant=CITIZEN)).case
    update = pb.CaseUpdate(case_id=case.case_id, update_id="t-1", note="later")
    set_time(update)
    body = gw.UpdateCaseRequest(update=update).SerializeToString()
    err = await expect(fed, body, token(body, method=UPDATE), grpc.StatusCode.INVALID_ARGUMENT,
                       path, method=UPDATE)
    assert details(err)[1] == [path]
    stored = await fed.apps["320100-gw"].store.get_case(case.case_id)
    assert stored is not None and all(e.note != "later" for e in stored.case.timeline)


@pytest.mark.asyncio
async def test_a_huge_case_id_gives_a_short_error_and_a_short_audit_row(fed: Federation
                                                                        ) -> None:
    huge = "C" * (3 * 1024 * 1024)
    body = gw.UpdateCaseRequest(update=pb.CaseUpdate(case_id=huge, update_id="u-1",
                                                     note="x\n{\"level\":\"CRITICAL\"}")
                                ).SerializeToString()
    err = await expect(fed, body, token(body, method=UPDATE), grpc.StatusCode.NOT_FOUND,
                       "update.case_id", method=UPDATE)
    assert len(err.details() or "") <= 300
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None and status.ByteSize() < 1000
    app = fed.apps["320100-gw"]
    rows = read_audit(app.config.data_dir / "gateway.sqlite3")
    last = rows[-1][1]
    assert last.method == UPDATE and last.outcome == "NOT_FOUND"
    assert len(last.case_id) <= 64 and len(last.detail) <= 300
    assert sum(len(str(field)) for field in last.row()) < 1000
