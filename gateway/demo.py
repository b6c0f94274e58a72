"""`tongban demo`: three gateways and seven embedded platforms in one process, real sockets.

Submits realistic cases across provinces, inside the 南京都市圈 alliance and within
Jiangsu, shows one refusal and one retired division code, follows every case to its end
through WatchCase at the origin, and prints what happened and where to look.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from gateway import evidence_file
from gateway.app import GatewayApp
from gateway.cases import State
from gateway.client import CallError
from gateway.config import Config, load_config
from gateway.demo_certificates import certificate_demo
from gateway.demo_sessions import console_links
from gateway.partner_client import PartnerClient
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import gateway_pb2 as gw
from gateway.signing import load_private_key
from gateway.store.offline import case_ids, read_evidence
from gateway.types import Clock

GATEWAYS = ("320100-gw", "320000-gw", "310000-gw")
SCOPE_NAMES = {pb.SCOPE_INTRA_PROVINCE: "省内通办", pb.SCOPE_CROSS_PROVINCE: "跨省通办",
               pb.SCOPE_METRO_CIRCLE: "都市圈通办"}
CASES: Sequence[tuple[str, str, dict[str, object]]] = (
    ("320105", "建邺 → 浦东: 养老保险关系转移 (跨省通办, two federation hops)", dict(
        case_number="JY-2026-000101", target_division="310115", item_code="shebao-zy",
        applicant=pb.Applicant(id_type=pb.ID_TYPE_RESIDENT, id_number="11010519491231002X",
                               name="张三", phone="13812345678"))),
    ("320105", "建邺 → 上海: 公积金异地提取 (长三角 alliance)", dict(
        case_number="JY-2026-000102", target_division="310000", item_code="gjj-tq",
        applicant=pb.Applicant(id_type=pb.ID_TYPE_RESIDENT, id_number="11010519491231002X",
                               name="张三"))),
    ("341100", "滁州 → 南京: 公积金异地提取 (南京都市圈“8+2”)", dict(
        case_number="CZ-2026-7781", target_division="320100", item_code="gjj-tq",
        applicant=pb.Applicant(id_type=pb.ID_TYPE_RESIDENT, id_number="11010519491231002X",
                               name="李四"))),
    ("320105", "建邺 → 启东: 交通违法处理 (省内通办)", dict(
        case_number="JY-2026-000103", target_division="320681", item_code="jdc-wf",
        applicant=pb.Applicant(id_type=pb.ID_TYPE_USCC, id_number="91320105MA1MXXXX0H",
                               name="南京某科技有限公司"))),
    ("320105", "建邺 → 闸北 (retired code 310108): 营业执照变更", dict(
        case_number="JY-2026-000104", target_division="310108", item_code="yyzz-bg",
        applicant=pb.Applicant(id_type=pb.ID_TYPE_USCC, id_number="91320105MA1MXXXX0H",
                               name="南京某科技有限公司"))),
    ("320105", "建邺 → 上海: 交通违法处理 (refused: not a 跨省 item, no alliance lists it)", dict(
        case_number="JY-2026-000105", target_division="310000", item_code="jdc-wf",
        applicant=pb.Applicant(id_type=pb.ID_TYPE_RESIDENT, id_number="11010519491231002X",
                               name="张三"))),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def on_free_ports(config: Config) -> dict[str, tuple[str, str]]:
    """Fresh loopback ports for every gateway, so the demo never collides with anything.

    All probe sockets stay bound until every port is picked, so one federation never gets
    the same port twice.
    """
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(2 * len(config.gateways)):
            s = stack.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            ports.append(f"127.0.0.1:{s.getsockname()[1]}")
    return {gid: (ports[2 * n], ports[2 * n + 1]) for n, gid in enumerate(config.gateways)}


def rebind(config: Config, ports: dict[str, tuple[str, str]], data_dir: Path) -> Config:
    gateways = {gid: dataclasses.replace(g, grpc=ports[gid][0], http=ports[gid][1])
                for gid, g in config.gateways.items()}
    return dataclasses.replace(config, gateways=gateways, data_dir=data_dir / config.self_id)


def client_for(config: Config, partner_id: str, clock: Clock | None = None) -> PartnerClient:
    """A signed client for a partner platform or a supervisor, with its demo key."""
    party = config.partners.get(partner_id) or config.supervisors[partner_id]
    gateway = config.gateways[party.gateway]
    key_file = config.source.parent / "demo-keys" / f"{partner_id}.pem"
    key = load_private_key(key_file.read_bytes(), kid=f"{partner_id}#k1")
    return PartnerClient(gateway.grpc, partner_id=partner_id, gateway_id=gateway.id, key=key,
                         gateway_keys=gateway.keys, clock=clock,
                         batch_signatures=party.batch_signatures)


async def follow(client: PartnerClient, case_id: str, limit_s: float = 15.0) -> pb.Case:
    last = None
    async with asyncio.timeout(limit_s):
        async for case in client.watch(case_id):
            last = case
            if case.state == pb.CASE_STATE_COMPLETED:
                break
    assert last is not None
    return last


async def _bundle_rating_supervision(config: Config, client: PartnerClient) -> None:
    """一件事 across two regions, a 好差评 rating, and what the 南京 supervisor saw."""
    applicant = pb.Applicant(id_type=pb.ID_TYPE_RESIDENT, id_number="11010519491231002X",
                             name="张三")
    parts = [gw.SubmitCaseRequest(case_number="JY-2026-B1-1", target_division="320100",
                                  item_code="gjj-tq", applicant=applicant),
             gw.SubmitCaseRequest(case_number="JY-2026-B1-2", target_division="310115",
                                  item_code="shebao-zy", applicant=applicant)]
    answer = await client.submit_bundle(bundle_number="JY-2026-B1", name="迁居一件事",
                                        parts=parts)
    print(f"● bundle 迁居一件事 {answer.bundle.bundle_id}: parts for "
          f"{', '.join(p.target_partner for p in answer.bundle.parts)} (多地联办)")
    for part in answer.bundle.parts:
        await follow(client, part.case_id)
    bundle = await client.bundle(answer.bundle.bundle_id)
    print(f"    aggregate state: {State(bundle.state).name}\n")
    rated = await client.rate(bundle.parts[0].case_id, 5, pb.RATING_CHANNEL_WINDOW, "很方便")
    print(f"● 好差评: case {rated.case.case_id} rated {rated.case.rating.score}/5 at the window\n")
    supervisor = client_for(config, "320100-jc")
    kinds: dict[str, int] = {}
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                async for event in supervisor.subscribe():
                    name = pb.EventKind.Name(event.kind).removeprefix("EVENT_KIND_").lower()
                    kinds[name] = kinds.get(name, 0) + 1
    finally:
        await supervisor.close()
    print("● the 南京 supervisor (320100-jc, Subscribe) saw: "
          + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + "\n")


def _verify_evidence(apps: list[GatewayApp]) -> None:
    """Export every case each gateway holds as an evidence file and check it offline
    with the federation's public keys alone (what `tongban evidence export/verify` do)."""
    config = apps[0].config
    parties = [*config.partners.values(), *config.gateways.values()]
    trusted = {p.id: list(p.keys) for p in parties}
    signer_keys = [k for p in parties for k in p.keys]
    copies, bad = 0, []
    for app in apps:
        path = app.config.data_dir / "gateway.sqlite3"
        for case_id in case_ids(path):
            found = read_evidence(path, case_id)
            assert found is not None
            document = evidence_file.export(found, gateway=app.config.self_id,
                                            exported_at=time.time(), keys=signer_keys)
            verdict = evidence_file.verify(json.loads(json.dumps(document)), trusted)
            copies += 1
            if not verdict.ok:
                bad.append(f"{app.config.self_id} {case_id}: {verdict.summary}")
    print(f"● evidence: {copies} case copies at {len(apps)} gateways exported and verified "
          f"offline with the federation's public keys ({len(bad)} bad)")
    for line in bad:
        print(f"    BAD {line}")
    print()


