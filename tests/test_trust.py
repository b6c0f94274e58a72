"""A linked peer gateway turned hostile cannot speak for any platform (issue #12, DESIGN §4a).

The rogue here holds 江苏 320000-gw's real key, linked to both 南京 320100-gw and 上海
310000-gw, and calls them over real sockets exactly as a compromised gateway would. It
tries to plant a case "from" a platform of another gateway, reserve that platform's case
numbers, alter a case it carries, complete a case "as" the target and rate it "as" the
origin. Every attempt is refused with nothing stored; honest cases are untouched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import grpc
import pytest

from gateway.cases import State
from gateway.client import CallError
from gateway.lifecycle import seconds, timestamp
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import gateway_pb2 as gw
from gateway.store.offline import read_evidence
from tests.federation import Federation, federation, federation_text, until
from tests.test_bad_input import CITIZEN, raw_call, token

FORWARD = "/tongban.v1.Gateway/ForwardCase"
UPDATE = "/tongban.v1.Gateway/UpdateCase"
ROGUE = "320000-gw"


def rogue_token(body: bytes, *, aud: str, method: str) -> str:
    return token(body, party=ROGUE, aud=aud, method=method)


async def refused(fed: Federation, body: bytes, *, method: str, gateway: str,
                  code: grpc.StatusCode = grpc.StatusCode.PERMISSION_DENIED,
                  field: str = "") -> None:
    counts = {g: await app.store.count_cases() for g, app in fed.apps.items()}
    err = await raw_call(fed, body, rogue_token(body, aud=gateway, method=method),
                         method=method, gateway=gateway)
    assert err.code() is code, err.details()
    assert field in (err.details() or ""), err.details()
    assert counts == {g: await app.store.count_cases() for g, app in fed.apps.items()}


async def submitted(fed: Federation, number: str, target: str = "310115",
                    item: str = "shebao-zy") -> pb.Case:
    case = (await fed.client("320105").submit(case_number=number, target_division=target,
                                              item_code=item, applicant=CITIZEN)).case
    await fed.platform(target).wait_for(case.case_id)
    return case


async def at_gateway(fed: Federation, gateway: str, case_id: str) -> pb.Case:
    record = await fed.apps[gateway].store.get_case(case_id)
    assert record is not None
    return record.case


@pytest.mark.asyncio
async def test_a_peer_cannot_plant_a_case_from_another_gateways_platform(
        manual_fed: Federation) -> None:
    fed = manual_fed
    case = pb.Case(case_id="01JB0000000000000000000000", case_number="PLANT-1",
                   origin_partner="320105", origin_gateway="320100-gw",
                   target_division="310115", requested_division="310115",
                   item_code="shebao-zy", applicant=CITIZEN, state=pb.CASE_STATE_SUBMITTED)
    forward = gw.ForwardCaseRequest(case=case, hops=2, path=["320100-gw", ROGUE])
    # no statement at all
    await refused(fed, forward.SerializeToString(), method=FORWARD, gateway="310000-gw",
                  field="case.origin_statement")
    # a statement the rogue signed itself, "as" 320105
    fake = gw.SubmitCaseRequest(case_number="PLANT-1", target_division="310115",
                                item_code="shebao-zy", applicant=CITIZEN).SerializeToString()
    forward.case.origin_statement.CopyFrom(pb.Statement(
        request=fake, token=rogue_token(fake, aud="320100-gw",
                                        method="/tongban.v1.Gateway/SubmitCase")))
    await refused(fed, forward.SerializeToString(), method=FORWARD, gateway="310000-gw",
                  field="case.origin_statement")
    assert await fed.apps["310000-gw"].store.count_cases() == 0


@pytest.mark.asyncio
async def test_a_peer_cannot_alter_a_case_it_carries(manual_fed: Federation) -> None:
    fed = manual_fed
    real = await submitted(fed, "ALTER-1")
    carried = await at_gateway(fed, "310000-gw", real.case_id)
    for n, (_, change) in enumerate((
            ("applicant", lambda c: setattr(c.applicant, "name", "李四")),
            ("form", lambda c: c.form.update({"amount": "999999"})),
            ("item_code", lambda c: setattr(c, "item_code", "gjj-tq")),
            ("case_number", lambda c: setattr(c, "case_number", "ALTER-2")),
            ("target_division", lambda c: setattr(c, "requested_division", "310101")),
            ("origin_partner", lambda c: setattr(c, "origin_partner", "320100")),
            ("state", lambda c: setattr(c, "state", pb.CASE_STATE_COMPLETED)))):
        case = pb.Case()
        case.CopyFrom(carried)
        change(case)  # type: ignore[no-untyped-call]
        case.case_id = f"01JB000000000000000000000{n}"
        body = gw.ForwardCaseRequest(case=case, hops=2,
                                     path=["320100-gw", ROGUE]).SerializeToString()
        await refused(fed, body, method=FORWARD, gateway="310000-gw", field="case.")
    # the real case arrived once, as its origin said it
    assert (await at_gateway(fed, "310000-gw", real.case_id)).applicant.name == "张三"
    assert await fed.apps["310000-gw"].store.count_cases() == 1


@pytest.mark.asyncio
async def test_a_peer_cannot_reserve_a_platforms_case_numbers(manual_fed: Federation) -> None:
    fed = manual_fed
    fake = gw.SubmitCaseRequest(case_number="JY-2026-77", target_division="320100",
                                item_code="jdc-wf", applicant=CITIZEN).SerializeToString()
    # a case for 南京 320100, a platform of the very gateway it is brought to
    case = pb.Case(case_id="01JB0000000000000000000077", case_number="JY-2026-77",
                   origin_partner="320105", origin_gateway="320100-gw",
                   target_division="320100", requested_division="320100",
                   item_code="jdc-wf", applicant=CITIZEN, state=pb.CASE_STATE_SUBMITTED,
                   origin_statement=pb.Statement(request=fake, token=token(fake)))
    # even with 320105's real signature, its cases are submitted at 320100-gw, never
    # brought there by a peer
    body = gw.ForwardCaseRequest(case=case, hops=1, path=[ROGUE]).SerializeToString()
    await refused(fed, body, method=FORWARD, gateway="320100-gw",
                  field="case.origin_partner")
    answer = await fed.client("320105").submit(case_number="JY-2026-77",
                                               target_division="320681",
                                               item_code="jdc-wf", applicant=CITIZEN)
    assert not answer.duplicate


@pytest.mark.asyncio
async def test_a_peer_cannot_complete_as_the_target_or_rate_as_the_origin(
        manual_fed: Federation) -> None:
    fed = manual_fed
    case = await submitted(fed, "SIDE-1")
    other = await submitted(fed, "SIDE-2")
    await fed.platform("310115").transition(other.case_id, State.ACCEPTED)

    async def seen_at_origin() -> bool:
        return (await at_gateway(fed, "320100-gw", other.case_id)).state == State.ACCEPTED
    await until(seen_at_origin)
    stored = read_evidence(fed.apps["320100-gw"].config.data_dir / "gateway.sqlite3",
                           other.case_id)
    assert stored is not None and stored.statements, "the target's statement is kept"
    real_statement = pb.Statement.FromString(stored.statements[-1][1])

    complete = pb.CaseUpdate(case_id=case.case_id, update_id="rogue-1",
                             state=pb.CASE_STATE_COMPLETED, actor="310115",
                             at=timestamp(time.time()))
    body = gw.UpdateCaseRequest(update=complete).SerializeToString()
    await refused(fed, body, method=UPDATE, gateway="320100-gw", field="update.statement")
    # 310115's real statement about another case does not complete this one
    complete.statement.CopyFrom(real_statement)
    body = gw.UpdateCaseRequest(update=complete).SerializeToString()
    await refused(fed, body, method=UPDATE, gateway="320100-gw", field="update.")
    # a rating "from" 320105, sent to the target's gateway
    rating = pb.CaseUpdate(case_id=case.case_id, update_id="rogue-2", actor="320105",
                           at=timestamp(time.time()),
                           rating=pb.Rating(score=1, channel=pb.RATING_CHANNEL_WEB,
                                            rater="320105"))
    body = gw.UpdateCaseRequest(update=rating).SerializeToString()
    await refused(fed, body, method=UPDATE, gateway="310000-gw", field="update.statement")
    for gateway in ("320100-gw", ROGUE, "310000-gw"):
        seen = await at_gateway(fed, gateway, case.case_id)
        assert seen.state == pb.CASE_STATE_FORWARDED or seen.state == pb.CASE_STATE_SUBMITTED
        assert not seen.HasField("rating")


@pytest.mark.asyncio
async def test_only_the_owner_of_a_side_acts_for_it(tmp_path: Path) -> None:
    async with federation(tmp_path) as fed:  # platforms complete cases by themselves
        case = await submitted(fed, "OWN-1")
        origin, target = fed.client("320105"), fed.client("310115")

        async def completed() -> bool:
            return (await origin.get(case.case_id)).state == pb.CASE_STATE_COMPLETED
        await until(completed)
        with pytest.raises(CallError) as err:  # the target never rates
            await target.rate(case.case_id, 1, pb.RATING_CHANNEL_WEB)
        assert err.value.status is grpc.StatusCode.PERMISSION_DENIED, err.value
        assert not (await origin.get(case.case_id)).HasField("rating")
        await origin.rate(case.case_id, 5, pb.RATING_CHANNEL_APP)

        async def rated_at_target() -> bool:
            return (await target.get(case.case_id)).rating.score == 5
        await until(rated_at_target)
        # the rating crossed two peers with its author's statement, checked at each
        seen = await target.get(case.case_id)
        assert seen.rating.rater == "320105"


@pytest.mark.asyncio
async def test_a_backdated_supplement_request_does_not_move_the_deadline(
        manual_fed: Federation) -> None:
    fed = manual_fed
    case = (await fed.client("320105").submit(case_number="LATE-1", target_division="320681",
                                              item_code="jdc-wf", applicant=CITIZEN)).case
    await fed.platform("320681").wait_for(case.case_id)
    handler = fed.client("320681")
    ten_years_ago = timestamp(time.time() - 10 * 365 * 86400)
    for n, state in enumerate((pb.CASE_STATE_ACCEPTED, pb.CASE_STATE_PROCESSING,
                               pb.CASE_STATE_SUPPLEMENT_REQUESTED, pb.CASE_STATE_PROCESSING)):
        update = pb.CaseUpdate(case_id=case.case_id, update_id=f"late-{n}", state=state,
                               note="补正" if state == pb.CASE_STATE_SUPPLEMENT_REQUESTED else "")
        if state == pb.CASE_STATE_SUPPLEMENT_REQUESTED:
            update.at.CopyFrom(ten_years_ago)
        await handler.update(update)

    async def processing_at_origin() -> bool:
        seen = await at_gateway(fed, "320100-gw", case.case_id)
        return len(seen.timeline) >= 6
    await until(processing_at_origin)
    for gateway in ("320100-gw", ROGUE):
        seen = await at_gateway(fed, gateway, case.case_id)
        assert seconds(seen.deadline) - seconds(case.deadline) < 60, gateway
        supplement = next(c for c in seen.timeline
                          if c.state == pb.CASE_STATE_SUPPLEMENT_REQUESTED)
        assert supplement.claimed_at == ten_years_ago  # kept as claimed
        assert abs(seconds(supplement.at) - time.time()) < 60  # the receipt time


@pytest.mark.asyncio
async def test_the_same_submission_in_another_map_order_is_the_same_case(
        fed: Federation) -> None:
    base = gw.SubmitCaseRequest(case_number="MAP-1", target_division="310115",
                                item_code="shebao-zy", applicant=CITIZEN).SerializeToString()

    def entry(key: str, value: str) -> bytes:
        inner = (b"\x0a" + bytes([len(key.encode())]) + key.encode()
                 + b"\x12" + bytes([len(value.encode())]) + value.encode())
        return b"\x32" + bytes([len(inner)]) + inner  # field 6 (form), length-delimited

    first = base + entry("a", "1") + entry("b", "2")
    second = base + entry("b", "2") + entry("a", "1")
    assert first != second
    answers = []
    address = fed.apps["320100-gw"].config.me.grpc
    async with grpc.aio.insecure_channel(address) as channel:
        for body in (first, second):
            metadata = (("x-tongban-signature", token(body)),)
            raw = await channel.unary_unary("/tongban.v1.Gateway/SubmitCase")(
                body, metadata=metadata, timeout=5)
            answers.append(gw.SubmitCaseResponse.FromString(raw))
    assert answers[1].duplicate and answers[1].case.case_id == answers[0].case.case_id


@pytest.mark.asyncio
async def test_unknown_fields_are_dropped_and_a_load_of_them_refused(fed: Federation) -> None:
    applicant = CITIZEN.SerializeToString() + b"\xfa\x3e\x03abc"  # field 999: unknown
    body = (gw.SubmitCaseRequest(case_number="UNK-1", target_division="310115",
                                 item_code="shebao-zy").SerializeToString()
            + b"\x2a" + bytes([len(applicant)]) + applicant)
    address = fed.apps["320100-gw"].config.me.grpc
    async with grpc.aio.insecure_channel(address) as channel:
        raw = await channel.unary_unary("/tongban.v1.Gateway/SubmitCase")(
            body, metadata=(("x-tongban-signature", token(body)),), timeout=5)
    case = gw.SubmitCaseResponse.FromString(raw).case
    assert case.applicant.SerializeToString() == CITIZEN.SerializeToString()
    stored = await at_gateway(fed, "320100-gw", case.case_id)
    assert stored.applicant.SerializeToString() == CITIZEN.SerializeToString()
    # a megabyte of baggage is refused outright
    junk = b"\xfa\x3e" + b"\x80\x80\x40" + b"x" * (1 << 20)  # field 999, 1 MiB
    big = gw.SubmitCaseRequest(case_number="UNK-2", target_division="310115",
                               item_code="shebao-zy", applicant=CITIZEN).SerializeToString()
    err = await raw_call(fed, big + junk, token(big + junk))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert "do not know" in (err.details() or "") or "not know" in (err.details() or "")


@pytest.mark.asyncio
async def test_keyless_floods_write_nothing_durable(fed: Federation,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """2,000 calls with no or a forged signature: refused, counted, logged at most once
    per interval, and not one row of the fsync'd audit chain (it used to be 16 MB)."""
    from gateway.store.offline import read_audit

    app = fed.apps["320100-gw"]
    path = app.config.data_dir / "gateway.sqlite3"
    before = len(read_audit(path))
    body = gw.SubmitCaseRequest(case_number="FLOOD", target_division="310115",
                                item_code="shebao-zy", applicant=CITIZEN).SerializeToString()
    forged = token(body)[:-8] + "AAAAAAAA"
    codes: dict[grpc.StatusCode, int] = {}
    async with grpc.aio.insecure_channel(app.config.me.grpc) as channel:
        call = channel.unary_unary("/tongban.v1.Gateway/SubmitCase")
        for batch in range(20):
            metadata = (("x-tongban-signature", forged + "x" * 3000),) if batch % 2 else ()
            results = await asyncio.gather(*(call(body, metadata=metadata, timeout=10)
                                             for _ in range(100)), return_exceptions=True)
            for result in results:
                assert isinstance(result, grpc.aio.AioRpcError), result
                codes[result.code()] = codes.get(result.code(), 0) + 1
    assert set(codes) <= {grpc.StatusCode.UNAUTHENTICATED,
                          grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    assert sum(codes.values()) == 2000
    assert len(read_audit(path)) == before  # nothing durable per refused call
    assert app.edge.unauthenticated == codes[grpc.StatusCode.UNAUTHENTICATED]
    refusal_lines = [r for r in caplog.records if "before authentication" in r.getMessage()]
    assert len(refusal_lines) <= 2, len(refusal_lines)
    metrics = (await app._metrics()).decode()
    assert "tongban_unauthenticated_calls_total" in metrics


@pytest.mark.asyncio
async def test_updates_and_bundles_are_bounded(manual_fed: Federation) -> None:
    fed = manual_fed
    case = await submitted(fed, "BOUND-1")
    target = fed.client("310115")
    for update, field in (
            (pb.CaseUpdate(case_id=case.case_id, update_id="b-1", note="注" * 3000),
             "update.note"),
            (pb.CaseUpdate(case_id=case.case_id, update_id="b-2", note="x",
                           missing_materials=["身份证"] * 101), "update.missing_materials"),
            (pb.CaseUpdate(case_id=case.case_id, update_id="b-3", note="x",
                           missing_materials=[""]), "update.missing_materials[0]")):
        with pytest.raises(CallError) as err:
            await target.update(update)
        assert err.value.status is grpc.StatusCode.INVALID_ARGUMENT, err.value
        assert field in err.value.message, err.value.message
    with pytest.raises(CallError) as err:
        await fed.client("320105").submit_bundle(
            bundle_number="B-1\n", name="一件事",
            parts=[gw.SubmitCaseRequest(case_number=f"BP-{i}", target_division="320100",
                                        item_code="gjj-tq", applicant=CITIZEN)
                   for i in range(2)])
    assert err.value.status is grpc.StatusCode.INVALID_ARGUMENT
    assert "bundle_number" in err.value.message


@pytest.mark.asyncio
async def test_the_handling_side_cannot_supply_the_applicants_materials(
        manual_fed: Federation) -> None:
    fed = manual_fed
    case = await submitted(fed, "SUP-1")
    ref = pb.MaterialRef(name="章程", sha256="a" * 64, size_bytes=10,
                         media_type="application/pdf")
    with pytest.raises(CallError) as err:
        await fed.client("310115").update(pb.CaseUpdate(
            case_id=case.case_id, update_id="sup-t", supplement=[ref]))
    assert err.value.status is grpc.StatusCode.PERMISSION_DENIED, err.value
    assert "update.supplement" in err.value.message
    assert len((await at_gateway(fed, "310000-gw", case.case_id)).materials) == 0


@pytest.mark.asyncio
async def test_a_leaked_statement_brought_from_off_the_path_is_refused(
        tmp_path: Path) -> None:
    """南京 and 上海 link directly (a triangle with 江苏): a case from 建邺 to 浦东 goes
    320100-gw → 310000-gw. The rogue 320000-gw holds a leaked but genuine statement of
    320105 and brings the case to 上海 itself, first, to own its way back. It is not on
    the case's path, so 上海 refuses it and the real case arrives as usual."""
    text = federation_text("manual")
    for me, other in (("320100-gw", "310000-gw"), ("310000-gw", "320100-gw")):
        head = f'[[gateways]]\nid = "{me}"'
        start = text.index(head)
        end = text.index("\n[[", start + len(head))
        block = text[start:end].replace('links = ["320000-gw"]',
                                        f'links = ["320000-gw", "{other}"]')
        text = text[:start] + block + text[end:]
    assert 'links = ["320000-gw", "310000-gw"]' in text
    assert 'links = ["320000-gw", "320100-gw"]' in text
    async with federation(tmp_path, auto="manual", text=text) as fed:
        nanjing = fed.apps["320100-gw"]
        request = gw.SubmitCaseRequest(case_number="LEAK-9", target_division="310115",
                                       item_code="shebao-zy", applicant=CITIZEN)
        body = request.SerializeToString()
        leaked = pb.Statement(request=body, token=token(body))
        case, _, _ = nanjing.engine.admission.build(
            "320105", request, case_id="01JB0000000000000000000099", at=time.time(),
            origin_gateway="320100-gw", bundle_id="", prefix="")
        case.origin_statement.CopyFrom(leaked)
        forward = gw.ForwardCaseRequest(case=case, hops=1, path=["320100-gw"])
        await refused(fed, forward.SerializeToString(), method=FORWARD, gateway="310000-gw",
                      field="case.origin_gateway")
        real = await submitted(fed, "LEAK-10")  # the direct path works
        assert (await at_gateway(fed, "310000-gw", real.case_id)).case_number == "LEAK-10"


@pytest.mark.asyncio
async def test_a_submission_with_several_audiences_crosses_every_hop(
        manual_fed: Federation) -> None:
    """RFC 7519 lets aud be an array; the statement's audience that counts at every hop
    is the origin's own gateway, wherever it stands in the array."""
    from tests.test_bad_input import GOOD_HEADER, forged, submit_claims

    fed = manual_fed
    body = gw.SubmitCaseRequest(case_number="AUD-1", target_division="310115",
                                item_code="shebao-zy", applicant=CITIZEN).SerializeToString()
    signed = forged(GOOD_HEADER, submit_claims(body, aud=["320000-gw", "320100-gw"]))
    address = fed.apps["320100-gw"].config.me.grpc
    async with grpc.aio.insecure_channel(address) as channel:
        raw = await channel.unary_unary("/tongban.v1.Gateway/SubmitCase")(
            body, metadata=(("x-tongban-signature", signed),), timeout=5)
    case = gw.SubmitCaseResponse.FromString(raw).case
    await fed.platform("310115").wait_for(case.case_id)  # two hops, checked at each


@pytest.mark.asyncio
async def test_malformed_http_requests_do_not_flood_the_log(
        fed: Federation, caplog: pytest.LogCaptureFixture) -> None:
    """200 broken HTTP requests: each refused, at most one line per interval logged for
    them, and none with the sender's text or a traceback."""
    host, port = fed.apps["320100-gw"].config.me.http.rsplit(":", 1)
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    for n in range(200):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -" +
                     f"EVIL{n}\x01\r\n\r\n".encode())
        await writer.drain()
        answer = await reader.read(200)
        assert answer.split(b" ")[1].startswith(b"4"), answer
        writer.close()
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(records) <= 2, [r.getMessage() for r in records]
    assert not any(r.exc_info or "EVIL" in r.getMessage() for r in records)


