"""Attacks on 屏对屏 sessions (docs/sessions.md), each over real sockets: a hostile clerk or
browser on the WebSocket and the materials endpoints, a hostile peer gateway on either
end of the relay (a grpc.aio client signing with a demo gateway key, or a fake remote
gateway the real origin dials), and a careless operator who edits a stored transcript
or reads the logs and the audit chain.

Every attack asserts the precise refusal and that the other participants are not
disturbed: their session goes on, with the same events in the same order on both sides,
and nothing of the attack reaches them. An attack that succeeds is kept, marked
``xfail(strict=True)`` with the bug it shows, so the suite stays green until the fix
lands and then says so. The fixture ``nothing_leaks`` (autouse) checks after every test
that no join token, delegation token or citizen id number made here shows in a log
record or an audit row of any gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio

from adapters.issuer_seed import LI_SI, ZHANG_SAN
from gateway.certificates import documents
from gateway.certificates.documents import canonical
from gateway.cli import main as cli
from gateway.ids import new_ulid
from gateway.pb.tongban.v1 import gateway_pb2 as gw
from gateway.pb.tongban.v1 import session_pb2 as spb
from gateway.sessions import hub as hub_module
from gateway.sessions import relay as relay_module
from gateway.sessions.hub import Live
from gateway.sessions.tokens import JOIN_TYP, sign_delegation, sign_join
from gateway.sessions.transcript import Transcript, sign_head, verify_head
from gateway.signing import HEADER, SigningKey, b64url, compact, load_private_key, sign
from gateway.store.offline import read_audit, read_transcript
from tests.federation import ROOT, Federation, federation, until

aio = pytest.mark.asyncio
ORIGIN, REMOTE = "320681", "310000"  # 启东 at 320000-gw, 上海 at 310000-gw
OGW, RGW = "320000-gw", "310000-gw"
RELAY = "/tongban.v1.Gateway/RelaySession"
PD = grpc.StatusCode.PERMISSION_DENIED
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
CITIZENS = (LI_SI.number, ZHANG_SAN.number)
QUIET = {"welcome", "event", "presence"}  # all an undisturbed clerk receives


def bug(reason: str) -> pytest.MarkDecorator:
    """An attack that succeeds today: strict, and only for a failed check (a test that
    breaks for another reason, a NameError say, still fails)."""
    return pytest.mark.xfail(strict=True, raises=(AssertionError, TimeoutError),
                             reason=f"BUG: {reason}")


# -- tokens, and the secrets no log or audit row may show -----------------------------------
SECRETS: set[str] = set()


def secret(token: str) -> str:
    """Register a token (its signature, and the payload's middle, enough to spot a
    truncated copy) as something no log line or audit row may contain."""
    parts = token.split(".")
    SECRETS.add(token)
    if len(parts) == 3:
        SECRETS.update(p for p in (parts[1][24:64], parts[2][:40]) if len(p) >= 24)
    return token


def key_of(party: str) -> SigningKey:
    """A demo key (platforms and gateways alike): demo-keys/ is public knowledge."""
    return load_private_key((ROOT / "demo-keys" / f"{party}.pem").read_bytes(),
                            kid=f"{party}#k1")


def join_token(partner: str, session: str, *, side: str, other: str, clerk: str = "c1",
               case: str = "", window: str = "", now: float | None = None,
               ttl: int = 28800) -> str:
    return secret(sign_join(key_of(partner), clerk=clerk, name=f"{partner}-{clerk}",
                            window=window or f"{partner}-w1", session=session, case=case,
                            side=side, other=other, now=time.time() if now is None else now,
                            ttl=ttl))


def grant(session: str, *, remote: str = REMOTE, case: str = "", by: str = ORIGIN,
          now: float | None = None, ttl: int = 3600, citizen: str = LI_SI.number) -> str:
    """The citizen's delegation (§3), by the origin platform unless said otherwise."""
    return secret(sign_delegation(key_of(by), remote=remote, session=session, case=case,
                                  citizen=citizen, now=time.time() if now is None else now,
                                  ttl=ttl))


def join_claims(partner: str, session: str, *, side: str, other: str) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": partner, "sub": "c1", "name": f"{partner}-c1", "win": f"{partner}-w1",
            "ses": session, "cas": "", "sid": side, "oth": other, "iat": now,
            "exp": now + 600}


