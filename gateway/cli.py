"""The `tongban` command: serve, demo, keys, token, audit, outbox, evidence, stats."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import sys
from pathlib import Path

from gateway import logs
from gateway.errors import ConfigError
from gateway.signing import generate_private_key, load_private_key, sign


def _loop_runner() -> None:
    """uvloop when installed, unless TONGBAN_LOOP=asyncio (to compare, or to debug)."""
    if os.environ.get("TONGBAN_LOOP") == "asyncio":
        return
    try:
        import uvloop  # measured +20 % grpc.aio throughput (DESIGN §10)

        uvloop.install()  # type: ignore[attr-defined]
    except ImportError:
        pass


async def _serve(args: argparse.Namespace) -> int:
    from gateway.app import GatewayApp
    from gateway.config import load_config
    from gateway.exposure import check_serving

    config = load_config(args.config, self_id=args.self_id)
    check_serving(config)  # readable private keys, demo keys off loopback: exit 2
    app = GatewayApp(config, reuse_port=args.reuse_port)
    await app.start()
    _tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await app.stop(grace_s=5.0)
    return 0


def _tune_gc() -> None:
    """Keep the cyclic garbage collector off the per-call budget.

    Calls allocate many short-lived objects that reference counting frees at once, yet
    every 700 allocations CPython's default scans the young ones, and now and then all
    of them, including the tens of thousands of objects the gateway loaded at start
    (modules, protobuf descriptors, the division table). Measured in a routed benchmark:
    ≈ 190 ms of collection per 10 s of gateway CPU (≈ 2 %, 25 µs per call), 17 ms after
    freezing the start-up heap and collecting the young generation every 20,000
    allocations. Reference cycles are rare here, so memory stays flat.
    """
    gc.collect()
    gc.freeze()  # what start-up built lives for the whole process: never scanned again
    gc.set_threshold(20_000, 20, 20)


def _keys(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{args.id}.pem"
    if target.exists() and not args.force:
        print(f"{target} exists (use --force to replace it)", file=sys.stderr)
        return 1
    pem, jwk = generate_private_key(args.alg)
    target.write_bytes(pem)
    target.chmod(0o600)
    inline = ", ".join(f'{k} = "{v}"' for k, v in jwk.items() if k != "alg")
    print(f"# private key written to {target}\n[[partners.keys]]   # or [[gateways.keys]]\n"
          f'id = "{args.key_id}"\njwk = {{ {inline} }}')
    return 0


def _store_path(args: argparse.Namespace) -> Path | None:
    """--db, the store in --data-dir, or the one in the data_dir of the gateway named by
    --config/--as."""
    if args.db:
        path = Path(args.db)
    elif getattr(args, "data_dir", None):
        path = Path(args.data_dir) / "gateway.sqlite3"
    else:
        from gateway.config import load_config

        path = load_config(args.config, self_id=args.self_id).data_dir / "gateway.sqlite3"
    if not path.exists():
        print(f"tongban: no store at {path}", file=sys.stderr)
        return None
    return path


def _audit_verify(args: argparse.Namespace) -> int:
    from gateway.audit import verify
    from gateway.store.offline import read_audit

    path = _store_path(args)
    if path is None:
        return 2
    verdict = verify(read_audit(path))
    if verdict.ok:
        print(f"audit chain OK: {verdict.checked} entries ({path})")
        return 0
    print(f"audit chain BROKEN at entry {verdict.first_bad}: {verdict.reason} "
          f"({verdict.checked} entries before it are intact; {path})")
    return 1


def _outbox(args: argparse.Namespace) -> int:
    from gateway.store.offline import list_outbox, redrive_outbox

    path = _store_path(args)
    if path is None:
        return 2
    if args.outbox_command == "list":
        rows = list_outbox(path, dead_only=args.dead)
        for row in rows:
            print(f"{row.id}\t{'DEAD' if row.dead else 'queued'}\t{row.destination}\t"
                  f"{row.kind}\t{row.case_id}\tattempts={row.attempts}\t{row.last_error}")
        print(f"{len(rows)} entries ({sum(r.dead for r in rows)} dead)", file=sys.stderr)
        return 0
    if not (args.id or args.destination or args.all):
        print("tongban: name entries with --id or --destination, or pass --all",
              file=sys.stderr)
        return 2
    count = redrive_outbox(path, ids=args.id or (), destination=args.destination)
    print(f"re-drove {count} dead-lettered entries")
    return 0


def _stats_certs(args: argparse.Namespace) -> int:
    """Certificate uses counted per type, item, consumer, issuer and outcome (DESIGN §8)."""
    from gateway.certificates.accounting import format_table
    from gateway.store.offline import read_use_counts

    path = _store_path(args)
    if path is None:
        return 2
    print(format_table(read_use_counts(path)))
    return 0


def _sessions_show(args: argparse.Namespace) -> int:
    """A closed 屏对屏 session's transcript, printed and checked offline: the hash chain
    over every event and both gateways' signatures of its head (docs/sessions.md §7)."""
    from gateway.config import load_config
    from gateway.errors import GatewayError
    from gateway.sessions.transcript import BrokenChain, verify_transcript
    from gateway.store.offline import read_transcript

    path = _store_path(args)
    if path is None:
        return 2
    transcript = read_transcript(path, args.session_id)
    if transcript is None:
        print(f"tongban: no closed session {args.session_id[:40]!r} in {path}", file=sys.stderr)
        return 1
    config = load_config(args.config, self_id=args.self_id)
    problems = []
    try:  # the chain, and each signature for this session, this case, this head
        signed = verify_transcript(transcript.session_id, transcript.case_id,
                                   transcript.events, list(transcript.signatures.values()),
                                   lambda owner: config.gateways[owner].keys
                                   if owner in config.gateways else ())
        if sorted(c.iss for c in signed) != sorted(transcript.signatures):
            problems.append("a signature is filed under another gateway")
        if transcript.n != len(transcript.events):
            problems.append("the stored count is not the chain's")
    except BrokenChain as exc:
        problems.append(f"chain: {exc.message}")
    except GatewayError as exc:
        problems.append(exc.message)
    if len(transcript.signatures) < 2:
        problems.append("fewer than two gateway signatures")
    for i, body in enumerate(transcript.events, 1):
        try:
            event = json.loads(body)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            print(f"{i:>4} (not an event)")
            continue
        members = {k: v for k, v in event.items()
                   if k not in ("seq", "at", "side", "clerk", "name", "cid", "type")}
        print(f"{event.get('seq', '?'):>4} {event.get('side', ''):6} "
              f"{str(event.get('name', ''))[:12]:12} {event.get('type', ''):10} "
              f"{json.dumps(members, ensure_ascii=False)[:120]}")
    verdict = "OK" if not problems else "BAD: " + "; ".join(problems)
    print(f"session {transcript.session_id} case {transcript.case_id or '-'}: "
          f"{len(transcript.events)} events, head {transcript.head}, signed by "
          f"{', '.join(sorted(transcript.signatures))}: {verdict}")
    return 0 if not problems else 1


