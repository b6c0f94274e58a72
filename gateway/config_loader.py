"""Reading partners.toml: every key checked, every error one line naming the file, the
line and the key path (``partners.toml:42: partners[2].keys[0].jwk: not an Ed25519
public key``). gateway/config.py holds what it builds.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import fields
from datetime import date, datetime
from pathlib import Path
from typing import Any

from gateway.config import (
    Alliance,
    CallerLimits,
    CertificateSettings,
    Config,
    Gateway,
    Item,
    Limits,
    OutboxSettings,
    Partner,
    Party,
    Supervision,
    Supervisor,
)
from gateway.errors import ConfigError
from gateway.signing import PublicKey, load_private_key, public_key_from_jwk
from gateway.tls import ChannelTls, ServerTls, check_key_pair, is_loopback, read_certificates
from gateway.tomlpath import PathPart, format_path, locate
from gateway.workdays import WorkCalendar

PARTY_ID = re.compile(r"^[1-8][0-9]{5}(-[a-z0-9]{1,16})?$")
ITEM_CODE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
PREFIX = re.compile(r"^[0-9]{1,6}$")
TYPE_CODE = re.compile(r"^[0-9]{1,8}$")  # certificate type codes (docs/certificates.md)
MODES = ("fully_online", "proxy", "multi_site")


class _Reader:
    """Typed access to a TOML table that raises ConfigError with the key path and line."""

    def __init__(self, data: Mapping[str, Any], path: list[PathPart], loader: _Loader) -> None:
        self.data, self.path, self.loader = data, path, loader

    def fail(self, key: PathPart | None, message: str) -> ConfigError:
        path = self.path if key is None else [*self.path, key]
        return self.loader.error(path, message)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.data:
            if default is ...:
                raise self.fail(key, "is required")
            return default
        value = self.data[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.fail(key, f"expected {names}, got {type(value).__name__}")
        return value

    def string(self, key: str, default: Any = ..., pattern: re.Pattern[str] | None = None) -> str:
        value: str = self.get(key, str, default)
        if pattern is not None and not pattern.fullmatch(value):
            raise self.fail(key, f"{value!r} does not match {pattern.pattern}")
        return value

    def strings(self, key: str, pattern: re.Pattern[str] | None = None) -> tuple[str, ...]:
        values: list[Any] = self.get(key, list, [])
        for i, value in enumerate(values):
            if not isinstance(value, str):
                raise self.loader.error([*self.path, key, i], "expected a string")
            if pattern is not None and not pattern.fullmatch(value):
                raise self.loader.error(
                    [*self.path, key, i], f"{value!r} does not match {pattern.pattern}"
                )
        return tuple(values)

    def table(self, key: str) -> _Reader:
        return _Reader(self.get(key, dict, {}), [*self.path, key], self.loader)

    def tables(self, key: str) -> list[_Reader]:
        values: list[Any] = self.get(key, list, [])
        out = []
        for i, value in enumerate(values):
            if not isinstance(value, dict):
                raise self.loader.error([*self.path, key, i], "expected a table")
            out.append(_Reader(value, [*self.path, key, i], self.loader))
        return out

    def when(self, key: str) -> datetime | None:
        value: datetime | None = self.get(key, datetime, None)
        if value is not None and value.tzinfo is None:
            raise self.fail(key, "needs a time zone offset (e.g. 2026-01-01T00:00:00+08:00)")
        return value


class _Loader:
    def __init__(self, text: str, source: Path) -> None:
        self.text, self.source = text, source
        self.gateway_index: dict[str, int] = {}  # [[gateways]] position, for error paths
        self.key_owners: dict[bytes, str] = {}  # public key -> the party it is listed for

    def error(self, path: Sequence[PathPart], message: str) -> ConfigError:
        line = locate(self.text, path)
        where = f"{self.source.name}:{line}" if line else self.source.name
        return ConfigError(f"{where}: {format_path(path) or '<top>'}: {message}")

    def load(self, self_id: str | None) -> Config:
        try:
            raw = tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{self.source.name}: not valid TOML: {exc}") from exc
        top = _Reader(raw, [], self)
        me = top.table("self")
        chosen = self_id or me.string("id")
        gateways = self._gateways(top)
        if chosen not in gateways:
            raise me.fail("id", f"{chosen!r} is not one of the [[gateways]]")
        server_tls = self._self_tls(me, chosen)
        gateways = {gid: g if g.tls is None else
                    dataclasses.replace(g, tls=g.tls.presenting(server_tls))
                    for gid, g in gateways.items()}
        partners = self._partners(top, gateways, server_tls)
        items = self._items(top)
        alliances = self._alliances(top, items)
        key_path = me.string("private_key").replace("{id}", chosen)
        key_id = me.string("key_id")
        if not any(k.kid == f"{chosen}#{key_id}" for k in gateways[chosen].keys):
            raise me.fail("key_id", f"{chosen}#{key_id} is not among gateways {chosen!r} keys")
        path = (self.source.parent / key_path).resolve()
        try:
            signing_key = load_private_key(path.read_bytes(), kid=f"{chosen}#{key_id}")
        except (OSError, ValueError) as exc:
            raise me.fail("private_key", f"cannot load {path}: {exc}") from exc
        public = next(k for k in gateways[chosen].keys if k.kid == signing_key.kid)
        if public.raw_public != signing_key.raw_public:
            raise me.fail("private_key", f"{path} does not match public key {signing_key.kid}")
        allow_plaintext = me.get("allow_plaintext", bool, False)
        admin_http, admin_grpc = self._admin(me, "admin_http"), self._admin(me, "admin_grpc")
        self._check_exposure(me, gateways[chosen], server_tls, allow_plaintext)
        self._check_admin_ports(me, gateways[chosen])
        lim = top.table("limits")
        callers = self._caller_limits(lim, CallerLimits(), strict=False)
        failures = lim.get("auth_failures_per_second", (int, float),
                           Limits.auth_failures_per_second)
        if failures < 0:
            raise lim.fail("auth_failures_per_second", "must be 0 (off) or positive")
        failures_burst = lim.get("auth_failures_burst", int, Limits.auth_failures_burst)
        if failures_burst < 1:
            raise lim.fail("auth_failures_burst", "must be a positive integer")
        bounds = {"max_hops": (1, 16), "clock_skew_s": (0, 600),
                  "max_token_ttl_s": (1, 3600), "max_message_bytes": (1024, 64 << 20)}
        numbers: dict[str, int] = {}
        for name, (low, high) in bounds.items():
            numbers[name] = lim.get(name, int, getattr(Limits, name))
            if not low <= numbers[name] <= high:
                raise lim.fail(name, f"must be {low}..{high}")
        _refuse_unknown(lim, "[limits]", {*bounds, *(f.name for f in fields(CallerLimits)),
                                          "auth_failures_per_second", "auth_failures_burst"})
        _refuse_unknown(me, "[self]", {"id", "private_key", "key_id", "data_dir", "tls",
                                       "allow_plaintext", "admin_http", "admin_grpc"})
        limits = Limits(
            max_hops=numbers["max_hops"], clock_skew_s=numbers["clock_skew_s"],
            max_token_ttl_s=numbers["max_token_ttl_s"],
            max_message_bytes=numbers["max_message_bytes"],
            callers=callers, caller_overrides=self._caller_overrides(top, callers),
            auth_failures_per_second=float(failures), auth_failures_burst=failures_burst,
        )
        outbox = self._outbox(top.table("outbox"))
        supervision = self._supervision(top.table("supervision"))
        supervisors = self._supervisors(top, gateways, {**partners, **gateways})
        calendar = self._calendar(top.table("calendar"))
        certificates = self._certificate_settings(top.table("certificates"))
        data_dir = (self.source.parent / me.string("data_dir", "var/{id}")
                    .replace("{id}", chosen)).resolve()
        return Config(
            self_id=chosen, signing_key=signing_key, gateways=gateways, partners=partners,
            alliances=alliances, items=items, limits=limits, data_dir=data_dir,
            source=self.source, outbox=outbox, supervision=supervision,
            supervisors=supervisors, calendar=calendar, certificates=certificates,
            tls=server_tls,
            allow_plaintext=allow_plaintext, admin_http=admin_http, admin_grpc=admin_grpc,
            signing_key_path=path,
        )

    def _file(self, table: _Reader, key: str, chosen: str) -> tuple[Path, bytes]:
        """A file named by table[key], relative to partners.toml, {id} replaced."""
        path = (self.source.parent / table.string(key).replace("{id}", chosen)).resolve()
        try:
            return path, path.read_bytes()
        except OSError as exc:
            raise table.fail(key, f"cannot read {path}: {exc.strerror}") from exc

    def _certificates(self, table: _Reader, key: str, chosen: str) -> tuple[Path, bytes]:
        path, pem = self._file(table, key, chosen)
        try:
            read_certificates(pem)
        except ValueError as exc:
            raise table.fail(key, f"{path} holds no PEM certificate: {exc}") from exc
        return path, pem

    def _self_tls(self, me: _Reader, chosen: str) -> ServerTls | None:
        """[self.tls]: the certificate and key of this gateway's listeners, which it also
        presents as its client certificate, and the CAs it trusts for callers."""
        if "tls" not in me.data:
            return None
        table = me.table("tls")
        unknown = sorted(set(table.data) - {"cert", "key", "client_ca", "require_client_cert"})
        if unknown:
            raise table.fail(unknown[0], "is not a setting of [self.tls]")
        cert_path, cert = self._certificates(table, "cert", chosen)
        key_path, key = self._file(table, "key", chosen)
        try:
            check_key_pair(cert, key)
        except ValueError as exc:
            raise table.fail("key", f"{key_path}: {exc}") from exc
        client_ca = (self._certificates(table, "client_ca", chosen)[1]
                     if "client_ca" in table.data else None)
        require = table.get("require_client_cert", bool, client_ca is not None)
        if require and client_ca is None:
            raise table.fail("require_client_cert",
                             "needs client_ca: the CAs whose client certificates are accepted")
        return ServerTls(cert_path=cert_path, key_path=key_path, cert=cert, key=key,
                         client_ca=client_ca, require_client_cert=require)

    def _party_tls(self, entry: _Reader, owner_id: str) -> ChannelTls | None:
        """A party's `tls = { ca = ..., server_name = ... }`: it speaks TLS."""
        if "tls" not in entry.data:
            return None
        table = entry.table("tls")
        unknown = sorted(set(table.data) - {"ca", "server_name"})
        if unknown:
            raise table.fail(unknown[0], "is not a setting of tls (ca, server_name)")
        _, ca = self._certificates(table, "ca", owner_id)
        return ChannelTls(ca=ca, server_name=table.string("server_name", None))

    @staticmethod
    def _admin(me: _Reader, key: str) -> str | None:
        address: str | None = me.string(key, None)
        if address is not None:
            _, colon, port = address.rpartition(":")
            if not colon or not port.isdigit() or not 0 < int(port) < 65536:
                raise me.fail(key, f"{address!r} is not host:port")
        return address

    def _check_exposure(self, me: _Reader, gateway: Gateway, tls: ServerTls | None,
                        allow_plaintext: bool) -> None:
        """Plaintext only on loopback, unless [self] allow_plaintext = true says so.

        Case data carries citizens' id numbers, names and phones; on any other address it
        would cross the network in clear text. The admin listeners never speak TLS.
        """
        index = self.gateway_index[gateway.id]
        if gateway.tls is not None and tls is None:
            raise me.fail("tls", f"is required: gateways[{index}].tls says {gateway.id} "
                                 "speaks TLS, so it needs a cert and key")
        if allow_plaintext:
            return
        hint = "set [self.tls] and this gateway's tls, or [self] allow_plaintext = true"
        if gateway.tls is None:
            for key in ("grpc", "http"):
                address = getattr(gateway, key)
                if not is_loopback(address):
                    raise self.error(["gateways", index, key],
                                     f"{address} is not a loopback address and "
                                     f"{gateway.id} has no TLS; {hint}")
        for key in ("admin_http", "admin_grpc"):
            address = me.data.get(key)
            if isinstance(address, str) and not is_loopback(address):
                raise me.fail(key, f"{address} is not a loopback address; the admin "
                                   "listeners speak plaintext (allow_plaintext = true to "
                                   "accept that)")

    @staticmethod
    def _check_admin_ports(me: _Reader, gateway: Gateway) -> None:
        """An admin listener on a port of another listener: with `serve --reuse-port`
        both would bind it and the kernel would share connections between them, so
        /metrics and reflection would answer on the public port (without it, the start
        fails). Ports are compared whatever the host: 0.0.0.0 covers 127.0.0.1."""
        taken = {"grpc": gateway.grpc, "http": gateway.http}
        for key in ("admin_http", "admin_grpc"):
            address = me.data.get(key)
            if not isinstance(address, str):
                continue
            port = address.rpartition(":")[2]
            same = next((k for k, a in taken.items() if a.rpartition(":")[2] == port), None)
            if same is not None:
                raise me.fail(key, f"{address} is on the port of {same} ({taken[same]}); "
                                   "an admin listener needs a port of its own")
            taken[key] = address

    @staticmethod
    def _caller_limits(table: _Reader, base: CallerLimits, *, strict: bool) -> CallerLimits:
        """The caller limits of [limits] (over the built-in defaults) or of one party's
        `limits = {...}` (over [limits]; strict: unknown keys are refused there)."""
        values: dict[str, Any] = {}
        for setting in fields(CallerLimits):
            name, default = setting.name, getattr(base, setting.name)
            kind: type | tuple[type, ...] = (int, float) if isinstance(default, float) else int
            value = table.get(name, kind, default)
            if value <= 0:
                raise table.fail(name, "must be positive")
            values[name] = float(value) if isinstance(default, float) else value
        unknown = sorted(set(table.data) - set(values))
        if strict and unknown:
            raise table.fail(unknown[0], "is not a caller limit (calls_per_second, burst, "
                             "max_concurrent_calls, max_streams)")
        return CallerLimits(**values)

    def _caller_overrides(self, top: _Reader, base: CallerLimits) -> dict[str, CallerLimits]:
        """Per-party `limits = {...}` of [[partners]], [[gateways]] and [[supervisors]]."""
        out: dict[str, CallerLimits] = {}
        for kind in ("partners", "gateways", "supervisors"):
            for entry in top.tables(kind):
                if "limits" in entry.data:
                    out[entry.string("id")] = self._caller_limits(entry.table("limits"), base,
                                                                  strict=True)
        return out

    @staticmethod
    def _supervision(table: _Reader) -> Supervision:
        _refuse_unknown(table, "[supervision]", {f.name for f in fields(Supervision)})
        ratio = table.get("warning_ratio", (int, float), Supervision.warning_ratio)
        if not 0 < ratio < 1:
            raise table.fail("warning_ratio", "must be between 0 and 1 (e.g. 0.8)")
        days = table.get("rectification_days", int, Supervision.rectification_days)
        if not 0 < days <= 60:
            raise table.fail("rectification_days", "must be 1..60 working days")
        sweep = table.get("sweep_interval_s", (int, float), Supervision.sweep_interval_s)
        if sweep <= 0:
            raise table.fail("sweep_interval_s", "must be positive")
        return Supervision(warning_ratio=float(ratio), rectification_days=days,
                           sweep_interval_s=float(sweep))

    @staticmethod
    def _calendar(table: _Reader) -> WorkCalendar:
        _refuse_unknown(table, "[calendar]", {"holidays", "extra_workdays"})
        def dates(key: str) -> frozenset[date]:
            values: list[Any] = table.get(key, list, [])
            for i, value in enumerate(values):
                if not isinstance(value, date) or isinstance(value, datetime):
                    raise table.loader.error([*table.path, key, i],
                                             "expected a local date such as 2026-10-01")
            return frozenset(values)

        holidays, extra = dates("holidays"), dates("extra_workdays")
        both = sorted(holidays & extra)
        if both:
            raise table.fail("extra_workdays", f"{both[0]} is also listed as a holiday")
        return WorkCalendar(holidays=holidays, extra_workdays=extra)

    def _supervisors(self, top: _Reader, gateways: Mapping[str, Gateway],
                     taken: Mapping[str, Party]) -> dict[str, Supervisor]:
        out: dict[str, Supervisor] = {}
        for entry in top.tables("supervisors"):
            sid, gateway, prefixes = self._attached(entry, {**taken, **out}, gateways,
                                                    "a supervisor watches")
            out[sid] = Supervisor(id=sid, name=entry.string("name"), prefixes=prefixes,
                                  keys=self._keys(entry, sid), gateway=gateway)
        return out

    @staticmethod
    def _outbox(table: _Reader) -> OutboxSettings:
        values: dict[str, Any] = {}
        for default in fields(OutboxSettings):
            name = default.name
            kind: type | tuple[type, ...] = int if isinstance(default.default, int) else (
                int, float)
            value = table.get(name, kind, default.default)
            if value <= 0:
                raise table.fail(name, "must be positive")
            values[name] = value
        if values["backoff_cap_s"] < values["backoff_base_s"]:
            raise table.fail("backoff_cap_s", "must be at least backoff_base_s")
        unknown = sorted(set(table.data) - set(values))
        if unknown:
            raise table.fail(unknown[0], "is not a setting of [outbox]")
        return OutboxSettings(**values)

    def _keys(self, owner: _Reader, owner_id: str) -> tuple[PublicKey, ...]:
        keys = []
        for entry in owner.tables("keys"):
            key_id = entry.string("id", pattern=re.compile(r"^[A-Za-z0-9_.\-]{1,32}$"))
            jwk = entry.get("jwk", dict)
            try:
                keys.append(public_key_from_jwk(
                    jwk, kid=f"{owner_id}#{key_id}",
                    not_before=entry.when("not_before"), not_after=entry.when("not_after"),
                ))
            except ValueError as exc:
                raise entry.fail("jwk", str(exc)) from exc
            if any(k.kid == keys[-1].kid for k in keys[:-1]):  # only the first would count
                raise entry.fail("id", f"duplicate key id {keys[-1].kid}")
            # whoever holds a key listed for two parties could sign as either of them
            holder = self.key_owners.setdefault(keys[-1].raw_public, owner_id)
            if holder != owner_id:
                raise entry.fail("jwk", f"{owner_id} has the same public key as {holder}: "
                                        "each party needs its own key pair")
        if not keys:
            raise owner.fail("keys", "at least one public key is required")
        return tuple(keys)

    def _gateways(self, top: _Reader) -> dict[str, Gateway]:
        out: dict[str, Gateway] = {}
        entries = top.tables("gateways")
        for index, entry in enumerate(entries):
            gid = entry.string("id", pattern=PARTY_ID)
            if gid in out:
                raise entry.fail("id", f"duplicate gateway id {gid!r}")
            self.gateway_index[gid] = index
            out[gid] = Gateway(
                id=gid, name=entry.string("name"),
                prefixes=entry.strings("prefixes", PREFIX),
                keys=self._keys(entry, gid), grpc=entry.string("grpc"),
                http=entry.string("http"), links=entry.strings("links", PARTY_ID),
                batch_signatures=entry.get("batch_signatures", bool, True),
                tls=self._party_tls(entry, gid),
            )
        for entry in entries:
            for i, link in enumerate(out[entry.string("id")].links):
                if link not in out:
                    raise self.error([*entry.path, "links", i], f"unknown gateway {link!r}")
        if not out:
            raise top.fail("gateways", "at least one [[gateways]] entry is required")
        return out

    @staticmethod
    def _attached(entry: _Reader, taken: Mapping[str, Party], gateways: Mapping[str, Gateway],
                  serves: str) -> tuple[str, str, tuple[str, ...]]:
        """id, gateway and prefixes of a party attached to a gateway (partner, supervisor)."""
        party_id = entry.string("id", pattern=PARTY_ID)
        if party_id in taken:
            raise entry.fail("id", f"duplicate id {party_id!r}")
        gateway = entry.string("gateway")
        if gateway not in gateways:
            raise entry.fail("gateway", f"unknown gateway {gateway!r}")
        prefixes = entry.strings("prefixes", PREFIX)
        if not prefixes:
            raise entry.fail("prefixes", f"{serves} at least one division prefix")
        return party_id, gateway, prefixes

    def _partners(self, top: _Reader, gateways: Mapping[str, Gateway],
                  identity: ServerTls | None) -> dict[str, Partner]:
        """identity: the client certificate and key this gateway presents to platforms
        that speak TLS."""
        out: dict[str, Partner] = {}
        for entry in top.tables("partners"):
            pid, gateway, prefixes = self._attached(entry, {**gateways, **out}, gateways,
                                                    "a partner serves")
            tls = self._party_tls(entry, pid)
            out[pid] = Partner(
                id=pid, name=entry.string("name"), prefixes=prefixes,
                keys=self._keys(entry, pid), gateway=gateway,
                adapter=entry.string("adapter", "embedded"),
                settings=dict(entry.get("settings", dict, {})),
                batch_signatures=entry.get("batch_signatures", bool, False),
                tls=tls if tls is None else tls.presenting(identity),
                issues=self._type_codes(entry, "issues"),
            )
        self._check_directory(top, out)
        return out

    def _type_codes(self, entry: _Reader, key: str) -> tuple[str, ...]:
        codes = entry.strings(key, TYPE_CODE)
        for i, code in enumerate(codes):
            if code in codes[:i]:
                raise self.error([*entry.path, key, i], f"type {code!r} is listed twice")
        return codes

    def _check_directory(self, top: _Reader, partners: Mapping[str, Partner]) -> None:
        """One platform per (prefix, certificate type): a lookup must reach the one
        platform that keeps that register."""
        owner: dict[tuple[str, str], str] = {}
        for i, entry in enumerate(top.tables("partners")):
            partner = partners[entry.string("id")]
            for prefix in partner.prefixes:
                for code in partner.issues:
                    other = owner.setdefault((prefix, code), partner.id)
                    if other != partner.id:
                        raise self.error(["partners", i, "issues"],
                                         f"{other!r} already issues type {code!r} for "
                                         f"prefix {prefix!r}")

    @staticmethod
    def _certificate_settings(table: _Reader) -> CertificateSettings:
        _refuse_unknown(table, "[certificates]", {"identity_type", "document_cache",
                                                  "call_timeout_s"})
        cache = table.get("document_cache", int, CertificateSettings.document_cache)
        if not 0 <= cache <= 1_000_000:
            raise table.fail("document_cache", "must be 0 (off) .. 1000000 entries")
        timeout = table.get("call_timeout_s", (int, float), CertificateSettings.call_timeout_s)
        if not 0 < timeout <= 60:
            raise table.fail("call_timeout_s", "must be more than 0 and at most 60 s")
        return CertificateSettings(
            identity_type=table.string("identity_type", CertificateSettings.identity_type,
                                       TYPE_CODE),
            document_cache=cache, call_timeout_s=float(timeout))

    def _items(self, top: _Reader) -> dict[str, Item]:
        out: dict[str, Item] = {}
        for entry in top.tables("items"):
            code = entry.string("code", pattern=ITEM_CODE)
            if code in out:
                raise entry.fail("code", f"duplicate item {code!r}")
            mode = entry.string("mode")
            if mode not in MODES:
                raise entry.fail("mode", f"{mode!r} is not one of {', '.join(MODES)}")
            days = entry.get("time_limit_days", int)
            if not 0 < days <= 365:
                raise entry.fail("time_limit_days", "must be 1..365 working days")
            materials = entry.strings("required_materials")
            certificates = entry.table("certificates")
            replaces: dict[str, tuple[str, ...]] = {}
            for material in certificates.data:
                if material not in materials:
                    raise certificates.fail(material, "is not one of the item's "
                                            "required_materials")
                replaces[material] = self._type_codes(certificates, material)
                if not replaces[material]:
                    raise certificates.fail(material, "lists no certificate type")
            out[code] = Item(
                code=code, name=entry.string("name"), mode=mode,
                required_materials=materials,
                time_limit_days=days, cross_province=entry.get("cross_province", bool, False),
                certificates=replaces,
            )
        return out

    def _alliances(self, top: _Reader, items: Mapping[str, Item]) -> dict[str, Alliance]:
        out: dict[str, Alliance] = {}
        for entry in top.tables("alliances"):
            aid = entry.string("id", pattern=ITEM_CODE)
            listed = entry.strings("items")
            for i, code in enumerate(listed):
                if code not in items:
                    raise self.error([*entry.path, "items", i], f"unknown item {code!r}")
            members = entry.strings("members", PREFIX)
            if len(members) < 2:
                raise entry.fail("members", "an alliance needs at least two members")
            out[aid] = Alliance(id=aid, name=entry.string("name"), members=members,
                                items=frozenset(listed))
        return out


def _refuse_unknown(table: _Reader, name: str, known: set[str]) -> None:
    """A misspelt key must not silently become its default (clock_skew → 60 s)."""
    unknown = sorted(set(table.data) - known)
    if unknown:
        raise table.fail(unknown[0], f"is not a setting of {name}")


def load(text: str, source: Path, self_id: str | None) -> Config:
    return _Loader(text, source).load(self_id)
