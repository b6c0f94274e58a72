"""Admission limits (gateway/limits.py) and bounded watchers, pure and over real sockets.

Per-partner rates, concurrency and stream caps answer RESOURCE_EXHAUSTED with a
google.rpc.RetryInfo; an address that keeps failing authentication is refused before any
signature check; a watcher that does not read holds one case, not every version of it.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import CallerLimits, load_config
from gateway.errors import ConfigError, ResourceExhausted
from gateway.limits import MAX_ADDRESSES, CallerPolicy, Limiter, TokenBucket, address_of
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import gateway_pb2 as gw
from gateway.signing import HEADER, load_private_key, sign
from tests.federation import PARTNERS_TOML, ROOT, FakeClock, federation, federation_text, until

SERVICE = "/tongban.v1.Gateway/"
CITIZEN = pb.Applicant(id_type=pb.ID_TYPE_RESIDENT, id_number="11010519491231002X", name="张三")
PENSION = dict(target_division="310115", item_code="shebao-zy", applicant=CITIZEN)
POLICY = CallerPolicy(calls_per_second=2.0, burst=4, max_concurrent_calls=2, max_streams=1)


# -- the pure limiter --------------------------------------------------------------------

def limiter(clock: FakeClock, policy: CallerPolicy = POLICY, *, failures: float = 1.0,
            burst: int = 3) -> Limiter:
    return Limiter(default=policy, overrides={}, failures_per_second=failures,
                   failures_burst=burst, clock=clock)


@given(gaps=st.lists(st.floats(min_value=0.0, max_value=2.0), min_size=1, max_size=200),
       rate=st.floats(min_value=0.1, max_value=100.0), burst=st.integers(1, 20))
def test_bucket_admits_no_more_than_burst_plus_rate_times_elapsed(
        gaps: list[float], rate: float, burst: int) -> None:
    start = now = 1_000.0
    bucket = TokenBucket(rate, burst, now)
    admitted = 0
    for gap in gaps:
        now += gap
        wait = bucket.take(now)
        if wait == 0.0:
            admitted += 1
        else:  # waiting the announced time is enough, and not much more than needed
            assert 0 < wait <= 1 / rate + 1e-9
            probe = TokenBucket(rate, burst, now)
            probe.tokens, probe.stamp = bucket.tokens, bucket.stamp
            assert probe.wait(now + wait) == 0.0
        assert admitted <= burst + rate * (now - start) + 1e-6


@given(times=st.lists(st.floats(min_value=0.0, max_value=1e6), min_size=2, max_size=50))
def test_a_clock_stepping_back_never_adds_tokens(times: list[float]) -> None:
    bucket = TokenBucket(1.0, 5, times[0])
    for t in times:
        bucket.wait(t)
        assert bucket.tokens <= 5.0


@given(ops=st.lists(st.sampled_from(["call", "stream", "release", "release-again"]),
                    max_size=60))
def test_caps_hold_and_every_release_gives_one_slot_back(ops: list[str]) -> None:
    clock = FakeClock(0.0)
    lim = limiter(clock, CallerPolicy(calls_per_second=1e9, burst=10**9,
                                      max_concurrent_calls=3, max_streams=2))
    held = []
    for op in ops:
        clock.advance(0.001)
        if op in ("call", "stream"):
            stream = op == "stream"
            if (lim.streams if stream else lim.calls)["p"] < (2 if stream else 3):
                held.append(lim.admit("p", stream=stream))
            else:
                with pytest.raises(ResourceExhausted) as err:
                    lim.admit("p", stream=stream)
                assert err.value.reason == ("TOO_MANY_STREAMS" if stream
                                            else "TOO_MANY_CALLS")
                assert err.value.retry_after_s > 0
        elif held:
            slot = held.pop(0) if op == "release" else held[0]
            slot.release()
            if op == "release-again":
                slot.release()  # a second release gives nothing back
                held.pop(0)
        assert lim.calls["p"] <= 3 and lim.streams["p"] <= 2
        assert lim.calls["p"] + lim.streams["p"] == len(held)


def test_rate_refusal_names_the_wait_and_other_callers_are_unaffected() -> None:
    clock = FakeClock(100.0)
    lim = limiter(clock)
    for _ in range(4):
        lim.admit("a").release()
    with pytest.raises(ResourceExhausted) as err:
        lim.admit("a")
    assert err.value.reason == "RATE_LIMITED" and err.value.retry_after_s == 0.5
    lim.admit("b").release()  # b has a bucket of its own
    clock.advance(0.5)
    lim.admit("a").release()
    assert lim.refused == {"RATE_LIMITED": 1}


def test_an_override_applies_to_its_caller_only() -> None:
    clock = FakeClock(0.0)
    lim = Limiter(default=POLICY, overrides={"slow": CallerPolicy(
        calls_per_second=1.0, burst=1, max_concurrent_calls=1, max_streams=1)},
                  failures_per_second=0, failures_burst=1, clock=clock)
    lim.admit("slow").release()
    with pytest.raises(ResourceExhausted):
        lim.admit("slow")
    for _ in range(4):
        lim.admit("fast").release()


def test_failed_authentications_close_an_address_until_its_budget_refills() -> None:
    clock = FakeClock(0.0)
    lim = limiter(clock, failures=2.0, burst=3)
    for _ in range(3):
        lim.check_address("ipv4:10.0.0.7")
        lim.failed("ipv4:10.0.0.7")
    with pytest.raises(ResourceExhausted) as err:
        lim.check_address("ipv4:10.0.0.7")
    assert err.value.reason == "TOO_MANY_FAILURES" and err.value.retry_after_s == 0.5
    lim.check_address("ipv4:10.0.0.8")  # another address is not touched
    clock.advance(0.5)
    lim.check_address("ipv4:10.0.0.7")


def test_the_address_table_is_bounded() -> None:
    lim = limiter(FakeClock(0.0), burst=1)
    for i in range(MAX_ADDRESSES + 10):
        lim.failed(f"ipv4:10.{i >> 16}.{(i >> 8) & 255}.{i & 255}")
    assert len(lim._failures) == MAX_ADDRESSES
    lim.check_address("ipv4:10.0.0.0")  # the oldest was forgotten, so it may try again
    with pytest.raises(ResourceExhausted):
        lim.check_address(f"ipv4:10.0.{(MAX_ADDRESSES + 9) >> 8 & 255}."
                          f"{(MAX_ADDRESSES + 9) & 255}")


@pytest.mark.parametrize(("peer", "address"), [
    ("ipv4:127.0.0.1:52514", "ipv4:127.0.0.1"),
    ("ipv6:[::1]:52514", "ipv6:[::1]"),
    ("ipv6:%5B::1%5D:52514", "ipv6:%5B::1%5D"),
    ("unix:/tmp/gw.sock", "unix:/tmp/gw.sock"),
    ("", ""),
])
def test_address_of_drops_the_port(peer: str, address: str) -> None:
    assert address_of(peer) == address


# -- partners.toml -----------------------------------------------------------------------

def with_limits(text: str, party: str, inline: str) -> str:
    """partners.toml with `limits = {inline}` on the entry of party."""
    head = f'[[partners]]\nid = "{party}"\n'
    assert head in text
    return text.replace(head, f"{head}limits = {{ {inline} }}\n")


def test_limits_load_with_defaults_and_per_partner_overrides() -> None:
    text = with_limits(PARTNERS_TOML.read_text(encoding="utf-8"), "320105",
                       "calls_per_second = 2, max_streams = 3")
    text = text.replace("max_hops = 4\n", "max_hops = 4\nburst = 50\n")
    limits = load_config(PARTNERS_TOML, text=text).limits
    assert limits.callers == CallerLimits(burst=50)
    assert limits.for_caller("320105") == CallerLimits(calls_per_second=2.0, burst=50,
                                                       max_streams=3)
    assert limits.for_caller("320100") == limits.callers
    assert load_config(PARTNERS_TOML).limits.callers == CallerLimits()


@pytest.mark.parametrize(("change", "where", "message"), [
    (lambda t: with_limits(t, "320105", "burst = 0"), "partners[0].limits.burst",
     "must be positive"),
    (lambda t: with_limits(t, "320105", 'max_streams = "9"'), "partners[0].limits.max_streams",
     "expected int, got str"),
    (lambda t: with_limits(t, "320105", "calls_per_secnd = 9"),
     "partners[0].limits.calls_per_secnd", "is not a caller limit"),
    (lambda t: with_limits(t, "320105", "max_hops = 9"), "partners[0].limits.max_hops",
     "is not a caller limit"),
    (lambda t: t.replace("max_hops = 4\n", "max_hops = 4\ncalls_per_second = -1\n"),
     "limits.calls_per_second", "must be positive"),
    (lambda t: t.replace("max_hops = 4\n", "max_hops = 4\nauth_failures_burst = 0\n"),
     "limits.auth_failures_burst", "must be a positive integer"),
])
def test_bad_limits_name_line_and_path(change: object, where: str, message: str) -> None:
    assert callable(change)
    text = change(PARTNERS_TOML.read_text(encoding="utf-8"))
    needle = "limits = {" if where.startswith("partners") else where.rsplit(".", 1)[1]
    line = next(n for n, row in enumerate(text.splitlines(), 1) if row.startswith(needle))
    with pytest.raises(ConfigError) as err:
        load_config(PARTNERS_TOML, text=text)
    assert f"partners.toml:{line}: {where}: {message}" in str(err.value)


# -- over real sockets -------------------------------------------------------------------

def signed(party: str, method: str, body: bytes, now: float, aud: str = "320100-gw") -> str:
    key = load_private_key((ROOT / "demo-keys" / f"{party}.pem").read_bytes(),
                           kid=f"{party}#k1")
    token, _ = sign(key, iss=party, aud=aud, method=SERVICE + method, body=body, now=now)
    return token


def refusal(err: grpc.aio.AioRpcError) -> tuple[str, float]:
    """The ErrorInfo reason and the RetryInfo delay (seconds) of a RESOURCE_EXHAUSTED."""
    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    reason, delay = "", -1.0
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            delay = retry.retry_delay.ToNanoseconds() / 1e9
    assert reason and delay >= 0, status
    return reason, delay


async def unary(channel: grpc.aio.Channel, party: str, method: str, body: bytes,
                now: float) -> grpc.aio.AioRpcError | bytes:
    try:
        answer: bytes = await channel.unary_unary(SERVICE + method)(
            body, metadata=((HEADER, signed(party, method, body, now)),), timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc
    return answer


@pytest.mark.asyncio
async def test_a_partner_over_its_rate_is_refused_with_retry_info_others_are_not(
        tmp_path: Path) -> None:
    clock = FakeClock(time.time())  # frozen: no token comes back until the test says so
    text = with_limits(federation_text(), "320105", "calls_per_second = 0.5, burst = 3")
    async with federation(tmp_path, clock=clock, text=text) as fed:
        jianye, nanjing = fed.client("320105"), fed.client("320100")
        for _ in range(3):
            assert await jianye.items()
        async with grpc.aio.insecure_channel(fed.apps["320100-gw"].config.me.grpc) as ch:
            err = await unary(ch, "320105", "ListItems", b"", clock.now())
            assert isinstance(err, grpc.aio.AioRpcError)
            assert refusal(err) == ("RATE_LIMITED", 2.0)  # 1 token at 0.5/s
            for _ in range(10):  # the same gateway, another partner: unaffected
                assert await nanjing.items()
            clock.advance(2.0)  # as the RetryInfo said
            assert not isinstance(await unary(ch, "320105", "ListItems", b"", clock.now()),
                                  grpc.aio.AioRpcError)
            again = await unary(ch, "320105", "ListItems", b"", clock.now())
            assert isinstance(again, grpc.aio.AioRpcError) and refusal(again)[0] == "RATE_LIMITED"


@pytest.mark.asyncio
async def test_concurrent_calls_beyond_the_cap_are_refused_and_change_nothing(
        tmp_path: Path) -> None:
    text = with_limits(federation_text(), "320105", "max_concurrent_calls = 1")
    async with federation(tmp_path, text=text) as fed:
        address = fed.apps["320100-gw"].config.me.grpc

        def body(number: str) -> bytes:
            return gw.SubmitCaseRequest(case_number=number, **PENSION).SerializeToString()  # type: ignore[arg-type]

        async with grpc.aio.insecure_channel(address) as ch:
            capped = [unary(ch, "320105", "SubmitCase", body(f"CAP-{i}"), time.time())
                      for i in range(40)]
            free = [unary(ch, "320100", "SubmitCase", body(f"FREE-{i}"), time.time())
                    for i in range(10)]
            answers = await asyncio.gather(*capped, *free)
        refused = [a for a in answers[:40] if isinstance(a, grpc.aio.AioRpcError)]
        assert refused and len(refused) < 40  # one at a time got through, the rest not
        assert {refusal(err) for err in refused} == {("TOO_MANY_CALLS", 0.1)}
        assert not any(isinstance(a, grpc.aio.AioRpcError) for a in answers[40:])
        stored = await fed.apps["320100-gw"].store.count_cases()
        assert stored == 40 - len(refused) + 10


def open_watch(ch: grpc.aio.Channel, party: str, case_id: str) -> grpc.aio.UnaryStreamCall[bytes, bytes]:
    body = gw.WatchCaseRequest(case_id=case_id).SerializeToString()
    return ch.unary_stream(SERVICE + "WatchCase")(
        body, metadata=((HEADER, signed(party, "WatchCase", body, time.time())),))


@pytest.mark.asyncio
async def test_watch_streams_beyond_the_cap_are_refused(tmp_path: Path) -> None:
    text = with_limits(federation_text("manual"), "320105", "max_streams = 2")
    async with federation(tmp_path, text=text) as fed:
        jianye = fed.client("320105")
        case = (await jianye.submit(case_number="STREAM-1", **PENSION)).case
        async with grpc.aio.insecure_channel(fed.apps["320100-gw"].config.me.grpc) as ch:
            first, second = [open_watch(ch, "320105", case.case_id) for _ in range(2)]
            for call in (first, second):
                await call.read()  # open: the first answer came
            third = open_watch(ch, "320105", case.case_id)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await third.read()
            assert refusal(err.value) == ("TOO_MANY_STREAMS", 1.0)
            assert (await jianye.get(case.case_id)).case_id  # unary calls are not streams
            first.cancel()

            async def reopened() -> bool:
                call = open_watch(ch, "320105", case.case_id)
                try:
                    await call.read()
                except grpc.aio.AioRpcError as exc:
                    refused = refusal(exc)[0]
                else:
                    return True
                assert refused == "TOO_MANY_STREAMS"
                return False

            await until(reopened)  # the slot comes back when the stream ends
            second.cancel()


@pytest.mark.asyncio
async def test_failed_authentications_close_the_address_before_any_signature_check(
        tmp_path: Path) -> None:
    clock = FakeClock(time.time())
    text = federation_text().replace(
        "max_hops = 4\n", "max_hops = 4\nauth_failures_per_second = 1\nauth_failures_burst = 5\n")
    async with federation(tmp_path, clock=clock, text=text) as fed:
        app = fed.apps["320100-gw"]
        forged = signed("320105", "ListItems", b"other bytes", clock.now())
        async with grpc.aio.insecure_channel(app.config.me.grpc) as ch:
            list_items = ch.unary_unary(SERVICE + "ListItems")
            for _ in range(5):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await list_items(b"", metadata=((HEADER, forged),))
                assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
            checks = app.verifier.signature_checks
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await list_items(b"", metadata=((HEADER, forged),))
            assert refusal(err.value) == ("TOO_MANY_FAILURES", 1.0)
            assert app.verifier.signature_checks == checks  # refused before verifying
            clock.advance(1.0)
            assert await fed.client("320105").items()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


# watchers in a process of their own, so the RSS measured here is the gateways' (a
# client's receive buffers would otherwise count too); they open and never read
IDLE_WATCHERS = """
import asyncio, sys
import grpc
async def main():
    address, method, header, body, *tokens = sys.argv[1:]
    async with grpc.aio.insecure_channel(address) as channel:
        calls = [channel.unary_stream(method)(bytes.fromhex(body), metadata=((header, t),))
                 for t in tokens]
        print("OPEN", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main())