@pytest.mark.asyncio
async def test_refusals_of_cancel_and_rate_name_fields_of_their_own_requests(
        manual_fed: Federation) -> None:
    """CancelCase and RateCase make updates inside the gateway; a refusal still names a
    field of the request the platform sent, never update.*."""
    fed = manual_fed
    case = await submitted(fed, "FIELD-1")
    with pytest.raises(CallError) as err:  # the target rates: refused, about case_id
        await fed.client("310115").rate(case.case_id, 1, pb.RATING_CHANNEL_WEB)
    assert err.value.status is grpc.StatusCode.PERMISSION_DENIED
    assert "update." not in err.value.message and "case_id" in err.value.message
    await fed.client("320105").cancel(case.case_id, "撤件")
    with pytest.raises(CallError) as err:  # cancelled twice with another reason
        await fed.client("320105").rate(case.case_id, 5, pb.RATING_CHANNEL_WEB)
    assert "update." not in err.value.message, err.value.message


@pytest.mark.asyncio
async def test_one_side_cannot_take_the_other_sides_update_id(manual_fed: Federation) -> None:
    """Update ids are their author's: the origin sending a note as "acc-1" first does not
    turn the target's real ACCEPTED under "acc-1" into a silent duplicate."""
    fed = manual_fed
    case = await submitted(fed, "SQUAT-1")
    squat = await fed.client("320105").update(pb.CaseUpdate(
        case_id=case.case_id, update_id="acc-1", note="抢占"))
    assert not squat.duplicate
    real = await fed.client("310115").update(pb.CaseUpdate(
        case_id=case.case_id, update_id="acc-1", state=pb.CASE_STATE_ACCEPTED))
    assert not real.duplicate and real.case.state == pb.CASE_STATE_ACCEPTED
    again = await fed.client("310115").update(pb.CaseUpdate(
        case_id=case.case_id, update_id="acc-1", state=pb.CASE_STATE_ACCEPTED))
    assert again.duplicate  # the author's own retry still is one

    async def accepted_at_origin() -> bool:
        return (await at_gateway(fed, "320100-gw", case.case_id)).state == \
            pb.CASE_STATE_ACCEPTED
    await until(accepted_at_origin)
    # and the evidence proves both updates, each by its own author
    from gateway import evidence_file
    from gateway.store.offline import read_evidence as stored

    for gateway in ("320100-gw", "310000-gw"):
        app = fed.apps[gateway]
        found = stored(app.config.data_dir / "gateway.sqlite3", case.case_id)
        assert found is not None
        parties = [*app.config.partners.values(), *app.config.gateways.values()]
        document = evidence_file.export(found, gateway=gateway, exported_at=time.time(),
                                        keys=[k for p in parties for k in p.keys])
        verdict = evidence_file.verify(document, {p.id: list(p.keys) for p in parties})
        assert verdict.ok, verdict.summary


