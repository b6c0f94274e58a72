"""Faults never strand acknowledged work (issue #12 §4, and the delivery items of §3).

A disk that fills under load (a real `tongban serve` process under RLIMIT_FSIZE), the
outbox poll and the deadline sweep fed a store whose writes fail, a silent destination
beside a healthy one, a poison case beside healthy ones, a platform that refuses our
signature, and a partner that comes back after an outage.

The failing store is a real SqliteStore whose commits fail, for as long as a test says,
the way SQLite's fail on a full disk: a fake transport under the store, not a patched
method of the code under test.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from adapters.embedded import EmbeddedAdapter
from gateway.app import GatewayApp
from gateway.breaker import Breakers, BreakerState
from gateway.client import CallError
from gateway.config import OutboxSettings, load_config
from gateway.demo import client_for, free_port, on_free_ports, rebind
from gateway.faults import LogThrottle
from gateway.lifecycle import seconds
from gateway.partner_client import PartnerClient
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import partner_pb2 as pp
from gateway.store.offline import list_outbox
from gateway.store.sqlite import SqliteStore
from gateway.types import Clock
from gateway.workdays import CHINA
from tests.federation import PARTNERS_TOML, ROOT, FakeClock, federation_text, until
from tests.platform import Platform, grpc_partner_text, serving
from tests.test_crash import write_config

APPLICANT = pb.Applicant(id_type=pb.ID_TYPE_RESIDENT, id_number="11010519491231002X",
                         name="张三")
FAST = """
[outbox]
backoff_base_s = 0.05
backoff_cap_s = 0.2
breaker_failures = 3
breaker_cooldown_s = {cooldown}
breaker_max_cooldown_s = {cap}
max_attempts = 1000
"""


class FullDisk(SqliteStore):
    """A real store whose commits fail while `full` is set, as SQLite's do when the disk
    is full; `failed` counts the batches that failed."""

    full = False
    failed = 0

    def _apply(self, ops: list[Any]) -> list[tuple[bool, Any]]:  # the writer thread
        if self.full:
            self.failed += 1
            raise sqlite3.OperationalError("database or disk is full")
        return super()._apply(ops)


@asynccontextmanager
async def gateway(tmp_path: Path, gateway_id: str, text: str, clock: Clock | None = None
                  ) -> AsyncIterator[tuple[GatewayApp, FullDisk]]:
    """One gateway of the demo federation (its peers not started) on a FullDisk store."""
    base = load_config(PARTNERS_TOML, text=text)
    config = rebind(load_config(PARTNERS_TOML, self_id=gateway_id, text=text),
                    on_free_ports(base), tmp_path)
    store = FullDisk(config.data_dir / "gateway.sqlite3", clock=clock)
    app = GatewayApp(config, clock=clock, store=store)
    await app.start()
    try:
        yield app, store
    finally:
        await app.stop(grace_s=0.1)


async def status_of(http_address: str, path: str) -> int:
    try:
        async with aiohttp.ClientSession() as http, http.get(
                f"http://{http_address}{path}") as answer:
            return answer.status
    except aiohttp.ClientError:
        return 0


async def submit(client: PartnerClient, number: str, target: str = "310115",
                 item: str = "yb-ba") -> str:
    answer = await client.submit(case_number=number, target_division=target, item_code=item,
                                 applicant=APPLICANT)
    return answer.case.case_id


# -- a disk that fills under load --------------------------------------------------------
async def collect(stream: asyncio.StreamReader, lines: list[bytes]) -> None:
    while line := await stream.readline():
        lines.append(line)


@pytest.mark.asyncio
@pytest.mark.timeout(240)
async def test_a_disk_that_fills_under_load_strands_nothing(tmp_path: Path) -> None:
    platform_port = free_port()
    config_path, _, http_port = write_config(tmp_path, platform_port)
    config = load_config(config_path, self_id="310000-gw")
    files = [config.data_dir / f"gateway.sqlite3{s}" for s in ("", "-wal", "-shm")]
    platform = Platform(config.me.keys)
    http = f"127.0.0.1:{http_port}"
    async with serving(platform, platform_port):
        # stderr is a pipe (RLIMIT_FSIZE does not limit pipes) so every line is counted;
        # CPython ignores SIGXFSZ at start-up, so a write past the limit fails with EFBIG
        # instead of killing the process
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "serve", "--config", str(config_path),
            "--as", "310000-gw", cwd=ROOT, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        assert proc.stderr is not None
        lines: list[bytes] = []
        reader = asyncio.create_task(collect(proc.stderr, lines))
        client = client_for(config, "310000")
        stop = asyncio.Event()
        acked: dict[str, str] = {}
        refused: Counter[grpc.StatusCode] = Counter()

        async def load(worker: int) -> None:
            for i in range(100_000):
                if stop.is_set():
                    return
                number = f"FULL-{worker}-{i}"
                try:
                    acked[number] = await submit(client, number)
                except CallError as exc:
                    refused[exc.status] += 1
                    await asyncio.sleep(0.05)  # a platform paces its retries

        async def ready(status: int) -> bool:
            return await status_of(http, "/readyz") == status

        try:
            async def alive() -> bool:
                return await status_of(http, "/healthz") == 200

            await until(alive, within=30)
            workers = [asyncio.create_task(load(w)) for w in range(8)]

            async def some(n: int) -> bool:
                return len(acked) >= n

            await until(lambda: some(150), within=30)
            _, hard = resource.prlimit(proc.pid, resource.RLIMIT_FSIZE)
            size = min(f.stat().st_size for f in files if f.exists() and f.stat().st_size)
            resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (size, hard))  # the disk is full
            full_at, before = time.monotonic(), len(lines)

            async def refusing() -> bool:
                return refused[grpc.StatusCode.UNAVAILABLE] >= 20

            await until(refusing, within=30)
            await until(lambda: ready(503), within=10)
            assert await status_of(http, "/healthz") == 200  # alive, only not ready
            # the disk stays full for a while, under load
            await asyncio.sleep(max(0.0, 4.0 - (time.monotonic() - full_at)))
            resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (hard, hard))  # room again
            during = lines[before:]
            acked_full = len(acked)

            await until(lambda: ready(200), within=15)
            await until(lambda: some(acked_full + 50), within=15)  # it takes cases again
            stop.set()
            await asyncio.gather(*workers)

            async def delivered() -> bool:
                return set(acked.values()) <= set(platform.cases)

            await until(delivered, within=60)
            assert proc.returncode is None  # no restart
            print(f"\nacked {len(acked)}, refused {dict(refused)}, "
                  f"{len(during)} log lines while the disk was full for "
                  f"{time.monotonic() - full_at:.1f} s")
            assert set(refused) == {grpc.StatusCode.UNAVAILABLE}, refused  # never UNKNOWN
            assert len(during) <= 20, b"".join(during).decode()
        finally:
            stop.set()
            await client.close()
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 20) == 0, b"".join(lines).decode()
            await reader
    log = b"".join(lines).decode()
    assert "Traceback" not in log and "sqlite3" not in log.split("store writes fail")[0], log


# -- background loops fed a failing store ------------------------------------------------
@pytest.mark.asyncio
async def test_outbox_poll_outlives_a_failing_store_and_drains_after(tmp_path: Path) -> None:
    port = free_port()  # the platform is down at first: the entries wait for the poll
    text = grpc_partner_text(port, extra=FAST.format(cooldown=0.3, cap=0.6))
    async with gateway(tmp_path, "310000-gw", text) as (app, store):
        db = app.config.data_dir / "gateway.sqlite3"
        client = client_for(app.config, "310000")
        try:
            ids = [await submit(client, f"POLL-{i}") for i in range(5)]

            async def tried() -> bool:
                rows = list_outbox(db)  # failed, or held by the open breaker
                return len(rows) == 5 and sum(r.attempts for r in rows) >= 3

            await until(tried)
            store.full, failed = True, store.failed

            async def polls_failed() -> bool:
                return store.failed >= failed + 4

            await until(polls_failed)
            assert await status_of(app.config.me.http, "/readyz") == 503
            assert await status_of(app.config.me.http, "/healthz") == 200
            with pytest.raises(CallError) as err:
                await submit(client, "POLL-x")
            assert err.value.status is grpc.StatusCode.UNAVAILABLE
            assert "disk" not in err.value.message and "sqlite" not in err.value.message
            store.full = False

            platform = Platform(app.config.me.keys)
            async with serving(platform, port):
                async def delivered() -> bool:
                    return set(ids) <= set(platform.cases)

                await until(delivered)

            async def ready() -> bool:
                return await status_of(app.config.me.http, "/readyz") == 200

            await until(ready)
        finally:
            await client.close()


MONDAY_9AM = datetime(2026, 11, 23, 9, tzinfo=CHINA).timestamp()


@pytest.mark.asyncio
async def test_deadline_sweep_outlives_a_failing_store_and_fires_after(tmp_path: Path) -> None:
    clock = FakeClock(MONDAY_9AM)
    text = federation_text("manual").replace("sweep_interval_s = 30", "sweep_interval_s = 0.1")
    async with gateway(tmp_path, "320100-gw", text, clock) as (app, store):
        client = client_for(app.config, "320105", clock)
        try:
            answer = await client.submit(case_number="SWEEP-1", target_division="320100",
                                         item_code="gjj-tq", applicant=APPLICANT)

            async def forwarded() -> bool:
                return await store.count_outbox() == 0

            await until(forwarded)
            store.full, failed = True, store.failed
            clock.t = seconds(answer.case.deadline) + 1  # overdue while the disk is full

            async def sweeps_failed() -> bool:
                return store.failed >= failed + 5

            await until(sweeps_failed)
            store.full = False

            async def alarmed() -> bool:
                events = await store.read_events(0, 1000)
                return any(e.kind == pb.EVENT_KIND_DEADLINE_OVERDUE for e in events)

            await until(alarmed)
        finally:
            await client.close()


# -- one destination never holds back another ----------------------------------------------
@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_a_silent_peer_does_not_delay_a_local_delivery(tmp_path: Path) -> None:
    text = federation_text()
    base = load_config(PARTNERS_TOML, text=text)
    ports = on_free_ports(base)
    hung: list[int] = []

    async def silent(body: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        hung.append(len(body))
        await asyncio.Event().wait()  # never answers
        return b""

    peer = grpc.aio.server()
    peer.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "tongban.v1.Gateway", {"ForwardCase": grpc.unary_unary_rpc_method_handler(silent)}),))
    peer.add_insecure_port(ports["320000-gw"][0])
    await peer.start()
    config = rebind(load_config(PARTNERS_TOML, self_id="320100-gw", text=text), ports,
                    tmp_path)
    app = GatewayApp(config)
    await app.start()
    jianye, chuzhou = client_for(config, "320105"), client_for(config, "341100")
    try:
        queued = 240
        for start in range(0, queued, 40):  # to 310115, by way of the silent 320000-gw
            await asyncio.gather(*(submit(jianye, f"SIL-{i}", item="shebao-zy")
                                   for i in range(start, start + 40)))

        async def stuck() -> bool:
            return len(hung) >= 32

        await until(stuck)
        began = time.monotonic()
        case_id = await submit(chuzhou, "LOCAL-1", target="320100", item="gjj-tq")
        nanjing = app.adapters["320100"]
        assert isinstance(nanjing, EmbeddedAdapter)
        async with asyncio.timeout(5):
            await nanjing.wait_for(case_id)
        took = time.monotonic() - began
        print(f"\n{queued} cases queued for a silent peer ({len(hung)} calls hanging): "
              f"a local delivery took {took * 1000:.0f} ms")
        assert took < 1.0
    finally:
        await jianye.close()
        await chuzhou.close()
        await app.stop(grace_s=0.1)
        await peer.stop(0)


class Poisoned(Platform):
    """Answers INTERNAL for every case whose number starts with POISON."""

    async def receive(self, body: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        case = pp.ReceiveCaseRequest.FromString(body).case
        if case.case_number.startswith("POISON"):
            self.calls[case.case_id] += 1
            await context.abort(grpc.StatusCode.INTERNAL, "cannot store this case")
        return await super().receive(body, context)


@pytest.mark.asyncio
async def test_a_poison_case_does_not_hold_back_healthy_cases(tmp_path: Path) -> None:
    port = free_port()
    text = grpc_partner_text(port, extra=FAST.format(cooldown=0.3, cap=0.6))
    async with gateway(tmp_path, "310000-gw", text) as (app, _):
        db = app.config.data_dir / "gateway.sqlite3"
        client = client_for(app.config, "310000")
        platform = Poisoned(app.config.me.keys)
        try:
            async with serving(platform, port):
                poison = await submit(client, "POISON-1")

                async def failing() -> bool:  # more failures than breaker_failures
                    return platform.calls[poison] >= 5

                await until(failing)
                began = time.monotonic()
                healthy = [await submit(client, f"OK-{i}") for i in range(3)]

                async def delivered() -> bool:
                    return set(healthy) <= set(platform.cases)

                await until(delivered, within=5)
                took = time.monotonic() - began
                print(f"\n3 healthy cases beside a poison case: delivered in {took:.2f} s")

                async def only_the_poison_left() -> bool:  # the marks follow the answers
                    return [row.case_id for row in list_outbox(db)] == [poison]

                await until(only_the_poison_left)
                assert not list_outbox(db)[0].dead  # it keeps its own backoff
                assert app.engine.outbox.breaker_states().get(
                    "310115", BreakerState.CLOSED) is BreakerState.CLOSED
        finally:
            await client.close()


@pytest.mark.asyncio
async def test_after_an_outage_the_probe_is_not_always_the_oldest_failing_case(
        tmp_path: Path) -> None:
    """The partner is down, a poison case is the oldest entry; when the partner returns,
    the half-open probe goes to an entry that failed least, so the healthy cases go."""
    port = free_port()
    text = grpc_partner_text(port, extra=FAST.format(cooldown=0.3, cap=0.6))
    async with gateway(tmp_path, "310000-gw", text) as (app, _):
        db = app.config.data_dir / "gateway.sqlite3"
        client = client_for(app.config, "310000")
        try:
            poison = await submit(client, "POISON-2")
            healthy = [await submit(client, f"WAIT-{i}") for i in range(3)]

            async def opened() -> bool:
                return app.engine.outbox.breaker_states().get(
                    "310115", BreakerState.CLOSED) is not BreakerState.CLOSED

            await until(opened)
            platform = Poisoned(app.config.me.keys)
            async with serving(platform, port):
                began = time.monotonic()

                async def delivered() -> bool:
                    return set(healthy) <= set(platform.cases)

                await until(delivered, within=5)
                print(f"\nafter the outage, 3 healthy cases behind a poison case went in "
                      f"{time.monotonic() - began:.2f} s")

                async def only_the_poison_left() -> bool:  # the marks follow the answers
                    return [row.case_id for row in list_outbox(db)] == [poison]

                await until(only_the_poison_left)
        finally:
            await client.close()


# -- a platform that refuses our signature -----------------------------------------------
@pytest.mark.asyncio
async def test_unauthenticated_is_retried_and_alerted_not_dead_lettered(tmp_path: Path) -> None:
    port = free_port()
    text = grpc_partner_text(port, extra=FAST.format(cooldown=0.3, cap=0.6))
    async with gateway(tmp_path, "310000-gw", text) as (app, _):
        db = app.config.data_dir / "gateway.sqlite3"
        client = client_for(app.config, "310000")
        platform = Platform(app.config.me.keys, refuse=grpc.StatusCode.UNAUTHENTICATED)
        try:
            async with serving(platform, port):
                case_id = await submit(client, "SKEW-1")

                def alerts() -> float:
                    return app.metrics.registry.get_sample_value(
                        "tongban_outbox_auth_alerts_total", {"destination": "310115"}) or 0.0

                async def retried() -> bool:
                    return alerts() >= 3

                await until(retried)
                [row] = list_outbox(db)
                # retried and alerted, spending no attempt: it waits for the operator
                assert not row.dead and "refuses the gateway" in row.last_error
                assert row.attempts == 0
                platform.refuse = None  # its clock (or its key cache) is right again

                async def delivered() -> bool:
                    return case_id in platform.cases

                await until(delivered)
        finally:
            await client.close()


# -- a partner back after an outage ------------------------------------------------------
@pytest.mark.parametrize("back_at", [3.0, 13.9, 30.0, 30.5, 61.0, 200.0, 600.0])
def test_default_policy_probes_a_returning_partner_within_10_s(back_at: float) -> None:
    """With the shipped settings, whenever a partner comes back, a probe (made as soon as
    the breaker allows, polls every 0.5 s) reaches it within 10 s. Before: up to 33 s."""
    s = OutboxSettings()
    breakers = Breakers(failures=s.breaker_failures, cooldown_s=s.breaker_cooldown_s,
                        max_cooldown_s=s.breaker_max_cooldown_s)
    for _ in range(s.breaker_failures):
        breakers.failure("p", 0.0)
    t = 0.0
    while True:
        t += 0.5
        if breakers.allow("p", t):
            if t < back_at:
                breakers.failure("p", t)
            else:
                breakers.success("p")
                break
    assert t - back_at <= 10.0
    assert s.breaker_max_cooldown_s + 0.5 <= 10.0


def breaker_gauge(text: str) -> float | None:
    for line in text.splitlines():
        if line.startswith('tongban_breaker_open{destination="310115"}'):
            return float(line.split()[-1])
    return None


@pytest.mark.asyncio
async def test_breaker_gauge_clears_and_delivery_resumes_within_the_probe_cap(
        tmp_path: Path) -> None:
    port = free_port()
    cap = 0.4
    text = grpc_partner_text(port, extra=FAST.format(cooldown=0.1, cap=cap))
    async with gateway(tmp_path, "310000-gw", text) as (app, _):
        client = client_for(app.config, "310000")

        async def gauge() -> float | None:
            async with aiohttp.ClientSession() as http, http.get(
                    f"http://{app.config.me.http}/metrics") as answer:
                return breaker_gauge(await answer.text())

        try:
            ids = [await submit(client, f"BACK-{i}") for i in range(3)]

            async def opened() -> bool:
                return await gauge() == 1.0

            await until(opened)
            await asyncio.sleep(2.0)  # the outage lasts: the cool-off reaches its cap
            platform = Platform(app.config.me.keys)
            async with serving(platform, port):
                back = time.monotonic()

                async def delivered() -> bool:
                    return set(ids) <= set(platform.cases)

                await until(delivered)
                took = time.monotonic() - back
            print(f"\ndelivery resumed {took:.2f} s after the partner came back "
                  f"(probe cap {cap} s, poll 0.5 s)")
            assert took <= cap + 0.5 + 1.0  # the cap, a poll interval, a reconnect
            assert await gauge() == 0.0
        finally:
            await client.close()


def test_a_repeated_fault_logs_one_line_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    throttle = LogThrottle(logging.getLogger("tongban.test"), 10.0, monotonic=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="tongban.test"):
        for step in range(250):  # 25 s of a fault that recurs every 0.1 s
            now[0] = step * 0.1
            throttle.log(logging.WARNING, "disk", "store writes fail: %s", "disk I/O error")
        throttle.log(logging.WARNING, "other", "another fault")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["store writes fail: disk I/O error",
                     "store writes fail: disk I/O error (99 more like it in the last 10 s)",
                     "store writes fail: disk I/O error (99 more like it in the last 10 s)",
                     "another fault"]
