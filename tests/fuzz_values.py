"""Hypothesis strategies for tests/test_fuzz.py: odd text, whole request messages, tokens.

Text never holds a lone surrogate: a protobuf string is UTF-8 and cannot carry one (the
Python runtime refuses to encode it), so the odd cases are NUL, bidirectional overrides,
combining marks, full-width digits, 4-byte emoji and sheer length.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import strategies as st

from gateway.certificates.authorization import TYP as AUTHZ_TYP
from gateway.certificates.documents import canonical
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import certificate_pb2 as cpb
from gateway.pb.tongban.v1 import gateway_pb2 as gw
from gateway.signing import TYP, SigningKey, b64url, claims_for
from tests import fuzz_wire as wire

RESIDENT_ID = "11010519491231002X"
CREDIT_CODE = "91320105MA1MXXXX0H"
ODD = (
    "\x00", "a\x00b", "\u202e", "\u202egnp.exe", "\u2066x\u2069", "e\u0301\u0301\u0301\u0301",
    "１２３４５６", "１１０１０５１９４９１２３１００２Ｘ", "😀", "👨\u200d👩\u200d👧\u200d👦", "\ufeff",
    "\u200b", "\uffff", "\U0010ffff", "\U000e0001", "\r\n", "\n", " ", "\t\v\f",
    "11010519491231002X\n", "110105 19491231 002X", "JY-2026-9\n", "JY-2026-9\x00",
    "'; DROP TABLE cases;--", "%s%n%x%d", "{0}{1}", "../../etc/passwd", "\\", "\"",
    "\n2026-01-01 00:00:00 CRITICAL forged log line", "<script>alert(1)</script>",
    "${jndi:ldap://x}", "+86 138-1234-5678", "１３８１２３４５６７８", "NaN", "-0", "1e309",
    "张三", "南京市建邺区", "ﾃｽﾄ", "Ω" * 3, "\u0301", "\u034f" * 40,
)
ODD_UNITS = ("x", "张", "😀", "\u0301", "\x00", "\u202e", "１")


def texts(*, long: bool = True) -> st.SearchStrategy[str]:
    """Short odd text mostly; now and then a long or very long run of one odd unit."""
    parts: list[st.SearchStrategy[str]] = [
        st.text(max_size=40),
        st.sampled_from(ODD),
        st.lists(st.sampled_from(ODD), min_size=2, max_size=4).map("".join),
    ]
    if long:
        parts.append(st.builds(lambda unit, n: unit * n, st.sampled_from(ODD_UNITS),
                               st.sampled_from((65, 257, 1025, 70_000, 1_100_000))))
    return st.one_of(*parts)


def ids(known: Sequence[str]) -> st.SearchStrategy[str]:
    """A real id from the running federation most of the time, anything otherwise."""
    if not known:
        return texts()
    return st.one_of(st.sampled_from(list(known)), st.sampled_from(list(known)), texts(),
                     st.sampled_from(list(known)).map(lambda k: k + "\n"),
                     st.sampled_from(list(known)).map(str.lower))


int32s = st.one_of(st.sampled_from((0, 1, -1, 2, 3, 5, 6, 2**31 - 1, -(2**31))),
                   st.integers(-(2**31), 2**31 - 1))
int64s = st.one_of(st.sampled_from((0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63))),
                   st.integers(-(2**63), 2**63 - 1))


def enums(values: Sequence[int]) -> st.SearchStrategy[int]:
    """proto3 enums are open: any int32 arrives as is."""
    return st.one_of(st.sampled_from(list(values)), int32s)


# Timestamp's valid range is 0001-01-01 .. 9999-12-31 (google/protobuf/timestamp.proto);
# seconds and nanos outside it still encode and arrive.
SECONDS_EDGES = (0, 1_767_225_600, 253402300799, 253402300800, -62135596800, -62135596801,
                 2**63 - 1, -(2**63), 10**12, -1)
timestamps = st.builds(
    lambda s, n: Timestamp(seconds=s, nanos=n),
    st.one_of(st.sampled_from(SECONDS_EDGES), st.integers(-(2**63), 2**63 - 1),
              st.integers(1_700_000_000, 2_100_000_000)),
    st.one_of(st.just(0), st.sampled_from((-1, 999_999_999, 1_000_000_000, 2**31 - 1,
                                           -(2**31))), st.integers(0, 999_999_999)))
DIVISIONS = ("320105", "320100", "320115", "310115", "310000", "310108", "320681", "341100",
             "320000", "999999", "540000", "3201", "32010", "0")
ITEMS = ("yyzz-bg", "shebao-zy", "hukou-qy", "gjj-tq", "yb-ba", "jdc-wf", "no-such-item")
PARTIES = ("320105", "320100", "341100", "320000", "320681", "310000", "310115",
           "320100-gw", "320000-gw", "310000-gw", "320100-jc")
sha256s = st.one_of(st.text("0123456789abcdef", min_size=64, max_size=64), texts(long=False),
                    st.text("0123456789ABCDEF", min_size=64, max_size=64))

applicants = st.builds(
    pb.Applicant, id_type=enums(pb.IdType.values()),
    id_number=st.one_of(st.sampled_from((RESIDENT_ID, CREDIT_CODE)), texts()),
    name=st.one_of(st.just("张三"), texts()), phone=st.one_of(st.just(""), texts(long=False)))
materials = st.builds(pb.MaterialRef, name=texts(), sha256=sha256s, size_bytes=int64s,
                      media_type=st.one_of(st.just("application/pdf"), texts(long=False)))
deliveries = st.builds(pb.ResultDelivery, method=enums(pb.DeliveryMethod.values()),
                       window=texts(), carrier=texts(long=False), tracking_number=texts(),
                       address=texts(), certificate_ref=texts())
forms = st.one_of(st.dictionaries(texts(long=False), texts(), max_size=4),
                  st.integers(199, 205).map(lambda n: {f"k{i}": "v" for i in range(n)}))
ratings = st.builds(pb.Rating, score=int32s, channel=enums(pb.RatingChannel.values()),
                    comment=texts(), at=timestamps, rater=st.sampled_from(PARTIES),
                    rectification_deadline=timestamps, rectification_report=texts())


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


def _message(cls: type[Message], **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """cls with each field drawn or left unset (unset is the common, realistic case)."""
    return st.fixed_dictionaries({}, optional=fields).map(lambda kw: cls(**kw))


submits = _message(
    gw.SubmitCaseRequest,
    case_number=st.one_of(st.from_regex(r"[A-Za-z0-9_\-./:]{1,64}", fullmatch=True), texts()),
    target_division=st.one_of(st.sampled_from(DIVISIONS), texts()),
    item_code=st.one_of(st.sampled_from(ITEMS), texts()), mode=enums(pb.HandlingMode.values()),
    applicant=applicants, form=forms, materials=st.lists(materials, max_size=3),
    delivery_preference=deliveries)


def cases(known: Sequence[str]) -> st.SearchStrategy[pb.Case]:
    return _message(
        pb.Case, case_id=ids(known), case_number=texts(), origin_partner=st.one_of(
            st.sampled_from(PARTIES), texts()),
        origin_gateway=st.sampled_from(PARTIES), target_division=st.one_of(
            st.sampled_from(DIVISIONS), texts()),
        requested_division=st.sampled_from(DIVISIONS), target_partner=st.sampled_from(PARTIES),
        item_code=st.one_of(st.sampled_from(ITEMS), texts()), mode=enums(pb.HandlingMode.values()),
        scope=enums(pb.Scope.values()), alliance=texts(long=False), applicant=applicants,
        form=forms, materials=st.lists(materials, max_size=2), state=enums(pb.CaseState.values()),
        timeline=st.lists(st.builds(pb.StatusChange, state=enums(pb.CaseState.values()),
                                    at=timestamps, actor=texts(long=False), note=texts(),
                                    update_id=texts(long=False)), max_size=3),
        submitted_at=timestamps, updated_at=timestamps, deadline=timestamps,
        missing_materials=st.lists(texts(), max_size=3), commitment_deadline=timestamps,
        delivery_preference=deliveries, delivery=deliveries, rating=ratings,
        bundle_id=texts(long=False))


def updates(known: Sequence[str]) -> st.SearchStrategy[pb.CaseUpdate]:
    return _message(
        pb.CaseUpdate, case_id=ids(known),
        update_id=st.one_of(st.from_regex(r"[A-Za-z0-9_\-.:]{1,80}", fullmatch=True), texts()),
        state=enums(pb.CaseState.values()), note=texts(),
        missing_materials=st.lists(texts(), max_size=3),
        supplement=st.lists(materials, max_size=2), actor=st.sampled_from(PARTIES),
        at=timestamps, commitment_deadline=timestamps, delivery=deliveries, rating=ratings,
        rectification_report=texts())


def requests(method: str, known_cases: Sequence[str], known_bundles: Sequence[str],
             certs: Certs | None = None) -> st.SearchStrategy[Any]:
    """Whole request messages for one Gateway method, every field odd now and then."""
    if method in CERTIFICATE_METHODS:
        return certificate_requests(method, certs or Certs())
    case_ids = ids(known_cases)
    builders: dict[str, Callable[[], st.SearchStrategy[Any]]] = {
        "SubmitCase": lambda: submits,
        "GetCase": lambda: _message(gw.GetCaseRequest, case_id=case_ids),
        "UpdateCase": lambda: _message(gw.UpdateCaseRequest, update=updates(known_cases)),
        "CancelCase": lambda: _message(gw.CancelCaseRequest, case_id=case_ids, reason=texts()),
        "WatchCase": lambda: _message(gw.WatchCaseRequest, case_id=case_ids),
        "ListItems": lambda: _message(gw.ListItemsRequest, alliance=st.one_of(
            st.sampled_from(("nanjing-metro", "yangtze-delta")), texts())),
        "RateCase": lambda: _message(gw.RateCaseRequest, case_id=case_ids, score=int32s,
                                     channel=enums(pb.RatingChannel.values()), comment=texts()),
        "SubmitBundle": lambda: _message(
            gw.SubmitBundleRequest, bundle_number=texts(), name=texts(),
            parts=st.one_of(st.lists(submits, max_size=3),
                            st.integers(19, 22).map(lambda n: [gw.SubmitCaseRequest(
                                case_number=f"P-{i}") for i in range(n)]))),
        "GetBundle": lambda: _message(gw.GetBundleRequest, bundle_id=ids(known_bundles)),
        "Subscribe": lambda: _message(gw.SubscribeRequest, after=int64s,
                                      kinds=st.lists(enums(pb.EventKind.values()), max_size=4)),
        "ForwardCase": lambda: _message(gw.ForwardCaseRequest, case=cases(known_cases),
                                        hops=int32s, path=st.lists(st.one_of(
                                            st.sampled_from(PARTIES), texts()), max_size=5)),
    }
    return builders[method]()


def with_unknown_fields(message: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """A message's bytes, sometimes with unknown or ill-typed fields around them."""
    return st.builds(
        lambda m, before, after: (b"".join(f.encode() for f in before) + m.SerializeToString()
                                  + b"".join(f.encode() for f in after)),
        message, st.one_of(st.just([]), wire.raw_fields(2)),
        st.one_of(st.just([]), st.just([]), wire.raw_fields(3)))