@pytest.mark.asyncio
async def test_a_credit_code_with_a_letter_gb32100_never_uses_is_invalid(
        fed: Federation) -> None:
    """Position 2 of a GB 32100 code is one of 31 characters; I, O, S, V and Z there
    reached stdnum's arithmetic and came back as INTERNAL."""
    company = pb.Applicant(id_type=pb.ID_TYPE_USCC, id_number="9I320000MA1MYYYY0X",
                           name="某公司")
    body = gw.SubmitCaseRequest(case_number="USCC-1", target_division="310115",
                                item_code="shebao-zy", applicant=company).SerializeToString()
    err = await raw_call(fed, body, token(body))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert "applicant.id_number" in (err.details() or "")


@pytest.mark.asyncio
async def test_a_receipt_proves_the_delivery_of_its_own_case(manual_fed: Federation) -> None:
    """A receipt keeps the request it answers (its rdg) and that request names the case:
    another case's genuine receipts do not pass as this one's."""
    from gateway import evidence_file
    from gateway.store.offline import read_evidence as stored

    fed = manual_fed
    first, second = await submitted(fed, "RCPT-1"), await submitted(fed, "RCPT-2")
    app = fed.apps["320100-gw"]
    parties = [*app.config.partners.values(), *app.config.gateways.values()]
    trusted = {p.id: list(p.keys) for p in parties}

    async def exported(case_id: str) -> dict[str, object]:
        async def receipted() -> bool:
            found = stored(app.config.data_dir / "gateway.sqlite3", case_id)
            return found is not None and bool(found.receipts)
        await until(receipted)
        found = stored(app.config.data_dir / "gateway.sqlite3", case_id)
        assert found is not None
        return evidence_file.export(found, gateway="320100-gw", exported_at=time.time(),
                                    keys=[k for p in parties for k in p.keys])

    one, two = await exported(first.case_id), await exported(second.case_id)
    assert evidence_file.verify(one, trusted).ok and evidence_file.verify(two, trusted).ok
    two["receipts"] = one["receipts"]
    verdict = evidence_file.verify(two, trusted)
    assert not verdict.ok and "another case" in verdict.summary, verdict.summary


