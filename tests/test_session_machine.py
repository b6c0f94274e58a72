"""The sequencer's state machine of one 屏对屏 session (docs/sessions.md §1, §3, §4)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.certificates.documents import canonical
from gateway.errors import Unauthenticated
from gateway.sessions.machine import (
    TEXTS,
    TRANSITIONS,
    Outcome,
    Reason,
    Session,
    State,
    check_message,
    refusal,
)
from gateway.sessions.tokens import Delegation, Side, sign_delegation, verify_delegation
from gateway.sessions.transcript import BrokenChain, encode, verify_chain
from gateway.signing import b64url
from tests.certkeys import lookup, party

ORIGIN_KEY, ORIGIN_PUB = party("320105#k1")
REMOTE_KEY, REMOTE_PUB = party("310115#k1")
KEYS = lookup(ORIGIN_PUB, REMOTE_PUB)
NOW = 1_790_000_000.0
SES = "01JDZ8Q4Y6W3V2T1S0R9P8N7M6"
CAS = "01JDZ8Q4Y6W3V2T1S0R9P8N7M7"
ZHANG = "11010519491231002X"
PDF = hashlib.sha256("%PDF-1.7 户口簿".encode()).hexdigest()
PNG = hashlib.sha256(b"\x89PNG signature").hexdigest()
CATALOGUE = {"bdc-dy": (("身份证", "不动产权证书"), {"name": "申请人姓名，与身份证一致"})}
ORG, REM = Side.ORIGIN, Side.REMOTE
CJK = re.compile(r"[\u4e00-\u9fff]")


def session() -> Session:
    s = Session(SES, case=CAS, origin="320105", remote="310115", catalogue=CATALOGUE)
    s.hold(PDF)
    return s


def check(at: float) -> Any:
    return lambda token: verify_delegation(token, KEYS, now=at)


def send(s: Session, side: Side, message: dict[str, Any], *, at: float = NOW,
         clerk: str | None = None) -> Outcome:
    clerk = clerk or ("wang.li" if side is ORG else "zhao.min")
    name = "王丽" if side is ORG else "赵敏"
    return s.receive(side, clerk, name, message, at=at, verify_delegation=check(at))


def delegate(s: Session, *, at: float = NOW, ttl: int = 3600, cid: str = "d1",
             **kw: Any) -> Outcome:
    key = kw.pop("key", ORIGIN_KEY)
    args = {"remote": "310115", "session": SES, "case": CAS, "citizen": ZHANG} | kw
    token = sign_delegation(key, now=at, ttl=ttl, **args)
    return send(s, ORG, {"type": "delegate", "cid": cid, "token": token}, at=at)


def form(field: str, value: str, base: int, cid: str) -> dict[str, Any]:
    return {"type": "form", "cid": cid, "field": field, "value": value, "base": base}


def only_event(outcome: Outcome) -> dict[str, Any]:
    assert not outcome.refusals and not outcome.signals and len(outcome.events) == 1
    return outcome.events[0]


def only_refusal(outcome: Outcome) -> dict[str, Any]:
    assert not outcome.events and not outcome.signals and len(outcome.refusals) == 1
    return outcome.refusals[0]


def test_chat_is_sequenced_and_chained() -> None:
    s = session()
    first = only_event(send(s, ORG, {"type": "chat", "cid": "c1", "text": "您好，请出示身份证"}))
    second = only_event(send(s, REM, {"type": "chat", "cid": "c1", "text": "收到"}, at=NOW + 2.7))
    assert first == {"seq": 1, "at": int(NOW), "side": "origin", "clerk": "wang.li",
                     "name": "王丽", "cid": "c1", "type": "chat", "text": "您好，请出示身份证"}
    assert (second["seq"], second["at"], second["side"], second["clerk"]) == (
        2, int(NOW) + 2, "remote", "zhao.min")
    assert s.transcript.events == (encode(first), encode(second))
    assert verify_chain(SES, s.transcript.events) == (2, s.transcript.head)
    assert s.clerks == {(ORG, "wang.li"): "王丽", (REM, "zhao.min"): "赵敏"}


def test_time_never_goes_back() -> None:
    s = session()
    send(s, ORG, {"type": "chat", "cid": "c1", "text": "a"}, at=NOW + 10)
    late = only_event(send(s, ORG, {"type": "chat", "cid": "c2", "text": "b"}, at=NOW))
    assert late["at"] == int(NOW) + 10


# ---- every refusal reason ------------------------------------------------------------

BIG = "x" * 16 * 1024
MALFORMED: list[Any] = [
    "chat", ["chat"], {}, {"type": 1}, {"type": "hello", "token": "t", "after": 0},
    {"type": "ack", "seq": 1}, {"type": "chat", "text": "no cid"},
    {"type": "chat", "cid": "a b", "text": "x"}, {"type": "chat", "cid": "x" * 65, "text": "x"},
    {"type": "chat", "cid": "c", "text": "x", "extra": 1},
    {"type": "chat", "cid": "c", "text": ""}, {"type": "chat", "cid": "c", "text": 5},
    {"type": "chat", "cid": "c", "text": "a\x00b"}, {"type": "chat", "cid": "c", "text": "\ud800"},
    {"type": "form", "cid": "c", "field": "", "value": "v", "base": 0},
    {"type": "form", "cid": "c", "field": "a\nb", "value": "v", "base": 0},
    {"type": "form", "cid": "c", "field": "f", "value": None, "base": 0},
    {"type": "form", "cid": "c", "field": "f", "value": "v", "base": -1},
    {"type": "form", "cid": "c", "field": "f", "value": "v", "base": "0"},
    {"type": "form", "cid": "c", "field": "f", "value": "v", "base": True},
    {"type": "form", "cid": "c", "field": "f", "value": "v"},
    {"type": "material", "cid": "c", "sha256": PDF.upper(), "name": "a.pdf", "size": 1,
     "media_type": "application/pdf"},
    {"type": "material", "cid": "c", "sha256": PDF, "name": "a.pdf", "size": 0,
     "media_type": "application/pdf"},
    {"type": "material", "cid": "c", "sha256": PDF, "name": "a.pdf", "size": 1,
     "media_type": "pdf"},
    {"type": "identity", "cid": "c", "action": "maybe"},
    {"type": "identity", "cid": "c", "action": "result"},
    {"type": "identity", "cid": "c", "action": "request", "result": "match"},
    {"type": "identity", "cid": "c", "action": "result", "result": "perhaps"},
    {"type": "signature", "cid": "c", "action": "result"},
    {"type": "signature", "cid": "c", "action": "request", "sha256": PNG},
    {"type": "guidance", "cid": "c", "item": ""}, {"type": "guidance", "cid": "c", "item": "a b"},
    {"type": "delegate", "cid": "c", "token": ""},
    {"type": "rtc", "kind": "hangup", "data": ""}, {"type": "rtc", "kind": "offer", "data": 5},
    {"type": "rtc", "cid": "c", "kind": "offer", "data": ""},
    {"type": "close"}, {"type": "close", "cid": ""},
]


@pytest.mark.parametrize("message", MALFORMED)
def test_malformed(message: Any) -> None:
    s = session()
    got = only_refusal(send(s, ORG, message))
    assert got["reason"] == "MALFORMED" and got["type"] == "refused"
    assert got.get("cid") in (None, "c") and CJK.search(got["message"])
    assert s.seq == 0


@pytest.mark.parametrize("message", [
    {"type": "chat", "cid": "c", "text": "字" * 2001},
    {"type": "form", "cid": "c", "field": "f" * 65, "value": "", "base": 0},
    {"type": "form", "cid": "c", "field": "f", "value": "v" * 4097, "base": 0},
    {"type": "form", "cid": "c", "field": "f", "value": "v", "base": 2**60},
    {"type": "material", "cid": "c", "sha256": PDF, "name": "a.pdf", "size": 10 * 2**20 + 1,
     "media_type": "application/pdf"},
    {"type": "material", "cid": "c", "sha256": PDF, "name": "a" * 256, "size": 1,
     "media_type": "application/pdf"},
    {"type": "identity", "cid": "c", "action": "request", "note": "n" * 2001},
    {"type": "delegate", "cid": "c", "token": "t" * 8193},
    {"type": "rtc", "kind": "offer", "data": BIG},
    {"type": "rtc", "kind": "candidate", "data": {"candidate": BIG}},
])
def test_too_large(message: dict[str, Any]) -> None:
    s = session()
    got = only_refusal(send(s, ORG, message))
    assert got["reason"] == "TOO_LARGE" and s.seq == 0


def test_limits_are_inclusive() -> None:
    s = session()
    for message in ({"type": "chat", "cid": "c1", "text": "字" * 2000},
                    form("f" * 64, "v" * 4096, 0, "c2"),
                    {"type": "material", "cid": "c3", "sha256": PDF, "name": "a" * 255,
                     "size": 10 * 2**20, "media_type": "application/pdf"}):
        only_event(send(s, ORG, message))
    got = send(s, ORG, {"type": "rtc", "kind": "offer", "data": "x" * (16 * 1024 - 2)})
    assert got.signals and not got.refusals


def test_conflict_goes_to_its_author_only_with_the_current_value() -> None:
    s = session()
    delegate(s)
    won = only_event(send(s, ORG, form("name", "张三", 0, "o1")))
    got = only_refusal(send(s, REM, form("name", "张叁", 0, "r1")))
    assert (won["field"], won["value"], won["version"]) == ("name", "张三", 1)
    assert got == {"type": "refused", "cid": "r1", "reason": "CONFLICT",
                   "message": TEXTS[Reason.CONFLICT], "field": "name", "value": "张三",
                   "version": 1}
    assert s.form == {"name": ("张三", 1)} and s.seq == 2
    # the loser edits on top of the winner's version
    assert only_event(send(s, REM, form("name", "张叁", 1, "r2")))["version"] == 2
    assert only_refusal(send(s, ORG, form("name", "x", 1, "o2")))["version"] == 2
    assert only_refusal(send(s, ORG, form("new", "x", 1, "o3")))["value"] == ""


def test_no_delegation_is_seen_by_both_sides() -> None:
    s = session()
    out = send(s, REM, form("name", "张三", 0, "r1"))
    assert [r["reason"] for r in out.refusals] == ["NO_DELEGATION"]
    assert out.refusals[0]["cid"] == "r1"
    (event,) = out.events  # sequenced: the origin clerk sees why, and asks the citizen
    assert (event["type"], event["reason"], event["field"], event["side"], event["cid"]) == (
        "refused", "NO_DELEGATION", "name", "remote", "r1")
    assert "张三" not in str(event) and s.form == {}


def test_remote_form_under_delegation_and_after_its_exp() -> None:
    s = session()
    assert send(s, REM, form("name", "张三", 0, "r1")).refusals
    d = only_event(delegate(s, ttl=600))
    assert d["type"] == "delegate" and d["exp"] == int(NOW) + 600 and "token" not in d
    assert s.delegation is not None and s.delegation.citizen == ZHANG
    assert s.delegations and s.delegations[0][0] == d["seq"]
    ok = only_event(send(s, REM, form("name", "张三", 0, "r2"), at=NOW + 599))
    assert ok["version"] == 1
    out = send(s, REM, form("name", "李四", 1, "r3"), at=NOW + 600)
    assert [r["reason"] for r in out.refusals] == ["NO_DELEGATION"]
    assert s.form == {"name": ("张三", 1)}
    # the origin side needs none: the citizen is at its window
    assert only_event(send(s, ORG, form("name", "李四", 1, "o1"), at=NOW + 700))["version"] == 2


@pytest.mark.parametrize(("kw", "text"), [
    ({"key": REMOTE_KEY}, "不是本会话"),  # genuine, but by the remote platform
    ({"remote": "330106"}, "不是本会话"),
    ({"session": "01JDZ8Q4Y6W3V2T1S0R9P8N7M8"}, "不是本会话"),
    ({"case": ""}, "不是本会话"),
])
def test_delegation_for_someone_else_is_token(kw: dict[str, Any], text: str) -> None:
    s = session()
    got = only_refusal(delegate(s, **kw))
    assert got["reason"] == "TOKEN" and text in got["message"] and ZHANG not in str(got)
    assert s.delegation_exp == 0 and s.seq == 0


def test_forged_or_expired_delegation_is_token() -> None:
    s = session()
    token = sign_delegation(ORIGIN_KEY, remote="310115", session=SES, case=CAS,
                            citizen=ZHANG, now=NOW, ttl=60)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert only_refusal(send(s, ORG, {"type": "delegate", "cid": "d1", "token": forged}))[
        "reason"] == "TOKEN"
    late = send(s, ORG, {"type": "delegate", "cid": "d2", "token": token}, at=NOW + 200)
    assert only_refusal(late)["reason"] == "TOKEN"

    def lenient(_: str) -> Delegation:  # a verifier with a clock of its own
        return verify_delegation(token, KEYS, now=NOW)
    got = s.receive(ORG, "wang.li", "王丽", {"type": "delegate", "cid": "d3", "token": token},
                    at=NOW + 200, verify_delegation=lenient)
    assert only_refusal(got)["message"] == "授权书不在有效期内"

    def broken(_: str) -> Delegation:
        raise Unauthenticated("no")
    got = s.receive(ORG, "wang.li", "王丽", {"type": "delegate", "cid": "d4", "token": token},
                    at=NOW, verify_delegation=broken)
    assert only_refusal(got)["reason"] == "TOKEN" and s.seq == 0


@pytest.mark.parametrize("message", [
    {"type": "delegate", "cid": "c", "token": "x.y.z"},
    {"type": "signature", "cid": "c", "action": "result", "sha256": PNG},
])
def test_origin_only_actions_are_forbidden_to_the_remote(message: dict[str, Any]) -> None:
    s = session()
    s.hold(PNG)
    got = only_refusal(send(s, REM, message))
    assert got == {"type": "refused", "cid": "c", "reason": "FORBIDDEN",
                   "message": TEXTS[Reason.FORBIDDEN]}


def test_unknown_material_and_item() -> None:
    s = session()
    material = {"type": "material", "cid": "m1", "sha256": PNG, "name": "签名.png",
                "size": 100, "media_type": "image/png"}
    assert only_refusal(send(s, REM, material))["reason"] == "UNKNOWN_MATERIAL"
    signed = {"type": "signature", "cid": "s1", "action": "result", "sha256": PNG}
    assert only_refusal(send(s, ORG, signed))["reason"] == "UNKNOWN_MATERIAL"
    s.hold(PNG)
    assert only_event(send(s, REM, material))["file_name"] == "签名.png"
    assert only_event(send(s, ORG, signed))["sha256"] == PNG
    got = only_refusal(send(s, REM, {"type": "guidance", "cid": "g1", "item": "bdc-zz"}))
    assert got["reason"] == "UNKNOWN_ITEM" and CJK.search(got["message"])


def test_closed_refuses_everything_after() -> None:
    s = session()
    send(s, ORG, {"type": "chat", "cid": "c1", "text": "再见"})
    closed = only_event(send(s, REM, {"type": "close", "cid": "x1"}))
    assert closed["type"] == "closed" and closed["n"] == 1 and s.closed
    assert s.state is State.CLOSED and closed["seq"] == 2
    for side, message in [(ORG, {"type": "chat", "cid": "c2", "text": "?"}),
                          (REM, {"type": "close", "cid": "x2"}),
                          (ORG, form("name", "x", 0, "f1")),
                          (REM, {"type": "rtc", "kind": "bye", "data": ""})]:
        assert only_refusal(send(s, side, message))["reason"] == "CLOSED"
    assert s.joined(REM, "zhao.min", "赵敏", NOW) == Outcome()
    assert s.seq == 2 and s.transcript.n == 2
    assert send(s, REM, {"type": "close", "cid": "x1"}) == Outcome()  # a resent close: applied


def test_rate_and_token_refusals_for_the_hub() -> None:
    got = refusal(Reason.RATE, "c1")
    assert got == {"type": "refused", "cid": "c1", "reason": "RATE",
                   "message": "发送过于频繁，请稍后再试"}
    assert refusal(Reason.TOKEN) == {"type": "refused", "reason": "TOKEN",
                                     "message": TEXTS[Reason.TOKEN]}
    assert set(TEXTS) == set(Reason) and all(CJK.search(t) for t in TEXTS.values())


# ---- order, dedup, resume ------------------------------------------------------------

def test_resent_cid_is_applied_once() -> None:
    s = session()
    message = {"type": "chat", "cid": "c1", "text": "一次"}
    only_event(send(s, ORG, message))
    assert send(s, ORG, message) == Outcome()
    assert send(s, ORG, message | {"text": "changed on resend"}) == Outcome()
    # the same cid from another clerk or the other side is another message
    only_event(send(s, ORG, message, clerk="li.na"))
    only_event(send(s, REM, message))
    assert s.seq == 3


def test_a_refused_cid_is_judged_again() -> None:
    s = session()
    send(s, ORG, form("name", "a", 0, "o1"))
    assert only_refusal(send(s, ORG, form("name", "b", 0, "o2")))["reason"] == "CONFLICT"
    assert only_refusal(send(s, ORG, form("name", "b", 0, "o2")))["reason"] == "CONFLICT"
    # a sequenced refusal (NO_DELEGATION) is that message's outcome: a resend gets nothing
    assert send(s, REM, form("name", "b", 1, "r1")).events
    assert send(s, REM, form("name", "b", 1, "r1")) == Outcome()


def test_events_after_for_resume() -> None:
    s = session()
    sent = [only_event(send(s, ORG, {"type": "chat", "cid": f"c{i}", "text": str(i)}))
            for i in range(1, 6)]
    assert s.events_after(0) == sent
    assert s.events_after(3) == sent[3:]
    assert s.events_after(5) == [] and s.events_after(99) == []
    assert s.events_after(-1) == sent


def test_joined_and_left_per_clerk_not_per_connection() -> None:
    s = session()
    first = only_event(s.joined(ORG, "wang.li", "王丽", NOW))
    assert (first["type"], first["cid"], first["name"]) == ("joined", "", "王丽")
    assert s.joined(ORG, "wang.li", "王丽", NOW + 1) == Outcome()  # a second tab
    assert s.welcome(REM, "zhao.min")["peer"] == "online"
    assert s.left(ORG, "wang.li", "王丽", NOW + 2) == Outcome()
    assert only_event(s.left(ORG, "wang.li", "王丽", NOW + 3))["type"] == "left"
    assert s.left(ORG, "wang.li", "王丽", NOW + 4) == Outcome()  # never joined: nothing
    assert s.welcome(REM, "zhao.min")["peer"] == "offline" and s.seq == 2


def test_welcome() -> None:
    s = session()
    s.joined(REM, "zhao.min", "赵敏", NOW)
    send(s, ORG, form("name", "张三", 0, "o1"))
    assert s.welcome(ORG, "wang.li") == {
        "type": "welcome", "session": SES, "case": CAS, "side": "origin", "clerk": "wang.li",
        "seq": 2, "form": {"name": {"value": "张三", "version": 1}}, "peer": "online",
        "closed": False}


def test_guidance_identity_and_signature_events() -> None:
    s = session()
    g = only_event(send(s, REM, {"type": "guidance", "cid": "g1", "item": "bdc-dy"}))
    assert (g["item"], g["materials"], g["hints"]) == (
        "bdc-dy", ["身份证", "不动产权证书"], {"name": "申请人姓名，与身份证一致"})
    ask = only_event(send(s, REM, {"type": "identity", "cid": "i1", "action": "request"}))
    assert (ask["action"], ask["note"], "result" in ask) == ("request", "", False)
    res = only_event(send(s, ORG, {"type": "identity", "cid": "i2", "action": "result",
                                 "result": "match", "note": "人证一致"}))
    assert (res["action"], res["result"], res["note"]) == ("result", "match", "人证一致")
    sig = only_event(send(s, REM, {"type": "signature", "cid": "s1", "action": "request"}))
    assert (sig["type"], sig["action"], "sha256" in sig) == ("signature", "request", False)


def test_rtc_is_passed_on_not_sequenced() -> None:
    s = session()
    out = send(s, REM, {"type": "rtc", "kind": "candidate",
                      "data": {"candidate": "candidate:1 1 udp 1 10.0.0.1 9 typ host"}})
    assert out.signals == ({"type": "rtc", "side": "remote", "clerk": "zhao.min",
                            "kind": "candidate",
                            "data": {"candidate": "candidate:1 1 udp 1 10.0.0.1 9 typ host"}},)
    assert not out.events and s.seq == 0 and s.transcript.n == 0


def test_close_carries_the_head_of_everything_before() -> None:
    s = session()
    for i in range(3):
        send(s, ORG, {"type": "chat", "cid": f"c{i}", "text": "x"})
    head = s.transcript.head
    closed = only_event(send(s, ORG, {"type": "close", "cid": "end"}))
    assert (closed["n"], closed["head"]) == (3, b64url(head))
    assert verify_chain(SES, s.transcript.events) == (4, s.transcript.head)


def test_the_table_is_the_protocol() -> None:
    assert all(state is State.OPEN for state, _, _ in TRANSITIONS)  # closed: nothing
    remote = {verb for state, side, verb in TRANSITIONS if side is REM}
    origin = {verb for state, side, verb in TRANSITIONS if side is ORG}
    assert origin - remote == {"delegate", "signature.result"}
    assert remote <= origin
    assert check_message({"type": "identity", "cid": "c", "action": "result",
                          "result": "match"}) == ("identity.result", None)


# ---- the mirror at the remote gateway ------------------------------------------------

MESSAGES = st.one_of(
    st.builds(lambda t: {"type": "chat", "text": t}, st.text(min_size=1, max_size=20)),
    st.builds(lambda f, v, b: {"type": "form", "field": f, "value": v, "base": b},
              st.sampled_from(["name", "phone"]), st.text(max_size=10), st.integers(0, 3)),
    st.just({"type": "guidance", "item": "bdc-dy"}),
    st.just({"type": "close"}),
    st.just({"type": "delegate"}),
    st.just({"type": "joined"}), st.just({"type": "left"}),
)


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from(Side), st.integers(0, 1), MESSAGES,
                                st.integers(0, 900)), max_size=30))
def test_a_mirror_replaying_the_events_holds_the_same_state(
        steps: list[tuple[Side, int, dict[str, Any], int]]) -> None:
    s = session()
    at = NOW
    for i, (side, clerk, message, dt) in enumerate(steps):
        at += dt
        who = f"clerk{clerk}"
        if message["type"] in ("joined", "left"):
            getattr(s, message["type"])(side, who, "某某", at)
            continue
        if message["type"] == "delegate":
            delegate(s, at=at, ttl=600, cid=f"m{i}")
            continue
        s.receive(side, who, "某某", message | {"cid": f"m{i}"}, at=at,
                  verify_delegation=check(at))
    mirror = Session(SES, case=CAS, origin="320105", remote="310115", catalogue={})
    for data in s.transcript.events:
        mirror.replay(data)
    assert mirror.log == s.log and mirror.form == s.form and mirror.state is s.state
    assert mirror.transcript.head == s.transcript.head
    assert mirror.delegation_exp == s.delegation_exp and mirror.online == s.online
    assert mirror.welcome(REM, "clerk0") == s.welcome(REM, "clerk0")
    versions = [e["version"] for e in s.log if e["type"] == "form"]
    assert len(versions) == len({(e["field"], e["version"]) for e in s.log
                                 if e["type"] == "form"})  # no version given twice


def _mirror() -> Session:
    return Session(SES, case=CAS, origin="320105", remote="310115", catalogue={})


@pytest.mark.parametrize("event", [
    {"side": "both"}, {"side": ["origin"]}, {"clerk": 7}, {"at": 1.5}, {"at": True},
    {"type": ["form"]}, {"type": "form", "field": "f", "value": "v"},
    {"type": "form", "field": "f", "value": 1, "version": 1},
    {"type": "delegate", "exp": "1790000600"}, {"name": None},
])
def test_a_mirror_refuses_a_malformed_event(event: dict[str, Any]) -> None:
    base = {"seq": 1, "at": int(NOW), "side": "origin", "clerk": "wang.li", "name": "王丽",
            "cid": "c1", "type": "chat", "text": "x"}
    mirror = _mirror()
    with pytest.raises(BrokenChain) as info:
        mirror.replay(canonical(base | event))
    assert info.value.seq == 1 and mirror.seq == 0 and mirror.transcript.n == 0


def test_a_mirror_refuses_gaps_and_edits() -> None:
    s = session()
    for i in range(3):
        send(s, ORG, {"type": "chat", "cid": f"c{i}", "text": "x"})
    send(s, ORG, {"type": "close", "cid": "end"})
    mirror = _mirror()
    mirror.replay(s.transcript.events[0])
    with pytest.raises(BrokenChain, match="event 2 is missing or out of order"):
        mirror.replay(s.transcript.events[2])
    mirror.replay(s.transcript.events[1])
    edited = canonical(json.loads(s.transcript.events[2]) | {"text": "y"})
    mirror.replay(edited)  # only the head can tell ...
    with pytest.raises(BrokenChain, match="closed event 4 names another head"):
        mirror.replay(s.transcript.events[3])  # ... and the closed event names it