# -- tokens -----------------------------------------------------------------------------
def _signed(key: SigningKey, header: bytes, payload: bytes) -> str:
    """A compact JWS (RFC 7515 §7.1) over any header and payload bytes, really signed."""
    signing_input = f"{b64url(header)}.{b64url(payload)}"
    if key.alg == "EdDSA":
        signature = key.key.sign(signing_input.encode("ascii"))  # type: ignore[call-arg]
    else:  # pragma: no cover - the demo keys are Ed25519
        raise NotImplementedError(key.alg)
    return f"{signing_input}.{b64url(signature)}"


def _header(key: SigningKey, **changes: Any) -> bytes:
    header: dict[str, Any] = {"alg": key.alg, "kid": key.kid, "typ": TYP}
    header.update(changes)
    return json.dumps(header, separators=(",", ":")).encode()


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30),
                         st.floats(allow_nan=False), texts(long=False))
JSON_ANY = st.recursive(JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(texts(long=False), inner, max_size=3)),
    max_leaves=8)
BAD_JTI = ("!!!!!!!!!!!!!!!!!!!!!!!!", "é" * 22, "AAAAAAAAAAAAAAAAAAAAAA==", "A", "",
           "AAAAAAAAAAAAAAAAAAAAA", "A" * 23 + "*", "AAAA AAAA AAAA AAAA AAAA AA",
           "x" * 100_000, "\x00" * 22, "AAAAAAAAAAAAAAAAAAAAAA\n", "+/+/+/+/+/+/+/+/+/+/+/")


