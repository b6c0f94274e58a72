"""Protobuf wire-format pieces and hypothesis strategies that break them, for tests/test_fuzz.py.

The gateway verifies a signature over the exact bytes it received and only then parses
them, so a fuzzer that wants to reach the parser and the engine has to produce bytes
first and sign them afterwards. These strategies work on bytes: a valid request is split
into its top-level fields (protobuf encoding spec, "Message Structure"), and the fields or
the raw bytes are mutated: wrong wire types, unknown field numbers, negative and
over-long varints, lengths that lie, deep group nesting, huge values.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import strategies as st

# wire types (protobuf encoding spec): 0 VARINT, 1 I64, 2 LEN, 3 SGROUP, 4 EGROUP, 5 I32;
# 6 and 7 are not defined and must be refused by any parser
VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5
MAX_FIELD = (1 << 29) - 1


def varint(n: int) -> bytes:
    """Base-128 varint; negative numbers as their 64-bit two's complement (10 bytes)."""
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint((number << 3) | wire_type)


@dataclass(frozen=True)
class Field:
    """One top-level field as it appeared on the wire: number, wire type, encoded value."""

    number: int
    wire_type: int
    value: bytes  # the bytes after the tag (for LEN: the length prefix included)

    def encode(self) -> bytes:
        return tag(self.number, self.wire_type) + self.value


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated or over-long varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def split(data: bytes) -> list[Field] | None:
    """The top-level fields of well-formed message bytes; None if they are not well formed
    (groups are not split: nothing the gateway sends or expects uses them)."""
    fields, pos = [], 0
    try:
        while pos < len(data):
            key, start = _read_varint(data, pos)
            number, wire_type = key >> 3, key & 7
            if wire_type == VARINT:
                _, end = _read_varint(data, start)
            elif wire_type == I64:
                end = start + 8
            elif wire_type == I32:
                end = start + 4
            elif wire_type == LEN:
                length, body = _read_varint(data, start)
                end = body + length
            else:
                return None
            if end > len(data) or number == 0:
                return None
            fields.append(Field(number, wire_type, data[start:end]))
            pos = end
    except ValueError:
        return None
    return fields


def len_payload(field: Field) -> bytes:
    """The payload of a LEN field (its length prefix removed)."""
    _, body = _read_varint(field.value, 0)
    return field.value[body:]


def length_delimited(number: int, payload: bytes) -> Field:
    return Field(number, LEN, varint(len(payload)) + payload)


# -- values ---------------------------------------------------------------------------
EDGE_INTS = (0, 1, -1, 2, 127, 128, 255, 256, 2**31 - 1, -(2**31), 2**31, 2**32 - 1, 2**32,
             2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1, 10**18, -(10**18), 253402300800,
             -62135596801)
ints = st.one_of(st.sampled_from(EDGE_INTS), st.integers(-(2**63), 2**64 - 1))
field_numbers = st.one_of(st.integers(1, 40), st.sampled_from((19000, 19999, MAX_FIELD)),
                          st.integers(1, MAX_FIELD))
huge_sizes = st.sampled_from((1_000, 65_536, 300_000, 1_048_576, 3_500_000))


def _value(wire_type: int) -> st.SearchStrategy[bytes]:
    if wire_type == VARINT:
        return st.one_of(ints.map(varint),
                         # 11-byte varint: longer than any legal one
                         st.just(b"\xff" * 10 + b"\x01"),
                         st.just(b"\x80" * 9 + b"\x00"))  # an over-long encoding of 0
    if wire_type == I64:
        return st.binary(min_size=8, max_size=8)
    if wire_type == I32:
        return st.binary(min_size=4, max_size=4)
    if wire_type == LEN:
        return st.one_of(
            st.binary(max_size=64).map(lambda b: varint(len(b)) + b),
            st.builds(lambda n, b: varint(n) + b, ints, st.binary(max_size=16)),  # lies
            st.builds(lambda n, c: varint(n) + c * n, huge_sizes, st.sampled_from(b"x\x00\xff")
                      .map(lambda i: bytes([i]))))
    return st.binary(max_size=8)  # groups and undefined wire types: whatever follows


def raw_fields(max_size: int = 4) -> st.SearchStrategy[list[Field]]:
    """Fields of any number and wire type, undefined wire types 6 and 7 included."""
    field = st.integers(0, 7).flatmap(
        lambda wt: st.builds(Field, field_numbers, st.just(wt), _value(wt)))
    return st.lists(field, max_size=max_size)


def deep_groups(depth: int, number: int) -> bytes:
    """A group nested `depth` deep: parsers recurse on groups even in unknown fields."""
    return tag(number, SGROUP) * depth + tag(number, EGROUP) * depth


@functools.lru_cache(maxsize=16)
def deep_messages(depth: int, number: int) -> bytes:
    """A LEN field nested `depth` deep (what a recursive message type would look like)."""
    payload = b""
    for _ in range(depth):
        payload = length_delimited(number, payload).encode()
    return payload


