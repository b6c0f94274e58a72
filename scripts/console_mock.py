"""A dev-only stand-in for one gateway's 屏对屏 endpoints (docs/sessions.md §4–5), so the
clerk console (gateway/web/console/) can be clicked through in two browser windows
without a federation. It reads join tokens without verifying them, keeps one session in
memory and sequences every event itself: never run it where real clerks could reach it.

    .venv/bin/python scripts/console_mock.py --port 8780

prints a URL for the origin clerk (with a delegation token) and one for the remote clerk.
`POST /mock/drop` closes every WebSocket (code 1012) to watch the console reconnect.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from gateway.ids import new_ulid

CONSOLE = Path(__file__).resolve().parent.parent / "gateway" / "web" / "console"
MAX_MATERIAL = 10 * 1024 * 1024  # docs/sessions.md §5
SIDES = ("origin", "remote")
Json = dict[str, Any]

# A made-up corner of the catalogue: enough for 智能帮办 to show a checklist and hints.
CATALOGUE: dict[str, Json] = {
    "gjj-tq": {
        "materials": [{"name": "身份证", "required": True},
                      {"name": "不动产权证书或购房合同", "required": True},
                      {"name": "银行卡", "required": False}],
        "hints": [{"field": "applicant_name", "label": "申请人姓名", "hint": "与身份证一致"},
                  {"field": "account_no", "label": "公积金账号", "hint": "12 位数字"},
                  {"field": "amount", "label": "提取金额（元）", "hint": "不超过账户余额"}],
    },
    "shebao-zy": {
        "materials": [{"name": "身份证", "required": True},
                      {"name": "参保缴费凭证", "required": True}],
        "hints": [{"field": "applicant_name", "label": "申请人姓名", "hint": "与身份证一致"},
                  {"field": "from_region", "label": "转出地", "hint": "参保所在地市"}],
    },
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def fake_jws(typ: str, claims: Json) -> str:
    """A token shaped like docs/signing.md's compact JWS, signed by nobody."""
    header = b64url(json.dumps({"alg": "EdDSA", "typ": typ}).encode())
    payload = b64url(json.dumps(claims, ensure_ascii=False).encode())
    return f"{header}.{payload}.{b64url(b'mock')}"


def payload(token: object) -> Json | None:
    """The payload of a compact JWS, unverified (this is a mock)."""
    if not isinstance(token, str) or token.count(".") != 2:
        return None
    part = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except ValueError:
        return None
    return claims if isinstance(claims, dict) else None


def read_claims(token: object) -> Json | None:
    """A join token's claims, or None when it names no side."""
    claims = payload(token)
    return claims if claims is not None and claims.get("sid") in SIDES else None


def parse(text: str) -> Json:
    """A browser message; anything but a JSON object reads as {} (refused MALFORMED)."""
    try:
        message = json.loads(text)
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}


def canonical(event: Json) -> bytes:
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class Clerk:
    side: str
    clerk: str
    name: str


@dataclass
class Session:
    """One session's state as the sequencer holds it (docs/sessions.md §1, §4, §7)."""

    id: str
    case: str
    events: list[Json] = field(default_factory=list)
    form: dict[str, Json] = field(default_factory=dict)
    seen: set[tuple[str, str, str]] = field(default_factory=set)
    materials: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    sockets: dict[web.WebSocketResponse, Clerk] = field(default_factory=dict)
    delegation_exp: int = 0
    closed: bool = False
    head: bytes = b""

    def __post_init__(self) -> None:
        self.head = hashlib.sha256(f"tongban-session:{self.id}".encode()).digest()

    async def sequence(self, who: Clerk, kind: str, cid: str, **members: Any) -> Json:
        event = {"seq": len(self.events) + 1, "at": round(time.time(), 3), "side": who.side,
                 "clerk": who.clerk, "name": who.name, "cid": cid, "type": kind, **members}
        self.events.append(event)
        self.head = hashlib.sha256(self.head + canonical(event)).digest()
        await self.broadcast({"type": "event", "event": event})
        return event

    async def broadcast(self, message: Json, *, side: str | None = None) -> None:
        for ws, clerk in list(self.sockets.items()):
            if side is None or clerk.side == side:
                await send(ws, message)

    async def presence(self) -> None:
        for side in SIDES:
            names = sorted({c.name for c in self.sockets.values() if c.side == side})
            await self.broadcast({"type": "presence", "side": side, "clerks": names,
                                  "link": "up"})


async def send(ws: web.WebSocketResponse, message: Json) -> None:
    if not ws.closed:
        await ws.send_str(json.dumps(message, ensure_ascii=False))


def refused(reason: str, message: str, cid: object = None, **extra: Any) -> Json:
    out: Json = {"type": "refused", "reason": reason, "message": message, **extra}
    if isinstance(cid, str):
        out["cid"] = cid
    return out


Handler = Callable[[Session, web.WebSocketResponse, Clerk, Json], Awaitable[None]]


async def on_chat(s: Session, ws: web.WebSocketResponse, who: Clerk, m: Json) -> None:
    text = m.get("text")
    if not isinstance(text, str) or not 0 < len(text) <= 2000:
        await send(ws, refused("MALFORMED", "聊天内容为空或超过 2000 字", m.get("cid")))
        return
    await s.sequence(who, "chat", m["cid"], text=text)


