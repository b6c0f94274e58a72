"""partners.toml → typed, validated, frozen configuration.

The file describes a federation (X-Road calls this the global configuration): every
gateway with its address, links and keys; every partner platform with the gateway it is
attached to; alliances; the item catalogue. `[self]` names which gateway this process is.
This module holds the typed values; gateway/config_loader.py reads and checks the file,
each error one line naming the file, the line and the key path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from gateway.signing import PublicKey, SigningKey
from gateway.tls import ChannelTls, ServerTls
from gateway.workdays import WorkCalendar


@dataclass(frozen=True, kw_only=True)
class Item:
    """One 事项 of the catalogue."""

    code: str
    name: str
    mode: str
    required_materials: tuple[str, ...]
    time_limit_days: int
    cross_province: bool
    # material -> certificate types that may replace it (docs/certificates.md, purpose
    # binding): a lookup of a type for this item is allowed only if some material lists it
    certificates: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def certificate_types(self) -> frozenset[str]:
        return frozenset(t for types in self.certificates.values() for t in types)


@dataclass(frozen=True, kw_only=True)
class Alliance:
    """A 通办 alliance (e.g. 南京都市圈 "8+2"): member division prefixes and its item list."""

    id: str
    name: str
    members: tuple[str, ...]
    items: frozenset[str]

    def covers(self, division: str) -> bool:
        return any(division.startswith(m) for m in self.members)


@dataclass(frozen=True, kw_only=True)
class Party:
    """Anyone that signs calls: a partner platform or a gateway."""

    id: str
    name: str
    prefixes: tuple[str, ...]
    keys: tuple[PublicKey, ...]
    # it verifies batch tokens (docs/signing.md §7), so what we send it may share one
    # signature with other messages; tongban gateways always do, platforms opt in
    batch_signatures: bool = False
    # how this process reaches it over TLS (its CA, its name, the client certificate we
    # present); None: it speaks plaintext
    tls: ChannelTls | None = None


@dataclass(frozen=True, kw_only=True)
class Partner(Party):
    """A regional platform, attached to one gateway through an adapter."""

    gateway: str
    adapter: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    # certificate types it issues for every one of its prefixes (the directory,
    # docs/certificates.md); a platform that lists any answers FetchCertificates
    issues: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Gateway(Party):
    """A tongban gateway of the federation and the gateways it links to."""

    grpc: str
    http: str
    links: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class CallerLimits:
    """What one caller (partner, peer gateway, supervisor) may use of this gateway
    (docs/configuration.md, [limits]). The defaults leave the benchmarks' load alone
    (about 1,000 calls/s from a handful of partners, 64..256 calls in flight, 1,000
    watchers from one partner) and still bound what one caller can hold."""

    calls_per_second: float = 5000.0  # sustained rate of calls, streams opening included
    burst: int = 5000  # calls above the rate a caller may make at once
    max_concurrent_calls: int = 512  # unary calls in flight
    max_streams: int = 2048  # WatchCase and Subscribe streams open


@dataclass(frozen=True, kw_only=True)
class Limits:
    max_hops: int = 4
    clock_skew_s: int = 60
    max_token_ttl_s: int = 300
    max_message_bytes: int = 4 * 1024 * 1024
    callers: CallerLimits = field(default_factory=CallerLimits)  # every caller's default
    caller_overrides: Mapping[str, CallerLimits] = field(default_factory=dict)  # by party id
    # failed authentications per source address before its calls are refused unverified
    auth_failures_per_second: float = 20.0  # 0 turns the guard off
    auth_failures_burst: int = 200

    def for_caller(self, party_id: str) -> CallerLimits:
        return self.caller_overrides.get(party_id, self.callers)


@dataclass(frozen=True, kw_only=True)
class OutboxSettings:
    """Delivery policy (docs/configuration.md, [outbox])."""

    backoff_base_s: float = 0.2
    backoff_cap_s: float = 30.0
    max_attempts: int = 12  # then the entry is dead-lettered until `tongban outbox redrive`
    breaker_failures: int = 5
    breaker_cooldown_s: float = 2.0
    # the longest a partner that is back waits for its probe (issue #12: ≤ 10 s to resume)
    breaker_max_cooldown_s: float = 5.0
    in_flight_per_destination: int = 64  # sends in flight to one destination at most


@dataclass(frozen=True, kw_only=True)
class Supervision:
    """电子监察 policy (docs/configuration.md, [supervision])."""

    warning_ratio: float = 0.8  # share of the time limit after which a warning is raised
    rectification_days: int = 5  # working days to answer a rating of 1-2 (整改)
    sweep_interval_s: float = 30.0  # how often deadlines are checked


@dataclass(frozen=True, kw_only=True)
class Supervisor(Party):
    """A supervision body (审管联动, 电子监察) that may Subscribe to this gateway's events
    of cases whose origin or target division starts with one of its prefixes."""

    gateway: str


@dataclass(frozen=True, kw_only=True)
class CertificateSettings:
    """[certificates] (docs/configuration.md): what the certificate calls need beyond the
    catalogue and the directory."""

    identity_type: str = "111"  # the 居民身份证 type VerifyIdentity asks a name_is claim of
    # verified documents kept by their exact token: a document never changes, so its
    # signature need not be checked twice; statuses and answers are never cached
    document_cache: int = 4096  # entries; 0 turns it off
    call_timeout_s: float = 5.0  # a lookup's wait for a peer or an issuing platform


@dataclass(frozen=True, kw_only=True)
class Config:
    """The whole validated configuration of one gateway process."""

    self_id: str
    signing_key: SigningKey
    gateways: Mapping[str, Gateway]
    partners: Mapping[str, Partner]
    alliances: Mapping[str, Alliance]
    items: Mapping[str, Item]
    limits: Limits
    data_dir: Path
    source: Path
    outbox: OutboxSettings = field(default_factory=OutboxSettings)
    supervision: Supervision = field(default_factory=Supervision)
    supervisors: Mapping[str, Supervisor] = field(default_factory=dict)
    calendar: WorkCalendar = field(default_factory=WorkCalendar)
    certificates: CertificateSettings = field(default_factory=CertificateSettings)
    tls: ServerTls | None = None  # [self.tls]: this gateway's certificate and key
    allow_plaintext: bool = False  # [self] allow_plaintext: non-loopback without TLS
    admin_http: str | None = None  # where /metrics is served (docs/configuration.md)
    admin_grpc: str | None = None  # where gRPC reflection is served
    signing_key_path: Path | None = None  # for `tongban serve`'s permission check

    @property
    def me(self) -> Gateway:
        return self.gateways[self.self_id]

    @property
    def listener_tls(self) -> ServerTls | None:
        """What this gateway's listeners speak: TLS when its [[gateways]] entry says so
        (the loader then guarantees [self.tls]); [self.tls] alone is only a client
        certificate for calling out."""
        return self.tls if self.me.tls is not None else None

    def linked(self, gateway_id: str) -> bool:
        """A link counts only when both sides list it (one side's word is not a link)."""
        other = self.gateways.get(gateway_id)
        return (other is not None and gateway_id in self.me.links
                and self.self_id in other.links)

    def peers(self) -> list[Gateway]:
        """The gateways linked with this one, both sides agreeing."""
        return [self.gateways[g] for g in self.me.links if self.linked(g)]

    def local_partners(self) -> list[Partner]:
        return [p for p in self.partners.values() if p.gateway == self.self_id]

    def party(self, party_id: str) -> Party | None:
        """The partner or gateway that may call this gateway under party_id."""
        partner = self.partners.get(party_id)
        if partner is not None:
            return partner if partner.gateway == self.self_id else None
        if self.linked(party_id):
            return self.gateways[party_id]
        supervisor = self.supervisors.get(party_id)
        if supervisor is not None and supervisor.gateway == self.self_id:
            return supervisor
        return None


def load_config(path: Path | str, *, self_id: str | None = None, text: str | None = None) -> Config:
    """Load and validate partners.toml; raise ConfigError with a one-line message."""
    source = Path(path)
    if text is None:
        try:
            text = source.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read: {exc.strerror}") from exc
    from gateway.config_loader import load  # it builds these classes: imported here

    return load(text, source, self_id)


def now_utc() -> datetime:
    return datetime.now(UTC)
