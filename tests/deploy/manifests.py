"""Render deploy/k8s overlays with a real kustomize and validate objects against the
Kubernetes API schemas shipped in the kubernetes-validate wheel (no cluster, no network).

kustomize is kubectl's built-in (`kubectl kustomize`, kustomize v5 in kubectl >= 1.27) or a
standalone `kustomize` binary; `make kustomize` checks for one. There is no Python port: a
missing binary fails the tests with what to install, it is never skipped.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from trading_pipeline.settings import PROJECT_DIR

K8S_DIR = PROJECT_DIR / "deploy" / "k8s"
# the oldest Kubernetes minor still commonly run, and the newest the wheel has schemas for
K8S_VERSIONS = ("1.31.0", kubernetes_validate.latest_version())
MISSING = ("no kustomize found: install kubectl >= 1.27 (built-in kustomize v5) or a kustomize v5 "
           "binary on PATH; `make kustomize` checks for it")


class RenderError(RuntimeError):
    """kustomize refused the overlay; the message is kustomize's own."""


def kustomize_command() -> list[str]:
    """The command that renders a kustomization directory (the directory is appended)."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    raise RuntimeError(MISSING)


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects `kubectl apply -k directory` would send, in kustomize's order."""
    proc = subprocess.run([*kustomize_command(), str(directory)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RenderError(proc.stderr.strip() or proc.stdout.strip())
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def schema_errors(obj: dict[str, Any], version: str) -> list[str]:
    """Why ``obj`` is not a valid object of its kind in Kubernetes ``version`` (strict: unknown
    fields are errors, so a misspelt or misplaced key fails instead of being dropped)."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = "/".join(str(p) for p in exc.path)
        return [f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')} at {path or '.'}: {exc.message}"]
    except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as exc:
        return [f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}: {exc}"]
    return []


def by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o.get("kind") == kind}
