"""The transcript's hash chain and its signed heads (docs/sessions.md §7)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.certificates.documents import canonical
from gateway.errors import InvalidArgument, Unauthenticated
from gateway.sessions.transcript import (
    TYP,
    BrokenChain,
    Transcript,
    genesis,
    sign_head,
    verify_chain,
    verify_head,
    verify_transcript,
)
from gateway.signing import b64url, b64url_decode, compact
from tests.certkeys import lookup, party

GW_A, GW_A_PUB = party("320000-gw#k1")
GW_B, GW_B_PUB = party("310000-gw#k1")
KEYS = lookup(GW_A_PUB, GW_B_PUB)
NOW = 1_790_000_000.0
SES = "01JDZ8Q4Y6W3V2T1S0R9P8N7M6"
CAS = "01JDZ8Q4Y6W3V2T1S0R9P8N7M7"


def event(seq: int, **members: Any) -> dict[str, Any]:
    return {"seq": seq, "at": int(NOW) + seq, "side": "origin", "clerk": "wang.li",
            "name": "王丽", "cid": f"c{seq}", "type": "chat", "text": f"第{seq}句"} | members


def build(count: int = 5, *, close: bool = True) -> Transcript:
    t = Transcript(SES)
    for seq in range(1, count + 1):
        t.append(event(seq))
    if close:
        t.append(event(count + 1, type="closed", n=count, head=b64url(t.head), cid="end"))
    return t


def heads(t: Transcript) -> list[str]:
    return [sign_head(key, gateway=gw, session=SES, case=CAS, n=t.n, head=t.head, now=NOW)
            for key, gw in ((GW_A, "320000-gw"), (GW_B, "310000-gw"))]


def test_chain_is_the_documented_formula() -> None:
    assert genesis(SES) == hashlib.sha256(b"tongban-session:" + SES.encode()).digest()
    t = Transcript(SES)
    data = t.append(event(1))
    assert data == json.dumps(event(1), sort_keys=True, separators=(",", ":"),
                              ensure_ascii=False).encode("utf-8")
    assert data == canonical(event(1)) and "第1句".encode() in data
    assert t.n == 1 and t.head == hashlib.sha256(genesis(SES) + data).digest()
    assert t.events == (data,) and t.hashes == (t.head,)


def test_a_clean_transcript_verifies() -> None:
    t = build()
    assert verify_chain(SES, t.events) == (t.n, t.head) == (6, t.head)
    assert verify_chain(SES, t.events, hashes=t.hashes) == (6, t.head)
    signed = verify_transcript(SES, CAS, t.events, heads(t), KEYS, hashes=t.hashes)
    assert [c.iss for c in signed] == ["320000-gw", "310000-gw"]
    assert all((c.n, c.head, c.session, c.case) == (6, t.head, SES, CAS) for c in signed)


def test_the_chain_is_bound_to_its_session() -> None:
    other = "01JDZ8Q4Y6W3V2T1S0R9P8N7M8"
    t = build(close=False)
    assert verify_chain(other, t.events)[1] != t.head  # the same events, another chain
    with pytest.raises(BrokenChain, match="closed event 6 names another head"):
        verify_chain(other, build().events)


def _edited(t: Transcript, seq: int) -> list[bytes]:
    events = list(t.events)
    events[seq - 1] = canonical(json.loads(events[seq - 1]) | {"text": "改过的"})
    return events


def test_edit_names_the_edited_event_with_hashes() -> None:
    t = build()
    with pytest.raises(BrokenChain) as info:
        verify_chain(SES, _edited(t, 3), hashes=t.hashes)
    assert info.value.seq == 3 and "event 3" in info.value.message


def test_edit_before_close_breaks_the_closed_event() -> None:
    t = build()
    with pytest.raises(BrokenChain) as info:
        verify_chain(SES, _edited(t, 2))
    assert info.value.seq == 6  # the closed event names the head of events 1..5


def test_edit_of_an_open_transcript_shows_against_the_signed_head() -> None:
    t = build(close=False)
    events = _edited(t, 4)
    assert verify_chain(SES, events)[0] == 5  # well-formed: only the head can tell
    with pytest.raises(BrokenChain, match="do not lead to the head 320000-gw signed"):
        verify_transcript(SES, CAS, events, heads(t), KEYS)


@pytest.mark.parametrize("seq", [1, 3, 6])
def test_deletion_names_the_gap(seq: int) -> None:
    t = build()
    events = list(t.events)
    del events[seq - 1]
    if seq == 6:  # the last one gone: a truncation, seen against the signed count
        with pytest.raises(BrokenChain) as info:
            verify_transcript(SES, CAS, events, heads(t), KEYS)
        assert info.value.seq == 6 and "signed 6 events, the transcript has 5" in \
            info.value.message
        return
    with pytest.raises(BrokenChain) as info:
        verify_chain(SES, events)
    assert info.value.seq == seq and f"event {seq} is missing or out of order" in \
        info.value.message


def test_reorder_names_the_first_moved() -> None:
    t = build()
    events = list(t.events)
    events[1], events[3] = events[3], events[1]
    with pytest.raises(BrokenChain) as info:
        verify_chain(SES, events)
    assert info.value.seq == 2


def test_truncation_and_extension_against_the_signed_count() -> None:
    t = build()
    signed = heads(t)
    for cut in (0, 1, 5):
        with pytest.raises(BrokenChain, match="signed 6 events"):
            verify_transcript(SES, CAS, t.events[:cut], signed, KEYS)
    longer = build()
    longer.append(event(7))
    with pytest.raises(BrokenChain, match="signed 6 events, the transcript has 7") as info:
        verify_transcript(SES, CAS, longer.events, signed, KEYS)
    assert info.value.seq == 7


@pytest.mark.parametrize("data", [
    b"", b"not json", b"[1]", b'{"seq":1}  ', b'{"seq": 1}', b"\xff",
    json.dumps(event(1), sort_keys=True).encode(),  # spaces: not canonical
    canonical(event(1))[:-1],
    canonical(event(1, at=1.5)).replace(b'"at":1.5', b'"at":1.50'),
    canonical(event(1) | {"seq": True}), canonical(event(1) | {"seq": "1"}), canonical(event(2)),
    canonical(event(1, type="closed", n=1, head=b64url(bytes(32)))),
    b"[" * 5000 + b"]" * 5000,
])
def test_a_bad_first_event_is_named(data: bytes) -> None:
    with pytest.raises(BrokenChain) as info:
        verify_chain(SES, [data])
    assert info.value.seq == 1


def test_hash_list_must_match_the_events() -> None:
    t = build()
    with pytest.raises(BrokenChain, match="6 events but 5 hashes"):
        verify_chain(SES, t.events, hashes=t.hashes[:-1])


def test_append_refuses_what_is_not_the_next_portable_event() -> None:
    t = Transcript(SES)
    with pytest.raises(BrokenChain):
        t.append(event(2))
    for bad in (event(1, at=NOW), event(1, text="\ud800"), event(1, x=object()),
                event(1, x={1: "a"})):
        with pytest.raises(InvalidArgument):
            t.append(bad)
    assert t.n == 0 and t.head == genesis(SES)


@settings(max_examples=40, deadline=None)
@given(texts=st.lists(st.text(max_size=40), min_size=1, max_size=12), data=st.data())
def test_any_single_change_is_caught(texts: list[str], data: st.DataObject) -> None:
    t = Transcript(SES)
    for seq, text in enumerate(texts, 1):
        t.append(event(seq, text=text))
    events = list(t.events)
    seq = data.draw(st.integers(1, len(events)))
    changed = data.draw(st.text(max_size=40).filter(lambda x: x != texts[seq - 1]))
    events[seq - 1] = canonical(json.loads(events[seq - 1]) | {"text": changed})
    with pytest.raises(BrokenChain) as info:
        verify_chain(SES, events, hashes=t.hashes)
    assert info.value.seq == seq
    with pytest.raises(BrokenChain):
        verify_transcript(SES, CAS, events, heads(t), KEYS)


def test_head_signature_round_trip() -> None:
    t = build()
    token = heads(t)[0]
    got = verify_head(token, KEYS)
    assert (got.iss, got.session, got.case, got.n, got.head, got.iat, got.kid) == (
        "320000-gw", SES, CAS, 6, t.head, int(NOW), "320000-gw#k1")
    payload = json.loads(b64url_decode(token.split(".")[1]))
    assert payload == {"iss": "320000-gw", "iat": int(NOW), "ses": SES, "cas": CAS, "n": 6,
                       "head": b64url(t.head)}
    # checked years later: no time window, only the key's validity at iat
    assert verify_head(token, KEYS).n == 6


def test_forged_head_signatures() -> None:
    t = build()
    token = heads(t)[0]
    head, body, sig = token.split(".")
    payload = json.loads(b64url_decode(body))
    other = b64url(canonical(payload | {"n": 5}))
    flipped = bytearray(b64url_decode(sig))
    flipped[3] ^= 4
    stranger, _ = party("320000-gw#k2")
    for bad in (f"{head}.{other}.{sig}", f"{head}.{body}.{b64url(bytes(flipped))}", "",
                "a.b.c", sign_head(stranger, gateway="320000-gw", session=SES, case=CAS,
                                   n=6, head=t.head, now=NOW),
                compact(GW_B, TYP, b64url_decode(body))):  # B signing as A
        with pytest.raises(Unauthenticated):
            verify_head(bad, KEYS)
    with pytest.raises(Unauthenticated):
        verify_transcript(SES, CAS, t.events, [heads(t)[0], f"{head}.{other}.{sig}"], KEYS)


@pytest.mark.parametrize("change", [
    {"n": 0}, {"n": "6"}, {"n": True}, {"head": "abc"}, {"head": b64url(bytes(31))},
    {"head": 5}, {"ses": "x"}, {"cas": "x"}, {"cas": None}, {"iat": "1"}, {"extra": 1},
])
def test_bad_head_members(change: dict[str, object]) -> None:
    claims = {"iss": "320000-gw", "iat": int(NOW), "ses": SES, "cas": CAS, "n": 6,
              "head": b64url(bytes(32))} | change
    with pytest.raises(Unauthenticated):
        verify_head(compact(GW_A, TYP, canonical(claims)), KEYS)


def test_head_of_another_session_or_case() -> None:
    t = build()
    for ses, cas in ((SES, ""), ("01JDZ8Q4Y6W3V2T1S0R9P8N7M8", CAS)):
        token = sign_head(GW_A, gateway="320000-gw", session=ses, case=cas, n=t.n,
                          head=t.head, now=NOW)
        with pytest.raises(BrokenChain, match="another session or case"):
            verify_transcript(SES, CAS, t.events, [token], KEYS)


def test_head_key_window() -> None:
    t = datetime.fromtimestamp(NOW, UTC)
    key, pub = party("320000-gw#k9", not_after=t - timedelta(days=1))
    token = sign_head(key, gateway="320000-gw", session=SES, case=CAS, n=1, head=bytes(32),
                      now=NOW)
    with pytest.raises(Unauthenticated, match="not valid at"):
        verify_head(token, lookup(pub))


@pytest.mark.parametrize(("kw", "field"), [
    ({"gateway": "310000-gw"}, "gateway"), ({"session": "x"}, "session"),
    ({"case": "x"}, "session"), ({"n": 0}, "head"), ({"head": b"x"}, "head"),
])
def test_sign_head_refuses_bad_arguments(kw: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"gateway": "320000-gw", "session": SES, "case": CAS, "n": 1,
                            "head": bytes(32), "now": NOW} | kw
    with pytest.raises(InvalidArgument) as info:
        sign_head(GW_A, **args)
    assert info.value.field == field
