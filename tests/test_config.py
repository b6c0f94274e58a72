"""partners.toml errors: one line naming file, line and key path; nothing starts."""

from __future__ import annotations

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.tomlpath import locate
from tests.federation import PARTNERS_TOML

TEXT = PARTNERS_TOML.read_text(encoding="utf-8")


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    count = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            count += 1
            if count == occurrence:
                return number
    raise AssertionError(needle)


def fails(text: str, *parts: str, self_id: str | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(PARTNERS_TOML, text=text, self_id=self_id)
    message = str(err.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, message
    return message


def test_shipped_file_loads_for_every_gateway() -> None:
    for gateway in ("320100-gw", "320000-gw", "310000-gw"):
        config = load_config(PARTNERS_TOML, self_id=gateway)
        assert config.local_partners()
    config = load_config(PARTNERS_TOML)
    assert {"320105", "320681", "320100", "310000", "320000"} <= set(config.partners)


def test_bad_partner_key_names_path_and_line() -> None:
    text = TEXT.replace('x = "ELCiVN52KdFpG24JlczKgouJo_t-GbNJJfeXGpD38So"', 'x = "AAAA"')
    line = line_of(text, 'x = "AAAA"')
    fails(text, f"partners.toml:{line}:", "partners[0].keys[0].jwk", "Ed25519")


def test_unknown_gateway_of_a_partner() -> None:
    text = TEXT.replace('gateway = "310000-gw"', 'gateway = "990000-gw"', 1)
    line = line_of(text, 'gateway = "990000-gw"')
    fails(text, f"partners.toml:{line}:", "partners[5].gateway", "unknown gateway '990000-gw'")


def test_wrong_types_and_missing_keys() -> None:
    fails(TEXT.replace("time_limit_days = 3\n", 'time_limit_days = "3"\n', 1),
          "items[0].time_limit_days", "expected int, got str")
    fails(TEXT.replace('name = "营业执照变更登记"\n', "", 1), "items[0].name", "is required")
    fails(TEXT.replace('mode = "proxy"', 'mode = "post"', 1), "items[1].mode", "'post'")
    fails(TEXT.replace('prefixes = ["320681"]', 'prefixes = ["32068a"]'),
          "partners[4].prefixes[0]")
    fails(TEXT.replace('items = ["gjj-tq", "yyzz-bg", "jdc-wf"]', 'items = ["nope"]'),
          "alliances[0].items[0]", "unknown item 'nope'")
    fails(TEXT.replace('links = ["320100-gw", "310000-gw"]', 'links = ["320100-gw", "x"]'),
          "gateways[1].links[1]")


def test_self_must_match_a_gateway_and_key() -> None:
    fails(TEXT, "self.id", "not one of the [[gateways]]", self_id="110000-gw")
    fails(TEXT.replace('key_id = "k1"', 'key_id = "k2"'), "self.key_id", "320100-gw#k2")
    fails(TEXT.replace('private_key = "demo-keys/{id}.pem"', 'private_key = "nowhere.pem"'),
          "self.private_key", "cannot load")
    # a private key that is not the listed public key
    fails(TEXT.replace('private_key = "demo-keys/{id}.pem"',
                       'private_key = "demo-keys/320105.pem"'), "does not match public key")


def test_naive_datetime_and_bad_toml() -> None:
    fails(TEXT.replace("not_before = 2026-01-01T00:00:00+08:00",
                       "not_before = 2026-01-01T00:00:00", 1),
          "gateways[0].keys[0].not_before", "time zone")
    fails(TEXT + "\n[[[broken", "not valid TOML")


def test_locate_follows_arrays_of_tables() -> None:
    text = '[self]\nid = "a"\n\n[[p]]\nid = "x"\n[[p.keys]]\nid = "k"\n\n[[p]]\nid = "y"\n' \
           '[[p.keys]]\nid = "k1"\n[[p.keys]]\nid = "k2"\n'
    assert locate(text, ["p", 1, "id"]) == 10
    assert locate(text, ["p", 1, "keys", 1, "id"]) == 14
    assert locate(text, ["p", 0, "keys", 0, "jwk"]) == 6  # missing key → its table header
    assert locate(text, ["self", "id"]) == 2


@pytest.mark.parametrize(("old", "new", "path", "words"), [
    ("warning_ratio = 0.8 ", "warning_ratio = 1.5 ", "supervision.warning_ratio", "between"),
    ("rectification_days = 5 ", "rectification_days = 0 ", "supervision.rectification_days",
     "1..60"),
    ("holidays = [2026-10-01,", "holidays = [2026-10-01T00:00:00+08:00,",
     "calendar.holidays[0]", "local date"),
    ("extra_workdays = []", "extra_workdays = [2026-10-02]", "calendar.extra_workdays",
     "also listed"),
    ('prefixes = ["3201"]\n[[supervisors.keys]]', 'prefixes = []\n[[supervisors.keys]]',
     "supervisors[0].prefixes", "at least one"),
    ('id = "320100-jc"', 'id = "320105"', "supervisors[0].id", "duplicate"),
])
def test_supervision_and_calendar_errors_name_their_line(old: str, new: str, path: str,
                                                         words: str) -> None:
    assert old in TEXT
    text = TEXT.replace(old, new, 1)
    start = line_of(text, "[[supervisors]]") if path.startswith("supervisors") else 0
    needle = new.splitlines()[0]
    line = next(n for n, row in enumerate(text.splitlines(), start=1)
                if n > start and needle in row)
    fails(text, f"partners.toml:{line}:", path, words)


def test_outbox_settings_are_checked() -> None:
    fails(TEXT + "\n[outbox]\nmax_attempts = 0\n", "outbox.max_attempts", "positive")
    fails(TEXT + "\n[outbox]\nretries = 3\n", "outbox.retries", "not a setting")
    fails(TEXT + "\n[outbox]\nbackoff_base_s = 5\nbackoff_cap_s = 1\n", "outbox.backoff_cap_s")
    config = load_config(PARTNERS_TOML, text=TEXT + "\n[outbox]\nmax_attempts = 3\n")
    assert config.outbox.max_attempts == 3 and config.outbox.breaker_failures == 5


def test_a_supervisor_is_a_party_only_at_its_own_gateway() -> None:
    assert load_config(PARTNERS_TOML, self_id="320100-gw").party("320100-jc") is not None
    assert load_config(PARTNERS_TOML, self_id="320000-gw").party("320100-jc") is None


def test_plaintext_off_loopback_is_refused_unless_allowed_in_so_many_words() -> None:
    text = TEXT.replace('grpc = "127.0.0.1:7101"', 'grpc = "0.0.0.0:7101"')
    line = line_of(text, 'grpc = "0.0.0.0:7101"')
    fails(text, f"partners.toml:{line}:", "gateways[0].grpc", "0.0.0.0:7101",
          "not a loopback address", "allow_plaintext = true")
    text = TEXT.replace('http = "127.0.0.1:8103"', 'http = "gw.example.org:8103"')
    fails(text, "gateways[2].http", "gw.example.org:8103", self_id="310000-gw")
    # another gateway's address is its own business
    assert load_config(PARTNERS_TOML, text=text, self_id="320100-gw")
    for host in ("127.0.0.2", "[::1]", "localhost"):
        assert load_config(PARTNERS_TOML, text=TEXT.replace('"127.0.0.1:7101"',
                                                            f'"{host}:7101"'))
    allowed = text.replace('key_id = "k1"', 'key_id = "k1"\nallow_plaintext = true', 1)
    assert load_config(PARTNERS_TOML, text=allowed, self_id="310000-gw").allow_plaintext
    fails(text.replace('key_id = "k1"', 'key_id = "k1"\nallow_plaintext = "yes"', 1),
          "self.allow_plaintext", "expected bool")


def test_admin_addresses_are_loopback_and_host_port() -> None:
    text = TEXT.replace('key_id = "k1"', 'key_id = "k1"\nadmin_http = "0.0.0.0:9101"', 1)
    line = line_of(text, "admin_http")
    fails(text, f"partners.toml:{line}:", "self.admin_http", "not a loopback address")
    fails(TEXT.replace('key_id = "k1"', 'key_id = "k1"\nadmin_grpc = "127.0.0.1"', 1),
          "self.admin_grpc", "not host:port")
    config = load_config(PARTNERS_TOML, text=TEXT.replace(
        'key_id = "k1"', 'key_id = "k1"\nadmin_http = "127.0.0.1:9101"', 1))
    assert config.admin_http == "127.0.0.1:9101" and config.admin_grpc is None


def test_tls_settings_name_their_line() -> None:
    text = TEXT.replace("\n[limits]\n", '\n[self.tls]\ncert = "tls/{id}.crt"\n'
                        'key = "tls/{id}.key"\n\n[limits]\n', 1)
    line = line_of(text, 'cert = "tls/{id}.crt"')
    fails(text, f"partners.toml:{line}:", "self.tls.cert", "cannot read",
          "tls/320100-gw.crt")
    fails(TEXT.replace("\n[limits]\n", '\n[self.tls]\nkey = "x"\n\n[limits]\n', 1),
          "self.tls.cert", "is required")
    fails(TEXT.replace("\n[limits]\n", '\n[self.tls]\ncertificate = "x"\n\n[limits]\n', 1),
          "self.tls.certificate", "not a setting")
    # the CA that signed a gateway's certificate must be there, and be certificates
    text = TEXT.replace('http = "127.0.0.1:8103"\n',
                        'http = "127.0.0.1:8103"\ntls = { ca = "tls/ca.crt" }\n')
    line = line_of(text, 'tls = { ca = "tls/ca.crt" }')
    fails(text, f"partners.toml:{line}:", "gateways[2].tls.ca", "cannot read")
    fails(text.replace("tls/ca.crt", "demo-keys/310000.pem"), f"partners.toml:{line}:",
          "gateways[2].tls.ca", "no PEM certificate")
    fails(text.replace('"tls/ca.crt" }', '"tls/ca.crt", sni = "x" }'), "gateways[2].tls.sni",
          "not a setting")


def test_a_link_counts_only_when_both_sides_list_it() -> None:
    text = TEXT.replace('links = ["320100-gw", "310000-gw"]', 'links = ["320100-gw"]')
    shanghai = load_config(PARTNERS_TOML, text=text, self_id="310000-gw")
    assert "320000-gw" in shanghai.me.links
    assert shanghai.party("320000-gw") is None and shanghai.peers() == []
    nanjing = load_config(PARTNERS_TOML, text=text, self_id="320100-gw")
    assert nanjing.party("320000-gw") is not None


@pytest.mark.parametrize(("old", "new", "key", "why"), [
    ("clock_skew_s = 60", "clock_skew = 60", "limits.clock_skew", "is not a setting of [limits]"),
    ("max_hops = 4", "max_hops = 0", "limits.max_hops", "must be 1..16"),
    ("clock_skew_s = 60", "clock_skew_s = -5", "limits.clock_skew_s", "must be 0..600"),
    ('key_id = "k1"\n', 'key_id = "k1"\nallow_plain_text = true\n', "self.allow_plain_text",
     "is not a setting of [self]"),
])
def test_misspelt_or_impossible_keys_are_refused_with_their_line(
        old: str, new: str, key: str, why: str) -> None:
    text = TEXT.replace(old, new, 1)
    message = fails(text, key, why)
    assert f"partners.toml:{line_of(text, new.strip().splitlines()[-1])}:" in message


def test_a_trailing_newline_is_not_part_of_an_id() -> None:
    text = TEXT.replace('id = "320105"', 'id = "320105\\n"', 1)
    fails(text, "partners[0].id", "does not match")
