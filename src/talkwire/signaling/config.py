"""Signaling settings: one typed object, validated once, passed in."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from talkwire.errors import ConfigError
from talkwire.rate_limit import Rate
from talkwire.signaling.regions import RegionTable

MIN_CLIENT_SECRET_TTL_S = 10
MAX_CLIENT_SECRET_TTL_S = 7200
DEFAULT_CLIENT_SECRET_TTL_S = 600

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")


@dataclass(frozen=True)
class SignalingConfig:
    """``models`` maps an OpenAI-style model name to the agent's WebSocket URL;
    ``api_keys`` are the long-lived keys (never logged)."""

    api_keys: tuple[str, ...]
    models: Mapping[str, str]
    default_model: str | None = None
    # Also serve the models agent servers announce in the registry (--registry).
    discover_agents: bool = False
    transceivers: tuple[str, ...] = ()
    regions: RegionTable = field(default_factory=RegionTable)
    cors_origins: tuple[str, ...] = ("*",)
    max_body_bytes: int = 64 * 1024
    # A request's headers must arrive within header_timeout_s of connecting (or of the
    # last response: it is also the keep-alive idle limit), its body within body_timeout_s.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    call_ttl_s: float = 6 * 3600.0
    transceiver_timeout_s: float = 5.0
    health_interval_s: float = 1.0
    health_max_age_s: float = 3.0
    health_failures: int = 2
    demo_dir: Path | None = None
    # API requests (POST /v1/...) per client IP and per API key; None: unlimited.
    rate_per_ip: Rate | None = None
    rate_per_key: Rate | None = None
    # HTTPS with this certificate chain and key (PEM); both or neither.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Sent to transceivers as Authorization: Bearer (internal_auth); None: none sent.
    internal_secret: str | None = None

    def __post_init__(self) -> None:
        if not self.api_keys:
            raise ConfigError("no API key: pass --api-key or set TALKWIRE_API_KEY")
        for key in self.api_keys:
            if not key or any(c.isspace() for c in key):
                raise ConfigError("an API key must be non-empty and contain no whitespace")
            if key.startswith("ek_"):
                raise ConfigError(
                    "API keys must not start with 'ek_' (reserved for ephemeral keys)"
                )
        for name, url in self.models.items():
            if not _MODEL_NAME.fullmatch(name):
                raise ConfigError(f"bad model name {name!r}")
            if not url.startswith(("ws://", "wss://")):
                raise ConfigError(f"model {name!r}: agent URL must be ws:// or wss://, got {url!r}")
        if (
            self.default_model is not None
            and self.default_model not in self.models
            and not self.discover_agents  # an announced agent may serve it
        ):
            raise ConfigError(f"default model {self.default_model!r} is not in the model table")
        for url in self.transceivers:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"transceiver URL must be http(s)://, got {url!r}")
        if not self.cors_origins:
            raise ConfigError("at least one CORS origin (or '*') is needed")
        if self.max_body_bytes < 1024:
            raise ConfigError("max body size must be at least 1024 bytes")
        for name in (
            "call_ttl_s",
            "transceiver_timeout_s",
            "health_interval_s",
            "health_max_age_s",
            "header_timeout_s",
            "body_timeout_s",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive")
        if self.health_failures < 1:
            raise ConfigError("health_failures must be at least 1")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        if self.demo_dir is not None and not (self.demo_dir / "index.html").is_file():
            raise ConfigError(f"demo dir {self.demo_dir} has no index.html")
        object.__setattr__(self, "models", MappingProxyType(dict(self.models)))
        object.__setattr__(self, "transceivers", tuple(u.rstrip("/") for u in self.transceivers))