# what a gRPC text header can carry (PROTOCOL-HTTP2.md: ASCII-Value is %x20-%x7E)
PRINTABLE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300)


def _deep(depth: int, opener: str) -> bytes:
    """JSON nested depth deep: `[[[1]]]` or `{"a":{"a":1}}`."""
    closer = {"[": "]", "{\"a\":": "}"}[opener]
    return (opener * depth + "1" + closer * depth).encode()


@st.composite
def tokens(draw: st.DrawFn, key: SigningKey, *, iss: str, aud: str, method: str, body: bytes,
           now: float) -> str:
    """A token for body that is wrong in one way, most of them really signed by key so
    that the claim checks behind the signature check are reached."""
    _, good = claims_for(key, iss=iss, aud=aud, method=method, body=body, now=now)
    claims: dict[str, Any] = json.loads(good)
    kind = draw(st.sampled_from(("claim", "claim", "claim", "payload", "header",
                                 "header_unsigned", "text", "mutated", "batch")))
    if kind == "claim":  # signed, one claim odd
        name = draw(st.sampled_from(("iss", "aud", "iat", "exp", "jti", "mth", "bdg", "extra",
                                     "drop")))
        if name == "jti":
            claims["jti"] = draw(st.one_of(st.sampled_from(BAD_JTI), texts(), JSON_ANY))
        elif name in ("iat", "exp"):
            claims[name] = draw(st.one_of(
                st.sampled_from((10**30, -(10**30), 2**63, -(2**63), 2**64, 0, -1,
                                 int(now) + 10**9, 1.5, float(int(now)), True, "1", None)),
                # an offset, not absolute bounds: the choices must not depend on the clock
                st.integers(-(10**6), 10**6).map(lambda d: int(now) + d), JSON_ANY))
        elif name == "aud":
            claims["aud"] = draw(st.one_of(st.just([aud]), st.just([aud, "x"]),
                                           st.just([[aud]]), st.just({"aud": aud}), JSON_ANY))
        elif name == "extra":
            claims[draw(texts(long=False))] = draw(st.one_of(
                JSON_ANY, st.sampled_from((10**4, 10**5)).map(lambda n: "x" * n)))
        elif name == "drop":
            del claims[draw(st.sampled_from(sorted(claims)))]
        else:
            claims[name] = draw(st.one_of(JSON_ANY, texts()))
        return _signed(key, _header(key), json.dumps(claims).encode())
    if kind == "payload":  # signed, the payload itself odd
        payload = draw(st.one_of(
            st.binary(max_size=64),
            JSON_ANY.map(lambda v: json.dumps(v).encode()),
            st.sampled_from((50, 1000, 3000, 100_000)).flatmap(
                lambda d: st.sampled_from(("[", "{\"a\":")).map(lambda o: _deep(d, o))),
            st.just(good.replace(b"{", b"{\"iss\":\"320100\",", 1)),  # duplicate member
            st.just(good + b" "), st.just(b"\xef\xbb\xbf" + good), st.just(good[:-1])))
        return _signed(key, _header(key), payload)
    if kind == "header":  # signed, the protected header odd
        header = draw(st.one_of(
            st.builds(lambda field, value: _header(key, **{field: value}),
                      st.sampled_from(("alg", "kid", "typ", "crit", "b64", "zip", "x5u")),
                      st.one_of(JSON_ANY, st.sampled_from((
                          "none", "HS256", "ES256", "application/tongban+jwt", "JWT",
                          "TONGBAN+JWT", "320105#k9", "#", "320105#k1#k1", ["b64"]))))))
        return _signed(key, header, good)
    if kind == "header_unsigned":  # the header is read before any signature check
        header = draw(st.one_of(
            st.sampled_from((100, 1000, 3000, 100_000)).flatmap(
                lambda d: st.sampled_from(("[", "{\"a\":")).map(lambda o: _deep(d, o))),
            JSON_ANY.map(lambda v: json.dumps(v).encode()), st.binary(max_size=40)))
        return f"{b64url(header)}.{b64url(good)}.{b64url(draw(st.binary(max_size=70)))}"
    if kind == "text":
        return draw(st.one_of(PRINTABLE, st.sampled_from((
            "", ".", "..", "...", "a.b.c", "~", "~~", "a~b~c", "Bearer x", "=.=.=", "e30.e30.",
            "e30.e30.e30", "e30..", "..e30"))))
    real = _signed(key, _header(key), good)
    if kind == "batch":  # the Merkle batch form: <JWS>~<claims>~<path>
        leaf = draw(st.one_of(st.just(b64url(good)), PRINTABLE))
        path = draw(st.one_of(st.just(""), st.binary(max_size=96).map(b64url), PRINTABLE))
        return f"{real}~{leaf}~{path}"
    # one character of a real token changed, cut or doubled
    pos = draw(st.integers(0, len(real) - 1))
    op = draw(st.sampled_from(("set", "cut", "insert")))
    char = draw(st.sampled_from("A_-.=~+/ "))
    if op == "set":
        return real[:pos] + char + real[pos + 1:]
    if op == "cut":
        return real[:pos]
    return real[:pos] + char + real[pos:]


