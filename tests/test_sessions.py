"""屏对屏 sessions end to end (issue #14) without a browser: two clerks' WebSockets on two
gateways of the demo federation (启东 320681 at 320000-gw, 上海 310000 at 310000-gw),
the relay between them, resume after drops, refusals, and the transcript both gateways
sign at close (docs/sessions.md)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.issuer_seed import LI_SI
from gateway.cli import main as cli
from gateway.ids import new_ulid
from gateway.sessions.tokens import sign_delegation, sign_join
from gateway.signing import SigningKey, load_private_key
from tests.federation import ROOT, Federation, until

pytestmark = pytest.mark.asyncio
ORIGIN, REMOTE = "320681", "310000"


def key_of(partner: str) -> SigningKey:
    return load_private_key((ROOT / "demo-keys" / f"{partner}.pem").read_bytes(),
                            kid=f"{partner}#k1")


def join(fed: Federation, partner: str, session: str, *, side: str, other: str,
         clerk: str = "c1", case: str = "") -> str:
    return sign_join(key_of(partner), clerk=clerk, name=f"{partner}-{clerk}",
                     window=f"{partner}-w1", session=session, case=case, side=side,
                     other=other, now=fed.clock.now() if fed.clock else _now())


def _now() -> float:
    import time
    return time.time()


class Console:
    """A clerk's browser, reduced to its WebSocket: sends messages, collects what comes."""

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

    def events(self) -> list[dict[str, Any]]:
        return [m["event"] for m in self.got if m["type"] == "event"]

    def refused(self) -> list[dict[str, Any]]:
        return [m for m in self.got if m["type"] == "refused"]

    async def until(self, check: Any, within: float = 10.0) -> None:
        async def ok() -> bool:
            return bool(check(self))
        await until(ok, within=within)


@asynccontextmanager
async def console(fed: Federation, partner: str, token: str, after: int = 0
                  ) -> AsyncIterator[Console]:
    http = fed.config.gateways[fed.config.partners[partner].gateway].http
    app = next(a for a in fed.apps.values() if a.config.self_id
               == fed.config.partners[partner].gateway)
    http = app.config.me.http
    async with aiohttp.ClientSession() as client, \
            client.ws_connect(f"http://{http}/sessions/ws") as ws:
        page = Console(ws)
        await page.send(type="hello", token=token, after=after)
        try:
            yield page
        finally:
            page.reader.cancel()


async def test_two_clerks_chat_edit_share_and_close_with_a_signed_transcript(
        fed: Federation, tmp_path: Path) -> None:
    session = new_ulid()
    a_token = join(fed, ORIGIN, session, side="origin", other=REMOTE)
    b_token = join(fed, REMOTE, session, side="remote", other=ORIGIN)
    async with console(fed, ORIGIN, a_token) as a, console(fed, REMOTE, b_token) as b:
        await a.until(lambda c: any(m["type"] == "welcome" for m in c.got))
        await b.until(lambda c: any(m["type"] == "welcome" for m in c.got))
        await a.send(type="chat", cid="a1", text="您好，请出示身份证")
        await b.send(type="chat", cid="b1", text="收到")
        for page in (a, b):
            await page.until(lambda c: len([e for e in c.events() if e["type"] == "chat"]) == 2)
        assert [e["text"] for e in a.events()] == [e["text"] for e in b.events()]
        assert [e["seq"] for e in a.events()] == [e["seq"] for e in b.events()]
        # the remote clerk may not edit for the citizen until the citizen delegates
        await b.send(type="form", cid="b2", field="姓名", value="李四", base=0)
        await b.until(lambda c: any(r.get("reason") == "NO_DELEGATION" for r in c.refused())
                      or any(e.get("reason") == "NO_DELEGATION" for e in c.events()))
        grant = sign_delegation(key_of(ORIGIN), remote=REMOTE, session=session, case="",
                                citizen=LI_SI.number, now=_now())
        await a.send(type="delegate", cid="a2", token=grant)
        await b.until(lambda c: any(e["type"] == "delegate" for e in c.events()))
        await b.send(type="form", cid="b3", field="姓名", value="李四", base=0)
        await a.until(lambda c: any(e["type"] == "form" for e in c.events()))
        # a material uploaded at 上海 reaches 启东's gateway before the event naming it
        http_b = fed.apps["310000-gw"].config.me.http
        http_a = fed.apps["320000-gw"].config.me.http
        async with aiohttp.ClientSession() as client:
            async with client.post(f"http://{http_b}/sessions/{session}/materials",
                                   data=b"%PDF-1.7 scan", headers={
                                       "Authorization": f"Bearer {b_token}",
                                       "Content-Type": "application/pdf"}) as r:
                assert r.status == 200
                digest = (await r.json())["sha256"]
            await b.send(type="material", cid="b4", sha256=digest, name="户口簿.pdf",
                         size=13, media_type="application/pdf")
            await a.until(lambda c: any(e["type"] == "material" for e in c.events()))
            async with client.get(f"http://{http_a}/sessions/{session}/materials/{digest}",
                                  headers={"Authorization": f"Bearer {a_token}"}) as r:
                assert r.status == 200 and await r.read() == b"%PDF-1.7 scan"
            async with client.get(f"http://{http_a}/sessions/{session}/materials/{digest}"
                                  ) as r:
                assert r.status == 401  # a clerk of the session only
        await a.send(type="close", cid="a3")
        for page in (a, b):
            await page.until(lambda c: any(e["type"] == "closed" for e in c.events()))
    for gateway in ("320000-gw", "310000-gw"):
        app = fed.apps[gateway]

        async def kept(app: Any = app) -> bool:
            from gateway.store.offline import read_transcript
            t = read_transcript(app.config.data_dir / "gateway.sqlite3", session)
            return t is not None and len(t.signatures) == 2
        await until(kept)
        code = cli(["sessions", "show", session, "--config", str(ROOT / "partners.toml"),
                    "--db", str(app.config.data_dir / "gateway.sqlite3")])
        assert code == 0


