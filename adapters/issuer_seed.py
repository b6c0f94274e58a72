"""The demo federation's certificates: deterministic holders, authorities and certificates.

Three residents and one company, each certificate issued by an authority whose credit
code (GB 32100) names the division it sits in (characters 3–8), so that a lookup by
identifier is routed where the register is. :func:`seed` registers, on one platform,
the demo certificates that platform issues: those whose type it announces (``issues``)
for a division its ``prefixes`` serve, as the gateway's directory would pick it
(docs/certificates.md, Finding the issuer). Everything but the signing time is fixed,
so the identifiers are the same on every run; :func:`demo_numbers` lists them for tests.

Among them: 张三's 结婚证 was registered in 上海 (by 310000's register, outside his home
region 320105), and the company's 营业执照 and 电子营业执照 carry the fact
``registered_capital`` (注册资本, yuan) for ``at_least`` claims.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from types import MappingProxyType
from typing import Final

from stdnum.cn import ric, uscc

from gateway.certificate_ids import format_id
from gateway.certificates.directory import Directory, IssuerEntry
from gateway.certificates.documents import Holder, HolderIdType
from gateway.certificates.wire import holder_message
from gateway.errors import NotFound
from gateway.pb.tongban.v1 import certificate_pb2 as cp

from .issuer import Issuer

TYPE_NAMES: Final[Mapping[str, str]] = MappingProxyType({
    "111": "居民身份证", "113": "居民户口簿", "201": "营业执照", "202": "电子营业执照",
    "301": "结婚证", "401": "不动产权证书", "501": "社会保障卡", "601": "学位证书"})


def resident_id(first17: str) -> str:
    """A GB 11643 number: 6 digits of division, 8 of birth date, 3 of sequence, and the
    ISO 7064 MOD 11-2 check digit."""
    return first17 + ric.calc_check_digit(first17 + "0")


def organization_code(body: str) -> str:
    """A GB 11714 organization code: 8 characters and their check character (weights
    3 7 9 10 5 8 4 2, MOD 11; 10 is X, 11 is 0)."""
    values = [int(c, 36) for c in body]
    check = 11 - sum(w * v for w, v in zip((3, 7, 9, 10, 5, 8, 4, 2), values, strict=True)) % 11
    return body + {10: "X", 11: "0"}.get(check, str(check))


def credit_code(department: str, division: str, body: str) -> str:
    """A GB 32100 统一社会信用代码: registration department and type (2 characters), the
    registering division (GB 32100-2015 §4: characters 3–8), the organization code, and
    the MOD 31 check character."""
    first17 = department + division + organization_code(body)
    return first17 + uscc.calc_check_digit(first17)


def _body(name: str) -> str:
    """Eight digits from the authority's name: a fixed, made-up organization code."""
    return f"{int(hashlib.sha256(name.encode()).hexdigest(), 16) % 10**8:08d}"


@dataclass(frozen=True, slots=True)
class DemoHolder:
    """A demo holder: name and id (a resident's home, or a company's registration, is
    characters 1–6, or 3–8, of it)."""

    name: str
    id_type: HolderIdType
    number: str

    @property
    def holder(self) -> Holder:
        return Holder(self.id_type, self.number)

    def message(self) -> cp.Holder:
        return holder_message(self.holder)


ZHANG_SAN: Final = DemoHolder("张三", HolderIdType.RESIDENT, resident_id("32010519880315001"))
LI_SI: Final = DemoHolder("李四", HolderIdType.RESIDENT, resident_id("32068119950720003"))
# born on 29 February: a leap-day birthday for age claims
WANG_WU: Final = DemoHolder("王五", HolderIdType.RESIDENT, resident_id("31011520000229005"))
COMPANY: Final = DemoHolder("南京云帆数据科技有限公司", HolderIdType.USCC,
                            credit_code("91", "320105", "MA1W6T3C"))
DEMO_HOLDERS: Final = (ZHANG_SAN, LI_SI, WANG_WU, COMPANY)


@dataclass(frozen=True, slots=True)
class Authority:
    """An issuing authority (发证机构): name, the division it sits in, its credit code
    (机构编制 ``11`` for an organ of state, ``12`` for a public institution)."""

    name: str
    division: str
    department: str = "11"

    @property
    def code(self) -> str:
        return credit_code(self.department, self.division, _body(self.name))


JIANYE_POLICE: Final = Authority("南京市公安局建邺分局", "320105")
QIDONG_POLICE: Final = Authority("启东市公安局", "320681")
PUDONG_POLICE: Final = Authority("上海市公安局浦东分局", "310115")
NANJING_HRSS: Final = Authority("南京市人力资源和社会保障局", "320100")
NANTONG_HRSS: Final = Authority("南通市人力资源和社会保障局", "320600")
SHANGHAI_HRSS: Final = Authority("上海市人力资源和社会保障局", "310000")
NJU: Final = Authority("南京大学", "320000", "12")
NTU: Final = Authority("南通大学", "320600", "12")
FUDAN: Final = Authority("复旦大学", "310000", "12")
JIANYE_REALTY: Final = Authority("南京市建邺区不动产登记中心", "320105", "12")
QIDONG_REALTY: Final = Authority("启东市不动产登记中心", "320681", "12")
PUDONG_CIVIL: Final = Authority("上海市浦东新区民政局", "310115")
JIANYE_SAMR: Final = Authority("南京市建邺区市场监督管理局", "320105")