async def run_demo(config_path: Path, *, keep_running: bool = False) -> int:
    base = load_config(config_path)
    ports = on_free_ports(base)
    with tempfile.TemporaryDirectory(prefix="tongban-demo-") as tmp:
        apps = [GatewayApp(rebind(load_config(config_path, self_id=g), ports, Path(tmp)))
                for g in GATEWAYS]
        for app in apps:
            await app.start()
        config = apps[0].config
        print("tongban demo: a federation of three gateways on 127.0.0.1\n")
        for app in apps:
            me = app.config.me
            partners = ", ".join(f"{p.id} {p.name}" for p in app.config.local_partners())
            print(f"  {me.id:10} {me.name}  gRPC {me.grpc}  JWKS http://{me.http}"
                  f"/.well-known/jwks.json\n             platforms: {partners}")
        print()
        clients: dict[str, PartnerClient] = {}
        try:
            for origin, title, fields in CASES:
                client = clients.get(origin) or client_for(config, origin)
                clients[origin] = client
                print(f"● {title}")
                try:
                    answer = await client.submit(**fields)
                except CallError as exc:
                    print(f"    refused: {exc.status.name}: {exc.message}\n")
                    continue
                case = answer.case
                print(f"    case {case.case_id}  scope {SCOPE_NAMES[case.scope]}"
                      f"{' (' + case.alliance + ')' if case.alliance else ''}"
                      f"  target {case.target_division} via {case.target_partner}")
                if answer.division_note:
                    print(f"    note: {answer.division_note}")
                final = await follow(client, case.case_id)
                for change in final.timeline:
                    print(f"      {State(change.state).name:20} by {change.actor:10} {change.note}")
                print()
            again = await clients["320105"].submit(**CASES[0][2])
            print(f"● resubmitting JY-2026-000101 returns the same case: {again.case.case_id}"
                  f" (duplicate={again.duplicate})\n")
            await _bundle_rating_supervision(config, clients["320105"])
            await certificate_demo(config, clients, client_for, apps[0].clock.now)
            _verify_evidence(apps)
            print("Every call above was signed (EdDSA, docs/signing.md), persisted before it was"
                  " acknowledged,\nrouted by division prefix across gateway links, and its"
                  " status flowed back to the origin.")
            print("\n● 屏对屏: a session's two consoles, one per browser window (docs/sessions.md;"
                  " they work while the gateways run: `tongban demo --serve`):")
            for who, url in console_links(config, apps[0].clock.now):
                print(f"    {who}: {url}")
            if keep_running:
                print("\nGateways keep running; press Ctrl-C to stop.")
                await asyncio.Event().wait()
        finally:
            for client in clients.values():
                await client.close()
            for app in reversed(apps):
                await app.stop()
    return 0
