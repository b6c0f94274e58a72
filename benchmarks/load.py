"""Load generator, in its own process: N calls in flight for a fixed time.

Prints START when the warm-up ends and the measured window begins, then one JSON line
with calls, errors, seconds, p50 and p99 latency (ms). The certificate kinds check every
answer (benchmarks/certificate.py): "invalid" counts the wrong ones, whenever they came,
and "first_error" says what the first failed call or wrong answer was.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import time
from typing import Any

import grpc

from benchmarks import certificate as cert
from benchmarks.common import install_uvloop
from gateway.batchsign import BatchSigner
from gateway.client import CallError, SignedChannel
from gateway.config import load_config
from gateway.demo import client_for
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import partner_pb2 as pp
from gateway.types import SystemClock
from gateway.verifier import Verifier

APPLICANT = pb.Applicant(id_type=pb.ID_TYPE_RESIDENT, id_number="11010519491231002X",
                         name="张三", phone="13812345678")
FORM = {"reason": "异地就医", "hospital": "复旦大学附属华山医院"}
PROGRESS = (pb.CASE_STATE_ACCEPTED, pb.CASE_STATE_PROCESSING, pb.CASE_STATE_COMPLETED)
MIXED_CALLS = ("SubmitCase", "GetCase", "UpdateCase", "UpdateCase", "UpdateCase")


def sample_case() -> bytes:
    """A ReceiveCase payload of the size the gateway sends (for the raw scenarios)."""
    case = pb.Case(case_id="01KAXXXXXXXXXXXXXXXXXXXXXX", case_number="BENCH-1",
                   origin_partner="310000", origin_gateway="310000-gw",
                   target_division="310115", target_partner="310115", item_code="yb-ba",
                   applicant=APPLICANT, form=FORM, state=pb.CASE_STATE_SUBMITTED)
    case.timeline.add(state=pb.CASE_STATE_SUBMITTED, actor="310000")
    return pp.ReceiveCaseRequest(case=case).SerializeToString()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    latencies: list[float] = []
    by_call: dict[str, list[float]] = {}  # mixed: the samples of each kind of call
    errors = acked = cases = updates = invalid = 0
    first_error = ""
    check: cert.AnswerCheck | None = None
    measuring = False
    stop_at = 0.0
    seq = 0

    if args.kind == "raw":
        channel = grpc.aio.insecure_channel(args.target)
        stub = channel.unary_unary("/tongban.v1.PartnerPlatform/ReceiveCase")
        body = sample_case()

        async def call() -> None:
            await stub(body)
    elif args.kind == "mixed":
        config = load_config(args.config, self_id=args.gateway)
        origin, target = client_for(config, args.partner), client_for(config, args.target_partner)
        run_id = f"{time.time_ns() % 10**12:012d}"

        async def call() -> None:
            """A case's whole life at the gateway, five calls: the origin submits it and
            reads it back; the target accepts, processes and completes it. The gateway
            delivers the case to the target and each of the three reports to the origin."""
            nonlocal seq, cases, updates
            seq += 1
            t0 = time.perf_counter()
            answer = await origin.submit(
                case_number=f"M{run_id}-{seq}", target_division=args.division,
                item_code=args.item, applicant=APPLICANT, form=FORM)
            cases += 1
            case_id = answer.case.case_id
            t1 = time.perf_counter()
            await origin.get(case_id)
            steps = [t0, t1, time.perf_counter()]
            for state in PROGRESS:
                await target.update(pb.CaseUpdate(case_id=case_id, update_id=f"bench-{state}",
                                                  state=state, note="bench"))
                updates += 1
                steps.append(time.perf_counter())
            if measuring:  # each of the five calls is one latency sample
                spans = [b - a for a, b in itertools.pairwise(steps)]
                latencies.extend(spans)
                for name, span in zip(MIXED_CALLS, spans, strict=True):
                    by_call.setdefault(name, []).append(span)
    elif args.kind == "certificate":
        config = load_config(args.config, self_id=args.gateway)
        consumers = [client_for(config, cert.CONSUMER) for _ in range(args.channels)]
        asks = cert.Asks(cert.consumer_key(config))
        check = cert.AnswerCheck(config.partners[cert.ISSUER].keys)

        async def call() -> None:
            """The consumer's signed lookup, through its gateway and the issuer's."""
            nonlocal seq
            seq += 1
            request = asks.lookup()
            answer = await consumers[seq % len(consumers)].lookup_certificate(
                holder=request.holder, cert_type=request.cert_type,
                purpose_item=request.purpose_item, authorization=request.authorization)
            assert check is not None
            check.lookup(answer)
    elif args.kind == "fetch":
        # the issuer's gateway's part of a lookup, made here with that gateway's key
        config = load_config(args.config, self_id=cert.ISSUER_GATEWAY)
        issuer = config.partners[cert.ISSUER]
        verifier = Verifier(audience=cert.ISSUER_GATEWAY,
                            keys_for=lambda i: issuer.keys if i == cert.ISSUER else ())
        channel = SignedChannel(args.target, audience=cert.ISSUER,
                                signer=BatchSigner(config.signing_key, cert.ISSUER_GATEWAY),
                                batch=issuer.batch_signatures, verifier=verifier,
                                clock=SystemClock())
        asks = cert.Asks(cert.consumer_key(config))
        check = cert.AnswerCheck(issuer.keys)

        async def call() -> None:
            """FetchCertificates straight to the issuing platform: the baseline."""
            assert check is not None
            check.fetched(await channel.call(cert.FETCH, await asks.fetch()))
    else:
        config = load_config(args.config, self_id=args.gateway)
        # several clients, each its own TCP connection, so SO_REUSEPORT spreads them
        clients = [client_for(config, args.partner) for _ in range(args.channels)]
        run_id = f"{time.time_ns() % 10**12:012d}"

        async def call() -> None:
            nonlocal seq
            seq += 1
            await clients[seq % len(clients)].submit(
                case_number=f"B{run_id}-{seq}", target_division=args.division,
                item_code=args.item, applicant=APPLICANT, form=FORM)

    def failed(exc: Exception, counted: bool) -> None:
        """A failed call counts while measuring; a wrong answer counts always."""
        nonlocal errors, invalid, first_error
        first_error = first_error or f"{type(exc).__name__}: {exc}"
        if isinstance(exc, cert.BadAnswer):
            invalid += 1
        else:
            errors += counted

    async def worker() -> None:
        nonlocal acked
        while True:
            now = time.perf_counter()
            if measuring and now >= stop_at:
                return
            try:
                await call()
            except (grpc.aio.AioRpcError, CallError, cert.BadAnswer) as exc:
                failed(exc, measuring)
                await asyncio.sleep(0.01)
                continue
            acked += 1
            if measuring and args.kind != "mixed":
                latencies.append(time.perf_counter() - now)

    async def paced() -> None:
        """Open loop: one call every 1/rate s whatever the answers do (for latency at a
        given load, not at saturation)."""
        pending: set[asyncio.Task[None]] = set()

        async def timed() -> None:
            nonlocal acked
            t0 = time.perf_counter()
            counted = measuring
            try:
                await call()
            except (grpc.aio.AioRpcError, CallError, cert.BadAnswer) as exc:
                failed(exc, counted)
                return
            acked += 1
            if counted and args.kind != "mixed":
                latencies.append(time.perf_counter() - t0)

        next_at = time.perf_counter()
        while not (measuring and time.perf_counter() >= stop_at):
            task = asyncio.create_task(timed())
            pending.add(task)
            task.add_done_callback(pending.discard)
            next_at += 1 / args.rate
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        await asyncio.gather(*pending)

    workers = ([asyncio.create_task(paced())] if args.rate else
               [asyncio.create_task(worker()) for _ in range(args.concurrency)])
    await asyncio.sleep(args.warmup)
    measuring, stop_at = True, time.perf_counter() + args.duration
    started = time.perf_counter()
    print("START", flush=True)
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - started
    latencies.sort()
    spread = {name: percentiles(sorted(samples)) for name, samples in by_call.items()}
    checked = {"answers_checked": check.checked, "answers_in_full": check.in_full,
               "invalid": invalid} if check is not None else {}
    return {"by_call": spread, **checked, **({"first_error": first_error} if first_error else {}),
            "calls": len(latencies), "errors": errors, "acked_total": acked, "seconds": elapsed,
            "cases_total": cases, "updates_total": updates,
            "rate": len(latencies) / elapsed,
            **dict(zip(("p50_ms", "p99_ms"), percentiles(latencies), strict=True))}


def percentiles(ordered: list[float]) -> tuple[float, float]:
    """p50 and p99 in ms of sorted samples in seconds."""
    if not ordered:
        return 0.0, 0.0
    return (1000 * statistics.median(ordered),
            1000 * ordered[int(0.99 * (len(ordered) - 1))])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", help="host:port for --kind raw and fetch")
    parser.add_argument("--kind", default="raw",
                        choices=("raw", "submit", "mixed", "certificate", "fetch"))
    parser.add_argument("--target-partner", default="310115",
                        help="mixed: the target platform, which sends the reports")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--channels", type=int, default=1, help="connections (submit)")
    parser.add_argument("--rate", type=float, default=0.0, help="open loop: calls per second")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--config")
    parser.add_argument("--gateway", default="310000-gw")
    parser.add_argument("--partner", default="310000")
    parser.add_argument("--division", default="310115")
    parser.add_argument("--item", default="yb-ba")
    args = parser.parse_args()
    install_uvloop()
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
