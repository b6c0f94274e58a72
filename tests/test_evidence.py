"""`tongban evidence export/verify`: who said what about a case, provable offline (issue #12).

A case lives its whole life across three gateways (submitted at 南京, handled at 浦东,
rated back at 南京); each gateway's copy is exported with the CLI and checked with only
the file and the federation's JWKS. Then the file is edited the ways a forger would, and
the check names the first bad item each time.
"""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway import evidence_file
from gateway.config import load_config
from gateway.pb.tongban.v1 import case_pb2 as pb
from gateway.signing import generate_private_key, public_key_from_jwk
from tests.federation import PARTNERS_TOML, ROOT, federation, until
from tests.test_bad_input import CITIZEN

TONGBAN = [sys.executable, "-m", "gateway.cli"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TONGBAN, *args], capture_output=True, cwd=ROOT, timeout=60,
                          text=True, check=False)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A completed, rated case's evidence file from each gateway on its path, and the JWKS."""
    import asyncio

    tmp = tmp_path_factory.mktemp("evidence")

    async def life() -> str:
        async with federation(tmp) as fed:
            origin = fed.client("320105")
            case = (await origin.submit(case_number="EV-1", target_division="310115",
                                        item_code="shebao-zy", applicant=CITIZEN,
                                        form={"reason": "迁居"})).case

            async def completed() -> bool:
                return (await origin.get(case.case_id)).state == pb.CASE_STATE_COMPLETED
            await until(completed)
            await origin.rate(case.case_id, 2, pb.RATING_CHANNEL_WEB, "慢")

            async def rated_at_target() -> bool:
                return (await fed.client("310115").get(case.case_id)).HasField("rating")
            await until(rated_at_target)
            return case.case_id

    case_id = asyncio.run(life())
    files = {}
    for gateway in ("320100-gw", "320000-gw", "310000-gw"):
        out = tmp / f"{gateway}.json"
        done = cli("evidence", "export", case_id, "--config", str(PARTNERS_TOML), "--as",
                   gateway, "--db", str(tmp / gateway / "gateway.sqlite3"), "--out", str(out))
        assert done.returncode == 0, done.stderr
        files[gateway] = out
    jwks = cli("keys", "jwks", "--config", str(PARTNERS_TOML))
    assert jwks.returncode == 0, jwks.stderr
    files["jwks"] = tmp / "jwks.json"
    files["jwks"].write_text(jwks.stdout, encoding="utf-8")
    return files


def trusted() -> dict[str, list[Any]]:
    config = load_config(PARTNERS_TOML)
    return {p.id: list(p.keys) for p in (*config.partners.values(), *config.gateways.values())}


def test_every_gateways_copy_verifies_offline(exported: dict[str, Path]) -> None:
    for gateway in ("320100-gw", "320000-gw", "310000-gw"):
        done = cli("evidence", "verify", str(exported[gateway]), "--jwks",
                   str(exported["jwks"]))
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith("OK"), done.stdout
        # the origin's submission, the target's three reports and the origin's rating
        assert "320105 SubmitCase" in done.stdout and "320105 RateCase" in done.stdout
        assert done.stdout.count("310115 UpdateCase") == 3, done.stdout
        # the next hop's signed answers to this gateway's deliveries (case and reports)
        assert " 0 signed delivery receipts" not in done.stdout, done.stdout


def load(exported: dict[str, Path], gateway: str = "320000-gw") -> dict[str, Any]:
    document: dict[str, Any] = json.loads(exported[gateway].read_text(encoding="utf-8"))
    return document


def check(document: dict[str, Any]) -> str:
    verdict = evidence_file.verify(document, trusted())
    assert not verdict.ok, "an edited file passed"
    return verdict.summary


def edit_case(document: dict[str, Any], change: Any) -> dict[str, Any]:
    edited = copy.deepcopy(document)
    case = pb.Case.FromString(base64.b64decode(edited["case"]))
    change(case)
    edited["case"] = base64.b64encode(case.SerializeToString()).decode()
    return edited


def test_an_edited_file_names_its_first_bad_item(exported: dict[str, Path]) -> None:
    document = load(exported)
    assert evidence_file.verify(document, trusted()).ok

    tampered = copy.deepcopy(document)  # one byte of the target's first report
    request = bytearray(base64.b64decode(tampered["items"][1]["request"]))
    request[-1] ^= 1
    tampered["items"][1]["request"] = base64.b64encode(bytes(request)).decode()
    assert check(tampered).startswith("item 1:")

    tampered = copy.deepcopy(document)  # a signature from another statement
    tampered["items"][2]["token"] = tampered["items"][3]["token"]
    assert check(tampered).startswith("item 2:")

    def rename(case: pb.Case) -> None:
        case.applicant.name = "李四"
    assert "applicant" in check(edit_case(document, rename))

    def rerate(case: pb.Case) -> None:
        case.rating.rater = "310115"
    assert "rating" in check(edit_case(document, rerate))

    def gateway_made(case: pb.Case) -> None:  # a change dressed up as a delivery mark
        case.timeline.add(state=pb.CASE_STATE_REJECTED, actor="310115",
                          update_id="delivered:999", at=case.timeline[-1].at)
        case.state = pb.CASE_STATE_REJECTED
    assert "delivered:999" in check(edit_case(document, gateway_made))

    dropped = copy.deepcopy(document)  # a report whose statement is withheld
    del dropped["items"][2]
    assert "has no signed statement" in check(dropped)

    tampered = copy.deepcopy(document)  # a delivery receipt's answer
    assert tampered["receipts"], "the next hops' answers are kept"
    tampered["receipts"][0]["response"] = base64.b64encode(b"\x10\x01").decode()
    assert check(tampered).startswith("receipts[0]")

    tampered = copy.deepcopy(document)  # the audit log's text
    tampered["audit"][0]["detail"] = "edited"
    assert check(tampered).startswith("audit[0]")


def test_a_forged_key_set_proves_nothing(exported: dict[str, Path]) -> None:
    document = load(exported, "310000-gw")
    _, jwk = generate_private_key()
    forged = trusted()
    forged["320105"] = [public_key_from_jwk(jwk, kid="320105#k1")]
    verdict = evidence_file.verify(document, forged)
    assert not verdict.ok and verdict.summary.startswith("item 0:"), verdict.summary
    done = cli("evidence", "verify", str(exported["310000-gw"]))  # the file's own keys
    assert done.returncode == 0 and "prove authorship" in done.stdout, done.stdout