@pytest.fixture(autouse=True)
def nothing_leaks(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> Iterator[None]:
    """After the test: no token made here and no citizen id in any log record (at DEBUG)
    or in any audit row of the gateways that ran under tmp_path."""
    caplog.set_level(logging.DEBUG)
    for noisy in ("aiosqlite", "asyncio", "grpc"):
        caplog.set_level(logging.INFO, logger=noisy)
    yield
    formatter = logging.Formatter("%(name)s %(message)s")
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
    texts = [formatter.format(r) for r in records]
    for db in tmp_path.rglob("gateway.sqlite3"):
        texts += [repr(entry) for _, entry, _, _ in read_audit(db)]
    needles = (*SECRETS, *CITIZENS)
    shown = {n[:16] for n in needles for t in texts if n in t}
    assert not shown, f"secrets in logs or audit rows: {sorted(shown)}"


# -- a browser, reduced to its WebSocket ---------------------------------------------------
class Page:
    """Sends messages, collects what comes back, remembers how the socket closed."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.got: list[dict[str, Any]] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                self.got.append(json.loads(msg.data))

    async def send(self, **message: Any) -> None:
        await self.ws.send_str(json.dumps(message, ensure_ascii=False))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.got if m.get("type") == kind]

    def events(self) -> list[dict[str, Any]]:
        return [m["event"] for m in self.of("event")]

    def refused(self) -> list[dict[str, Any]]:
        return self.of("refused")

    def texts(self) -> list[str]:
        return [e["text"] for e in self.events() if e["type"] == "chat"]

    async def until(self, check: Callable[[Page], object], within: float = 5.0) -> None:
        async def ok() -> bool:
            return bool(check(self))
        try:
            await until(ok, within=within)
        except TimeoutError:
            raise AssertionError(f"not reached in {within} s; got {self.got[-8:]}") from None

    async def closed(self, within: float = 5.0) -> int | None:
        await self.until(lambda p: p.ws.closed, within)
        return self.ws.close_code

    async def refusal(self, cid: str | None = None, *, within: float = 5.0
                      ) -> dict[str, Any]:
        """The first refusal received (for ``cid`` when given), taken out of ``got`` so
        that what remains is what an undisturbed clerk sees."""
        def match(m: dict[str, Any]) -> bool:
            return m.get("type") == "refused" and (cid is None or m.get("cid") == cid)
        await self.until(lambda p: any(match(m) for m in p.got), within)
        found = next(m for m in self.got if match(m))
        self.got.remove(found)
        return found


def http_of(fed: Federation, gateway: str) -> str:
    return fed.apps[gateway].config.me.http


@asynccontextmanager
async def page(fed: Federation, gateway: str, first: dict[str, Any] | None = None
               ) -> AsyncIterator[Page]:
    """A WebSocket to `gateway`'s /sessions/ws; ``first`` sent as its first message."""
    async with aiohttp.ClientSession() as client, \
            client.ws_connect(f"http://{http_of(fed, gateway)}/sessions/ws",
                              max_msg_size=0) as ws:
        browser = Page(ws)
        if first is not None:
            await browser.send(**first)
        try:
            yield browser
        finally:
            browser.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await browser.reader


def hello(token: Any, after: Any = 0) -> dict[str, Any]:
    return {"type": "hello", "token": token, "after": after}


def welcomed(p: Page) -> bool:
    return bool(p.of("welcome"))


@dataclass
class Pair:
    """Two honest clerks of one session: 启东's at 320000-gw (the sequencer) and 上海's
    at 310000-gw, the relay up between their gateways."""

    fed: Federation
    session: str
    a: Page
    b: Page
    a_token: str
    b_token: str
    turn: int = 0

    def live(self, gateway: str) -> Live:
        return self.fed.apps[gateway].sessions.sessions[self.session]

    async def goes_on(self) -> None:
        """Both clerks still talk, see the same events in the same order (seq 1, 2, …)
        and got nothing but welcome, events and presence."""
        self.turn += 1
        said = {f"甲{self.turn}", f"乙{self.turn}"}
        await self.a.send(type="chat", cid=f"a-on-{self.turn}", text=f"甲{self.turn}")
        await self.b.send(type="chat", cid=f"b-on-{self.turn}", text=f"乙{self.turn}")
        for p in (self.a, self.b):
            await p.until(lambda p: said <= set(p.texts()))
        await self.a.until(lambda p: len(p.events()) == len(self.b.events()))
        assert self.a.events() == self.b.events()
        assert [e["seq"] for e in self.a.events()] == list(range(1, len(self.a.events()) + 1))
        for p in (self.a, self.b):
            assert {m["type"] for m in p.got} <= QUIET, [m for m in p.got
                                                         if m["type"] not in QUIET]


@asynccontextmanager
async def pair(fed: Federation, *, case: str = "") -> AsyncIterator[Pair]:
    session = new_ulid()
    a_token = join_token(ORIGIN, session, side="origin", other=REMOTE, case=case)
    b_token = join_token(REMOTE, session, side="remote", other=ORIGIN, case=case)
    async with page(fed, OGW, hello(a_token)) as a, page(fed, RGW, hello(b_token)) as b:
        await a.until(welcomed)
        await b.until(welcomed)
        await a.send(type="chat", cid="a-hi", text="您好")
        await b.until(lambda p: p.texts() == ["您好"])
        yield Pair(fed, session, a, b, a_token, b_token)


@pytest_asyncio.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    """The two gateways of the sessions (320100-gw is not needed: it only shows up as a
    gateway that is not linked, by its public demo key)."""
    async with federation(tmp_path, gateways=(OGW, RGW)) as running:
        yield running


# == 1. a hostile clerk or browser on the WebSocket ========================================
@aio
async def test_a_socket_that_says_nothing_is_closed_4400(
        fed: Federation, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_module, "HELLO_S", 0.3)  # 10 s in production
    async with pair(fed) as pr, page(fed, OGW) as mute:
        assert await mute.closed() == 4400
        assert mute.got == []  # nothing of any session
        await pr.goes_on()


@aio
async def test_a_first_message_that_is_not_hello_is_refused_4400(fed: Federation) -> None:
    async with pair(fed) as pr:
        firsts: list[Callable[[Page], Any]] = [
            lambda p: p.send(type="chat", cid="x1", text="hi"),
            lambda p: p.send(type="HELLO", token=pr.a_token, after=0),
            lambda p: p.send(type="hello", after=0),  # no token
            lambda p: p.send(type="hello", token=["a", pr.a_token], after=0),
            lambda p: p.ws.send_str(json.dumps([hello(pr.a_token)])),
            lambda p: p.ws.send_str("hello " + pr.a_token),
            lambda p: p.ws.send_bytes(json.dumps(hello(pr.a_token)).encode()),
        ]
        for first in firsts:
            async with page(fed, OGW) as bad:
                await first(bad)
                assert await bad.closed() == 4400
                assert [(m["type"], m["reason"]) for m in bad.got] == [("refused", "MALFORMED")]
        await pr.goes_on()


def forged(token: str) -> str:
    head, payload, signature = token.split(".")
    return f"{head}.{payload}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"


@aio
async def test_join_tokens_that_are_not_genuine_current_joins_are_refused_4401(
        fed: Federation) -> None:
    async with pair(fed) as pr:
        claims = join_claims(ORIGIN, pr.session, side="origin", other=REMOTE)
        key = key_of(ORIGIN)
        tokens = {
            "forged signature": forged(pr.a_token),
            "expired": join_token(ORIGIN, pr.session, side="origin", other=REMOTE,
                                  now=time.time() - 7200, ttl=3600),
            "not yet": join_token(ORIGIN, pr.session, side="origin", other=REMOTE,
                                  now=time.time() + 3600),
            "a delegation": grant(pr.session),
            "a certificate document's typ": secret(compact(key, documents.TYP,
                                                           canonical(claims))),
            "a delegation's typ": secret(compact(key, "tongban-delegation+jwt",
                                                 canonical(claims))),
            "a transcript head's typ": secret(compact(key, "tongban-transcript+jwt",
                                                      canonical(claims))),
            "a call token's typ": secret(compact(key, "tongban+jwt", canonical(claims))),
            "a call token": secret(sign(key, iss=ORIGIN, aud=OGW, method=RELAY, body=b"",
                                        now=time.time())[0]),
            "signed by another platform": secret(compact(key_of("320000"), JOIN_TYP,
                                                         canonical(claims))),
            "a member too many": secret(compact(key, JOIN_TYP, canonical(
                claims | {"adm": True}))),
            "a 13 h life": secret(compact(key, JOIN_TYP, canonical(
                claims | {"exp": claims["iat"] + 13 * 3600}))),
            "empty": "",
            "garbage": "x" * 9000,
        }
        for what, token in tokens.items():
            async with page(fed, OGW, hello(token)) as bad:
                assert await bad.closed() == 4401, what
                assert [(m["type"], m["reason"]) for m in bad.got] == [("refused", "TOKEN")], \
                    (what, bad.got)
        await pr.goes_on()


@aio
async def test_joins_that_do_not_fit_the_session_are_refused_4403(fed: Federation) -> None:
    async with pair(fed) as pr:
        s = pr.session
        at_origin = {  # 320000-gw sequences the session 启东 → 上海, case ""
            "上海's clerk at 启东's gateway": join_token(REMOTE, s, side="remote", other=ORIGIN),
            "another case": join_token(ORIGIN, s, side="origin", other=REMOTE,
                                       case=new_ulid()),
            "another remote platform": join_token(ORIGIN, s, side="origin", other="310115"),
            "another platform of this gateway as origin": join_token(
                "320000", s, side="origin", other=REMOTE),
            "this gateway's platform as the remote side": join_token(
                "320000", s, side="remote", other=ORIGIN),
            "启东 claiming the remote side": join_token(ORIGIN, s, side="remote", other=REMOTE),
        }
        at_remote = {
            "浦东 (same gateway) as the remote side": join_token("310115", s, side="remote",
                                                             other=ORIGIN),
            "上海 claiming the origin side": join_token(REMOTE, s, side="origin", other=ORIGIN),
            "another case": join_token(REMOTE, s, side="remote", other=ORIGIN, case=new_ulid()),
            "a new session with 建邺 (320100-gw is not linked with 310000-gw)": join_token(
                REMOTE, new_ulid(), side="remote", other="320105"),
        }
        for gateway, tokens in ((OGW, at_origin), (RGW, at_remote)):
            for what, token in tokens.items():
                async with page(fed, gateway, hello(token)) as bad:
                    assert await bad.closed() == 4403, what
                    assert [(m["type"], m["reason"]) for m in bad.got] == \
                        [("refused", "FORBIDDEN")], (what, bad.got)
        await pr.goes_on()


@aio
async def test_a_second_window_of_the_same_platform_is_refused(fed: Federation) -> None:
    """§2: the first join of a side fixes its platform and its window; a clerk at another
    启东 window is refused 4403 and the session goes on."""
    async with pair(fed) as pr:
        token = join_token(ORIGIN, pr.session, side="origin", other=REMOTE, clerk="c2",
                           window="320681-w2")
        async with page(fed, OGW, hello(token)) as c:
            assert await c.closed() == 4403
        await pr.goes_on()


@aio
async def test_a_1_mib_message_closes_only_that_socket_1009(fed: Federation) -> None:
    async with pair(fed) as pr:
        again = pr.a_token
        async with page(fed, OGW, hello(again)) as big:
            await big.until(welcomed)
            await big.send(type="chat", cid="big", text="字" * (1 << 20))
            assert await big.closed() == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
        await pr.goes_on()
        assert not any(e.get("cid") == "big" for e in pr.a.events())


@aio
async def test_a_binary_frame_is_refused_malformed(fed: Federation) -> None:
    async with pair(fed) as pr:
        await pr.b.ws.send_bytes(json.dumps({"type": "chat", "cid": "bin", "text": "x"})
                                 .encode())
        assert (await pr.b.refusal())["reason"] == "MALFORMED"
        await pr.goes_on()
        assert not any(e.get("cid") == "bin" for e in pr.a.events())


@aio
async def test_a_flood_of_binary_frames_is_rate_limited_and_closed_4429(
        fed: Federation) -> None:
    async with pair(fed) as pr, page(fed, OGW, hello(pr.a_token)) as flood:
        await flood.until(welcomed)
        for _ in range(200):
            await flood.ws.send_bytes(b"\x00" * 16)
        assert await flood.closed(within=2) == 4429
        assert any(r["reason"] == "RATE" for r in flood.refused())
        await pr.goes_on()


@aio
async def test_a_flood_is_refused_rate_then_closed_4429(fed: Federation) -> None:
    async with pair(fed) as pr, page(fed, RGW, hello(pr.b_token)) as flood:
        await flood.until(welcomed)
        for i in range(200):
            await flood.send(type="ack", seq=i)
        assert await flood.closed() == 4429
        assert {r["reason"] for r in flood.refused()} == {"RATE"}
        await pr.goes_on()


@aio
async def test_an_idle_session_sends_its_browsers_little_presence(fed: Federation) -> None:
    async with pair(fed) as pr:
        before = len(pr.a.of("presence")), len(pr.b.of("presence"))
        await asyncio.sleep(1.0)
        after = len(pr.a.of("presence")), len(pr.b.of("presence"))
        assert after[0] - before[0] < 5 and after[1] - before[1] < 5, (before, after)


@aio
async def test_deep_json_is_refused_malformed_and_crashes_nothing(fed: Federation) -> None:
    async with pair(fed) as pr:
        for depth in (1000, 30_000):  # 60 kB: under the 64 KiB of a message
            await pr.a.ws.send_str("[" * depth + "]" * depth)
            assert (await pr.a.refusal())["reason"] == "MALFORMED"
            await pr.b.ws.send_str('{"type":"chat","cid":"deep","text":' + "[" * depth
                                   + "]" * depth + "}")
            assert (await pr.b.refusal())["reason"] == "MALFORMED"
        # nested just below and above what the parser takes: passed on or refused, never
        # a crash of the handler (the other side's browser gets rtc messages only)
        for depth in range(930, 950, 2):
            await pr.a.ws.send_str('{"type":"rtc","kind":"offer","data":' + "[" * depth
                                   + "]" * depth + "}")
        await asyncio.sleep(0.3)
        assert not pr.a.ws.closed and not pr.b.ws.closed
        assert {r["reason"] for r in pr.a.refused()} <= {"MALFORMED"}
        pr.a.got = [m for m in pr.a.got if m["type"] != "refused"]
        pr.b.got = [m for m in pr.b.got if m["type"] != "rtc"]  # the ones passed on
        await pr.goes_on()
        assert not any(e.get("cid") == "deep" for e in pr.a.events())


BAD_MESSAGES: list[tuple[str, dict[str, Any] | list[Any] | str, str]] = [
    # (what, message, the reason), each with a cid of its own where it has one
    ("an unknown type", {"type": "admin", "cid": "m1"}, "MALFORMED"),
    ("a type that is a number", {"type": 7, "cid": "m2"}, "MALFORMED"),
    ("no type", {"cid": "m3", "text": "hi"}, "MALFORMED"),
    ("an array", [{"type": "chat", "cid": "m4", "text": "hi"}], "MALFORMED"),
    ("a string", "chat", "MALFORMED"),
    ("chat without a cid", {"type": "chat", "text": "hi"}, "MALFORMED"),
    ("a cid with a slash", {"type": "chat", "cid": "a/b", "text": "hi"}, "MALFORMED"),
    ("a cid of 65 characters", {"type": "chat", "cid": "c" * 65, "text": "hi"}, "MALFORMED"),
    ("a cid that is a number", {"type": "chat", "cid": 5, "text": "hi"}, "MALFORMED"),
    ("chat text a number", {"type": "chat", "cid": "m5", "text": 5}, "MALFORMED"),
    ("chat text empty", {"type": "chat", "cid": "m6", "text": ""}, "MALFORMED"),
    ("chat text 2,001 characters", {"type": "chat", "cid": "m7", "text": "字" * 2001},
     "TOO_LARGE"),
    ("chat text with a NUL", {"type": "chat", "cid": "m8", "text": "a\x00b"}, "MALFORMED"),
    ("a member too many", {"type": "chat", "cid": "m9", "text": "hi", "side": "origin"},
     "MALFORMED"),
    ("form base a string", {"type": "form", "cid": "m10", "field": "f", "value": "v",
                            "base": "0"}, "MALFORMED"),
    ("form base true", {"type": "form", "cid": "m11", "field": "f", "value": "v",
                        "base": True}, "MALFORMED"),
    ("form base 0.0", {"type": "form", "cid": "m12", "field": "f", "value": "v",
                       "base": 0.0}, "MALFORMED"),
    ("form base -1", {"type": "form", "cid": "m13", "field": "f", "value": "v", "base": -1},
     "MALFORMED"),
    ("form value an object", {"type": "form", "cid": "m14", "field": "f",
                              "value": {"v": 1}, "base": 0}, "MALFORMED"),
    ("form field 65 characters", {"type": "form", "cid": "m15", "field": "f" * 65,
                                  "value": "v", "base": 0}, "TOO_LARGE"),
    ("form field a newline", {"type": "form", "cid": "m16", "field": "a\nb", "value": "v",
                              "base": 0}, "MALFORMED"),
    ("identity result without a result", {"type": "identity", "cid": "m17",
                                          "action": "result"}, "MALFORMED"),
    ("identity request with a result", {"type": "identity", "cid": "m18",
                                        "action": "request", "result": "match"}, "MALFORMED"),
    ("identity result maybe", {"type": "identity", "cid": "m19", "action": "result",
                               "result": "maybe"}, "MALFORMED"),
    ("a material size past 10 MiB", {"type": "material", "cid": "m20", "sha256": "a" * 64,
                                     "name": "x.pdf", "size": 10 * 2**20 + 1,
                                     "media_type": "application/pdf"}, "TOO_LARGE"),
    ("a material hash in capitals", {"type": "material", "cid": "m21", "sha256": "A" * 64,
                                     "name": "x.pdf", "size": 1,
                                     "media_type": "application/pdf"}, "MALFORMED"),
    ("an unknown item", {"type": "guidance", "cid": "m22", "item": "no-such-item"},
     "UNKNOWN_ITEM"),
    ("a close with text", {"type": "close", "cid": "m23", "text": "bye"}, "MALFORMED"),
    ("a second hello", {"type": "hello", "token": "x", "after": 0}, "MALFORMED"),
]


@aio
@pytest.mark.parametrize("side", ["origin", "remote"])
async def test_malformed_messages_are_refused_to_their_author_only(
        fed: Federation, side: str) -> None:
    """At the origin the sequencer refuses at once; at the remote the proposal crosses the
    relay and the refusal comes back for that clerk alone."""
    async with pair(fed) as pr:
        author, other = (pr.a, pr.b) if side == "origin" else (pr.b, pr.a)
        for what, message, reason in BAD_MESSAGES:
            await author.ws.send_str(json.dumps(message, ensure_ascii=False))
            got = await author.refusal()
            # the cid comes back when it is one (§4), for a message with a type (the hub
            # refuses one without a string type before reading it)
            cid = message.get("cid") if isinstance(message, dict) \
                and isinstance(message.get("type"), str) else None
            expect_cid = cid if isinstance(cid, str) and len(cid) <= 64 and "/" not in cid \
                else None
            assert got["reason"] == reason, (what, got)
            assert got.get("cid") in ({expect_cid} if expect_cid else {None, ""}), (what, got)
            assert got["message"], what  # Chinese, for the clerk
        await pr.goes_on()
        assert not any(e["cid"].startswith("m") for e in other.events())


@aio
async def test_a_resent_cid_is_applied_once_whatever_it_carries(fed: Federation) -> None:
    async with pair(fed) as pr:
        await pr.a.send(type="chat", cid="r1", text="一")
        await pr.b.send(type="chat", cid="r1", text="二")  # another clerk's cid: its own
        for p in (pr.a, pr.b):
            await p.until(lambda p: {"一", "二"} <= set(p.texts()))
        await pr.a.send(type="chat", cid="r1", text="篡改")  # the same cid, other content
        await pr.b.send(type="chat", cid="r1", text="篡改")
        await pr.b.send(type="form", cid="r1", field="姓名", value="x", base=0)
        async with page(fed, RGW, hello(pr.b_token, after=len(pr.b.events()))) as again:
            await again.until(welcomed)
            await again.send(type="chat", cid="r1", text="篡改")  # after a reconnect too
        # a refused message's cid is not spent: the clerk may send it again, right
        await pr.a.send(type="chat", cid="r2", text="字" * 2001)
        assert (await pr.a.refusal("r2"))["reason"] == "TOO_LARGE"
        await pr.a.send(type="chat", cid="r2", text="三")
        await pr.b.until(lambda p: "三" in p.texts())
        await pr.goes_on()
        assert "篡改" not in pr.a.texts() + pr.b.texts()
        assert not any(e["type"] == "form" for e in pr.a.events())


@aio
@pytest.mark.parametrize("after", [-1, -(10**30), 10**30, "1", 1.5, None, [1], {"seq": 1}])
async def test_a_hello_after_that_is_no_seq_of_the_session_replays_it_all(
        fed: Federation, after: Any) -> None:
    async with pair(fed) as pr:
        await pr.goes_on()
        async with page(fed, RGW, hello(pr.b_token, after=after)) as again:
            await again.until(lambda p: len(p.events()) == len(pr.b.events()))
            assert again.of("welcome")[0]["seq"] == len(pr.b.events())
            assert again.events() == pr.b.events()
        await pr.goes_on()


@aio
async def test_a_hello_after_true_replays_it_all(fed: Federation) -> None:
    async with pair(fed) as pr, page(fed, RGW, hello(pr.b_token, after=True)) as again:
        await again.until(welcomed)
        await asyncio.sleep(0.3)
        assert again.events() == pr.b.events()


@aio
async def test_a_delegation_from_the_remote_side_is_forbidden(fed: Federation) -> None:
    async with pair(fed) as pr:
        await pr.b.send(type="delegate", cid="d1", token=grant(pr.session))
        assert (await pr.b.refusal("d1"))["reason"] == "FORBIDDEN"
        await pr.b.send(type="form", cid="f1", field="姓名", value="李四", base=0)
        assert (await pr.b.refusal("f1"))["reason"] == "NO_DELEGATION"
        for p in (pr.a, pr.b):  # and both sides see why, as a sequenced event
            await p.until(lambda p: any(e["type"] == "refused" for e in p.events()))
        await pr.goes_on()
        assert not any(e["type"] in ("delegate", "form") for e in pr.a.events())


@aio
async def test_delegations_not_for_this_session_now_are_refused_token(
        fed: Federation) -> None:
    async with pair(fed) as pr:
        s = pr.session
        bad = {
            "another session": grant(new_ulid()),
            "another case": grant(s, case=new_ulid()),
            "another remote platform": grant(s, remote="310115"),
            "by the remote platform": grant(s, by=REMOTE, remote=REMOTE),
            "by another platform of the origin's gateway": grant(s, by="320000"),
            "expired": grant(s, now=time.time() - 7200, ttl=3600),
            "not yet": grant(s, now=time.time() + 600),
            "a join token": pr.a_token,
            "forged": forged(grant(s)),
            "a join's typ": secret(compact(key_of(ORIGIN), JOIN_TYP, canonical({
                "iss": ORIGIN, "aud": REMOTE, "ses": s, "cas": "", "sub": LI_SI.number,
                "iat": int(time.time()), "exp": int(time.time()) + 600}))),
        }
        for i, (what, token) in enumerate(bad.items()):
            await pr.a.send(type="delegate", cid=f"d{i}", token=token)
            got = await pr.a.refusal(f"d{i}")
            assert got["reason"] == "TOKEN", (what, got)
            assert LI_SI.number not in json.dumps(got, ensure_ascii=False)
        await pr.a.send(type="delegate", cid="dx", token="x" * 8193)
        assert (await pr.a.refusal("dx"))["reason"] == "TOO_LARGE"
        await pr.b.send(type="form", cid="f1", field="姓名", value="李四", base=0)
        assert (await pr.b.refusal("f1"))["reason"] == "NO_DELEGATION"
        for p in (pr.a, pr.b):
            await p.until(lambda p: any(e["type"] == "refused" for e in p.events()))
        await pr.goes_on()
        assert not any(e["type"] in ("delegate", "form") for e in pr.b.events())
        # the genuine one works, and its event carries exp, never the token
        token = grant(s)
        await pr.a.send(type="delegate", cid="dok", token=token)
        await pr.b.until(lambda p: any(e["type"] == "delegate" for e in p.events()))
        shown = json.dumps(pr.a.got + pr.b.got, ensure_ascii=False)
        assert token not in shown and LI_SI.number not in shown


async def upload(fed: Federation, gateway: str, session: str, body: bytes | Any, *,
                 auth: str | None, media_type: str = "application/pdf",
                 length: int | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": media_type}
    if length is not None:
        headers["Content-Length"] = str(length)
    if auth is not None:
        headers["Authorization"] = auth
    async with aiohttp.ClientSession() as client, client.post(
            f"http://{http_of(fed, gateway)}/sessions/{session}/materials", data=body,
            headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def download(fed: Federation, gateway: str, session: str, digest: str, *,
                   auth: str | None) -> tuple[int, bytes, Any]:
    headers = {"Authorization": auth} if auth is not None else {}
    async with aiohttp.ClientSession() as client, client.get(
            f"http://{http_of(fed, gateway)}/sessions/{session}/materials/{digest}",
            headers=headers) as r:
        return r.status, await r.read(), r.headers


@aio
async def test_material_events_naming_bytes_nobody_uploaded_are_refused(
        fed: Federation) -> None:
    async with pair(fed) as pr:
        # bytes uploaded at 上海 for another session are not this session's
        other = new_ulid()
        b2 = join_token(REMOTE, other, side="remote", other=ORIGIN, clerk="c9")
        async with page(fed, RGW, hello(b2)) as elsewhere:
            await elsewhere.until(welcomed)
            status, held = await upload(fed, RGW, other, b"%PDF other", auth=f"Bearer {b2}")
            assert status == 200
        nobody = hashlib.sha256(b"never uploaded").hexdigest()
        for author, cid, digest in ((pr.a, "u1", nobody), (pr.b, "u2", nobody),
                                    (pr.b, "u3", held["sha256"])):
            await author.send(type="material", cid=cid, sha256=digest, name="户口簿.pdf",
                              size=10, media_type="application/pdf")
            assert (await author.refusal(cid))["reason"] == "UNKNOWN_MATERIAL"
        await pr.a.send(type="signature", cid="u4", action="result", sha256=nobody)
        assert (await pr.a.refusal("u4"))["reason"] == "UNKNOWN_MATERIAL"
        await pr.b.send(type="signature", cid="u5", action="result", sha256=held["sha256"])
        assert (await pr.b.refusal("u5"))["reason"] == "FORBIDDEN"  # the pad is the origin's
        await pr.goes_on()
        assert not any(e["type"] in ("material", "signature") for e in pr.a.events())


@aio
async def test_material_uploads_without_a_clerk_of_the_session_are_refused(
        fed: Federation) -> None:
    async with pair(fed) as pr:
        other = new_ulid()
        a2 = join_token(ORIGIN, other, side="origin", other=REMOTE, clerk="c8")
        async with page(fed, OGW, hello(a2)) as elsewhere:
            await elsewhere.until(welcomed)
            refusals = [
                ("no Authorization", OGW, None, 401, "TOKEN"),
                ("Basic", OGW, "Basic YTpi", 401, "TOKEN"),
                ("a forged token", OGW, f"Bearer {forged(pr.a_token)}", 401, "TOKEN"),
                ("a delegation", OGW, f"Bearer {grant(pr.session)}", 401, "TOKEN"),
                ("another session's clerk", OGW, f"Bearer {a2}", 403, "FORBIDDEN"),
                ("the other gateway's clerk", OGW, f"Bearer {pr.b_token}", 403, "FORBIDDEN"),
                ("a session this gateway never saw", OGW, "Bearer " + join_token(
                    ORIGIN, new_ulid(), side="origin", other=REMOTE), 403, "FORBIDDEN"),
            ]
            for what, gateway, auth, status, reason in refusals:
                got = await upload(fed, gateway, pr.session, b"%PDF-1.7", auth=auth)
                assert got[0] == status and got[1]["reason"] == reason, (what, got)
            bearer = f"Bearer {pr.a_token}"
            eleven = io.BytesIO(b"\0" * (11 * 2**20))
            status, body = await upload(fed, OGW, pr.session, eleven, auth=bearer,
                                        length=11 * 2**20)
            assert (status, body.get("reason")) == (413, "TOO_LARGE"), (status, body)
            assert (await upload(fed, OGW, pr.session, b"", auth=bearer))[0] == 413
        for gateway in (OGW, RGW):
            assert pr.live(gateway).materials == {} and pr.live(gateway).partial == {}
        await pr.goes_on()


TRUNCATED = ("an upload is cut to what the socket has buffered (hub.py upload: "
             "request.content.read(MAX_MATERIAL + 1) returns what is there, about 220 kB, "
             "not the body): anything larger is stored cut short under the hash of its "
             "prefix, and a body past 10 MiB without Content-Length is taken, not refused")


@aio
async def test_an_11_mib_upload_without_content_length_is_refused_413(
        fed: Federation) -> None:
    async with pair(fed) as pr:
        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length to trust
            for _ in range(11):
                yield b"\0" * 2**20
        status, body = await upload(fed, OGW, pr.session, chunked(),
                                    auth=f"Bearer {pr.a_token}")
        assert (status, body.get("reason")) == (413, "TOO_LARGE"), (status, body)
        assert pr.live(OGW).materials == {}


@aio
async def test_a_3_mb_upload_is_stored_whole(fed: Federation) -> None:
    async with pair(fed) as pr:
        scan = bytes(range(256)) * (3_000_000 // 256)
        status, body = await upload(fed, OGW, pr.session, io.BytesIO(scan),
                                    auth=f"Bearer {pr.a_token}", length=len(scan))
        assert (status, body["size"], body["sha256"]) == (
            200, len(scan), hashlib.sha256(scan).hexdigest()), body


@aio
async def test_another_sessions_material_is_not_served(fed: Federation) -> None:
    async with pair(fed) as pr:
        page_html = b"<script>alert(1)</script>"
        status, held = await upload(fed, OGW, pr.session, page_html,
                                    auth=f"Bearer {pr.a_token}", media_type="text/html")
        assert status == 200
        digest = held["sha256"]
        other = new_ulid()
        a2 = join_token(ORIGIN, other, side="origin", other=REMOTE, clerk="c8")
        async with page(fed, OGW, hello(a2)) as elsewhere:
            await elsewhere.until(welcomed)
            refusals = [
                ("another session's clerk, its own URL", other, f"Bearer {a2}", 404),
                ("another session's clerk, this URL", pr.session, f"Bearer {a2}", 403),
                ("no Authorization", pr.session, None, 401),
                ("a delegation", pr.session, f"Bearer {grant(pr.session)}", 401),
                ("the other gateway's clerk", pr.session, f"Bearer {pr.b_token}", 403),
            ]
            for what, session, auth, code in refusals:
                status, body, _ = await download(fed, OGW, session, digest, auth=auth)
                assert status == code and page_html not in body, (what, status)
        # the session's clerks get it, as bytes a browser will not run
        await pr.b.until(lambda p: p.ws is not None)
        async def arrived() -> bool:
            return digest in pr.live(RGW).materials
        await until(arrived)
        for gateway, token in ((OGW, pr.a_token), (RGW, pr.b_token)):
            status, body, headers = await download(fed, gateway, pr.session, digest,
                                                   auth=f"Bearer {token}")
            assert (status, body) == (200, page_html)
            assert headers["Content-Type"] == "application/octet-stream"
            assert headers["X-Content-Type-Options"] == "nosniff"
        await pr.goes_on()


# == 2. a hostile peer gateway on the relay ================================================
def wrap(frame: spb.RelayFrame) -> bytes:
    return gw.RelaySessionRequest(frame=frame).SerializeToString()


def open_frame(session: str, origin_join: str, *, case: str = "", received: int = 0
               ) -> spb.RelayFrame:
    return spb.RelayFrame(open=spb.RelayOpen(session_id=session, case_id=case,
                                             origin_join=origin_join, received=received))


@dataclass
class Stream:
    """A relay stream a test opened as some gateway (or platform): frames out, frames in,
    and how it ended."""

    call: Any
    out: asyncio.Queue[bytes | None]
    got: list[spb.RelayFrame] = field(default_factory=list)
    code: grpc.StatusCode | None = None
    details: str = ""
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    n: int = 0  # the last reliable frame number sent

    async def read(self) -> None:
        try:
            async for response in self.call:
                self.got.append(response.frame)
            self.code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as err:
            self.code, self.details = err.code(), err.details() or ""
        finally:
            self.ended.set()

    def send(self, frame: spb.RelayFrame, *, n: int | None = None) -> int:
        """Send a frame; a reliable one gets the next number unless ``n`` says."""
        if frame.WhichOneof("frame") in ("event", "propose", "blob", "sign", "refused"):
            self.n = self.n + 1 if n is None else n
            frame.n = self.n
        self.out.put_nowait(wrap(frame))
        return frame.n

    def of(self, kind: str) -> list[spb.RelayFrame]:
        return [f for f in self.got if f.WhichOneof("frame") == kind]

    def acked(self) -> int:
        return max((f.ack.n for f in self.of("ack")), default=-1)

    async def until(self, check: Callable[[Stream], object], within: float = 5.0) -> None:
        async def ok() -> bool:
            return bool(check(self))
        await until(ok, within=within)

    async def refused(self, within: float = 5.0) -> tuple[grpc.StatusCode, str]:
        await asyncio.wait_for(self.ended.wait(), within)
        assert self.code is not None
        return self.code, self.details


@asynccontextmanager
async def relay(fed: Federation, gateway: str, first: spb.RelayFrame | bytes, *,
                signer: str | None = OGW, signed: bytes | None = None,
                method: str = RELAY) -> AsyncIterator[Stream]:
    """RelaySession on `gateway`, opened with `first` (a frame, or raw bytes) and a
    token by `signer`'s demo key over `signed` (the first message's bytes by default)."""
    body = wrap(first) if isinstance(first, spb.RelayFrame) else first
    metadata: tuple[tuple[str, str], ...] = ()
    if signer is not None:
        token, _ = sign(key_of(signer), iss=signer, aud=gateway, method=method,
                        body=body if signed is None else signed, now=time.time())
        metadata = ((HEADER, token),)
    out: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def requests() -> AsyncIterator[bytes]:
        yield body
        while (item := await out.get()) is not None:
            yield item

    async with grpc.aio.insecure_channel(fed.apps[gateway].config.me.grpc) as channel:
        call = channel.stream_stream(RELAY, response_deserializer=gw.RelaySessionResponse
                                     .FromString)(requests(), metadata=metadata)
        stream = Stream(call, out)
        reader = asyncio.create_task(stream.read())
        try:
            yield stream
        finally:
            call.cancel()
            out.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError):
                await reader


def last_audit(fed: Federation, gateway: str) -> tuple[str, str, str, str]:
    """(caller, method, outcome, detail) of the gateway's newest audit row."""
    rows = read_audit(fed.apps[gateway].config.data_dir / "gateway.sqlite3")
    entry = rows[-1][1]
    return entry.caller, entry.method, entry.outcome, entry.detail


@aio
async def test_a_relay_from_a_gateway_not_linked_or_a_platform_is_refused(
        fed: Federation) -> None:
    session = new_ulid()
    a_token = join_token(ORIGIN, session, side="origin", other=REMOTE)
    callers = [  # 310000-gw knows its links' and its platforms' keys only
        ("320100-gw", UNAUTH, "unknown key 320100-gw#k1"),  # a gateway not linked
        (ORIGIN, UNAUTH, f"unknown key {ORIGIN}#k1"),  # the origin platform itself
        (REMOTE, PD, "only a linked gateway relays sessions"),  # its own platforms
        ("310115", PD, "only a linked gateway relays sessions"),
    ]
    for caller, code, details in callers:
        async with relay(fed, RGW, open_frame(session, a_token), signer=caller) as stream:
            assert await stream.refused() == (code, details), caller
            if code is PD:  # a known caller's refusal is audited
                assert last_audit(fed, RGW)[:3] == (caller, RELAY, "PERMISSION_DENIED")
    assert session not in fed.apps[RGW].sessions.sessions


@aio
async def test_a_relay_without_a_good_signature_is_refused(fed: Federation) -> None:
    session = new_ulid()
    first = open_frame(session, join_token(ORIGIN, session, side="origin", other=REMOTE))
    other = open_frame(new_ulid(), join_token(ORIGIN, session, side="origin", other=REMOTE))
    attempts: dict[str, dict[str, Any]] = {
        "no signature": {"signer": None},
        "a signature over other bytes": {"signed": wrap(other)},
        "a signature for another method": {"method": "/tongban.v1.Gateway/SubmitCase"},
    }
    before = len(read_audit(fed.apps[RGW].config.data_dir / "gateway.sqlite3"))
    for what, how in attempts.items():
        async with relay(fed, RGW, first, **how) as stream:
            code, _ = await stream.refused()
            assert code is UNAUTH, what
    # refused before the caller is known: counted, never written to the audit chain
    assert len(read_audit(fed.apps[RGW].config.data_dir / "gateway.sqlite3")) == before
    assert session not in fed.apps[RGW].sessions.sessions


@aio
async def test_a_relay_that_does_not_open_with_open_is_refused(fed: Federation) -> None:
    session = new_ulid()
    event = spb.RelayFrame(event=spb.RelayEvent(seq=1, event=b"{}"), n=1)
    async with relay(fed, RGW, event) as stream:
        assert await stream.refused() == (PD, "frame.open: a relay opens with an open frame")
    async with relay(fed, RGW, b"\xff\xff\xff garbage") as stream:
        code, _ = await stream.refused()
        assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert last_audit(fed, RGW)[:3] == (OGW, RELAY, "INVALID_ARGUMENT")
    assert session not in fed.apps[RGW].sessions.sessions


@aio
async def test_a_relay_open_that_is_not_the_callers_session_is_refused(
        fed: Federation) -> None:
    """At 310000-gw (the remote side) as 320000-gw, and at 320000-gw as 310000-gw."""
    s = new_ulid()
    opens = [  # (what, at, as, open frame, code, details start)
        ("no origin join for a session unknown here", RGW, OGW, open_frame(s, ""), PD,
         "frame.open.origin_join: no such session here"),
        ("the remote clerk's join", RGW, OGW,
         open_frame(s, join_token(REMOTE, s, side="remote", other=ORIGIN)), PD,
         "frame.open.origin_join: no such session here"),
        ("an origin join of another session", RGW, OGW,
         open_frame(s, join_token(ORIGIN, new_ulid(), side="origin", other=REMOTE)), PD,
         "frame.open.origin_join: no such session here"),
        ("an origin join whose remote is not here", RGW, OGW,
         open_frame(s, join_token(ORIGIN, s, side="origin", other="320100")), PD,
         "frame.open.origin_join: the session's remote platform is not here"),
        ("an origin join of a platform behind another gateway", RGW, OGW,
         open_frame(s, join_token("320105", s, side="origin", other=REMOTE)), PD,
         "frame.open: the session's origin is not behind this caller"),
        ("an expired origin join", RGW, OGW,
         open_frame(s, join_token(ORIGIN, s, side="origin", other=REMOTE,
                                  now=time.time() - 7200, ttl=3600)), UNAUTH,
         "the join token expired"),
        ("a forged origin join", RGW, OGW,
         open_frame(s, forged(join_token(ORIGIN, s, side="origin", other=REMOTE))), UNAUTH,
         ""),
        ("a delegation for an origin join", RGW, OGW, open_frame(s, grant(s)), UNAUTH, ""),
    ]
    for what, at, caller, first, code, start in opens:
        async with relay(fed, at, first, signer=caller) as stream:
            got = await stream.refused()
            assert got[0] is code and got[1].startswith(start), (what, got)
            assert last_audit(fed, at)[:3] == (caller, RELAY, code.name), what
    # 320000-gw sequences this one: 310000-gw may not open a relay for it, nor one for a
    # session whose remote is not at 320000-gw
    async with pair(fed) as pr:
        for first in (open_frame(pr.session, pr.a_token), open_frame(pr.session, "")):
            async with relay(fed, OGW, first, signer=RGW) as stream:
                assert (await stream.refused())[0] is PD
        pr.a.got = [m for m in pr.a.got if m["type"] != "presence"]
        pr.b.got = [m for m in pr.b.got if m["type"] != "presence"]
        await pr.goes_on()


@aio
async def test_a_refused_relay_open_leaves_nothing_behind(fed: Federation) -> None:
    s = new_ulid()
    squat = open_frame(s, join_token("320105", s, side="origin", other=REMOTE))
    async with relay(fed, RGW, squat, signer=OGW) as stream:
        assert (await stream.refused())[0] is PD
    # the session's own remote clerk joins it, as if nothing had happened
    b_token = join_token(REMOTE, s, side="remote", other=ORIGIN)
    async with page(fed, RGW, hello(b_token)) as b:
        await b.until(lambda p: p.got)
        assert b.got[0]["type"] == "welcome", b.got[0]


class Sequencer:
    """What a hostile origin gateway sequences: events, its own copy of the chain."""

    def __init__(self, session: str) -> None:
        self.chain = Transcript(session)
        self.at = int(time.time())

    def draft(self, kind: str = "chat", *, side: str = "origin", clerk: str = "c1",
              **members: Any) -> dict[str, Any]:
        """The next event, not chained (a test may spoil it first)."""
        n = self.chain.n + 1
        return {"seq": n, "at": self.at, "side": side, "clerk": clerk,
                "name": f"{ORIGIN}-{clerk}" if side == "origin" else f"{REMOTE}-{clerk}",
                "cid": f"h{n}", "type": kind} | members

    def next(self, kind: str = "chat", **members: Any) -> spb.RelayFrame:
        """The next event, chained here, as the frame that carries it."""
        event = self.draft(kind, **members)
        data = self.chain.append(event)
        return spb.RelayFrame(event=spb.RelayEvent(seq=event["seq"], event=data))

    def closed(self) -> spb.RelayFrame:
        return self.next("closed", n=self.chain.n, head=b64url(self.chain.head))


def event_frame(data: bytes, seq: int = 0) -> spb.RelayFrame:
    return spb.RelayFrame(event=spb.RelayEvent(seq=seq, event=data))


@dataclass
class Hostile:
    """A remote clerk at 310000-gw, and a relay into 310000-gw opened as 320000-gw."""

    fed: Federation
    session: str
    b: Page
    origin: Stream
    seq: Sequencer

    @property
    def live(self) -> Live:
        return self.fed.apps[RGW].sessions.sessions[self.session]

    async def taken(self) -> None:
        """Wait until 310000-gw acknowledges every frame sent so far."""
        await self.origin.until(lambda s: s.acked() >= s.n)


@asynccontextmanager
async def hostile_origin(fed: Federation) -> AsyncIterator[Hostile]:
    session = new_ulid()
    b_token = join_token(REMOTE, session, side="remote", other=ORIGIN)
    a_token = join_token(ORIGIN, session, side="origin", other=REMOTE)
    async with page(fed, RGW, hello(b_token)) as b, \
            relay(fed, RGW, open_frame(session, a_token)) as origin:
        await b.until(welcomed)
        await origin.until(lambda s: s.acked() == 0)  # the remote's answer to open
        h = Hostile(fed, session, b, origin, Sequencer(session))
        origin.send(h.seq.next(text="您好"))
        await b.until(lambda p: p.texts() == ["您好"])
        yield h


def spoiled(event: dict[str, Any], **changes: Any) -> bytes:
    return canonical({k: v for k, v in (event | changes).items() if v is not None})


@aio
async def test_a_hostile_origin_cannot_make_the_remote_chain_a_broken_event(
        fed: Federation) -> None:
    async with hostile_origin(fed) as h:
        first = json.loads(h.live.session.transcript.events[0])
        draft = h.seq.draft(text="二")
        wrong_head = b64url(hashlib.sha256(b"another chain").digest())
        broken = {
            "a gap in seq": spoiled(draft, seq=3),
            "event 1 again, edited": spoiled(first, text="篡改"),
            "spaces": json.dumps(draft, sort_keys=True, ensure_ascii=False,
                                 indent=1).encode(),
            "members out of order": json.dumps(draft, separators=(",", ":"),
                                               ensure_ascii=False).encode(),
            "escaped characters": json.dumps(draft, sort_keys=True,
                                             separators=(",", ":")).encode(),
            "seq 2.0": spoiled(draft).replace(b'"seq":2', b'"seq":2.0'),
            "seq as a string": spoiled(draft, seq="2"),
            "no at": spoiled(draft, at=None),
            "at a float": spoiled(draft).replace(f'"at":{h.seq.at}'.encode(),
                                                 f'"at":{h.seq.at}.5'.encode()),
            "a side of its own": spoiled(draft, side="admin"),
            "a form version as a string": spoiled(h.seq.draft(
                "form", field="姓名", value="x", version="1")),
            "closed, naming another head": spoiled(h.seq.draft(
                "closed", n=1, head=wrong_head)),
            "closed, naming n 0": spoiled(h.seq.draft(
                "closed", n=0, head=b64url(h.seq.chain.head))),
            "not UTF-8": b"\xff\xfe{}",
            "an array": b"[2]",
            "a lone surrogate": spoiled(draft).replace("二".encode(), b"\\ud800"),
        }
        for what, data in broken.items():
            h.origin.send(event_frame(data, 2))
            await h.taken()  # the frame is taken, its event refused
            assert h.live.session.transcript.n == 1, what
            assert not h.live.session.closed, what
        # frames out of order: one past the next is not taken (the remote acknowledges
        # what it has, for a resend), one already taken is not taken again
        last = h.origin.n
        h.origin.send(event_frame(spoiled(h.seq.draft(text="越号")), 2), n=last + 2)
        h.origin.send(event_frame(spoiled(first, text="重发"), 1), n=1)
        h.origin.n = last
        await asyncio.sleep(0.2)
        assert h.origin.acked() == last and h.live.session.transcript.n == 1
        h.origin.send(h.seq.next(text="二"))  # the honest next event: the session goes on
        await h.b.until(lambda p: p.texts() == ["您好", "二"])
        assert [e["seq"] for e in h.b.events()] == [1, 2]
        assert not h.origin.of("sign")  # nothing signed along the way
        assert {m["type"] for m in h.b.got} <= QUIET


@aio
async def test_the_remote_signs_only_the_head_it_chained(fed: Federation) -> None:
    async with hostile_origin(fed) as h:
        h.origin.send(h.seq.next(text="二"))
        h.origin.send(h.seq.closed())
        await h.b.until(lambda p: any(e["type"] == "closed" for e in p.events()))
        await h.origin.until(lambda s: s.of("sign"))
        signed = verify_head(h.origin.of("sign")[0].sign.token,
                             lambda g: fed.apps[RGW].config.gateways[g].keys)
        assert (signed.iss, signed.n, signed.head) == (RGW, 3, h.seq.chain.head)
        db = fed.apps[RGW].config.data_dir / "gateway.sqlite3"
        # the origin's word on another head, or on this head for another session: not kept
        key = key_of(OGW)
        for session, n, head in ((h.session, 3, hashlib.sha256(b"x").digest()),
                                 (h.session, 2, h.seq.chain.hashes[1]),
                                 (new_ulid(), 3, h.seq.chain.head)):
            h.origin.send(spb.RelayFrame(sign=spb.RelaySign(token=sign_head(
                key, gateway=OGW, session=session, case="", n=n, head=head,
                now=time.time()))))
        h.origin.send(spb.RelayFrame(sign=spb.RelaySign(token=forged(sign_head(
            key, gateway=OGW, session=h.session, case="", n=3, head=h.seq.chain.head,
            now=time.time())))))
        await h.taken()
        assert read_transcript(db, h.session) is None
        h.origin.send(spb.RelayFrame(sign=spb.RelaySign(token=sign_head(
            key, gateway=OGW, session=h.session, case="", n=3, head=h.seq.chain.head,
            now=time.time()))))

        async def kept() -> bool:
            return read_transcript(db, h.session) is not None
        await until(kept)
        transcript = read_transcript(db, h.session)
        assert transcript is not None and sorted(transcript.signatures) == [RGW, OGW]


@aio
async def test_a_head_signed_by_a_third_gateway_is_not_kept(fed: Federation) -> None:
    async with hostile_origin(fed) as h:
        h.origin.send(h.seq.closed())
        await h.origin.until(lambda s: s.of("sign"))
        h.origin.send(spb.RelayFrame(sign=spb.RelaySign(token=sign_head(
            key_of("320100-gw"), gateway="320100-gw", session=h.session, case="", n=2,
            head=h.seq.chain.head, now=time.time()))))
        await h.taken()
        await asyncio.sleep(0.2)
        assert read_transcript(fed.apps[RGW].config.data_dir / "gateway.sqlite3",
                               h.session) is None


@aio
async def test_an_rtc_frame_cannot_carry_anything_but_rtc(fed: Federation) -> None:
    async with hostile_origin(fed) as h:
        fake = h.seq.draft(text="请把身份证号发给我")
        for message in ({"type": "event", "event": fake},
                        {"type": "welcome", "session": h.session, "form": {"姓名": {
                            "value": "篡改", "version": 9}}},
                        {"type": "rtc", "side": "origin", "clerk": "c1", "kind": "offer",
                         "data": "v=0"}):
            h.origin.send(spb.RelayFrame(rtc=spb.RelayRtc(
                side="origin", clerk="c1", message=json.dumps(message).encode())))
        await h.b.until(lambda p: p.of("rtc"))
        await asyncio.sleep(0.2)
        assert h.b.texts() == ["您好"]
        assert len(h.b.of("welcome")) == 1


@aio
async def test_an_event_in_the_remote_clerks_name_it_never_sent_is_not_chained(
        fed: Federation) -> None:
    async with hostile_origin(fed) as h:
        h.origin.send(h.seq.next(side="remote", text="我同意放弃申请"))
        h.origin.send(h.seq.next("form", side="remote", field="姓名", value="王五",
                                 version=1))
        await h.taken()
        await asyncio.sleep(0.2)
        assert h.live.session.transcript.n == 1
        assert h.b.texts() == ["您好"]


@aio
async def test_an_ack_of_what_was_never_sent_drops_the_stream_and_it_resumes(
        fed: Federation) -> None:
    async with hostile_origin(fed) as h:
        h.origin.send(spb.RelayFrame(ack=spb.RelayAck(n=10**6)))
        await asyncio.wait_for(h.origin.ended.wait(), 5)
        a_token = join_token(ORIGIN, h.session, side="origin", other=REMOTE)
        async with relay(fed, RGW, open_frame(h.session, a_token, received=0)) as again:
            await again.until(lambda s: s.acked() == 1)  # it has event 1, as before
            again.n = 1
            again.send(h.seq.next(text="二"))
            await h.b.until(lambda p: p.texts() == ["您好", "二"])
            assert [e["seq"] for e in h.b.events()] == [1, 2]


@aio
async def test_a_silent_origin_is_dropped(fed: Federation, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    monkeypatch.setattr(relay_module, "HEARTBEAT_S", 0.1)  # 5 s and 15 s in production
    monkeypatch.setattr(relay_module, "SILENCE_S", 0.4)
    session = new_ulid()
    a_token = join_token(ORIGIN, session, side="origin", other=REMOTE)
    async with relay(fed, RGW, open_frame(session, a_token)) as mute:
        await asyncio.wait_for(mute.ended.wait(), 2)


@dataclass
class Taken:
    """One relay stream the real origin gateway opened to the fake remote."""

    got: list[spb.RelayFrame] = field(default_factory=list)
    out: asyncio.Queue[spb.RelayFrame | None] = field(default_factory=asyncio.Queue)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    n: int = 0

    def send(self, frame: spb.RelayFrame) -> None:
        if frame.WhichOneof("frame") in ("event", "propose", "blob", "sign", "refused"):
            self.n += 1
            frame.n = self.n
        self.out.put_nowait(frame)

    def of(self, kind: str) -> list[spb.RelayFrame]:
        return [f for f in self.got if f.WhichOneof("frame") == kind]

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(f.event.event) for f in self.of("event")]

    def acked(self) -> int:
        return max((f.ack.n for f in self.of("ack")), default=-1)

    async def until(self, check: Callable[[Taken], object], within: float = 5.0) -> None:
        async def ok() -> bool:
            return bool(check(self))
        await until(ok, within=within)


class FakeRemote:
    """A hostile 310000-gw on its configured address: it takes the relay the real
    320000-gw opens and answers whatever a test says (no signature needed: only the
    opener signs, at open)."""

    def __init__(self) -> None:
        self.streams: list[Taken] = []
        self.opened = asyncio.Event()

    async def _relay(self, requests: AsyncIterator[gw.RelaySessionRequest],
                     context: Any) -> AsyncIterator[gw.RelaySessionResponse]:
        taken = Taken()
        self.streams.append(taken)
        self.opened.set()

        async def read() -> None:
            with contextlib.suppress(Exception):
                async for request in requests:
                    taken.got.append(request.frame)
            taken.ended.set()
        reader = asyncio.create_task(read())
        try:
            while (frame := await taken.out.get()) is not None:
                yield gw.RelaySessionResponse(frame=frame)
        finally:
            reader.cancel()
            taken.ended.set()

    @property
    def last(self) -> Taken:
        return self.streams[-1]

    async def until(self, check: Callable[[FakeRemote], object], within: float = 5.0
                    ) -> None:
        async def ok() -> bool:
            return bool(check(self))
        await until(ok, within=within)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler("tongban.v1.Gateway", {
            "RelaySession": grpc.stream_stream_rpc_method_handler(
                self._relay, request_deserializer=gw.RelaySessionRequest.FromString,
                response_serializer=gw.RelaySessionResponse.SerializeToString)})


@dataclass
class Victim:
    """启东's clerk at the real 320000-gw, in a session whose remote gateway is fake."""

    fed: Federation
    session: str
    a: Page
    fake: FakeRemote
    b_token: str  # a genuine 上海 clerk's join, which the fake remote may use

    @property
    def live(self) -> Live:
        return self.fed.apps[OGW].sessions.sessions[self.session]

    def propose(self, join: str, **message: Any) -> None:
        self.fake.last.send(spb.RelayFrame(propose=spb.RelayPropose(
            join=join, message=json.dumps(message, ensure_ascii=False).encode())))


@asynccontextmanager
async def fake_remote(tmp_path: Path) -> AsyncIterator[Victim]:
    async with federation(tmp_path, gateways=(OGW,)) as fed:
        fake = FakeRemote()
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((fake.handler(),))
        server.add_insecure_port(fed.apps[OGW].config.gateways[RGW].grpc)
        await server.start()
        try:
            session = new_ulid()
            a_token = join_token(ORIGIN, session, side="origin", other=REMOTE)
            b_token = join_token(REMOTE, session, side="remote", other=ORIGIN)
            async with page(fed, OGW, hello(a_token)) as a:
                await a.until(welcomed)
                await asyncio.wait_for(fake.opened.wait(), 5)
                await fake.last.until(lambda t: t.of("open"))
                fake.last.send(spb.RelayFrame(ack=spb.RelayAck(n=0)))
                yield Victim(fed, session, a, fake, b_token)
        finally:
            await server.stop(0)


@aio
async def test_proposals_without_a_remote_clerks_join_are_not_sequenced(
        tmp_path: Path) -> None:
    async with fake_remote(tmp_path) as v:
        s = v.session
        joins = {
            "no join": "",
            "a forged join": forged(v.b_token),
            "an expired join": join_token(REMOTE, s, side="remote", other=ORIGIN,
                                          now=time.time() - 7200, ttl=3600),
            "a join of another session": join_token(REMOTE, new_ulid(), side="remote",
                                                    other=ORIGIN),
            "the origin clerk's join": join_token(ORIGIN, s, side="origin", other=REMOTE),
            "another remote platform's join": join_token("310115", s, side="remote",
                                                         other=ORIGIN),
            "a delegation": grant(s),
        }
        for i, (what, join) in enumerate(joins.items()):
            v.propose(join, type="chat", cid=f"p{i}", text=f"冒充 {what}")
        v.fake.last.send(spb.RelayFrame(propose=spb.RelayPropose(
            join=v.b_token, message=b"\xff not json")))
        v.propose(v.b_token, type="chat", cid="ok", text="真的")
        await v.a.until(lambda p: "真的" in p.texts())
        await v.fake.last.until(lambda t: t.acked() == t.n)
        assert v.a.texts() == ["真的"]
        assert [e["text"] for e in v.fake.last.events()] == ["真的"]
        # a genuine clerk's message the sequencer refuses goes back for that clerk only
        v.propose(v.b_token, type="delegate", cid="d1", token=grant(s))
        await v.fake.last.until(lambda t: t.of("refused"))
        refused = v.fake.last.of("refused")[0].refused
        assert refused.clerk == "c1"
        assert json.loads(refused.message)["reason"] == "FORBIDDEN"
        assert {m["type"] for m in v.a.got} <= QUIET


@aio
async def test_a_proposal_with_a_join_of_another_case_is_not_sequenced(
        tmp_path: Path) -> None:
    async with fake_remote(tmp_path) as v:
        other_case = join_token(REMOTE, v.session, side="remote", other=ORIGIN,
                                case=new_ulid())
        other_origin = join_token(REMOTE, v.session, side="remote", other="320000")
        v.propose(other_case, type="chat", cid="p1", text="另一个办件")
        v.propose(other_origin, type="chat", cid="p2", text="另一个窗口")
        await v.fake.last.until(lambda t: t.acked() == t.n)
        await asyncio.sleep(0.2)
        assert v.a.texts() == []


def blob(digest: str, data: bytes, *, offset: int, total: int) -> spb.RelayFrame:
    return spb.RelayFrame(blob=spb.RelayBlob(sha256=digest, media_type="application/pdf",
                                             total=total, offset=offset, data=data))


@aio
async def test_blobs_that_do_not_add_up_are_not_held(tmp_path: Path) -> None:
    async with fake_remote(tmp_path) as v:
        scan = b"%PDF-1.7 " + bytes(range(256)) * 8
        real = hashlib.sha256(scan).hexdigest()
        lie = hashlib.sha256(b"what the clerk will claim").hexdigest()
        big = hashlib.sha256(b"big").hexdigest()
        send = v.fake.last.send
        send(blob(lie, scan, offset=0, total=len(scan)))  # bytes that are not that hash
        overlap = hashlib.sha256(b"overlap").hexdigest()
        send(blob(overlap, scan[:100], offset=0, total=len(scan)))
        send(blob(overlap, scan[50:], offset=50, total=len(scan)))  # overlaps 50..100
        send(blob(big, b"\0" * 2**20, offset=0, total=11 * 2**20))  # past 10 MiB
        await v.fake.last.until(lambda t: t.acked() == t.n)
        for i, digest in enumerate((lie, overlap, big)):
            v.propose(v.b_token, type="material", cid=f"m{i}", sha256=digest, name="x.pdf",
                      size=len(scan), media_type="application/pdf")
        await v.fake.last.until(lambda t: len(t.of("refused")) == 3)
        assert [json.loads(f.refused.message)["reason"] for f in v.fake.last.of("refused")] \
            == ["UNKNOWN_MATERIAL"] * 3
        assert set(v.live.materials) == set()
        # the bytes as they should come: held, and the event naming them sequenced
        send(blob(real, scan[:1000], offset=0, total=len(scan)))
        send(blob(real, scan[1000:], offset=1000, total=len(scan)))
        v.propose(v.b_token, type="material", cid="m9", sha256=real, name="户口簿.pdf",
                  size=len(scan), media_type="application/pdf")
        await v.a.until(lambda p: any(e["type"] == "material" for e in p.events()))
        a_token = join_token(ORIGIN, v.session, side="origin", other=REMOTE)
        status, body, _ = await download(v.fed, OGW, v.session, real,
                                         auth=f"Bearer {a_token}")
        assert (status, body) == (200, scan)


@aio
async def test_a_blob_never_grows_past_its_total(tmp_path: Path) -> None:
    async with fake_remote(tmp_path) as v:
        digest = hashlib.sha256(b"never complete").hexdigest()
        total = 2**20 + 1  # 1 MiB chunks step over it
        for i in range(12):
            v.fake.last.send(blob(digest, b"\0" * 2**20, offset=i * 2**20, total=total))
        await v.fake.last.until(lambda t: t.acked() == t.n)
        held = sum(len(part) for part in v.live.partial.values())
        assert held <= total, f"{held} bytes held for a blob of {total}"


@aio
async def test_a_remote_that_never_acknowledges_stops_the_origin_reading(
        tmp_path: Path) -> None:
    async with fake_remote(tmp_path) as v:
        for i in range(300):  # each one sequenced and sent as an event, never acknowledged
            v.propose(v.b_token, type="chat", cid=f"f{i}", text=f"洪水{i}")
        await v.a.until(lambda p: len(p.events()) >= 300, within=10)
        assert v.live.out.unacked >= 256
        await v.a.send(type="chat", cid="held", text="等一下")
        await asyncio.sleep(0.3)
        assert "等一下" not in v.a.texts()  # not read while the window is full
        v.fake.last.send(spb.RelayFrame(ack=spb.RelayAck(n=v.live.out.sent)))
        await v.a.until(lambda p: "等一下" in p.texts())


@aio
async def test_an_ack_beyond_what_was_sent_drops_the_stream_and_the_origin_reopens(
        tmp_path: Path) -> None:
    async with fake_remote(tmp_path) as v:
        v.fake.last.send(spb.RelayFrame(ack=spb.RelayAck(n=10**6)))
        await v.fake.until(lambda f: len(f.streams) >= 2, within=2)  # reopened (0.2 s)
        await v.fake.last.until(lambda t: t.of("open"))
        v.fake.last.send(spb.RelayFrame(ack=spb.RelayAck(n=0)))
        await v.a.send(type="chat", cid="a1", text="还在吗")
        await v.fake.last.until(lambda t: any(e.get("text") == "还在吗" for e in t.events()))


@aio
async def test_a_silent_remote_is_dropped_and_the_origin_reopens(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay_module, "HEARTBEAT_S", 0.1)
    monkeypatch.setattr(relay_module, "SILENCE_S", 0.4)
    async with fake_remote(tmp_path) as v:
        await v.fake.until(lambda f: len(f.streams) >= 2, within=2)


# == 3. a careless (or dishonest) operator edits a stored transcript ========================
@dataclass(frozen=True)
class Closed:
    """Two sessions closed and signed by both gateways, in a copy of 310000-gw's store."""

    db: Path
    session: str  # chat, a delegation, a remote form edit, a material, close
    other: str  # a short one, for its signatures
    delegation: str


async def _close(pr: Pair) -> None:
    await pr.a.send(type="close", cid="bye")
    for p in (pr.a, pr.b):
        await p.until(lambda p: any(e["type"] == "closed" for e in p.events()))
    for gateway in (OGW, RGW):
        db = pr.fed.apps[gateway].config.data_dir / "gateway.sqlite3"

        async def kept(db: Path = db) -> bool:
            t = read_transcript(db, pr.session)
            return t is not None and len(t.signatures) == 2
        await until(kept)


@pytest.fixture(scope="module")
def closed(tmp_path_factory: pytest.TempPathFactory) -> Closed:
    tmp = tmp_path_factory.mktemp("transcripts")

    async def life() -> tuple[str, str, str]:
        async with federation(tmp, gateways=(OGW, RGW)) as fed:
            async with pair(fed) as pr:
                await pr.goes_on()
                delegation = grant(pr.session)
                await pr.a.send(type="delegate", cid="d1", token=delegation)
                await pr.b.until(lambda p: any(e["type"] == "delegate" for e in p.events()))
                await pr.b.send(type="form", cid="f1", field="姓名", value="李四", base=0)
                status, held = await upload(fed, RGW, pr.session, b"%PDF-1.7 scan",
                                            auth=f"Bearer {pr.b_token}")
                assert status == 200
                await pr.b.send(type="material", cid="m1", sha256=held["sha256"],
                                name="户口簿.pdf", size=13, media_type="application/pdf")
                await pr.a.until(lambda p: any(e["type"] == "material" for e in p.events()))
                await _close(pr)
                session = pr.session
            async with pair(fed) as pr:
                await _close(pr)
                return session, pr.session, delegation

    session, other, delegation = asyncio.run(life())
    db = tmp / "copy.sqlite3"
    backup(tmp / RGW / "gateway.sqlite3", db)
    return Closed(db, session, other, delegation)


def backup(source: Path, target: Path) -> None:
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


@dataclass
class Row:
    """A session_transcripts row, as an operator with sqlite3 sees it."""

    case_id: str
    n: int
    head: str
    events: list[bytes]
    signatures: dict[str, str]


def row_of(db: Path, session: str) -> Row:
    t = read_transcript(db, session)
    assert t is not None
    return Row(t.case_id, t.n, t.head, list(t.events), dict(t.signatures))


def show(db: Path, session: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`tongban sessions show` on a store file: its exit code and what it printed."""
    capsys.readouterr()
    code = cli(["sessions", "show", session, "--config", str(ROOT / "partners.toml"),
                "--db", str(db)])
    out = capsys.readouterr()
    return code, out.out + out.err


def chain_of(session: str, events: list[bytes]) -> tuple[int, str]:
    t = Transcript(session)
    for data in events:
        t.append_encoded(data)
    return t.n, b64url(t.head)


def edit_event(row: Row, seq: int, **changes: Any) -> None:
    event = json.loads(row.events[seq - 1]) | changes
    row.events[seq - 1] = canonical(event)


def tamper(closed: Closed, tmp_path: Path, change: Callable[[Row], object]) -> Path:
    db = tmp_path / "tampered.sqlite3"
    backup(closed.db, db)
    row = row_of(db, closed.session)
    change(row)
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE session_transcripts SET case_id=?, n=?, head=?, events=?, "
                     "signatures=? WHERE session_id=?",
                     (row.case_id, row.n, row.head, b"\n".join(row.events),
                      json.dumps(row.signatures, sort_keys=True), closed.session))
    return db


def test_an_untouched_transcript_shows_ok(closed: Closed,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out = show(closed.db, closed.session, capsys)
    assert code == 0 and out.rstrip().endswith(": OK"), out
    row = row_of(closed.db, closed.session)
    assert [json.loads(e)["type"] for e in row.events][-4:] == [
        "delegate", "form", "material", "closed"]
    raw = closed.db.read_bytes()
    # the consent is evidence kept apart: the transcript has its exp, not the token or id
    assert closed.delegation.encode() not in raw and LI_SI.number.encode() not in raw


def _second_chat(row: Row) -> int:
    return next(i + 1 for i, e in enumerate(row.events)
                if json.loads(e)["type"] == "chat" and json.loads(e)["side"] == "remote")


def _drop(row: Row, seq: int) -> None:
    del row.events[seq - 1]


def _swap(row: Row, i: int, j: int) -> None:
    row.events[i - 1], row.events[j - 1] = row.events[j - 1], row.events[i - 1]


def _edit_and_rehead(row: Row, session: str) -> None:
    """An edit made to fit everywhere but the signatures: the closed event's own
    ``head`` and the stored head recomputed."""
    edit_event(row, _second_chat(row), text="我放弃申请")
    n, head = chain_of(session, row.events[:-1])
    edit_event(row, len(row.events), n=n, head=head)
    row.n, row.head = chain_of(session, row.events)


def _truncate(row: Row, session: str) -> None:
    del row.events[-1]  # the closed event
    row.n, row.head = chain_of(session, row.events)


TAMPERS: dict[str, tuple[Callable[[Row, Closed], object], str]] = {
    # what the operator did -> (the change, what `sessions show` must say)
    "an event edited": (lambda r, c: edit_event(r, _second_chat(r), text="我放弃申请"),
                        "names another head"),  # the closed event's, and the signed ones
    "an event edited, the stored head made to fit": (lambda r, c: _edit_and_rehead(
        r, c.session), "do not lead to the head"),
    "an event deleted": (lambda r, c: _drop(r, 2), "event 2 is missing or out of order"),
    "the closed event cut off, the head made to fit": (lambda r, c: _truncate(r, c.session),
                                                       "signed 7 events, the transcript has 6"),
    "two events swapped": (lambda r, c: _swap(r, 2, 3), "event 2 is missing or out of order"),
    "a signature dropped": (lambda r, c: r.signatures.pop(OGW),
                            "fewer than two gateway signatures"),
    "a signature of another session": (lambda r, c: r.signatures.__setitem__(
        OGW, row_of(c.db, c.other).signatures[OGW]), f"{OGW} signed the head of another"),
    "one gateway's signature under both names": (lambda r, c: r.signatures.__setitem__(
        RGW, r.signatures[OGW]), "filed under another gateway"),
    "a signature's bytes changed": (lambda r, c: r.signatures.__setitem__(
        OGW, forged(r.signatures[OGW])), f"{OGW}: "),
}


@pytest.mark.parametrize("what", list(TAMPERS))
def test_a_tampered_transcript_is_refused_by_sessions_show(
        what: str, closed: Closed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
        ) -> None:
    change, says = TAMPERS[what]
    db = tamper(closed, tmp_path, lambda row: change(row, closed))
    code, out = show(db, closed.session, capsys)
    assert code == 1, out
    verdict = out.rstrip().splitlines()[-1]
    assert ": BAD: " in verdict and says in verdict, verdict


def test_a_transcript_moved_to_another_case_is_refused(
        closed: Closed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tamper(closed, tmp_path, lambda row: setattr(row, "case_id", new_ulid()))
    code, out = show(db, closed.session, capsys)
    assert code == 1 and "BAD" in out, out


@pytest.mark.parametrize("junk", [b"\xff\xfe not UTF-8", b"[1, 2]", b"{\"seq\": "])
def test_a_stored_event_that_is_not_an_event_is_named_not_a_crash(
        junk: bytes, closed: Closed, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    def change(row: Row) -> None:
        row.events[1] = junk
    db = tamper(closed, tmp_path, change)
    try:
        code, out = show(db, closed.session, capsys)
    except Exception as exc:  # a traceback is not a verdict
        raise AssertionError(f"sessions show crashed: {exc!r}") from None
    assert code == 1 and "chain: event 2 is not" in out, out


# == 4. what a careless operator reads: logs, the audit chain, error texts ==================
@aio
async def test_no_token_or_citizen_id_shows_in_refusals_logs_or_audit_rows(
        fed: Federation) -> None:
    """Attacks that carry join and delegation tokens (one with a citizen id that fails its
    check digit, so it is refused by the member rule that reads it) in every place a
    token goes: whatever comes back, and whatever the gateways log and audit, names
    neither the tokens nor the id. (``nothing_leaks`` checks the logs and audit rows.)"""
    near = LI_SI.number[:-1] + ("0" if LI_SI.number[-1] != "0" else "1")  # bad check digit
    ids = (*CITIZENS, near)
    async with pair(fed) as pr:
        bad_id = secret(compact(key_of(ORIGIN), "tongban-delegation+jwt", canonical({
            "iss": ORIGIN, "aud": REMOTE, "ses": pr.session, "cas": "", "sub": near,
            "iat": int(time.time()), "exp": int(time.time()) + 600})))
        shown: list[str] = []
        for token in (bad_id, grant(pr.session, by=REMOTE, remote=REMOTE)):
            await pr.a.send(type="delegate", cid="d", token=token)
            shown.append(json.dumps(await pr.a.refusal("d"), ensure_ascii=False))
            async with page(fed, OGW, hello(token)) as bad:
                assert await bad.closed() == 4401
                shown.append(json.dumps(bad.got, ensure_ascii=False))
            shown.append(json.dumps(await upload(fed, OGW, pr.session, b"x",
                                                 auth=f"Bearer {token}"), ensure_ascii=False))
            async with relay(fed, RGW, open_frame(new_ulid(), token)) as stream:
                shown.append(" ".join(map(str, await stream.refused())))
            async with relay(fed, RGW, open_frame(pr.session, token), signer=REMOTE) as s2:
                shown.append(" ".join(map(str, await s2.refused())))
        text = "\n".join(shown)
        assert text.count('"reason": "TOKEN"') >= 4  # the refusals say what was wrong
        assert not [n[:16] for n in (*SECRETS, *ids) if n in text], text
        await pr.goes_on()
    outcomes = {row[1].outcome for row in read_audit(
        fed.apps[RGW].config.data_dir / "gateway.sqlite3") if row[1].method == RELAY}
    assert {"UNAUTHENTICATED", "PERMISSION_DENIED", "OK"} <= outcomes  # audited, clean
    SECRETS.add(near)  # and nothing_leaks looks for it in the logs and audit rows too
