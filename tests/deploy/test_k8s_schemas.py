"""The manifests are well-formed: valid YAML by the house's lint rules, every object valid for its kind.

Core kinds are validated strictly (unknown fields rejected) with kubernetes-validate, offline,
against Kubernetes 1.33; the operators' and KEDA's custom resources against the JSON schemas of
their CRDs kept in ``tests/deploy/crd-schemas``. Both would otherwise surface only at
``kubectl apply`` time, or never: the API server drops unknown fields of a custom resource.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from yamllint import linter
from yamllint.config import YamlLintConfig

from tests.deploy.k8s_manifests import (
    CRD_SCHEMA_DIR,
    K8S_DIR,
    KUBERNETES_VERSION,
    REPO_ROOT,
    Manifest,
    load_manifests,
    manifest_files,
    of_kind,
)

pytestmark = pytest.mark.deploy

MANIFESTS = load_manifests()
#: API groups whose kinds are custom resources, validated against the schemas of CRD_SCHEMA_DIR.
CUSTOM_GROUPS = frozenset({"keda.sh", "postgresql.cnpg.io", "rabbitmq.com"})
CORE = [manifest for manifest in MANIFESTS if manifest.group not in CUSTOM_GROUPS]
CUSTOM = [manifest for manifest in MANIFESTS if manifest.group in CUSTOM_GROUPS]
YAMLLINT_CONFIG = REPO_ROOT / ".yamllint.yaml"


def _schema_path(manifest: Manifest) -> Path:
    return CRD_SCHEMA_DIR / manifest.group / f"{manifest.kind.lower()}_{manifest.version}.json"


def _crd_schema(manifest: Manifest) -> dict[str, Any]:
    path = _schema_path(manifest)
    if not path.is_file():
        pytest.fail(
            f"no schema for {manifest} at {path.relative_to(REPO_ROOT)}: see {CRD_SCHEMA_DIR.name}/README.md",
            pytrace=False,
        )
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


def _crd_errors(manifest: Manifest, doc: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(_crd_schema(manifest))
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(doc)
    ]


def _lint_problems(path: Path, text: str | None = None) -> list[str]:
    config = YamlLintConfig(file=str(YAMLLINT_CONFIG))
    content = path.read_text(encoding="utf-8") if text is None else text
    return [f"{path.name}:{p.line}: [{p.level}] {p.message}" for p in linter.run(content, config, str(path))]


def test_the_manifests_include_every_kind_the_service_needs() -> None:
    """Catches a manifest file dropped or renamed: the other tests would pass vacuously without it."""
    kinds = {manifest.kind for manifest in MANIFESTS}

    assert kinds >= {
        "Namespace",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "CronJob",
        "Job",
        "NetworkPolicy",
        "ScaledObject",
        "TriggerAuthentication",
        "Cluster",
        "RabbitmqCluster",
    }


@pytest.mark.parametrize("manifest", CORE, ids=str)
def test_core_objects_are_valid_for_kubernetes_1_33(manifest: Manifest) -> None:
    """Catches a misspelt or misplaced field, a wrong type or an API version 1.33 does not serve."""
    kubernetes_validate.validate(manifest.doc, KUBERNETES_VERSION, strict=True)


def test_strict_validation_rejects_a_misspelt_field() -> None:
    """Catches validation that has gone lax: without strict mode a typo such as `readinessProbes` passes."""
    deployment = copy.deepcopy(of_kind(MANIFESTS, "Deployment")[0].doc)
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("manifest", CUSTOM, ids=str)
def test_custom_resources_are_valid_for_their_crds(manifest: Manifest) -> None:
    """Catches a field the operator or KEDA does not know, which the API server would silently drop."""
    assert _crd_errors(manifest, manifest.doc) == []


def test_the_repository_keeps_the_schemas_of_the_custom_resources_in_use_and_no_others() -> None:
    """Catches a schema left behind when a kind or version stops being used, or one never copied."""
    kept = set(CRD_SCHEMA_DIR.glob("*/*.json"))

    assert kept == {_schema_path(manifest) for manifest in CUSTOM}


def test_crd_validation_rejects_a_misspelt_field() -> None:
    """Catches CRD schemas that accept anything: a typo in a ScaledObject's spec must fail."""
    scaled_object = of_kind(MANIFESTS, "ScaledObject")[0]
    misspelt = copy.deepcopy(scaled_object.doc)
    misspelt["spec"]["minReplicas"] = misspelt["spec"].pop("minReplicaCount")

    assert _crd_errors(scaled_object, misspelt) != []


@pytest.mark.parametrize(
    "path", [*manifest_files(), K8S_DIR / "kustomization.yaml", YAMLLINT_CONFIG], ids=str
)
def test_yaml_files_pass_yamllint(path: Path) -> None:
    """Catches duplicate keys (the last silently wins), bad indentation and stray syntax."""
    assert _lint_problems(path) == []


def test_yamllint_reports_a_duplicate_key_as_an_error() -> None:
    """Catches a lint configuration that lets a second `env:` silently replace the first."""
    duplicated = "---\nkind: ConfigMap\ndata:\n  A: '1'\ndata:\n  B: '2'\n"

    problems = _lint_problems(K8S_DIR / "configmap.yaml", duplicated)

    assert any("[error]" in problem and "duplication" in problem for problem in problems), problems


@pytest.mark.parametrize("path", [*manifest_files(), K8S_DIR / "kustomization.yaml"], ids=str)
def test_every_manifest_file_opens_with_a_comment_saying_what_it_is_for(path: Path) -> None:
    """Catches a manifest added without the comment that tells an operator why it exists."""
    assert path.read_text(encoding="utf-8").startswith("# ")