"""


@pytest.mark.asyncio
async def test_idle_watchers_hold_one_case_each_and_a_reader_sees_the_final_state(
        tmp_path: Path) -> None:
    async with federation(tmp_path, auto="manual") as fed:
        app, jianye = fed.apps["320100-gw"], fed.client("320105")
        case = (await jianye.submit(case_number="MEM-1", **PENSION)).case
        body = gw.WatchCaseRequest(case_id=case.case_id).SerializeToString()
        idle = await asyncio.create_subprocess_exec(
            sys.executable, "-c", IDLE_WATCHERS, app.config.me.grpc, SERVICE + "WatchCase",
            HEADER, body.hex(), *(signed("320105", "WatchCase", body, time.time())
                                  for _ in range(20)),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert idle.stdin is not None and idle.stdout is not None
        try:
            async with asyncio.timeout(30):
                assert await idle.stdout.readline() == b"OPEN\n"
            async with grpc.aio.insecure_channel(app.config.me.grpc) as ch:
                reader = open_watch(ch, "320105", case.case_id)  # reads only at the end

                async def all_open() -> bool:
                    return len(app.engine._watchers.get(case.case_id, ())) == 21

                await until(all_open)
                before = rss_mb()
                backlog = 0
                for i in range(150):  # each version of the case is larger than the last
                    material = pb.MaterialRef(name=f"补正材料-{i:03}-" + "页" * 300,
                                              sha256=f"{i:064x}", size_bytes=1024,
                                              media_type="application/pdf")
                    await jianye.update(pb.CaseUpdate(case_id=case.case_id,
                                                      update_id=f"sup-{i}",
                                                      supplement=[material]))
                    backlog = max(backlog, *(len(box) for box in
                                             app.engine._watchers[case.case_id]))
                grown = rss_mb() - before
                print(f"\n21 idle watchers, 150 updates of a case growing to "
                      f"{case_size(await jianye.get(case.case_id))} bytes: gateways' RSS "
                      f"+{grown:.1f} MB, largest per-watcher backlog {backlog}")
                assert backlog <= 1
                await jianye.cancel(case.case_id, "申请人撤回")  # the final state

                seen = await read_all(reader)
                assert seen[-1].state == pb.CASE_STATE_CANCELLED
                assert len(seen[-1].materials) == 150
                states = [len(c.timeline) for c in seen]
                counts = [len(c.materials) for c in seen]
                assert states == sorted(states) and counts == sorted(counts)  # in order
        finally:
            idle.stdin.close()
            async with asyncio.timeout(10):
                await idle.wait()


def case_size(case: pb.Case) -> int:
    return case.ByteSize()


async def read_all(call: grpc.aio.UnaryStreamCall[bytes, bytes]) -> list[pb.Case]:
    async def cases() -> AsyncIterator[pb.Case]:
        async for raw in call:
            yield gw.WatchCaseResponse.FromString(raw).case

    async with asyncio.timeout(15):
        return [c async for c in cases()]