@dataclass(frozen=True, slots=True)
class DemoCertificate:
    """One demo certificate: everything its document says but the signing time."""

    type_code: str
    holder: DemoHolder
    authority: Authority
    serial: str
    issued_on: date
    valid_to: date | None = None  # None: 长期
    facts: Mapping[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return TYPE_NAMES[self.type_code]

    @property
    def number(self) -> str:
        return format_id(self.type_code, self.authority.code, self.serial)

    def file(self) -> bytes:
        """A small, fixed stand-in for the rendered PDF."""
        text = (f"%tongban demo certificate\n% {self.name} {self.number}\n"
                f"% {self.holder.name} {self.authority.name} {self.issued_on}\n")
        return b"%PDF-1.7\n" + text.encode() + b"%%EOF\n"


CAPITAL: Final = {"registered_capital": 5_000_000}  # 注册资本 500万元
DEMO_CERTIFICATES: Final = (
    DemoCertificate("111", ZHANG_SAN, JIANYE_POLICE, "2016000101", date(2016, 3, 1),
                    date(2036, 3, 1)),
    DemoCertificate("113", ZHANG_SAN, JIANYE_POLICE, "2016000102", date(2016, 3, 1)),
    DemoCertificate("501", ZHANG_SAN, NANJING_HRSS, "2019000103", date(2019, 6, 1),
                    date(2029, 6, 1)),
    DemoCertificate("601", ZHANG_SAN, NJU, "2010000104", date(2010, 6, 30)),
    DemoCertificate("401", ZHANG_SAN, JIANYE_REALTY, "2021000105", date(2021, 9, 15),
                    facts={"area_m2": 89}),
    DemoCertificate("301", ZHANG_SAN, PUDONG_CIVIL, "2018000106", date(2018, 5, 20)),
    DemoCertificate("111", LI_SI, QIDONG_POLICE, "2021000201", date(2021, 8, 10),
                    date(2041, 8, 10)),
    DemoCertificate("113", LI_SI, QIDONG_POLICE, "2013000202", date(2013, 9, 1)),
    DemoCertificate("501", LI_SI, NANTONG_HRSS, "2020000203", date(2020, 3, 1),
                    date(2030, 3, 1)),
    DemoCertificate("601", LI_SI, NTU, "2017000204", date(2017, 6, 30)),
    DemoCertificate("401", LI_SI, QIDONG_REALTY, "2023000205", date(2023, 4, 12),
                    facts={"area_m2": 120}),
    DemoCertificate("111", WANG_WU, PUDONG_POLICE, "2018000301", date(2018, 3, 1),
                    date(2028, 3, 1)),
    DemoCertificate("113", WANG_WU, PUDONG_POLICE, "2016000302", date(2016, 7, 1)),
    DemoCertificate("501", WANG_WU, SHANGHAI_HRSS, "2022000303", date(2022, 9, 1),
                    date(2032, 9, 1)),
    DemoCertificate("601", WANG_WU, FUDAN, "2022000304", date(2022, 6, 30)),
    DemoCertificate("201", COMPANY, JIANYE_SAMR, "2020000401", date(2020, 11, 2),
                    facts=CAPITAL),
    DemoCertificate("202", COMPANY, JIANYE_SAMR, "2020000402", date(2020, 11, 2),
                    facts=CAPITAL),
)


def issued_by(partner_id: str, issues: Iterable[str], prefixes: Iterable[str]
              ) -> list[DemoCertificate]:
    """The demo certificates a platform announcing ``issues`` for ``prefixes`` holds: its
    type announced, and the authority's division served (by a prefix, or through its
    province's code) as Directory.issuer_for decides."""
    types, served = frozenset(issues), tuple(prefixes)
    if not types or not served:
        return []
    directory = Directory({partner_id: IssuerEntry(served, types)})
    found = []
    for certificate in DEMO_CERTIFICATES:
        if certificate.type_code not in types:
            continue
        try:
            directory.issuer_for(certificate.type_code, certificate.authority.division)
        except NotFound:
            continue
        found.append(certificate)
    return found


def demo_numbers(partner_id: str, issues: Iterable[str], prefixes: Iterable[str]
                 ) -> list[str]:
    """The identifiers :func:`seed` registers on such a platform, in order."""
    return [c.number for c in issued_by(partner_id, issues, prefixes)]


async def seed(issuer: Issuer, partner_id: str, issues: Iterable[str],
               prefixes: Iterable[str], now: float) -> list[str]:
    """Register (and sign at ``now``) the demo certificates this platform issues that it
    does not hold yet; the identifiers registered."""
    issued = []
    for certificate in issued_by(partner_id, issues, prefixes):
        if await issuer.holds(certificate.number):
            continue
        issued.append(await issuer.issue(
            type_code=certificate.type_code, name=certificate.name,
            issuer=certificate.authority.name, issuer_code=certificate.authority.code,
            serial=certificate.serial, holder=certificate.holder.name,
            holder_id_type=certificate.holder.id_type, holder_id=certificate.holder.number,
            issued_on=certificate.issued_on, valid_to=certificate.valid_to,
            file=certificate.file(), facts=certificate.facts, now=now))
    return issued