@st.composite
def blended(draw: st.DrawFn, base: Message, donor: st.SearchStrategy[Any]) -> Message:
    """A valid request with some of its fields (nested ones too) taken from a generated
    one: one odd field in an otherwise valid request gets past the checks before it."""
    return _blend(draw, base, draw(donor))


def _blend(draw: st.DrawFn, base: Message, donor: Message) -> Message:
    out = type(base)()
    out.CopyFrom(base)
    for fd, value in donor.ListFields():
        if not draw(st.booleans()):
            continue
        target = getattr(out, fd.name)
        repeated = fd.is_repeated
        if fd.message_type is not None and not repeated and out.HasField(fd.name) \
                and draw(st.booleans()):
            target.CopyFrom(_blend(draw, target, value))
            continue
        out.ClearField(fd.name)
        target = getattr(out, fd.name)
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            target.update(value)
        elif repeated:
            target.extend(value)
        elif fd.message_type is not None:
            target.CopyFrom(value)
        else:
            setattr(out, fd.name, value)
    return out


# -- one field odd -------------------------------------------------------------------
Path = tuple[Any, ...]  # FieldDescriptors from the message down to one field
statuses = st.builds(pb.StatusChange, state=enums(pb.CaseState.values()), at=timestamps,
                     actor=texts(long=False), note=texts(), update_id=texts(long=False))
