"""Summaries for the call benchmark: percentiles the way the pages take them."""

from __future__ import annotations

from typing import Any


def percentile(values: list[float], p: float) -> float | None:
    """Nearest rank, as the pages compute it."""
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))])


def summary(values: list[float]) -> dict[str, float | None]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "min": min(values) if values else None,
        "max": max(values) if values else None,
    }


def milestones(runs: list[dict[str, Any]], names: dict[str, str]) -> dict[str, Any]:
    """p50/p95 of each milestone over the runs (client side), plus the server's."""
    out: dict[str, Any] = {}
    for raw, key in names.items():
        values = [r["client"][raw] for r in runs if r["client"].get(raw) is not None]
        out[key] = summary(values)
    server_keys = sorted({k for r in runs for k in r.get("server", {})})
    out["server"] = {
        k: summary([r["server"][k] for r in runs if r["server"].get(k) is not None])
        for k in server_keys
    }
    return out


def latency_figures(result: dict[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {
        k: result[k] for k in ("receiver", "echo_receiver", "server_pacing") if k in result
    }
    return {**summary([float(x) for x in result["samples"]]), "lost": result["lost"], **extra}