@pytest.mark.asyncio
async def test_a_running_gateway_whose_store_was_altered_cannot_pass_the_change_on(
        tmp_path: Path) -> None:
    """The rogue here is a real 江苏 320000-gw, running: while 上海 is down, someone with
    access to its store rewrites the applicant of a case waiting in its outbox. When 上海
    comes up, it refuses the altered case (nothing stored there), and the rogue's outbox
    dead-letters it: the change never reaches the target platform."""
    import sqlite3

    from gateway.app import GatewayApp
    from gateway.config import load_config
    from gateway.demo import rebind
    from gateway.pb.tongban.v1 import gateway_pb2 as gwpb
    from gateway.store.offline import list_outbox
    from tests.federation import PARTNERS_TOML

    text = federation_text("manual")
    async with federation(tmp_path, auto="manual", text=text,
                          gateways=("320100-gw", ROGUE)) as fed:
        case = (await fed.client("320105").submit(
            case_number="ALT-1", target_division="310115", item_code="shebao-zy",
            applicant=CITIZEN)).case
        rogue = fed.apps[ROGUE]
        db = rogue.config.data_dir / "gateway.sqlite3"

        async def waiting() -> bool:
            return any(r.case_id == case.case_id and r.attempts > 0 for r in list_outbox(db))
        await until(waiting)
        conn = sqlite3.connect(db)
        try:
            row_id, payload = conn.execute(
                "SELECT id, payload FROM outbox WHERE case_id=?", (case.case_id,)).fetchone()
            forward = gwpb.ForwardCaseRequest.FromString(payload)
            forward.case.applicant.name = "李四"
            conn.execute("UPDATE outbox SET payload=? WHERE id=?",
                         (forward.SerializeToString(), row_id))
            conn.commit()
        finally:
            conn.close()
        ports = {g: (c.grpc, c.http) for g, c in fed.config.gateways.items()}
        shanghai = GatewayApp(rebind(load_config(PARTNERS_TOML, self_id="310000-gw", text=text),
                                     ports, tmp_path))
        await shanghai.start()
        try:
            async def refused_there() -> bool:
                return any(r.dead for r in list_outbox(db))
            await until(refused_there, within=30)
            assert await shanghai.store.count_cases() == 0
            [dead] = [r for r in list_outbox(db) if r.dead]
            # refused as PERMISSION_DENIED (dead at once), naming the altered field
            assert "case.applicant" in dead.last_error and "320105 signed" in dead.last_error
        finally:
            await shanghai.stop(grace_s=0.1)