REPEATED_MESSAGES: dict[str, st.SearchStrategy[Any]] = {
    "tongban.v1.MaterialRef": materials, "tongban.v1.StatusChange": statuses,
    "tongban.v1.SubmitCaseRequest": submits}


def field_paths(descriptor: Any, depth: int = 0) -> list[Path]:
    """Every field of a message type, nested singular messages opened up to 3 deep."""
    out: list[Path] = []
    for fd in descriptor.fields:
        nested = fd.message_type
        if (nested is not None and not fd.is_repeated and depth < 3
                and nested.full_name != "google.protobuf.Timestamp"):
            out += [(fd, *rest) for rest in field_paths(nested, depth + 1)]
        else:
            out.append((fd,))
    return out


def _odd_value(fd: Any) -> st.SearchStrategy[Any]:
    """An odd value of a field's own type (its wire type stays right: the parser accepts
    it and the engine has to judge it)."""
    nested = fd.message_type
    if nested is not None and nested.GetOptions().map_entry:
        return forms
    if nested is not None and nested.full_name == "google.protobuf.Timestamp":
        return st.lists(timestamps, min_size=1, max_size=2) if fd.is_repeated else timestamps
    if nested is not None:
        return st.lists(REPEATED_MESSAGES[nested.full_name], max_size=3)
    single: st.SearchStrategy[Any]
    if fd.enum_type is not None:
        single = enums([v.number for v in fd.enum_type.values])
    elif fd.type == fd.TYPE_STRING:
        single = texts()
    elif fd.type == fd.TYPE_BOOL:
        single = st.booleans()
    elif fd.type == fd.TYPE_BYTES:
        single = st.one_of(st.binary(max_size=64), wire.raw_fields(3).map(
            lambda fs: b"".join(f.encode() for f in fs)))
    elif fd.type in (fd.TYPE_DOUBLE, fd.TYPE_FLOAT):
        single = doubles
    elif fd.type in (fd.TYPE_INT64, fd.TYPE_SINT64, fd.TYPE_SFIXED64):
        single = int64s
    else:
        single = int32s
    return st.lists(single, max_size=4) if fd.is_repeated else single


Near = Mapping[str, st.SearchStrategy[Any]]  # field full name -> plausible other values


def one_field(base: Message, near: Near | None = None) -> st.SearchStrategy[Message]:
    """base, a valid request, with one field (nested ones too) set to an odd value of its
    type, or to a plausible other one where `near` names the field (another holder, a
    certificate of another type): the rest stays valid, so the checks up to that field
    pass, and a value that passes them too goes on to the checks behind it."""
    paths = field_paths(base.DESCRIPTOR)
    near = near or {}

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        path = draw(st.sampled_from(paths))
        odd = _odd_value(path[-1])
        plausible = near.get(path[-1].full_name)
        value = draw(odd if plausible is None else st.one_of(plausible, odd))
        out = type(base)()
        out.CopyFrom(base)
        holder = out
        for fd in path[:-1]:
            holder = getattr(holder, fd.name)
        leaf = path[-1]
        holder.ClearField(leaf.name)
        target = getattr(holder, leaf.name)
        if leaf.message_type is not None and leaf.message_type.GetOptions().map_entry:
            target.update(value)
        elif leaf.is_repeated:
            target.extend(value)
        elif leaf.message_type is not None:
            target.CopyFrom(value)
        else:
            setattr(holder, leaf.name, value)
        return out

    return build()