async def test_a_dropped_relay_resumes_with_nothing_lost_or_twice(fed: Federation) -> None:
    session = new_ulid()
    a_token = join(fed, ORIGIN, session, side="origin", other=REMOTE)
    b_token = join(fed, REMOTE, session, side="remote", other=ORIGIN)
    async with console(fed, ORIGIN, a_token) as a, console(fed, REMOTE, b_token) as b:
        await a.send(type="chat", cid="a1", text="one")
        await b.until(lambda c: len(c.events()) >= 1)
        remote_live = fed.apps["310000-gw"].sessions.sessions[session]
        assert remote_live.pipe is not None
        remote_live.pipe.close()  # the relay stream ends under both gateways
        remote_live.pipe.done.set()
        await b.send(type="chat", cid="b1", text="two")  # queued at 上海 until resume
        await a.send(type="chat", cid="a2", text="three")
        for page in (a, b):
            await page.until(lambda c: len(c.events()) >= 3, within=15)
        await asyncio.sleep(0.3)
        for page in (a, b):
            texts = [e["text"] for e in page.events() if e["type"] == "chat"]
            assert sorted(texts) == ["one", "three", "two"] and len(texts) == 3
            assert [e["seq"] for e in page.events()] == list(range(1, len(page.events()) + 1))


async def test_a_clerk_who_reconnects_gets_only_what_was_missed(fed: Federation) -> None:
    session = new_ulid()
    a_token = join(fed, ORIGIN, session, side="origin", other=REMOTE)
    b_token = join(fed, REMOTE, session, side="remote", other=ORIGIN)
    async with console(fed, ORIGIN, a_token) as a:
        async with console(fed, REMOTE, b_token) as b:
            await a.send(type="chat", cid="a1", text="first")
            await b.until(lambda c: len(c.events()) == 1)
        await a.send(type="chat", cid="a2", text="while away")
        await a.until(lambda c: len(c.events()) == 2)
        async with console(fed, REMOTE, b_token, after=1) as again:
            await again.until(lambda c: len(c.events()) == 1)
            assert again.events()[0]["text"] == "while away"
            await again.send(type="chat", cid="b1", text="back")  # resent cid: once
            await again.send(type="chat", cid="b1", text="back")
            await a.until(lambda c: len(c.events()) == 3)
            await asyncio.sleep(0.3)
            assert len(a.events()) == 3


