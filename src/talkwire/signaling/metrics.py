"""Signaling's Prometheus metrics, one collector registry per app so several
apps (tests, `talkwire up`) never collide on the process-global one."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Call setup spans placement plus the transceiver's offer/answer work, which
# is milliseconds on loopback and up to the forward timeout when it fails.
_SETUP_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


class SignalingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter(
            "talkwire_signaling_calls",
            "Call creation requests by HTTP status returned",
            ["status"],
            registry=self.registry,
        )
        self.call_setup = Histogram(
            "talkwire_signaling_call_setup_seconds",
            "Offer received to answer returned, successful calls",
            buckets=_SETUP_BUCKETS,
            registry=self.registry,
        )
        self.placement_failures = Counter(
            "talkwire_signaling_placement_failures",
            "Placement attempts that failed: no candidate, or a transceiver failed",
            ["reason"],
            registry=self.registry,
        )
        self.client_secrets = Counter(
            "talkwire_signaling_client_secrets",
            "Ephemeral keys minted",
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "talkwire_signaling_rate_limited",
            "API requests refused with 429, by the limit they exceeded",
            ["limit"],
            registry=self.registry,
        )
        self.realtime_sessions = Counter(
            "talkwire_signaling_realtime_sessions",
            "Realtime WebSocket sessions ended, by why",
            ["end"],
            registry=self.registry,
        )
        self.realtime_active = Gauge(
            "talkwire_signaling_realtime_active",
            "Realtime WebSocket sessions open now",
            registry=self.registry,
        )
        self.hangups = Counter(
            "talkwire_signaling_hangups",
            "Hangup requests by HTTP status returned",
            ["status"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