# -- certificates -----------------------------------------------------------------------
CERTIFICATE_METHODS = ("LookupCertificate", "ListCertificates", "VerifyCertificate",
                       "VerifyIdentity", "ListCertificateUses", "ForwardCertificateCall")
CERT_TYPES = ("111", "113", "201", "202", "301", "401", "501", "601", "999", "0", "00401",
              "12345678", "123456789", "")
CERT_ITEMS = (*ITEMS, "bdc-dy", "tongban:uses", "TONGBAN:USES", "tongban:uses\n")
CLAIM_NAMES = ("valid_on", "name_is", "at_least", "age_at_least", "", "VALID_ON", "valid_on ")
DATES = ("2026-01-01", "2024-02-29", "2023-02-29", "0001-01-01", "9999-12-31", "2026-13-01",
         "20260101", "２０２６-01-01", "2026-1-1", "-2026-01-01", "2026-01-01T00:00:00Z", "")
doubles = st.one_of(st.sampled_from((0.0, -0.0, 1.0, -1.0, 1e308, -1e308, 2.0**63,
                                     float("inf"), float("-inf"), float("nan"),
                                     5e-324, 1_767_225_600.5)),
                    st.floats())


@dataclass(frozen=True)
class Certs:
    """What the running federation holds for certificate requests: the demo holders'
    numbers, identifiers and documents, and the seeds' holder authorizations and
    statements (the harness swaps those for fresh ones of the same length when sent)."""

    holders: Sequence[str] = ()
    numbers: Sequence[str] = ()
    documents: Sequence[str] = ()
    authorizations: Sequence[str] = ()
    odd_authorizations: st.SearchStrategy[str] = field(default_factory=st.nothing)
    statements: Sequence[pb.Statement] = ()

    def near(self) -> Near:
        """Plausible other values of the certificate requests' fields, for one_field:
        a valid value of the wrong kind gets past the form checks to the authorization,
        the purpose binding, the directory and the issuer."""
        statements = list(self.statements)
        cert_ids = st.sampled_from(list(self.numbers) or [""])
        by_name: dict[str, st.SearchStrategy[Any]] = {
            # mostly really signed and wrong in one way; or a seed's of another holder/item
            "authorization": st.one_of(self.odd_authorizations, self.odd_authorizations,
                                       st.sampled_from(list(self.authorizations) or [""])),
            "certificate_id": cert_ids,
            "cert_type": st.sampled_from(CERT_TYPES[:8]),
            "cert_types": st.lists(st.sampled_from(CERT_TYPES[:8]), max_size=4),
            "purpose_item": st.sampled_from(CERT_ITEMS),
            "document": st.sampled_from(list(self.documents) or [""]),
            "partner": st.sampled_from(PARTIES),
            "path": st.lists(st.sampled_from(("310000-gw", "320000-gw", "320100-gw",
                                              "310115", "")), max_size=4),
            "since": st.sampled_from((1.0, 1e10, -1.0)),
        }
        out: dict[str, st.SearchStrategy[Any]] = {
            "tongban.v1.Holder.number": st.sampled_from(list(self.holders) or [RESIDENT_ID]),
            "tongban.v1.Holder.id_type": st.sampled_from(list(pb.IdType.values())),
            "tongban.v1.CertificateClaim.name": st.sampled_from(CLAIM_NAMES[:4]),
            "tongban.v1.CertificateClaim.on": st.sampled_from(DATES),
            "tongban.v1.CertificateClaim.field": st.sampled_from(("registered_capital",
                                                                  "area_m2")),
            "tongban.v1.VerifyIdentityRequest.name": st.sampled_from(("张三", "李四", "张 三",
                                                                      "張三", "ZHANG San")),
            # another seed's token: the statement is signed again for that seed's method
            "tongban.v1.Statement.token": st.sampled_from([s.token for s in statements]
                                                          or [""]),
        }
        for name in CERTIFICATE_METHODS:
            for fd in getattr(cpb, f"{name}Request").DESCRIPTOR.fields:
                if fd.name in by_name:
                    out[fd.full_name] = by_name[fd.name]
        return out


def cert_holders(known: Sequence[str]) -> st.SearchStrategy[cpb.Holder]:
    numbers = st.one_of(st.sampled_from((*known, RESIDENT_ID, CREDIT_CODE)), texts(),
                        st.sampled_from((*known, CREDIT_CODE)).map(str.lower),
                        st.sampled_from((*known, RESIDENT_ID)).map(lambda n: n[:-1]),
                        st.sampled_from((*known, RESIDENT_ID)).map(lambda n: n + "0"))
    return _message(cpb.Holder, id_type=enums(pb.IdType.values()), number=numbers)


