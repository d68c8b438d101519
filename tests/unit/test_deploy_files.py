"""The deployment files parse and name only settings that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from cryptodesk.config import ENV_PREFIX, Settings
from cryptodesk.runtime import ROLES

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KNOWN = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields} | {f"{ENV_PREFIX}CONFIG"}


def settings_named(text: str) -> set[str]:
    return set(re.findall(rf"\b{ENV_PREFIX}[A-Z0-9_]+", text))


@pytest.mark.parametrize(
    "path", sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")]), ids=lambda p: p.name
)
def test_yaml_parses_and_names_only_real_settings(path: Path) -> None:
    text = path.read_text()
    documents = [d for d in yaml.safe_load_all(text) if d is not None]
    assert documents
    unknown = settings_named(text) - KNOWN
    assert not unknown, f"{path.name} names settings that do not exist: {sorted(unknown)}"


def test_compose_runs_every_role_and_the_engines() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "kafka", "prometheus", "grafana", "migrate"} <= set(services)
    for role in ROLES:
        assert services[role]["command"] == ["cryptodesk", "serve", "--roles", role]
    env = services["api"]["environment"]
    # Every value must pass our own validation.
    Settings(**{k.removeprefix(ENV_PREFIX).lower(): v for k, v in env.items()})


def test_k8s_deployments_have_probes_and_limits() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "cryptodesk.yaml").read_text()))
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert {d["metadata"]["name"].removeprefix("cryptodesk-") for d in deployments} == set(ROLES)
    for d in deployments:
        container = d["spec"]["template"]["spec"]["containers"][0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["resources"]["limits"]
        role = d["metadata"]["name"].removeprefix("cryptodesk-")
        assert container["command"] == ["cryptodesk", "serve", "--roles", role]
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    secret = next(d for d in docs if d["kind"] == "Secret")["stringData"]
    Settings(**{k.removeprefix(ENV_PREFIX).lower(): v for k, v in {**config, **secret}.items()})