def _evidence(args: argparse.Namespace) -> int:
    """export: one case's evidence as one file; verify: check such a file offline."""
    from gateway import evidence_file

    if args.evidence_command == "verify":
        try:
            document = json.loads(Path(args.file).read_text(encoding="utf-8"))
            keys = (evidence_file.keys_from_jwks(json.loads(Path(args.jwks).read_text(
                encoding="utf-8"))) if args.jwks else None)
        except (OSError, ValueError, RecursionError) as exc:  # RecursionError: deep JSON
            print(f"tongban: cannot read {str(exc)[:200]}", file=sys.stderr)
            return 2
        verdict = evidence_file.verify(document, keys)
        print(verdict.summary if verdict.ok else f"BAD: {verdict.summary}")
        return 0 if verdict.ok else 1
    import time

    from gateway.config import load_config
    from gateway.store.offline import read_evidence

    config = load_config(args.config, self_id=args.self_id)
    path = Path(args.db) if args.db else config.data_dir / "gateway.sqlite3"
    if not path.exists():
        print(f"tongban: no store at {path}", file=sys.stderr)
        return 2
    found = read_evidence(path, args.case_id)
    if found is None:
        print(f"tongban: no case {args.case_id[:40]!r} in {path}", file=sys.stderr)
        return 1
    parties = [*config.partners.values(), *config.gateways.values()]
    document = evidence_file.export(found, gateway=config.self_id, exported_at=time.time(),
                                    keys=[k for party in parties for k in party.keys])
    text = json.dumps(document, ensure_ascii=False, indent=1)
    if args.out == "-":
        print(text)
    else:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
        print(f"evidence of case {args.case_id}: {len(document['items'])} statements, "
              f"{len(document['audit'])} audit entries -> {args.out}", file=sys.stderr)
    return 0