cert_types = st.one_of(st.sampled_from(CERT_TYPES), texts(long=False),
                       st.from_regex(r"[0-9]{1,12}", fullmatch=True))
cert_items = st.one_of(st.sampled_from(CERT_ITEMS), texts())
cert_claims = _message(
    cpb.CertificateClaim, name=st.one_of(st.sampled_from(CLAIM_NAMES), texts(long=False)),
    on=st.one_of(st.sampled_from(DATES), texts(long=False)), text=texts(),
    field=st.one_of(st.sampled_from(("registered_capital", "area_m2", "", "__class__")),
                    texts(long=False)),
    value=int64s, years=int32s)


def _authorizations(certs: Certs) -> st.SearchStrategy[str]:
    """A seed's authorization (fresh when sent), one wrong in one way, or any text."""
    known = list(certs.authorizations)
    return st.one_of(*(st.sampled_from(known) for _ in range(3) if known),
                     certs.odd_authorizations, texts(long=False), PRINTABLE)


def certificate_requests(method: str, certs: Certs) -> st.SearchStrategy[Any]:
    """Whole certificate request messages, every field odd now and then."""
    holders = cert_holders(certs.holders)
    authz = _authorizations(certs)
    numbers = ids(certs.numbers)
    documents = st.one_of(st.sampled_from(list(certs.documents) or [""]), texts(long=False),
                          PRINTABLE, st.sampled_from(list(certs.documents) or ["a.b.c"]).map(
                              lambda d: d.replace(".", "..", 1)))
    builders: dict[str, Callable[[], st.SearchStrategy[Any]]] = {
        "LookupCertificate": lambda: _message(
            cpb.LookupCertificateRequest, holder=holders, cert_type=cert_types,
            purpose_item=cert_items, authorization=authz, certificate_id=numbers,
            claim=cert_claims, with_file=st.booleans()),
        "ListCertificates": lambda: _message(
            cpb.ListCertificatesRequest, holder=holders, purpose_item=cert_items,
            authorization=authz, cert_types=st.one_of(
                st.lists(cert_types, max_size=4),
                st.integers(30, 40).map(lambda n: [CERT_TYPES[i % 8] for i in range(n)]))),
        "VerifyCertificate": lambda: _message(
            cpb.VerifyCertificateRequest, certificate_id=numbers, document=documents),
        "VerifyIdentity": lambda: _message(
            cpb.VerifyIdentityRequest, holder=holders,
            name=st.one_of(st.sampled_from(("张三", "张 三", "張三", "李四")), texts()),
            purpose_item=cert_items, authorization=authz),
        "ListCertificateUses": lambda: _message(
            cpb.ListCertificateUsesRequest, holder=holders, authorization=authz,
            since=doubles),
        "ForwardCertificateCall": lambda: _message(
            cpb.ForwardCertificateCallRequest, statement=_statements(certs),
            path=st.lists(st.one_of(st.sampled_from(PARTIES), texts()), max_size=5),
            partner=st.one_of(st.sampled_from(PARTIES), texts())),
    }
    return builders[method]()


def _statements(certs: Certs) -> st.SearchStrategy[pb.Statement]:
    """A seed's statement, its request swapped for another (the harness signs it again
    for what it carries when it still has the seed's token), or an odd one."""
    seeds = list(certs.statements)
    if not seeds:
        return _message(pb.Statement, request=st.binary(max_size=64), token=PRINTABLE)
    other = st.one_of(st.binary(max_size=64), st.sampled_from(seeds).map(
        lambda s: s.request), wire.raw_fields(3).map(lambda fs: b"".join(f.encode()
                                                                        for f in fs)))
    return st.one_of(st.sampled_from(seeds), st.builds(
        lambda s, request: pb.Statement(request=request, token=s.token),
        st.sampled_from(seeds), other),
        _message(pb.Statement, request=other, token=st.one_of(
            st.sampled_from([s.token for s in seeds]), PRINTABLE)))


def statement_method(statement: pb.Statement) -> str:
    """The method a statement's token was made for (its mth claim, not verified)."""
    payload = statement.token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["mth"]).rsplit("/", 1)[-1]


