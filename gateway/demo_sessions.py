"""The 屏对屏 part of `tongban demo` (docs/sessions.md): two console URLs with ready join
tokens, a clerk at 启东 (320681, the origin window) and a clerk at 上海 (310000, the
handling region), so a person can try a session in two browser windows. The tokens are
signed with the platforms' demo keys, as each platform would sign its own clerk's."""

from __future__ import annotations

from collections.abc import Callable

from adapters.issuer_seed import LI_SI  # the citizen at the 启东 window
from gateway.config import Config
from gateway.ids import new_ulid
from gateway.sessions.tokens import sign_delegation, sign_join
from gateway.signing import load_private_key

ORIGIN, REMOTE = "320681", "310000"  # 启东 window, 上海 handling region


def console_links(config: Config, now: Callable[[], float], case_id: str = "",
                  ttl: int = 8 * 3600) -> list[tuple[str, str]]:
    """(who, URL) for the two clerks of one new session; the origin clerk's URL also
    carries the citizen's delegation (异地帮办授权) to grant from the console."""
    session = new_ulid()

    def key(partner: str):  # type: ignore[no-untyped-def]
        pem = (config.source.parent / "demo-keys" / f"{partner}.pem").read_bytes()
        return load_private_key(pem, kid=f"{partner}#k1")

    links = []
    for partner, side, other, clerk, name in (
            (ORIGIN, "origin", REMOTE, "qd-window-3", "启东窗口 王芳"),
            (REMOTE, "remote", ORIGIN, "sh-expert-1", "上海专员 陈立")):
        token = sign_join(key(partner), clerk=clerk, name=name, window=f"{partner}-w1",
                          session=session, case=case_id, side=side, other=other,
                          now=now(), ttl=ttl)
        http = config.gateways[config.partners[partner].gateway].http
        url = f"http://{http}/sessions/console/?token={token}"
        if side == "origin":
            delegation = sign_delegation(key(ORIGIN), remote=REMOTE, session=session,
                                         case=case_id, citizen=LI_SI.number, now=now(),
                                         ttl=2 * 3600)
            url += f"&delegation={delegation}"
        links.append((name, url))
    return links
