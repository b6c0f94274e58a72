"""Field checks on incoming messages; each failure names its field path. No I/O.

Patterns are matched with fullmatch: `$` also matches before a final newline, so
`re.match("^...$")` let "JY-2026-9\n" pass as a case number. A caller's value quoted in
a message goes through errors.quote (escaped, at most 64 characters).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.config import Item
from gateway.errors import InvalidArgument, NotFound, quote
from gateway.identifiers import check_credit_code, check_resident_id
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import gateway_pb2 as gw

# used with fullmatch only (see above)
CASE_NUMBER = re.compile(r"[A-Za-z0-9_\-./:]{1,64}")
UPDATE_ID = re.compile(r"[A-Za-z0-9_\-.:]{1,80}")
SHA256 = re.compile(r"[0-9a-f]{64}")
MEDIA_TYPE = re.compile(r"[A-Za-z0-9_.+\-]{1,127}/[A-Za-z0-9_.+\-]{1,127}")  # RFC 6838 §4.2
DIVISION = re.compile(r"[0-9]{6}")
PHONE = re.compile(r"\+?[0-9\- ]{5,20}")
# google.protobuf.Timestamp's range (timestamp.proto): 0001-01-01T00:00:00Z through
# 9999-12-31T23:59:59.999999999Z, nanos 0..999,999,999
MIN_SECONDS, MAX_SECONDS = -62_135_596_800, 253_402_300_799
MAX_COMMITMENT_S = 2 * 366 * 86_400  # a 容缺 commitment is due within two years
MAX_MATERIAL_BYTES = 50 * 1024 * 1024
MAX_FORM_FIELDS = 200
MAX_NOTE_CHARS = 2048  # a clerk's note on a change (the form carries the case's data)
MAX_LISTED = 100  # materials owed or supplied by one update
MODE_NAMES = {"fully_online": pb.HANDLING_MODE_FULLY_ONLINE, "proxy": pb.HANDLING_MODE_PROXY,
              "multi_site": pb.HANDLING_MODE_MULTI_SITE}


def check_applicant(applicant: pb.Applicant, field: str) -> None:
    if not applicant.name.strip():
        raise InvalidArgument("is required", field=f"{field}.name")
    id_field = f"{field}.id_number"
    if applicant.id_type == pb.ID_TYPE_RESIDENT:
        check_resident_id(applicant.id_number, field=id_field)
    elif applicant.id_type == pb.ID_TYPE_USCC:
        check_credit_code(applicant.id_number, field=id_field)
    elif applicant.id_type in (pb.ID_TYPE_PASSPORT, pb.ID_TYPE_OTHER):
        if not 3 <= len(applicant.id_number) <= 32:
            raise InvalidArgument("must be 3..32 characters", field=id_field)
    else:
        raise InvalidArgument("is required", field=f"{field}.id_type")
    if applicant.phone and not PHONE.fullmatch(applicant.phone):
        raise InvalidArgument("is not a phone number", field=f"{field}.phone")


def check_materials(materials: Iterable[pb.MaterialRef], field: str) -> None:
    for i, ref in enumerate(materials):
        where = f"{field}[{i}]"
        if not ref.name.strip():
            raise InvalidArgument("is required", field=f"{where}.name")
        if not SHA256.fullmatch(ref.sha256):
            raise InvalidArgument("must be 64 lowercase hex digits", field=f"{where}.sha256")
        if not 0 < ref.size_bytes <= MAX_MATERIAL_BYTES:
            raise InvalidArgument(f"must be 1..{MAX_MATERIAL_BYTES}", field=f"{where}.size_bytes")
        if not MEDIA_TYPE.fullmatch(ref.media_type):
            raise InvalidArgument("must be a media type like application/pdf",
                                  field=f"{where}.media_type")


def check_submit(req: gw.SubmitCaseRequest, items: dict[str, Item], prefix: str = "") -> Item:
    """Check a SubmitCaseRequest (or a bundle's part: prefix "parts[2].");
    return its catalogue item."""
    if not CASE_NUMBER.fullmatch(req.case_number):
        raise InvalidArgument("must be 1..64 letters, digits or -_./:",
                              field=f"{prefix}case_number")
    if not DIVISION.fullmatch(req.target_division):
        raise InvalidArgument("must be a 6-digit GB/T 2260 code",
                              field=f"{prefix}target_division")
    if not req.item_code:
        raise InvalidArgument("is required", field=f"{prefix}item_code")
    item = items.get(req.item_code)
    if item is None:
        raise NotFound(f"item {quote(req.item_code)} is not in the catalogue",
                       field=f"{prefix}item_code")
    if req.mode not in (pb.HANDLING_MODE_UNSPECIFIED, MODE_NAMES[item.mode]):
        raise InvalidArgument(f"item {item.code} is handled as {item.mode}",
                              field=f"{prefix}mode")
    check_applicant(req.applicant, f"{prefix}applicant")
    if len(req.form) > MAX_FORM_FIELDS:
        raise InvalidArgument(f"at most {MAX_FORM_FIELDS} fields", field=f"{prefix}form")
    for key, value in req.form.items():
        if not key or len(key) > 64 or len(value) > 4096:
            raise InvalidArgument("keys are 1..64 and values up to 4096 characters",
                                  field=f"{prefix}form[{quote(key)}]")
    check_materials(req.materials, f"{prefix}materials")
    return item


def check_delivery(delivery: pb.ResultDelivery, field: str) -> None:
    """Each delivery method names what a citizen needs to get the result."""
    needs = {pb.DELIVERY_METHOD_WINDOW: ("window",),
             pb.DELIVERY_METHOD_POSTAL: ("carrier", "tracking_number"),
             pb.DELIVERY_METHOD_ELECTRONIC: ("certificate_ref",)}.get(delivery.method)
    if needs is None:
        raise InvalidArgument("must be WINDOW, POSTAL or ELECTRONIC", field=f"{field}.method")
    for name in needs:
        value = getattr(delivery, name)
        if not value.strip() or len(value) > 128:
            raise InvalidArgument(f"is required for {pb.DeliveryMethod.Name(delivery.method)}"
                                  " (1..128 characters)", field=f"{field}.{name}")


def check_rating(score: int, channel: int) -> None:
    if not 1 <= score <= 5:
        raise InvalidArgument("must be 1..5", field="score")
    if channel not in pb.RatingChannel.values() or channel == pb.RATING_CHANNEL_UNSPECIFIED:
        raise InvalidArgument("must name the channel the rating came from", field="channel")


def check_timestamp(ts: Timestamp, field: str) -> None:
    """A Timestamp inside the range timestamp.proto defines: outside it, conversions
    raise (that was an INTERNAL) and a date in year 30000 means nothing anyway."""
    if not MIN_SECONDS <= ts.seconds <= MAX_SECONDS:
        raise InvalidArgument("must be a time in years 1..9999 (google.protobuf.Timestamp)",
                              field=field)
    if not 0 <= ts.nanos <= 999_999_999:
        raise InvalidArgument("nanos must be 0..999999999", field=field)


def check_timestamps(message: Message, field: str) -> None:
    """Every Timestamp set anywhere in message (a CaseUpdate, a forwarded Case), each
    failure with its path, e.g. update.rating.rectification_deadline."""
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        path = f"{field}.{descriptor.name}"
        items = ([(path, value)] if isinstance(value, Message)  # else repeated (or a map)
                 else [(f"{path}[{i}]", v) for i, v in enumerate(value)])
        for where, item in items:
            if isinstance(item, Timestamp):
                check_timestamp(item, where)
            elif isinstance(item, Message):  # a map of messages iterates its keys
                check_timestamps(item, where)


def check_update(update: pb.CaseUpdate, now: float | None = None) -> None:
    """Check a CaseUpdate; with now (the gateway's clock), a commitment deadline must
    also lie less than two years ahead."""
    if not update.case_id:
        raise InvalidArgument("is required", field="update.case_id")
    if not UPDATE_ID.fullmatch(update.update_id):
        raise InvalidArgument("must be 1..80 letters, digits or -_.:", field="update.update_id")
    if not (update.state or update.supplement or update.note or update.HasField("delivery")
            or update.HasField("rating") or update.rectification_report):
        raise InvalidArgument("an update changes the state, adds a supplement, a note, a "
                              "delivery, a rating or a rectification report",
                              field="update.state")
    if update.state and update.state not in pb.CaseState.values():
        raise InvalidArgument(f"unknown state {update.state}", field="update.state")
    if len(update.note) > MAX_NOTE_CHARS:
        raise InvalidArgument(f"at most {MAX_NOTE_CHARS} characters", field="update.note")
    if len(update.missing_materials) > MAX_LISTED:
        raise InvalidArgument(f"at most {MAX_LISTED} materials", field="update.missing_materials")
    for i, name in enumerate(update.missing_materials):
        if not name.strip() or len(name) > 128:
            raise InvalidArgument("names a material in 1..128 characters",
                                  field=f"update.missing_materials[{i}]")
    if len(update.supplement) > MAX_LISTED:
        raise InvalidArgument(f"at most {MAX_LISTED} materials", field="update.supplement")
    check_materials(update.supplement, "update.supplement")
    if update.HasField("delivery"):
        check_delivery(update.delivery, "update.delivery")
    if update.HasField("commitment_deadline") and (
            update.state != pb.CASE_STATE_ACCEPTED or not update.missing_materials):
        raise InvalidArgument("a commitment deadline comes with state ACCEPTED and the "
                              "missing_materials it covers (容缺受理/告知承诺)",
                              field="update.commitment_deadline")
    check_timestamps(update, "update")
    if (now is not None and update.HasField("commitment_deadline")
            and update.commitment_deadline.seconds > now + MAX_COMMITMENT_S):
        raise InvalidArgument("must be within two years", field="update.commitment_deadline")
    if update.HasField("rating"):
        check_rating(update.rating.score, update.rating.channel)
    if len(update.rectification_report) > 4096:
        raise InvalidArgument("at most 4096 characters", field="update.rectification_report")
