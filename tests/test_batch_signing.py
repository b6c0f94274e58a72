"""Batch signatures (docs/signing.md §7): one signature over a hash tree of many claims.

Pure checks first (tree, tokens, every way to tamper with one), then over sockets: a
gateway answering a batch-signing platform, delivering to one that verifies batch tokens
and to one that does not.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path

import aiohttp
import grpc
import jwt
import pytest

from gateway import merkle
from gateway.batchsign import BatchSigner
from gateway.config import Config
from gateway.demo import client_for, free_port
from gateway.errors import Unauthenticated
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.pb.tongban.v1 import gateway_pb2 as gw
from gateway.signing import HEADER, b64url, b64url_decode, claims_for, seal, sign
from tests.federation import federation, federation_text
from tests.platform import Platform, grpc_partner_text, serving
from tests.test_bad_input import key_of
from tests.test_signing import keypair, verifier

NOW = 1_790_000_000.0
CITIZEN = pb.Applicant(id_type=pb.ID_TYPE_RESIDENT, id_number="11010519491231002X", name="张三")


def batch(key: object, n: int, *, iss: str = "p") -> list[str]:
    payloads = [claims_for(key, iss=iss, aud="gw", method="/m", body=b"%d" % i,  # type: ignore[arg-type]
                           now=NOW)[1] for i in range(n)]
    return seal(key, iss, payloads)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 100])
def test_every_leaf_leads_to_the_root(n: int) -> None:
    leaves = [b"leaf %d" % i for i in range(n)]
    root, paths = merkle.build(leaves)
    assert all(merkle.root_of(leaf, path) == root for leaf, path in zip(leaves, paths, strict=True))
    assert max(len(p) for p in paths) == merkle.STEP * (n - 1).bit_length()
    if n > 1:  # another leaf's path, or a changed leaf, does not
        assert merkle.root_of(leaves[0], paths[1]) != root
        assert merkle.root_of(b"leaf 0!", paths[0]) != root
        flipped = bytes([paths[0][0], paths[0][1] ^ 1]) + paths[0][2:]
        assert merkle.root_of(leaves[0], flipped) != root


def test_malformed_paths_are_refused() -> None:
    with pytest.raises(ValueError, match="side byte 7"):
        merkle.root_of(b"x", bytes([7]) + bytes(32))
    with pytest.raises(ValueError, match="steps of 33"):
        merkle.root_of(b"x", bytes(32))
    with pytest.raises(ValueError, match="steps of 33"):
        merkle.root_of(b"x", bytes(merkle.STEP * (merkle.MAX_DEPTH + 1)))
    with pytest.raises(ValueError, match="at least one leaf"):
        merkle.build([])


def test_a_leaf_cannot_pass_for_an_inner_node() -> None:
    """Second preimage: the concatenation of two child hashes, offered as a leaf."""
    leaves = [b"a", b"b", b"c", b"d"]
    root, _ = merkle.build(leaves)
    left = merkle.node_hash(merkle.leaf_hash(b"a"), merkle.leaf_hash(b"b"))
    right = merkle.node_hash(merkle.leaf_hash(b"c"), merkle.leaf_hash(b"d"))
    assert merkle.node_hash(left, right) == root
    assert merkle.root_of(left + right, b"") != root


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_a_batch_costs_one_signature_check(alg: str) -> None:
    key, pub = keypair("p", alg)
    tokens = batch(key, 9)
    assert all(t.count("~") == 2 for t in tokens)
    v = verifier(pub)
    seen = [v.verify_request(t, method="/m", body=b"%d" % i, now=NOW) for i, t in
            enumerate(tokens)]
    assert v.signature_checks == 1
    assert len({c.jti for c in seen}) == 9 and {c.iss for c in seen} == {"p"}
    with pytest.raises(Unauthenticated, match="replayed jti"):  # each message once
        v.verify_request(tokens[3], method="/m", body=b"3", now=NOW)
    with pytest.raises(Unauthenticated, match="bdg"):  # each claims its own body
        verifier(pub).verify_request(tokens[4], method="/m", body=b"5", now=NOW)


def test_a_lone_message_is_an_ordinary_jws_pyjwt_reads() -> None:
    key, pub = keypair("p")
    (token,) = batch(key, 1)
    assert "~" not in token
    claims = jwt.decode(token, pub.key, algorithms=["EdDSA"], audience="gw",  # type: ignore[arg-type]
                        options={"verify_exp": False})
    assert claims["bdg"] == b64url(hashlib.sha256(b"0").digest())


def _parts(token: str) -> tuple[str, dict[str, object], str]:
    jws, leaf, path = token.split("~")
    return jws, json.loads(b64url_decode(leaf)), path


def _leaf(claims: dict[str, object]) -> str:
    return b64url(json.dumps(claims, separators=(",", ":")).encode())


def test_tampering_with_a_batch_token_is_unauthenticated() -> None:
    key, pub = keypair("p")
    tokens = batch(key, 4)
    other = batch(key, 4)
    jws, claims, path = _parts(tokens[0])

    def refused(token: str, text: str, body: bytes = b"0") -> None:
        v = verifier(pub)
        with pytest.raises(Unauthenticated, match=text):
            v.verify_request(token, method="/m", body=body, now=NOW)

    refused(f"{jws}~{_leaf({**claims, 'aud': 'elsewhere'})}~{path}", "does not lead")
    refused(f"{jws}~{_leaf(claims)}~{tokens[1].split('~')[2]}", "does not lead")
    refused(f"{other[0].split('~')[0]}~{_leaf(claims)}~{path}", "does not lead")
    refused(f"{jws}~{_leaf(claims)}~{path}~x", "expected <JWS>~<claims>~<path>")
    refused(f"{jws}~{_leaf(claims)}~{path[:-4]}", "malformed batch signature")
    refused(f"{jws}~%%%~{path}", "malformed batch signature")
    # the root's JWS is not a message signature, nor a message's JWS a root's
    refused(jws, 'typ "tongban\\+jwt"')
    single, _ = sign(key, iss="p", aud="gw", method="/m", body=b"0", now=NOW)  # type: ignore[arg-type]
    refused(f"{single}~{_leaf(claims)}~{path}", 'typ "tongban-batch\\+jwt"')
    # a forged root signature is refused every time, never remembered
    head, payload, signature = jws.split(".")
    forged = f"{head}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'AQ'}"
    v = verifier(pub)
    for _ in range(2):
        with pytest.raises(Unauthenticated, match="bad signature"):
            v.verify_request(f"{forged}~{_leaf(claims)}~{path}", method="/m", body=b"0",
                             now=NOW)
    assert v.signature_checks == 2


def test_root_issuer_and_key_are_checked_on_every_message() -> None:
    key, pub = keypair("p")
    other, other_pub = keypair("q")

    def sealed(root_iss: str, leaf_iss: str) -> str:
        payloads = [claims_for(other, iss=leaf_iss, aud="gw", method="/m",  # type: ignore[arg-type]
                               body=b"0", now=NOW)[1] for _ in range(2)]
        return seal(other, root_iss, payloads)[0]  # type: ignore[arg-type]

    verifier(other_pub).verify_request(sealed("q", "q"), method="/m", body=b"0", now=NOW)
    with pytest.raises(Unauthenticated, match="batch iss 'p' does not own key q#k1"):
        verifier(other_pub).verify_request(sealed("p", "q"), method="/m", body=b"0", now=NOW)
    with pytest.raises(Unauthenticated, match="iss 'p' does not own key q#k1"):
        verifier(other_pub).verify_request(sealed("q", "p"), method="/m", body=b"0", now=NOW)
    # a key removed after its batch was verified once stops working at once
    keys = [pub]
    v = verifier(pub)
    v.keys_for = lambda party: [k for k in keys if k.owner == party]
    tokens = batch(key, 3)
    v.verify_request(tokens[0], method="/m", body=b"0", now=NOW)
    keys.clear()
    with pytest.raises(Unauthenticated, match="unknown key p#k1"):
        v.verify_request(tokens[1], method="/m", body=b"1", now=NOW)


def test_the_root_cache_is_bounded() -> None:
    key, pub = keypair("p")
    v = verifier(pub)
    v.root_cache_size = 2
    batches = [batch(key, 2) for _ in range(3)]
    for tokens in batches:
        v.verify_request(tokens[0], method="/m", body=b"0", now=NOW)
    assert len(v._roots) == 2 and v.signature_checks == 3
    v.verify_request(batches[0][1], method="/m", body=b"1", now=NOW)  # evicted: again
    v.verify_request(batches[2][1], method="/m", body=b"1", now=NOW)  # kept: free
    assert v.signature_checks == 4


@pytest.mark.asyncio
async def test_signer_shares_one_signature_per_loop_turn() -> None:
    key, pub = keypair("p")
    signer = BatchSigner(key, "p", max_batch=5)  # type: ignore[arg-type]

    async def one(i: int) -> str:
        token, _ = await signer.sign(aud="gw", method="/m", body=b"%d" % i, now=NOW)
        return token

    tokens = await asyncio.gather(*(one(i) for i in range(12)))
    assert signer.messages == 12 and signer.signatures == 3  # 5 + 5 + 2
    v = verifier(pub)
    for i, token in enumerate(tokens):
        v.verify_request(token, method="/m", body=b"%d" % i, now=NOW)
    assert v.signature_checks == 3
    alone = await one(99)  # nothing else this turn: an ordinary JWS, no waiting for company
    assert "~" not in alone and signer.signatures == 4
    # a caller that gives up does not hold up or break the others of its batch
    tasks = [asyncio.ensure_future(one(100 + i)) for i in range(3)]
    await asyncio.sleep(0)
    tasks[1].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError)
    v.verify_request(done[2], method="/m", body=b"102", now=NOW)  # type: ignore[arg-type]


async def submit_many(config: Config, prefix: str, n: int) -> list[gw.SubmitCaseResponse]:
    """n concurrent SubmitCase calls from 上海 (310000) for 浦东; the client takes its
    batch_signatures from the config."""
    client = client_for(config, "310000")
    try:
        return await asyncio.gather(*(client.submit(
            case_number=f"{prefix}-{i}", target_division="310115", item_code="yb-ba",
            applicant=CITIZEN) for i in range(n)))
    finally:
        await client.close()


BATCHING = '\nbatch_signatures = true\n[[partners.keys]]\nid = "k1"\njwk = { kty = "OKP", crv = "Ed25519", x = "MmztfmH'


@pytest.mark.asyncio
@pytest.mark.parametrize("batching", [True, False])
async def test_gateway_sends_batch_tokens_only_to_parties_that_take_them(
        tmp_path: Path, batching: bool) -> None:
    port = free_port()
    text = grpc_partner_text(port)
    if batching:
        text = text.replace(BATCHING.replace("\nbatch_signatures = true", ""), BATCHING)
        assert "batch_signatures = true" in text
    async with federation(tmp_path, text=text, gateways=("310000-gw",)) as fed:
        shanghai = fed.apps["310000-gw"]
        platform = Platform(shanghai.config.me.keys, batch=batching)
        async with serving(platform, port):
            answers = await submit_many(shanghai.config, "B", 40)
            async with asyncio.timeout(20):
                while len(platform.cases) < 40:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
        assert {a.case.case_id for a in answers} == set(platform.cases)
        batched = [t for t in platform.tokens if "~" in t]
        if batching:  # deliveries went out together; the platform's batch answers passed
            assert batched and platform.signer is not None
            assert platform.signer.signatures < platform.signer.messages
        else:
            assert batched == []
        # deliveries leave together after a group commit and share signatures; answers to
        # 310000 (no batch_signatures) are signed one by one
        signer = shanghai.batch_signer
        assert (signer.messages, signer.signatures < 40) == ((40, True) if batching else (0, True))
        # operators see how well batching works on /metrics
        async with aiohttp.ClientSession() as http, http.get(
                f"http://{shanghai.config.me.http}/metrics") as answer:
            text = await answer.text()
        assert f"tongban_batch_signed_messages_total {float(signer.messages)}" in text
        assert f"tongban_batch_signatures_total {float(signer.signatures)}" in text
        checks = shanghai.verifier.signature_checks
        assert f"tongban_signature_checks_total {float(checks)}" in text and checks >= 40
        scraped = next(float(line.split()[1]) for line in text.splitlines()
                       if line.startswith("tongban_store_commits_total "))
        assert 0 < scraped <= shanghai.store.commits  # polls keep committing (reads too)


@pytest.mark.asyncio
async def test_gateway_verifies_a_batch_signing_platform_once_per_batch(tmp_path: Path) -> None:
    text = federation_text().replace(
        'id = "310000"\n', 'id = "310000"\nbatch_signatures = true\n', 1)
    async with federation(tmp_path, text=text, gateways=("310000-gw",)) as fed:
        shanghai = fed.apps["310000-gw"]
        before = shanghai.verifier.signature_checks
        answers = await submit_many(shanghai.config, "V", 30)
        assert len({a.case.case_id for a in answers}) == 30
        assert shanghai.verifier.signature_checks - before < 30
        # one message of a batch replayed, alone, is refused like any replay
        body = gw.SubmitCaseRequest(case_number="V-R", target_division="310115",
                                    item_code="yb-ba", applicant=CITIZEN).SerializeToString()
        tokens = seal(key_of("310000"), "310000", [
            claims_for(key_of("310000"), iss="310000", aud="310000-gw",
                       method="/tongban.v1.Gateway/SubmitCase", body=body, now=time.time())[1]
            for _ in range(2)])
        async with grpc.aio.insecure_channel(shanghai.config.me.grpc) as channel:
            call = channel.unary_unary("/tongban.v1.Gateway/SubmitCase")
            await call(body, metadata=((HEADER, tokens[0]),), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(body, metadata=((HEADER, tokens[0]),), timeout=5)
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "replayed jti" in (err.value.details() or "")
