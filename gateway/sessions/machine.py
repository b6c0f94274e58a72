"""The sequencer's state of one 屏对屏 session, and every rule of its messages. No I/O.

docs/sessions.md §1, §3, §4. The origin side's gateway holds a :class:`Session` per
session; the WebSocket handler and the relay feed it what clerks send (``receive``) and
who comes and goes (``joined``/``left``), with the time, and send what it returns:
sequenced events for everyone, refusals for the author, signals passed to the other
side. The remote side's gateway keeps a mirror of the same state by ``replay``-ing the
events it receives, through the same effects, so the two cannot drift apart.

Who may do what in which state is one table, ``TRANSITIONS``, keyed like h11's
(state, side, message); a message with no entry is refused: CLOSED once the session has
ended, FORBIDDEN otherwise. The member rules of every message are data as well
(``MEMBERS``, ``RULES``). The refusal reasons and their Chinese texts are ``TEXTS``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from gateway.config_loader import ITEM_CODE
from gateway.errors import GatewayError
from gateway.signing import b64url

from .tokens import WORD, Delegation, Side
from .transcript import BrokenChain, Transcript, decode

Event = dict[str, Any]
VerifyDelegation = Callable[[str], Delegation]
# item code -> (the materials it requires, form hints: field -> hint), from the catalogue
Catalogue = Mapping[str, tuple[Sequence[str], Mapping[str, str]]]
SKEW_S: Final = 60


class State(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class Reason(StrEnum):
    """Why a message is refused (§4 ``refused``)."""

    NO_DELEGATION = "NO_DELEGATION"
    CONFLICT = "CONFLICT"
    RATE = "RATE"  # the hub's: a connection over its rate
    TOO_LARGE = "TOO_LARGE"
    MALFORMED = "MALFORMED"
    CLOSED = "CLOSED"
    TOKEN = "TOKEN"  # a join token (the hub's) or a delegation that does not verify
    FORBIDDEN = "FORBIDDEN"
    UNKNOWN_MATERIAL = "UNKNOWN_MATERIAL"
    UNKNOWN_ITEM = "UNKNOWN_ITEM"


TEXTS: Final[Mapping[Reason, str]] = {
    Reason.NO_DELEGATION: "群众尚未授权异地帮办，办理窗口不能代为填写表单",
    Reason.CONFLICT: "该栏目已被他人修改，请核对当前内容后再提交",
    Reason.RATE: "发送过于频繁，请稍后再试",
    Reason.TOO_LARGE: "内容超过长度限制",
    Reason.MALFORMED: "消息格式不正确",
    Reason.CLOSED: "会话已结束",
    Reason.TOKEN: "令牌或授权无效、已过期或不属于本会话",
    Reason.FORBIDDEN: "本窗口无权进行此项操作",
    Reason.UNKNOWN_MATERIAL: "该材料尚未上传到本网关",
    Reason.UNKNOWN_ITEM: "事项目录中没有该事项",
}


def refusal(reason: Reason, cid: str | None = None, message: str | None = None,
            **extra: Any) -> dict[str, Any]:
    """A ``refused`` message for a clerk (the hub builds RATE and TOKEN ones with it too)."""
    out: dict[str, Any] = {"type": "refused"}
    if cid is not None:
        out["cid"] = cid
    return out | {"reason": reason.value, "message": message or TEXTS[reason]} | extra


class Refused(Exception):
    """A handler's verdict against a message; ``receive`` turns it into a refusal."""

    def __init__(self, reason: Reason, message: str | None = None, **extra: Any) -> None:
        super().__init__(reason.value)
        self.reason, self.message, self.extra = reason, message, extra


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one input produced: sequenced events (for every clerk and the transcript),
    refusals (for the author only) and signals (rtc, for the other side's browsers)."""

    events: tuple[Event, ...] = ()
    refusals: tuple[dict[str, Any], ...] = ()
    signals: tuple[dict[str, Any], ...] = ()


# ---- the members of each message (§4) -------------------------------------------------

Check = Callable[[object], Reason | None]  # None: the value is good


def _text(low: int, high: int, *, line: bool) -> Check:
    """A string of low..high characters: one printable line, or free text (any
    character but controls other than tab and newline, and lone surrogates)."""
    def check(value: object) -> Reason | None:
        if not isinstance(value, str) or len(value) < low:
            return Reason.MALFORMED
        if len(value) > high:
            return Reason.TOO_LARGE
        good = value.isprintable() if line else not _CONTROL.search(value)
        return None if good else Reason.MALFORMED
    return check


def _pattern(pattern: re.Pattern[str]) -> Check:
    return lambda v: None if isinstance(v, str) and pattern.fullmatch(v) else Reason.MALFORMED


def _one_of(*values: str) -> Check:
    return lambda v: None if isinstance(v, str) and v in values else Reason.MALFORMED


def _count(low: int, high: int) -> Check:
    def check(value: object) -> Reason | None:
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            return Reason.MALFORMED
        return Reason.TOO_LARGE if value > high else None
    return check


def _signal_data(value: object) -> Reason | None:
    """An SDP (a string) or an ICE candidate (an object), at most 16 KiB as UTF-8 JSON."""
    if not isinstance(value, str | dict):
        return Reason.MALFORMED
    try:
        size = len(json.dumps(value, ensure_ascii=False).encode("utf-8"))
    except (ValueError, TypeError, RecursionError, UnicodeEncodeError):
        return Reason.MALFORMED
    return Reason.TOO_LARGE if size > RTC_DATA_BYTES else None


_CONTROL: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
MATERIAL_BYTES: Final = 10 * 2**20  # §5
RTC_DATA_BYTES: Final = 16 * 1024
SHA256: Final = re.compile(r"[0-9a-f]{64}")
MEDIA_TYPE: Final = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,62}/[a-z0-9][a-z0-9!#$&^_.+-]{0,62}")

RULES: Final[Mapping[str, Check]] = {
    "cid": _pattern(WORD),
    "text": _text(1, 2000, line=False),
    "field": _text(1, 64, line=True),
    "value": _text(0, 4096, line=False),
    "base": _count(0, 2**53),
    "sha256": _pattern(SHA256),
    "name": _text(1, 255, line=True),
    "size": _count(1, MATERIAL_BYTES),
    "media_type": _pattern(MEDIA_TYPE),
    "action": _one_of("request", "result"),
    "result": _one_of("match", "no_match"),
    "note": _text(0, 2000, line=False),
    "item": _pattern(ITEM_CODE),
    "token": _text(1, 8192, line=True),
    "kind": _one_of("offer", "answer", "candidate", "bye"),
    "data": _signal_data,
}
# type -> (required members, optional members), "type" aside
MEMBERS: Final[Mapping[str, tuple[frozenset[str], frozenset[str]]]] = {
    "chat": (frozenset({"cid", "text"}), frozenset()),
    "form": (frozenset({"cid", "field", "value", "base"}), frozenset()),
    "material": (frozenset({"cid", "sha256", "name", "size", "media_type"}), frozenset()),
    "identity": (frozenset({"cid", "action"}), frozenset({"result", "note"})),
    "signature": (frozenset({"cid", "action"}), frozenset({"sha256"})),
    "guidance": (frozenset({"cid", "item"}), frozenset()),
    "delegate": (frozenset({"cid", "token"}), frozenset()),
    "rtc": (frozenset({"kind", "data"}), frozenset()),
    "close": (frozenset({"cid"}), frozenset()),
}
# an action's own members: present exactly for the action that has them
ACTION_MEMBERS: Final[Mapping[str, Mapping[str, frozenset[str]]]] = {
    "identity": {"request": frozenset(), "result": frozenset({"result"})},
    "signature": {"request": frozenset(), "result": frozenset({"sha256"})},
}


def check_message(message: Mapping[str, Any]) -> tuple[str, Reason | None]:
    """The verb of a message (its type, with the action for identity and signature)
    and the first reason to refuse its form, or None."""
    kind = message.get("type")
    if not isinstance(kind, str) or kind not in MEMBERS:
        return "", Reason.MALFORMED
    required, optional = MEMBERS[kind]
    if not required <= message.keys() or message.keys() - required - optional - {"type"}:
        return kind, Reason.MALFORMED
    for member in sorted(message.keys() - {"type"}):
        reason = RULES[member](message[member])
        if reason is not None:
            return kind, reason
    if kind not in ACTION_MEMBERS:
        return kind, None
    own = ACTION_MEMBERS[kind][message["action"]]
    extra = frozenset().union(*ACTION_MEMBERS[kind].values()) & message.keys()
    return f"{kind}.{message['action']}", None if extra == own else Reason.MALFORMED


@dataclass(frozen=True, slots=True)
class Request:
    """One clerk's message as a handler sees it."""

    side: Side
    clerk: str
    name: str
    at: int
    message: Mapping[str, Any]
    verify_delegation: VerifyDelegation

    @property
    def cid(self) -> str:
        return str(self.message.get("cid", ""))


Handler = Callable[["Session", Request], Outcome]
Effect = Callable[["Session", Event], None]


class Session:
    """One session at the sequencer: its form, materials, delegation, clerks and log."""

    def __init__(self, session_id: str, *, case: str, origin: str, remote: str,
                 catalogue: Catalogue) -> None:
        self.id, self.case = session_id, case
        self.platforms: Mapping[Side, str] = {Side.ORIGIN: origin, Side.REMOTE: remote}
        self.catalogue = catalogue
        self.state = State.OPEN
        self.form: dict[str, tuple[str, int]] = {}  # field -> (value, version)
        self.materials: set[str] = set()  # SHA-256 hex of the bytes this gateway holds
        self.delegation: Delegation | None = None  # the last one accepted here
        self.delegation_exp = 0  # when the delegation in force ends (0: none)
        self.delegations: list[tuple[int, str]] = []  # (seq, token): the consent, evidence
        self.clerks: dict[tuple[Side, str], str] = {}  # every clerk seen -> display name
        self.online: set[tuple[Side, str]] = set()  # joined and not left, per the events
        self.log: list[Event] = []
        self.transcript = Transcript(session_id)
        self._cids: set[tuple[str, str, str]] = set()  # (side, clerk, cid) sequenced
        self._connections: dict[tuple[Side, str], int] = {}

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def seq(self) -> int:
        return len(self.log)

    def hold(self, sha256: str) -> None:
        """The hub stored (or received over the relay) these bytes: events may name them."""
        self.materials.add(sha256)

    def delegated_at(self, at: float) -> bool:
        return at < self.delegation_exp

    # ---- inputs ----------------------------------------------------------------------

    def receive(self, side: Side, clerk: str, name: str, message: Mapping[str, object], *,
                at: float, verify_delegation: VerifyDelegation) -> Outcome:
        """Apply one clerk's message at time ``at``. A message resent with a ``cid``
        already sequenced for this clerk gives nothing (it was applied once)."""
        side = Side(side)
        if not isinstance(message, Mapping):
            return Outcome(refusals=(refusal(Reason.MALFORMED),))
        raw_cid = message.get("cid")
        cid = raw_cid if isinstance(raw_cid, str) and WORD.fullmatch(raw_cid) else None
        if cid is not None and (side.value, clerk, cid) in self._cids:
            return Outcome()
        verb, reason = check_message(message)
        if reason is not None:
            return Outcome(refusals=(refusal(reason, cid),))
        handler = TRANSITIONS.get((self.state, side, verb))
        if handler is None:
            return Outcome(refusals=(refusal(
                Reason.CLOSED if self.closed else Reason.FORBIDDEN, cid),))
        request = Request(side, clerk, name, self._time(at), message, verify_delegation)
        try:
            return handler(self, request)
        except Refused as exc:
            return Outcome(refusals=(refusal(exc.reason, cid, exc.message, **exc.extra),))

    def joined(self, side: Side, clerk: str, name: str, at: float) -> Outcome:
        """A connection of this clerk opened: a ``joined`` event for its first one."""
        side = Side(side)
        key = (side, clerk)
        self._connections[key] = self._connections.get(key, 0) + 1
        if self._connections[key] > 1 or self.closed:
            return Outcome()
        return Outcome(events=(self._sequence(side, clerk, name, "", self._time(at),
                                              "joined"),))

    def left(self, side: Side, clerk: str, name: str, at: float) -> Outcome:
        """A connection of this clerk ended: a ``left`` event for its last one."""
        side = Side(side)
        key = (side, clerk)
        if self._connections.get(key, 0) == 0:
            return Outcome()
        self._connections[key] -= 1
        if self._connections[key] or self.closed:
            return Outcome()
        return Outcome(events=(self._sequence(side, clerk, name, "", self._time(at),
                                              "left"),))

    def replay(self, data: bytes) -> Event:
        """Take an event sequenced elsewhere (the relay's bytes, or a stored transcript
        read back): chained as it came, with the same effects as at the sequencer."""
        event = decode(data, self.transcript.n + 1)
        if not _well_formed(event):
            raise BrokenChain(f"event {event['seq']} lacks what its type needs",
                              seq=event["seq"])
        self.transcript.append_encoded(data)
        self._commit(event)
        return event

    # ---- outputs ---------------------------------------------------------------------

    def events_after(self, seq: int) -> list[Event]:
        """The events after ``seq``, for a browser that rejoins with ``hello.after``."""
        return self.log[max(seq, 0):]

    def welcome(self, side: Side, clerk: str) -> dict[str, Any]:
        """The §4 ``welcome`` for a clerk (``peer`` as the events tell it; the hub may
        know better of the relay)."""
        side = Side(side)
        other = Side.REMOTE if side is Side.ORIGIN else Side.ORIGIN
        return {"type": "welcome", "session": self.id, "case": self.case,
                "side": side.value, "clerk": clerk, "seq": self.seq,
                "form": {f: {"value": v, "version": n} for f, (v, n) in self.form.items()},
                "peer": "online" if any(s is other for s, _ in self.online) else "offline",
                "closed": self.closed}

    # ---- sequencing ------------------------------------------------------------------

    def _time(self, at: float) -> int:
        # whole seconds (canonical JSON has no portable floats), never going back
        return max(int(at), self.log[-1]["at"] if self.log else 0)

    def _sequence(self, side: Side, clerk: str, name: str, cid: str, at: int, kind: str,
                  **members: Any) -> Event:
        event: Event = {"seq": self.seq + 1, "at": at, "side": side.value, "clerk": clerk,
                        "name": name, "cid": cid, "type": kind} | members
        self.transcript.append(event)
        self._commit(event)
        return event

    def _commit(self, event: Event) -> None:
        self.log.append(event)
        side, clerk = Side(event["side"]), event["clerk"]
        self.clerks[(side, clerk)] = event["name"]
        if event["cid"]:
            self._cids.add((side.value, clerk, event["cid"]))
        effect = EFFECTS.get(event["type"])
        if effect is not None:
            effect(self, event)

    def _emit(self, request: Request, kind: str | None = None, **members: Any) -> Outcome:
        """Sequence the request as an event of ``kind`` (the message's type by default)."""
        event = self._sequence(request.side, request.clerk, request.name, request.cid,
                               request.at, kind or str(request.message["type"]), **members)
        return Outcome(events=(event,))

    # ---- handlers: the message is well-formed and its sender allowed -----------------

    def _chat(self, r: Request) -> Outcome:
        return self._emit(r, text=r.message["text"])

    def _form(self, r: Request) -> Outcome:
        field, value, base = r.message["field"], r.message["value"], r.message["base"]
        current, version = self.form.get(field, ("", 0))
        if base != version:  # §4: the edit sequenced first wins
            raise Refused(Reason.CONFLICT, field=field, value=current, version=version)
        return self._emit(r, field=field, value=value, version=version + 1)

    def _delegated_form(self, r: Request) -> Outcome:
        if not self.delegated_at(r.at):
            # §3: both sides see why, so the origin clerk can ask for the citizen's consent
            outcome = self._emit(r, "refused", reason=Reason.NO_DELEGATION.value,
                                 message=TEXTS[Reason.NO_DELEGATION], field=r.message["field"])
            return Outcome(events=outcome.events,
                           refusals=(refusal(Reason.NO_DELEGATION, r.cid),))
        return self._form(r)

    def _material(self, r: Request) -> Outcome:
        m = r.message
        self._known(m["sha256"])
        # the event's "name" is the clerk's (§4), so the file's is "file_name"
        return self._emit(r, sha256=m["sha256"], file_name=m["name"], size=m["size"],
                          media_type=m["media_type"])

    def _identity(self, r: Request) -> Outcome:
        members = {k: r.message[k] for k in ("action", "result") if k in r.message}
        return self._emit(r, note=r.message.get("note", ""), **members)

    def _signature(self, r: Request) -> Outcome:
        if r.message["action"] == "result":
            self._known(r.message["sha256"])
            return self._emit(r, action="result", sha256=r.message["sha256"])
        return self._emit(r, action="request")

    def _guidance(self, r: Request) -> Outcome:
        item = r.message["item"]
        if item not in self.catalogue:
            raise Refused(Reason.UNKNOWN_ITEM)
        materials, hints = self.catalogue[item]
        return self._emit(r, item=item, materials=list(materials), hints=dict(hints))

    def _delegate(self, r: Request) -> Outcome:
        try:
            d = r.verify_delegation(r.message["token"])
        except GatewayError:
            raise Refused(Reason.TOKEN, "授权书验证未通过（签名、格式或有效期）") from None
        if (d.iss, d.remote, d.session, d.case) != (
                self.platforms[Side.ORIGIN], self.platforms[Side.REMOTE], self.id, self.case):
            raise Refused(Reason.TOKEN, "授权书不是本会话双方平台和本办件的")
        if not d.iat - SKEW_S <= r.at < d.exp:
            raise Refused(Reason.TOKEN, "授权书不在有效期内")
        self.delegation = d
        self.delegations.append((self.seq + 1, r.message["token"]))
        return self._emit(r, exp=d.exp)  # the token stays here: it names the citizen

    def _close(self, r: Request) -> Outcome:
        # the head of everything before it: an event cannot carry its own hash
        return self._emit(r, "closed", n=self.transcript.n, head=b64url(self.transcript.head))

    def _rtc(self, r: Request) -> Outcome:
        return Outcome(signals=({"type": "rtc", "side": r.side.value, "clerk": r.clerk,
                                 "kind": r.message["kind"], "data": r.message["data"]},))

    def _known(self, sha256: str) -> None:
        if sha256 not in self.materials:
            raise Refused(Reason.UNKNOWN_MATERIAL)


# ---- effects of sequenced events, the same at the sequencer and at a mirror ----------

# what the effects (and every reader) rely on, checked on events that come from elsewhere
SHAPES: Final[Mapping[str, Mapping[str, type]]] = {
    "": {"at": int, "side": str, "clerk": str, "name": str, "cid": str, "type": str},
    "form": {"field": str, "value": str, "version": int},
    "delegate": {"exp": int},
}


def _well_formed(event: Mapping[str, Any]) -> bool:
    def fits(shape: Mapping[str, type]) -> bool:
        return all(isinstance(event.get(k), t) and not isinstance(event.get(k), bool)
                   for k, t in shape.items())
    return fits(SHAPES[""]) and event["side"] in {s.value for s in Side} \
        and fits(SHAPES.get(event["type"], {}))


def _set_field(s: Session, e: Event) -> None:
    s.form[e["field"]] = (e["value"], e["version"])


def _set_delegation(s: Session, e: Event) -> None:
    s.delegation_exp = e["exp"]


def _close_session(s: Session, e: Event) -> None:
    s.state = State.CLOSED


EFFECTS: Final[Mapping[str, Effect]] = {
    "form": _set_field,
    "delegate": _set_delegation,
    "closed": _close_session,
    "joined": lambda s, e: s.online.add((Side(e["side"]), e["clerk"])),
    "left": lambda s, e: s.online.discard((Side(e["side"]), e["clerk"])),
}

# ---- who may do what, when (a miss is a refusal) ---------------------------------------

OPEN: Final = State.OPEN
_EITHER: Final[Mapping[str, Handler]] = {
    "chat": Session._chat, "material": Session._material,
    "identity.request": Session._identity, "identity.result": Session._identity,
    "signature.request": Session._signature, "guidance": Session._guidance,
    "rtc": Session._rtc, "close": Session._close,
}
TRANSITIONS: Final[Mapping[tuple[State, Side, str], Handler]] = {
    **{(OPEN, side, verb): h for side in Side for verb, h in _EITHER.items()},
    (OPEN, Side.ORIGIN, "form"): Session._form,  # the citizen is at the origin window
    (OPEN, Side.REMOTE, "form"): Session._delegated_form,  # under a delegation only (§3)
    (OPEN, Side.ORIGIN, "delegate"): Session._delegate,  # consent is given where the citizen is
    (OPEN, Side.ORIGIN, "signature.result"): Session._signature,  # signed on the origin's pad
}