async def on_form(s: Session, ws: web.WebSocketResponse, who: Clerk, m: Json) -> None:
    name, value, base = m.get("field"), m.get("value"), m.get("base")
    if not (isinstance(name, str) and isinstance(value, str) and isinstance(base, int)):
        await send(ws, refused("MALFORMED", "表单修改格式有误", m.get("cid")))
        return
    if who.side == "remote" and s.delegation_exp < time.time():
        # §3: both sides see why the remote clerk's edit did not land.
        await s.broadcast(refused("NO_DELEGATION", "需要群众授权异地帮办后，办理地才能修改表单",
                                  m["cid"], field=name))
        return
    current = s.form.get(name, {"value": "", "version": 0})
    if base != current["version"]:
        await send(ws, refused("CONFLICT", "该字段已被修改，请选择保留哪个值", m["cid"],
                               field=name, value=current["value"],
                               version=current["version"]))
        return
    version = current["version"] + 1
    s.form[name] = {"value": value, "version": version}
    await s.sequence(who, "form", m["cid"], field=name, value=value, version=version)


async def on_material(s: Session, ws: web.WebSocketResponse, who: Clerk, m: Json) -> None:
    if m.get("sha256") not in s.materials:
        await send(ws, refused("UNKNOWN_MATERIAL", "材料尚未上传", m.get("cid")))
        return
    await s.sequence(who, "material", m["cid"], sha256=m["sha256"], name=str(m.get("name")),
                     size=m.get("size"), media_type=str(m.get("media_type")))


async def on_identity(s: Session, ws: web.WebSocketResponse, who: Clerk, m: Json) -> None:
    action, note = m.get("action"), str(m.get("note") or "")
    if action == "request":
        await s.sequence(who, "identity", m["cid"], action=action, note=note)
    elif action == "result" and m.get("result") in ("match", "no_match"):
        await s.sequence(who, "identity", m["cid"], action=action, result=m["result"], note=note)
    else:
        await send(ws, refused("MALFORMED", "身份核验格式有误", m.get("cid")))


async def on_signature(s: Session, ws: web.WebSocketResponse, who: Clerk, m: Json) -> None:
    if m.get("action") == "request":
        await s.sequence(who, "signature", m["cid"], action="request")
    elif m.get("action") == "result" and m.get("sha256") in s.materials:
        await s.sequence(who, "signature", m["cid"], action="result", sha256=m["sha256"])
    else:
        await send(ws, refused("UNKNOWN_MATERIAL", "签名图片尚未上传", m.get("cid")))


async def on_guidance(s: Session, ws: web.WebSocketResponse, who: Clerk, m: Json) -> None:
    item = CATALOGUE.get(str(m.get("item")))
    if item is None:
        await send(ws, refused("UNKNOWN_ITEM", f"目录中没有事项 {m.get('item')}", m.get("cid")))
        return
    await s.sequence(who, "guidance", m["cid"], item=m["item"], **item)


async def on_delegate(s: Session, ws: web.WebSocketResponse, who: Clerk, m: Json) -> None:
    claims = payload(m.get("token"))
    if who.side != "origin" or claims is None:
        await send(ws, refused("FORBIDDEN", "授权无效", m.get("cid")))
        return
    s.delegation_exp = int(claims.get("exp", 0))
    await s.sequence(who, "delegate", m["cid"], exp=s.delegation_exp)


async def on_close(s: Session, ws: web.WebSocketResponse, who: Clerk, m: Json) -> None:
    s.closed = True
    # The head of the chain so far (§7): the n events before this one.
    await s.sequence(who, "closed", m["cid"], n=len(s.events), head=b64url(s.head))


HANDLERS: dict[str, Handler] = {
    "chat": on_chat, "form": on_form, "material": on_material, "identity": on_identity,
    "signature": on_signature, "guidance": on_guidance, "delegate": on_delegate,
    "close": on_close,
}


async def dispatch(s: Session, ws: web.WebSocketResponse, who: Clerk, m: Json) -> None:
    kind = m.get("type")
    if kind == "rtc":  # §4: passed to the other side's browsers, never sequenced
        other = "remote" if who.side == "origin" else "origin"
        await s.broadcast({"type": "rtc", "side": who.side, "clerk": who.clerk,
                           "kind": m.get("kind"), "data": m.get("data")}, side=other)
        return
    if kind == "ack":
        return
    handler = HANDLERS.get(str(kind))
    cid = m.get("cid")
    if handler is None or not isinstance(cid, str):
        await send(ws, refused("MALFORMED", f"无法识别的消息 {kind}", cid))
        return
    if s.closed:
        await send(ws, refused("CLOSED", "会话已结束", cid))
        return
    if (who.side, who.clerk, cid) in s.seen:
        return  # a resend after a reconnect: applied once (§4)
    s.seen.add((who.side, who.clerk, cid))
    await handler(s, ws, who, m)