async def test_bad_joins_and_messages_are_refused_without_disturbing_the_others(
        fed: Federation) -> None:
    session = new_ulid()
    a_token = join(fed, ORIGIN, session, side="origin", other=REMOTE)
    async with console(fed, ORIGIN, a_token) as a:
        await a.until(lambda c: any(m["type"] == "welcome" for m in c.got))
        # a forged token, a token of another gateway's platform, another case's window
        forged = a_token[:-4] + ("AAAA" if not a_token.endswith("AAAA") else "BBBB")
        async with console(fed, ORIGIN, forged) as bad:
            await bad.until(lambda c: c.ws.closed)
            assert bad.ws.close_code == 4401
        elsewhere = join(fed, REMOTE, session, side="remote", other=ORIGIN)
        async with console(fed, ORIGIN, elsewhere) as bad:  # 上海's clerk at 320000-gw
            await bad.until(lambda c: c.ws.closed)
            assert bad.ws.close_code == 4403
        other_window = sign_join(key_of(ORIGIN), clerk="c2", name="另一窗口",
                                 window=f"{ORIGIN}-w2", session=session, case="",
                                 side="origin", other=REMOTE, now=_now())
        async with console(fed, ORIGIN, other_window) as bad:
            await bad.until(lambda c: c.ws.closed)
            assert bad.ws.close_code == 4403
        other_case = join(fed, ORIGIN, session, side="origin", other=REMOTE, case=new_ulid())
        async with console(fed, ORIGIN, other_case) as bad:
            await bad.until(lambda c: c.ws.closed)
            assert bad.ws.close_code == 4403
        await a.ws.send_str("not json")
        await a.send(type="chat", cid="x" * 100, text="hi")
        await a.send(type="chat", cid="a1", text="x" * 3000)
        await a.until(lambda c: len(c.refused()) >= 3)
        assert {r["reason"] for r in a.refused()} >= {"MALFORMED"}
        for i in range(80):  # a flood: refused RATE, the session goes on
            await a.send(type="ack", seq=i)
        await a.until(lambda c: any(r["reason"] == "RATE" for r in c.refused()))
        await asyncio.sleep(2.5)
        await a.send(type="chat", cid="a9", text="still here")
        await a.until(lambda c: any(e.get("text") == "still here" for e in c.events()))


async def test_a_sessions_transcript_is_part_of_its_cases_evidence(fed: Federation,
                                                                  tmp_path: Path) -> None:
    from gateway import evidence_file
    from gateway.pb.tongban.v1 import case_pb2 as pb
    from gateway.store.offline import read_evidence

    case = (await fed.client(ORIGIN).submit(
        case_number="QD-S-1", target_division="310000", item_code="yb-ba",
        applicant=pb.Applicant(id_type=pb.ID_TYPE_RESIDENT, id_number=LI_SI.number,
                               name="李四"))).case
    session = new_ulid()
    a_token = join(fed, ORIGIN, session, side="origin", other=REMOTE, case=case.case_id)
    b_token = join(fed, REMOTE, session, side="remote", other=ORIGIN, case=case.case_id)
    async with console(fed, ORIGIN, a_token) as a, console(fed, REMOTE, b_token) as b:
        await a.send(type="chat", cid="a1", text="请核对材料")
        await b.until(lambda c: len(c.events()) == 1)
        await b.send(type="close", cid="b1")
        await a.until(lambda c: any(e["type"] == "closed" for e in c.events()))
    keys = {p.id: list(p.keys) for p in (*fed.config.partners.values(),
                                         *fed.config.gateways.values())}
    for gateway in ("320000-gw", "310000-gw"):
        app = fed.apps[gateway]
        db = app.config.data_dir / "gateway.sqlite3"

        async def kept(db: Path = db) -> bool:
            found = read_evidence(db, case.case_id)
            return found is not None and len(found.sessions) == 1 \
                and len(found.sessions[0].signatures) == 2
        await until(kept)
        found = read_evidence(db, case.case_id)
        assert found is not None
        document = evidence_file.export(
            found, gateway=gateway, exported_at=0.0,
            keys=[k for ks in keys.values() for k in ks])
        verdict = evidence_file.verify(document, keys)
        assert verdict.ok and "1 session transcripts" in verdict.summary, verdict.summary
        tampered = json.loads(json.dumps(document))
        event = json.loads(base64.b64decode(tampered["sessions"][0]["events"][0]))
        event["text"] = "请不要核对"
        tampered["sessions"][0]["events"][0] = base64.b64encode(
            json.dumps(event, ensure_ascii=False, separators=(",", ":"),
                       sort_keys=True).encode()).decode()
        bad = evidence_file.verify(tampered, keys)
        assert not bad.ok and "session 0" in bad.summary, bad.summary
