"""Prometheus metrics of one gateway, in a registry of its own (tests run several
gateways in one process; the global registry would mix them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.store.base import CertificateUse

USE_LABELS = ("method", "cert_type", "item", "consumer", "issuer", "outcome")


class _Totals(Collector):
    """Counters kept as plain ints where they happen (the store's writer thread, the
    signer, the verifier) and read at scrape time: no prometheus call on the hot path."""

    HELP: ClassVar[dict[str, str]] = {
        "store_commits": "Group commits of the store (ops per commit = batching)",
        "batch_signed_messages": "Messages signed through the batch signer",
        "batch_signatures": "Signature operations of the batch signer (one per batch)",
        "signature_checks": "Public-key verifications (a batch root counts once)",
        "unauthenticated_calls": "Calls refused before their caller was known (bad or "
                                 "missing signature); not written to the audit log",
        "limited_calls": "Calls and streams refused with RESOURCE_EXHAUSTED by the "
                         "per-caller limits or the per-address failure budget",
    }

    def __init__(self, read: Callable[[], Mapping[str, int]]) -> None:
        self._read = read

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name, value in self._read().items():
            yield CounterMetricFamily(f"tongban_{name}", self.HELP[name], value=value)


class Metrics:
    def __init__(self, gateway_id: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = {"gateway": gateway_id}
        self.events = Counter("tongban_case_events", "Case events recorded, by kind",
                              ["kind"], registry=self.registry).labels
        self.deliveries = Counter("tongban_outbox_deliveries",
                                  "Outbox delivery outcomes (sent, failed, dead, opened)",
                                  ["outcome", "destination"], registry=self.registry)
        self.breaker_open = Gauge("tongban_breaker_open",
                                  "1 while the circuit to a destination is open",
                                  ["destination"], registry=self.registry)
        self._breakers_seen: set[str] = set()
        self.auth_alerts = Counter(
            "tongban_outbox_auth_alerts",
            "Deliveries whose signatures did not check out (the destination refused ours "
            "as UNAUTHENTICATED, or its answer's failed): clock skew or stale keys; alert "
            "on any increase", ["destination"], registry=self.registry)
        self.store_writable = Gauge("tongban_store_writable",
                                    "0 while the store cannot write (disk full, I/O error)",
                                    registry=self.registry)
        self.gauges = {
            name: Gauge(f"tongban_{name}", help_text, registry=self.registry)
            for name, help_text in (
                ("cases_open", "Cases not yet in a final state"),
                ("cases_overdue", "Open cases past their 承诺时限 (电子监察 alarm)"),
                ("outbox_pending", "Deliveries waiting or retrying"),
                ("outbox_dead", "Dead-lettered deliveries waiting for `tongban outbox redrive`"),
            )}
        self._by_kind: dict[int, Counter] = {}
        # every certificate use is counted (DESIGN §8). The labels stay few: configured
        # partners, items and types, checked before a use is recorded, and status names
        self.certificate_uses = Counter(
            "tongban_certificate_uses", "Certificate calls kept as uses (`tongban stats "
            "certs`), by method, type, item, consumer, issuer and outcome", USE_LABELS,
            registry=self.registry)
        self.info = Gauge("tongban_gateway_info", "This gateway", ["gateway"],
                          registry=self.registry)
        self.info.labels(**labels).set(1)

    def watch_totals(self, read: Callable[[], Mapping[str, int]]) -> None:
        self.registry.register(_Totals(read))

    def record_events(self, events: list[pb.CaseEvent]) -> None:
        for event in events:
            counter = self._by_kind.get(event.kind)
            if counter is None:  # once per kind: the name lookup and labels() cost more
                kind = pb.EventKind.Name(event.kind).removeprefix("EVENT_KIND_").lower()
                counter = self._by_kind[event.kind] = self.events(kind=kind)
            counter.inc()

    def record_certificate_uses(self, uses: Sequence[CertificateUse]) -> None:
        """Count uses once the store has kept them (the counter never runs ahead of
        what `tongban stats certs` reads)."""
        for use in uses:
            self.certificate_uses.labels(
                method=use.method, cert_type=use.cert_type, item=use.item,
                consumer=use.consumer, issuer=use.issuer, outcome=use.outcome).inc()

    def record_delivery(self, outcome: str, destination: str) -> None:
        if outcome == "unauthenticated":  # an alert beside the attempt's own outcome
            self.auth_alerts.labels(destination=destination).inc()
            return
        self.deliveries.labels(outcome=outcome, destination=destination).inc()

    def set_counts(self, counts: dict[str, int] | None, breakers: dict[str, bool], *,
                   writable: bool = True) -> None:
        """Gauges at scrape time; counts None: the store could not say (keep the last).
        A destination whose circuit closed is no longer in breakers (the breaker forgets
        it): its gauge goes back to 0."""
        self.store_writable.set(int(writable))
        if counts is not None:
            self.gauges["cases_open"].set(counts["open"])
            self.gauges["cases_overdue"].set(counts["overdue"])
            self.gauges["outbox_pending"].set(counts["outbox"])
            self.gauges["outbox_dead"].set(counts["dead"])
        for destination in self._breakers_seen - breakers.keys():
            self.breaker_open.labels(destination=destination).set(0)
        for destination, is_open in breakers.items():
            self.breaker_open.labels(destination=destination).set(int(is_open))
        self._breakers_seen |= breakers.keys()

    def render(self) -> bytes:
        return generate_latest(self.registry)