async def join(s: Session, ws: web.WebSocketResponse) -> Clerk | None:
    """Reads `hello`, answers `welcome` and the events after `after` (§4)."""
    first = await ws.receive()
    hello = parse(first.data) if first.type == WSMsgType.TEXT else {}
    claims = read_claims(hello.get("token")) if hello.get("type") == "hello" else None
    if claims is None:
        await send(ws, refused("TOKEN", "登录凭证无效"))
        await ws.close(code=4401)
        return None
    if claims.get("ses") != s.id:
        await send(ws, refused("FORBIDDEN", "不是本会话的凭证"))
        await ws.close(code=4403)
        return None
    who = Clerk(side=claims["sid"], clerk=str(claims.get("sub")), name=str(claims.get("name")))
    other = "remote" if who.side == "origin" else "origin"
    peer = any(c.side == other for c in s.sockets.values())
    await send(ws, {"type": "welcome", "session": s.id, "case": s.case, "side": who.side,
                    "clerk": who.clerk, "seq": len(s.events), "form": s.form,
                    "peer": "online" if peer else "offline", "closed": s.closed})
    after = hello.get("after") if isinstance(hello.get("after"), int) else 0
    for event in s.events[after:]:
        await send(ws, {"type": "event", "event": event})
    fresh = all(c.clerk != who.clerk or c.side != who.side for c in s.sockets.values())
    s.sockets[ws] = who
    if fresh and not s.closed:
        await s.sequence(who, "joined", "")
    await s.presence()
    return who


def make_app(session: Session) -> web.Application:
    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=64 * 1024)
        await ws.prepare(request)
        who = await join(session, ws)
        if who is None:
            return ws
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await dispatch(session, ws, who, parse(msg.data))
        finally:
            session.sockets.pop(ws, None)
            gone = all(c.clerk != who.clerk or c.side != who.side
                       for c in session.sockets.values())
            if gone and not session.closed:
                await session.sequence(who, "left", "")
            await session.presence()
        return ws

    def authorised(request: web.Request) -> None:
        auth = request.headers.get("Authorization", "")
        claims = read_claims(auth.removeprefix("Bearer "))
        if claims is None or claims.get("ses") != request.match_info["session"]:
            raise web.HTTPUnauthorized(text="bad token")

    async def upload(request: web.Request) -> web.Response:
        authorised(request)
        body = await request.read()
        sha = hashlib.sha256(body).hexdigest()
        media = request.content_type or "application/octet-stream"
        session.materials[sha] = (body, media)
        return web.json_response({"sha256": sha, "size": len(body), "media_type": media})

    async def download(request: web.Request) -> web.Response:
        authorised(request)
        found = session.materials.get(request.match_info["sha256"])
        if found is None:
            raise web.HTTPNotFound(text="unknown material")
        return web.Response(body=found[0], content_type=found[1])

    async def drop(_: web.Request) -> web.Response:
        for ws in list(session.sockets):
            await ws.close(code=1012, message=b"mock drop")
        return web.json_response({"dropped": True})

    async def index(request: web.Request) -> web.StreamResponse:
        if not request.path.endswith("/"):
            raise web.HTTPFound(request.rel_url.with_path("/sessions/console/"))
        return web.FileResponse(CONSOLE / "index.html")

    app = web.Application(client_max_size=MAX_MATERIAL)
    app.router.add_get("/sessions/ws", socket)
    app.router.add_post("/sessions/{session}/materials", upload)
    app.router.add_get("/sessions/{session}/materials/{sha256}", download)
    app.router.add_post("/mock/drop", drop)
    app.router.add_get("/sessions/console", index)
    app.router.add_get("/sessions/console/", index)
    app.router.add_static("/sessions/console/", CONSOLE)
    return app


def urls(base: str, session: Session) -> dict[str, str]:
    now = int(time.time())
    common = {"ses": session.id, "cas": session.case, "iat": now, "exp": now + 43200}
    origin = fake_jws("tongban-join+jwt", {"iss": "320105", "sub": "clerk-a", "name": "王敏",
                                           "win": "w-320105-01", "sid": "origin",
                                           "oth": "310115", **common})
    remote = fake_jws("tongban-join+jwt", {"iss": "310115", "sub": "clerk-b", "name": "李强",
                                           "win": "w-310115-07", "sid": "remote",
                                           "oth": "320105", **common})
    delegation = fake_jws("tongban-delegation+jwt", {
        "iss": "320105", "aud": "310115", "ses": session.id, "cas": session.case,
        "sub": "11010519491231002X", "iat": now, "exp": now + 7200})
    page = f"{base}/sessions/console/"
    return {"origin": f"{page}?token={origin}&delegation={delegation}",
            "remote": f"{page}?token={remote}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8780)
    parser.add_argument("--urls", type=Path, help="also write the two URLs here as JSON")
    args = parser.parse_args()
    session = Session(id=new_ulid(), case=new_ulid())
    links = urls(f"http://{args.host}:{args.port}", session)
    if args.urls:
        args.urls.write_text(json.dumps(links))
    print(f"受理地（origin）: {links['origin']}\n办理地（remote）: {links['remote']}", flush=True)
    web.run_app(make_app(session), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
