"""The sandbox's identity provider: an OIDC discovery document and a JWKS.

The real FraiseQL server is an OIDC *resource server*: with ``[auth]`` set it reads
``ISSUER/.well-known/openid-configuration`` and the ``jwks_uri`` it names, and validates bearer
JWTs against those keys. In production the provider is another service (Auth0, Keycloak, ...).
The sandbox has none, so the stand-in plays that part too, on its own address: ``issuer`` is
its own base URL, ``jwks_uri`` is ``ISSUER/.well-known/jwks.json``, and the set holds two EC P-256
public keys made at start (a rotation-ready set, as providers publish). The private halves
never leave memory and sign nothing: the stand-in issues no tokens.

The ``oidc-down`` drill makes both documents answer 503 (a provider outage as a load balancer
in front of it reports it), so a playbook can see discovery and JWKS fail while the GraphQL
server itself stays up.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from .config import Settings

DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/.well-known/jwks.json"
KEY_COUNT = 2
_UNSPECIFIED = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    """The public half as a JWK, its ``kid`` the RFC 7638 thumbprint (stable, no registry)."""
    numbers = key.public_key().public_numbers()
    members = {"crv": "P-256", "kty": "EC", "x": _b64url(numbers.x.to_bytes(32, "big")),
               "y": _b64url(numbers.y.to_bytes(32, "big"))}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return {**members, "kid": _b64url(hashlib.sha256(canonical).digest()), "use": "sig",
            "alg": "ES256"}


def own_base_url(settings: Settings) -> str:
    """``scheme://host:port`` a local client reaches this server at (0.0.0.0 → 127.0.0.1)."""
    host = _UNSPECIFIED.get(settings.bind_host, settings.bind_host)
    host = f"[{host}]" if ":" in host else host
    scheme = "https" if settings.tls.enabled else "http"
    return f"{scheme}://{host}:{settings.bind_port}"


class IdentityProvider:
    """Discovery document and JWKS for an issuer at this server's own URL."""

    def __init__(self, settings: Settings) -> None:
        self.issuer = own_base_url(settings)
        self._jwks = {"keys": [_public_jwk(ec.generate_private_key(ec.SECP256R1()))
                               for _ in range(KEY_COUNT)]}

    def discovery(self) -> dict[str, Any]:
        """The OpenID Provider Metadata fields a resource server needs (OIDC Discovery §3)."""
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{self.issuer}{JWKS_PATH}",
            "authorization_endpoint": f"{self.issuer}/authorize",  # named, not served
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        }

    def jwks(self) -> dict[str, Any]:
        return self._jwks
