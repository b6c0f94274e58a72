"""Second round of attacks on issue #12's trust (evidence files, batch tokens, limits,
configuration), each over real sockets or through the real CLI, as a hostile platform,
a hostile peer, an auditor handed a forged file or a careless operator."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import pytest

from gateway import evidence_file
from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.pb.tongban.v1 import case_pb2 as pb
from tests.federation import PARTNERS_TOML, federation
from tests.test_evidence import cli, trusted
from tests.test_supervision import move, submit


@pytest.fixture(scope="module")
def two_cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The evidence files of two cases at 320100-gw; in case A both sides used the same
    update id (each side's ids are its own: the gateways dedup by author, update id)."""
    tmp = tmp_path_factory.mktemp("two-cases")

    async def life() -> dict[str, str]:
        async with federation(tmp, auto="manual", gateways=("320100-gw",)) as fed:
            a = await submit(fed, "A2-1")
            b = await submit(fed, "A2-2")
            await move(fed, a.case_id, "step-1", pb.CASE_STATE_ACCEPTED)
            await move(fed, a.case_id, "step-2", pb.CASE_STATE_PROCESSING)
            await move(fed, a.case_id, "step-3", pb.CASE_STATE_SUPPLEMENT_REQUESTED,
                       missing_materials=["户口本"], note="补正")
            # the origin's own "step-1": a supplement, another author's id space
            supplied = await move(fed, a.case_id, "step-1", 0, "320105", supplement=[
                pb.MaterialRef(name="户口本", sha256="ab" * 32, size_bytes=9,
                               media_type="application/pdf")])
            assert [m.name for m in supplied.materials] == ["户口本"], supplied
            await move(fed, b.case_id, "b-1", pb.CASE_STATE_ACCEPTED)
            return {"a": a.case_id, "b": b.case_id}

    ids = asyncio.run(life())
    files = {}
    for name, case_id in ids.items():
        out = tmp / f"{name}.json"
        done = cli("evidence", "export", case_id, "--config", str(PARTNERS_TOML), "--as",
                   "320100-gw", "--db", str(tmp / "320100-gw" / "gateway.sqlite3"),
                   "--out", str(out))
        assert done.returncode == 0, done.stderr
        files[name] = json.loads(out.read_text(encoding="utf-8"))
    return files


def test_both_sides_may_use_the_same_update_id_in_a_file_that_verifies(
        two_cases: dict[str, dict[str, Any]]) -> None:
    """The gateways key an update by (case, author, update id); the offline check keyed
    the statements by update id alone, so the origin's `step-1` hid the target's and a
    genuine file was called forged."""
    verdict = evidence_file.verify(two_cases["a"], trusted())
    assert verdict.ok, verdict.summary


def test_an_audit_list_from_another_case_is_bad(two_cases: dict[str, dict[str, Any]]
                                                ) -> None:
    """The audit entries of case B, intact and chained, were counted as case A's."""
    forged = copy.deepcopy(two_cases["b"])
    forged["audit"] = copy.deepcopy(two_cases["a"]["audit"])
    assert forged["audit"], "case A has audit entries"
    verdict = evidence_file.verify(forged, trusted())
    assert not verdict.ok and "audit[0]" in verdict.summary, verdict.summary


GW_320000_X = "qI9VB0Bgy1on17d9R55BlxqxgMPi9hq3tyKOGJyNBBY"
GW_320100_X = "ITzW-rH58LztSZhwOSGOlM2Q4InQbpzN2IFz6OKTZLI"
PLATFORM_320105_X = "ELCiVN52KdFpG24JlczKgouJo_t-GbNJJfeXGpD38So"


@pytest.mark.parametrize("copied", [GW_320100_X, PLATFORM_320105_X])
def test_one_public_key_listed_for_two_parties_is_refused(copied: str) -> None:
    """A careless operator pastes one party's key under another (a platform's key under
    its gateway): whoever holds that private key could then sign as both, forward and
    relay as the gateway. The file loaded, for every gateway."""
    text = PARTNERS_TOML.read_text(encoding="utf-8").replace(GW_320000_X, copied)
    with pytest.raises(ConfigError) as err:
        load_config(PARTNERS_TOML, text=text, self_id="320100-gw")
    assert "320000-gw" in str(err.value) and "same public key" in str(err.value), err.value


def test_two_keys_of_one_party_with_one_id_are_refused() -> None:
    """Only the first of two keys with one kid was ever used: a rotation that listed the
    new key under the old id silently kept the old one."""
    text = PARTNERS_TOML.read_text(encoding="utf-8").replace(
        f'x = "{PLATFORM_320105_X}" }}\n',
        f'x = "{PLATFORM_320105_X}" }}\n[[partners.keys]]\nid = "k1"\n'
        f'jwk = {{ kty = "OKP", crv = "Ed25519", x = "{GW_320000_X[:-4]}AAAA" }}\n', 1)
    assert text.count('id = "k1"') == PARTNERS_TOML.read_text(encoding="utf-8").count(
        'id = "k1"') + 1
    with pytest.raises(ConfigError) as err:
        load_config(PARTNERS_TOML, text=text, self_id="320100-gw")
    assert "320105#k1" in str(err.value), err.value


@pytest.mark.parametrize("admin", ['admin_http = "127.0.0.1:8101"',
                                   'admin_grpc = "127.0.0.1:7101"',
                                   'admin_http = "127.0.0.1:7101"',
                                   'admin_http = "127.0.0.1:9101"\nadmin_grpc = "localhost:9101"'])
def test_an_admin_address_on_a_main_listeners_port_is_refused(admin: str) -> None:
    """`admin_http` equal to `http` loaded; with `serve --reuse-port` both sites bind the
    port and the kernel shares connections between them (/metrics and reflection then
    answer on the public port); without it the gateway failed at start, naming no key."""
    text = PARTNERS_TOML.read_text(encoding="utf-8").replace(
        '[self]\n', f'[self]\n{admin}\n', 1)
    assert admin in text
    with pytest.raises(ConfigError) as err:
        load_config(PARTNERS_TOML, text=text + "", self_id="320100-gw")
    assert "admin_" in str(err.value) and "port" in str(err.value), err.value