def nested_one_field(base: cpb.ForwardCertificateCallRequest, request_cls: type[Message],
                     near: Near | None = None) -> st.SearchStrategy[bytes]:
    """base, a valid forward, with one field of the consumer's request inside its
    statement odd (the harness signs the statement again for it): the checks of the
    statement pass and the request reaches the checks a forwarded call gets."""
    inner = request_cls.FromString(base.statement.request)

    def rebuild(request: Message) -> bytes:
        out = cpb.ForwardCertificateCallRequest()
        out.CopyFrom(base)
        out.statement.request = request.SerializeToString()
        return out.SerializeToString()

    return one_field(inner, near).map(rebuild)


@st.composite
def odd_statements(draw: st.DrawFn, base: cpb.ForwardCertificateCallRequest,
                   key: SigningKey, *, iss: str, aud: str,
                   fresh: Callable[[bytes], bytes]) -> bytes:
    """base, a valid forward, its statement's token wrong in one way, most really signed
    by the consumer over the request the statement carries (made fresh first, so what
    is odd is the token alone): the statement checks every gateway on the way makes."""
    out = cpb.ForwardCertificateCallRequest()
    out.CopyFrom(base)
    request = fresh(base.statement.request)
    out.statement.request = request
    out.statement.token = draw(tokens(key, iss=iss, aud=aud, body=request, now=time.time(),
                                      method="/tongban.v1.Gateway/"
                                      + statement_method(base.statement)))
    return out.SerializeToString()


@st.composite
def authorizations(draw: st.DrawFn, key: SigningKey, *, sbt: str, sub: str, item: str,
                   consumer: str) -> str:
    """A holder authorization (docs/certificates.md, Holder authorization) wrong in one
    way, most really signed by the authorizing platform's key so that the checks behind
    the signature are reached; made at the time it is drawn, like a platform would."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": key.kid.split("#", 1)[0], "aud": consumer, "iat": now, "exp": now + 300,
        "jti": b64url(draw(st.binary(min_size=16, max_size=16))), "sbt": sbt, "sub": sub,
        "itm": item}
    kind = draw(st.sampled_from(("claim", "claim", "claim", "payload", "header", "text",
                                 "mutated")))
    if kind == "claim":
        name = draw(st.sampled_from(("iss", "aud", "iat", "exp", "jti", "sbt", "sub", "itm",
                                     "cts", "extra", "drop")))
        if name in ("iat", "exp"):
            claims[name] = draw(st.one_of(
                st.sampled_from((10**30, -(10**30), 2**63, 0, -1, 1.5, float(now), True, "1",
                                 None)),
                st.integers(-(10**4), 10**4).map(lambda d: now + d), JSON_ANY))
        elif name == "cts":
            claims["cts"] = draw(st.one_of(
                st.lists(st.sampled_from(CERT_TYPES), max_size=4),
                st.lists(cert_types, max_size=40), st.just(["401", "401"]), JSON_ANY))
        elif name == "sbt":
            claims["sbt"] = draw(st.one_of(st.sampled_from(
                ("resident", "uscc", "passport", "other", "RESIDENT", "")), JSON_ANY))
        elif name == "extra":
            claims[draw(texts(long=False))] = draw(JSON_ANY)
        elif name == "drop":
            del claims[draw(st.sampled_from(sorted(claims)))]
        else:
            claims[name] = draw(st.one_of(JSON_ANY, texts(), st.sampled_from(PARTIES)))
        return _signed(key, _header(key, typ=AUTHZ_TYP), canonical(claims))
    good = canonical(claims)
    if kind == "payload":
        payload = draw(st.one_of(
            st.binary(max_size=64), JSON_ANY.map(lambda v: json.dumps(v).encode()),
            st.sampled_from((50, 1000, 3000)).flatmap(
                lambda d: st.sampled_from(("[", "{\"a\":")).map(lambda o: _deep(d, o))),
            st.just(good.replace(b"{", b"{\"sub\":\"x\",", 1)), st.just(good[:-1])))
        return _signed(key, _header(key, typ=AUTHZ_TYP), payload)
    if kind == "header":
        changes: dict[str, Any] = {"typ": AUTHZ_TYP}
        changes[draw(st.sampled_from(("alg", "kid", "typ", "crit")))] = draw(st.one_of(
            JSON_ANY, st.sampled_from(("none", TYP, "tongban-cert+jwt", "tongban-claim+jwt",
                                       "310115#k1", "320000-gw#k1", "320105#k9"))))
        return _signed(key, _header(key, **changes), good)
    if kind == "text":
        return draw(st.one_of(PRINTABLE, texts(long=False)))
    real = _signed(key, _header(key, typ=AUTHZ_TYP), good)
    pos = draw(st.integers(0, len(real) - 1))
    return real[:pos] + draw(st.sampled_from("A_-.= ")) + real[pos + 1:]