def _jwks(args: argparse.Namespace) -> int:
    """Every public key of the federation, as one JWKS: an auditor's trust anchor."""
    from gateway.config import load_config

    config = load_config(args.config)
    parties = [*config.gateways.values(), *config.partners.values(),
               *config.supervisors.values()]
    print(json.dumps({"keys": [k.jwk() for p in parties for k in p.keys]}, indent=1))
    return 0


def _token(args: argparse.Namespace) -> int:
    key = load_private_key(Path(args.key).read_bytes(), kid=f"{args.iss}#{args.key_id}")
    body = Path(args.body).read_bytes() if args.body != "-" else sys.stdin.buffer.read()
    import time

    token, claims = sign(key, iss=args.iss, aud=args.aud, method=args.method, body=body,
                         now=time.time(), ttl=args.ttl)
    print(token)
    if args.verbose:
        print(json.dumps(claims.__dict__, ensure_ascii=False, indent=2), file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tongban", description=__doc__)
    parser.add_argument("--log-level", default="WARNING")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run one gateway")
    serve.add_argument("--config", default="partners.toml")
    serve.add_argument("--as", dest="self_id", help="gateway id from [[gateways]] "
                       "(default: [self].id)")
    serve.add_argument("--reuse-port", action="store_true",
                       help="one of several processes sharing the ports and the store "
                       "(SO_REUSEPORT); see docs/benchmarks.md for what is per process")

    demo = sub.add_parser("demo", help="run a three-gateway federation and submit cases")
    demo.add_argument("--config", default="partners.toml")
    demo.add_argument("--serve", action="store_true", help="keep the gateways running")

    keys = sub.add_parser("keys", help="key management")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    jwks = keys_sub.add_parser("jwks", help="print every public key of the federation "
                               "(partners.toml) as one JWKS")
    jwks.add_argument("--config", default="partners.toml")
    gen = keys_sub.add_parser("generate", help="write a private key, print its public JWK")
    gen.add_argument("--id", required=True, help="partner or gateway id")
    gen.add_argument("--key-id", default="k1")
    gen.add_argument("--alg", choices=("EdDSA", "ES256"), default="EdDSA")
    gen.add_argument("--out", default="keys")
    gen.add_argument("--force", action="store_true")

    audit = sub.add_parser("audit", help="the hash-chained audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    check = audit_sub.add_parser("verify", help="report the first edited, deleted or moved entry")
    check.add_argument("--config", default="partners.toml")
    check.add_argument("--as", dest="self_id")
    check.add_argument("--db", help="a store file (default: the gateway's data_dir)")

    outbox = sub.add_parser("outbox", help="the delivery queue and its dead letters")
    outbox_sub = outbox.add_subparsers(dest="outbox_command", required=True)
    listing = outbox_sub.add_parser("list", help="queued and dead-lettered entries")
    listing.add_argument("--dead", action="store_true", help="dead-lettered entries only")
    redrive = outbox_sub.add_parser("redrive", help="put dead-lettered entries back in line")
    redrive.add_argument("--id", type=int, action="append", help="entry id (repeatable)")
    redrive.add_argument("--destination", help="every dead entry for this partner or gateway")
    redrive.add_argument("--all", action="store_true", help="every dead entry")
    for p in (listing, redrive):
        p.add_argument("--config", default="partners.toml")
        p.add_argument("--as", dest="self_id")
        p.add_argument("--db", help="a store file (default: the gateway's data_dir)")

    stats = sub.add_parser("stats", help="counts from the gateway's store")
    stats_sub = stats.add_subparsers(dest="stats_command", required=True)
    certs = stats_sub.add_parser("certs", help="certificate uses per type, item, consumer, "
                                 "issuer and outcome")
    certs.add_argument("--config", default="partners.toml")
    certs.add_argument("--as", dest="self_id")
    certs.add_argument("--data-dir", help="the gateway's data_dir (default: from --config)")
    certs.add_argument("--db", help="a store file (default: the gateway's data_dir)")

    sessions = sub.add_parser("sessions", help="屏对屏 session transcripts")
    sessions_sub = sessions.add_subparsers(dest="sessions_command", required=True)
    show = sessions_sub.add_parser("show", help="print a closed session's transcript and "
                                   "verify its chain and signatures")
    show.add_argument("session_id")
    show.add_argument("--config", default="partners.toml")
    show.add_argument("--as", dest="self_id")
    show.add_argument("--data-dir", help="the gateway's data_dir (default: from --config)")
    show.add_argument("--db", help="a store file (default: the gateway's data_dir)")

    proof = sub.add_parser("evidence", help="a case's signed statements, as one file")
    proof_sub = proof.add_subparsers(dest="evidence_command", required=True)
    export = proof_sub.add_parser("export", help="write the evidence file of a case")
    export.add_argument("case_id")
    export.add_argument("--out", default="-", help="file to write (default: stdout)")
    export.add_argument("--config", default="partners.toml")
    export.add_argument("--as", dest="self_id")
    export.add_argument("--db", help="a store file (default: the gateway's data_dir)")
    check_file = proof_sub.add_parser("verify", help="check an evidence file offline")
    check_file.add_argument("file")
    check_file.add_argument("--jwks", help="the trusted keys (`tongban keys jwks`); "
                            "without it, the file's own keys")

    token = sub.add_parser("token", help="mint an x-tongban-signature value for scripting")
    token.add_argument("--key", required=True, help="PEM private key of the caller")
    token.add_argument("--iss", required=True, help="caller id")
    token.add_argument("--key-id", default="k1")
    token.add_argument("--aud", required=True, help="receiving gateway or partner id")
    token.add_argument("--method", required=True, help="e.g. /tongban.v1.Gateway/GetCase")
    token.add_argument("--body", required=True, help="file with the exact request bytes, or -")
    token.add_argument("--ttl", type=int, default=120)
    token.add_argument("-v", "--verbose", action="store_true")

    args = parser.parse_args(argv)
    logs.install(args.log_level)  # JSON lines built by json.dumps (gateway/logs.py)
    try:
        if args.command == "keys":
            return _jwks(args) if args.keys_command == "jwks" else _keys(args)
        if args.command == "evidence":
            return _evidence(args)
        if args.command == "token":
            return _token(args)
        if args.command == "audit":
            return _audit_verify(args)
        if args.command == "outbox":
            return _outbox(args)
        if args.command == "stats":
            return _stats_certs(args)
        if args.command == "sessions":
            return _sessions_show(args)
        _loop_runner()
        if args.command == "serve":
            return asyncio.run(_serve(args))
        from gateway.demo import run_demo

        return asyncio.run(run_demo(Path(args.config), keep_running=args.serve))
    except ConfigError as exc:
        print(f"tongban: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
