"""What `tongban serve` refuses before it listens: private keys others can read, and the
shipped demo keys anywhere but loopback.

The demo keys are recognised by their public keys, not by their path: a copy renamed
to keys/gw.pem is as public as the original in demo-keys/.
"""

from __future__ import annotations

import stat
from pathlib import Path

from gateway.config import Config
from gateway.errors import ConfigError
from gateway.signing import b64url
from gateway.tls import is_loopback

# the Ed25519 public keys (JWK "x") of demo-keys/*.pem: those private keys are published
DEMO_KEYS = frozenset({
    "7aks6fcVDizPJBpuOYGjvwlMCGZcLUkW9E8Jt8Wt2UY",  # 310000-gw
    "7yyWyW_rewu0SaocYc4nJof5rekfC-loW_ZXDfKBLWo",  # 310000
    "MmztfmHWI4tw7kC3ymC_p1F5orXwDasglCpdGVNC6kw",  # 310115
    "qI9VB0Bgy1on17d9R55BlxqxgMPi9hq3tyKOGJyNBBY",  # 320000-gw
    "m26hL9wzev4on4pPiJB4m1-qCGtV2m7Aw-0NmEBj1Cs",  # 320000
    "ITzW-rH58LztSZhwOSGOlM2Q4InQbpzN2IFz6OKTZLI",  # 320100-gw
    "ZxnMilTwdb0mqnonI8b1xnuRhTyBO9sfWkj0NOmxNfM",  # 320100-jc
    "gX8cxVQ7njTKAMY3aox9xbiweFyQptgXcXiYFShu_Gs",  # 320100
    "ELCiVN52KdFpG24JlczKgouJo_t-GbNJJfeXGpD38So",  # 320105
    "9uZi9EFfRB5IGYnidJn9hzBaDiJiCoBYADx9ijqS0LM",  # 320681
    "2CEhVDWfhDF_582l02JsNqM5Fj9av21CEN6Bf6HWVi8",  # 341100
})


def listening(config: Config) -> list[str]:
    """Every address this gateway would listen on."""
    me = config.me
    return [me.grpc, me.http, *(a for a in (config.admin_http, config.admin_grpc) if a)]


def check_key_file(path: Path, what: str) -> None:
    """ConfigError when group or others may read, write or run the key file."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot stat: {exc.strerror}") from exc
    if mode & 0o077:
        raise ConfigError(f"{what} {path} is mode {mode:04o}: group and others must have no "
                          f"access to a private key (chmod 600 {path})")


def check_serving(config: Config) -> None:
    """ConfigError naming the first reason not to serve this configuration."""
    demo = b64url(config.signing_key.raw_public) in DEMO_KEYS
    exposed = [a for a in listening(config) if not is_loopback(a)]
    if demo and exposed:
        raise ConfigError(f"{config.signing_key.kid} is one of the published demo keys "
                          f"(demo-keys/); refusing to listen on {exposed[0]}: generate "
                          "your own with `tongban keys generate`")
    if exposed:
        # a published key listed for anyone lets anyone sign as that party: its calls
        # and its statements (docs/signing.md §8) would prove nothing
        parties = [*config.gateways.values(), *config.partners.values(),
                   *config.supervisors.values()]
        trusted = next((k for p in parties for k in p.keys
                        if k.alg == "EdDSA" and b64url(k.raw_public) in DEMO_KEYS), None)
        if trusted is not None:
            raise ConfigError(f"partners.toml lists {trusted.kid} with one of the published "
                              f"demo keys (demo-keys/); refusing to listen on {exposed[0]}: "
                              "give every party its own key (`tongban keys generate`)")
    if not demo and config.signing_key_path is not None:  # a demo key has no secret
        check_key_file(config.signing_key_path, "[self] private_key")
    if config.tls is not None:
        check_key_file(config.tls.key_path, "[self.tls] key")