# -- mutations of a valid message -------------------------------------------------------
@st.composite
def field_mutation(draw: st.DrawFn, fields: Sequence[Field]) -> bytes:
    """Valid top-level fields with one structural change."""
    out = list(fields)
    op = draw(st.sampled_from(("wire_type", "number", "value", "drop", "dup", "swap",
                               "unknown", "nested", "groups", "inner")))
    i = draw(st.integers(0, max(0, len(out) - 1))) if out else 0
    if not out and op not in ("unknown", "groups", "nested"):
        op = "unknown"
    if op == "wire_type":
        wt = draw(st.integers(0, 7).filter(lambda w: w != out[i].wire_type))
        out[i] = Field(out[i].number, wt, draw(st.one_of(st.just(out[i].value), _value(wt))))
    elif op == "number":
        out[i] = Field(draw(field_numbers), out[i].wire_type, out[i].value)
    elif op == "value":
        out[i] = Field(out[i].number, out[i].wire_type, draw(_value(out[i].wire_type)))
    elif op == "drop":
        del out[i]
    elif op == "dup":
        out.insert(i, out[i])
    elif op == "swap":
        j = draw(st.integers(0, len(out) - 1))
        out[i], out[j] = out[j], out[i]
    elif op == "unknown":
        extra = draw(raw_fields(max_size=3))
        out[i:i] = extra
    elif op == "nested":
        depth = draw(st.sampled_from((10, 64, 101, 1000)))
        out.append(length_delimited(draw(field_numbers), deep_messages(depth, 1)))
    elif op == "groups":
        depth = draw(st.sampled_from((1, 32, 100, 101, 1000, 50_000)))
        number = draw(st.integers(1, 40))
        raw = b"".join(f.encode() for f in out)
        return raw + deep_groups(depth, number)
    else:  # "inner": mutate inside a LEN field that is itself a message
        lens = [k for k, f in enumerate(out) if f.wire_type == LEN]
        if lens:
            k = draw(st.sampled_from(lens))
            payload = len_payload(out[k])
            inner = split(payload)
            if inner:
                out[k] = length_delimited(out[k].number, draw(field_mutation(inner)))
            else:
                out[k] = length_delimited(out[k].number, draw(byte_mutation(payload)))
    return b"".join(f.encode() for f in out)


@st.composite
def byte_mutation(draw: st.DrawFn, data: bytes) -> bytes:
    """The bytes with one blind change: a bit flip, a byte, an insertion, a cut."""
    buf = bytearray(data)
    op = draw(st.sampled_from(("flip", "set", "insert", "delete", "truncate", "repeat",
                               "append")))
    pos = draw(st.integers(0, len(buf)))
    if op == "flip" and buf:
        pos = min(pos, len(buf) - 1)
        buf[pos] ^= 1 << draw(st.integers(0, 7))
    elif op == "set" and buf:
        pos = min(pos, len(buf) - 1)
        buf[pos] = draw(st.sampled_from((0x00, 0x7F, 0x80, 0xFF, 0x08, 0x0A, 0x12)))
    elif op == "insert":
        buf[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    elif op == "delete":
        del buf[pos:pos + draw(st.integers(1, 16))]
    elif op == "truncate":
        del buf[pos:]
    elif op == "repeat":
        buf[pos:pos] = buf[pos:pos + draw(st.integers(1, 32))] * draw(st.integers(2, 50))
    else:
        buf += draw(st.binary(min_size=1, max_size=32))
    return bytes(buf)


Where = tuple[int, ...]  # indices of LEN fields, from the top level down


def nested_messages(data: bytes, depth: int = 4) -> list[Where]:
    """Where the LEN fields that hold messages of their own are, down to `depth` levels
    (a string whose bytes happen to parse as a message counts too: harmless)."""
    fields = split(data)
    if not fields or depth == 0:
        return []
    out: list[Where] = []
    for i, f in enumerate(fields):
        if f.wire_type != LEN:
            continue
        payload = len_payload(f)
        if split(payload):
            out.append((i,))
            out += [(i, *rest) for rest in nested_messages(payload, depth - 1)]
    return out


def replace_at(data: bytes, where: Where, payload: bytes) -> bytes:
    """data with the LEN field at `where` holding payload; every length on the way to
    it encoded again, so everything around it stays well formed."""
    fields = split(data)
    assert fields is not None
    i, rest = where[0], where[1:]
    inner = replace_at(len_payload(fields[i]), rest, payload) if rest else payload
    fields[i] = length_delimited(fields[i].number, inner)
    return b"".join(f.encode() for f in fields)


def payload_at(data: bytes, where: Where) -> bytes:
    fields = split(data)
    assert fields is not None
    payload = len_payload(fields[where[0]])
    return payload_at(payload, where[1:]) if len(where) > 1 else payload


@st.composite
def nested_mutation(draw: st.DrawFn, data: bytes, places: Sequence[Where]) -> bytes:
    """A message nested inside the request (a statement's request, its holder, a case's
    applicant) changed where it sits, the levels above it intact: a mutation of the
    outer bytes alone seldom gets that deep with the structure still parseable."""
    where = draw(st.sampled_from(list(places)))
    inner = payload_at(data, where)
    fields = split(inner)
    changed = draw(st.one_of(field_mutation(fields), byte_mutation(inner)) if fields
                   else byte_mutation(inner))
    return replace_at(data, where, changed)


def mutated(data: bytes) -> st.SearchStrategy[bytes]:
    """Bytes near a valid message: structural changes to its fields, to a message nested
    in it, or blind ones."""
    fields = split(data)
    blind = byte_mutation(data)
    if fields is None:
        return blind
    strategies = [field_mutation(fields), blind,
                  st.builds(lambda extra, mid: b"".join(f.encode() for f in extra) + mid,
                            raw_fields(), st.just(data))]
    places = nested_messages(data)
    if places:
        strategies.append(nested_mutation(data, places))
    return st.one_of(*strategies)
