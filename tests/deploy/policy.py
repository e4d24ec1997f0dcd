"""Our own rules for the Kubernetes manifests, beyond what the API schemas say.

The schemas (kubernetes-validate) accept a Deployment without probes, an image tagged
``latest`` or a password in plain ``value:``; these checks do not. Each returns a list of
problems (empty = fine), each naming the object and the fix, so a failing test says what
to change. tests/deploy/test_k8s.py runs them on every rendered overlay and feeds them
deliberately bad objects to show they catch what they claim to.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

Obj = dict[str, Any]

# kinds whose pods run until stopped: they need probes
LONG_RUNNING = {"Deployment", "StatefulSet", "DaemonSet"}
WORKLOADS = LONG_RUNNING | {"Job", "CronJob", "Pod", "ReplicaSet"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY|CREDENTIAL", re.IGNORECASE)
# a password inside a URL (scheme://user:pass@host) or a libpq conninfo (password=...)
SECRET_IN_VALUE = re.compile(r"://[^/:@\s]+:[^@\s]+@|\bpassword\s*=", re.IGNORECASE)


def name_of(obj: Obj) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def pod_spec(obj: Obj) -> Obj | None:
    """The pod spec inside a workload object (None for anything else)."""
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        return spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec")
    if kind in WORKLOADS:
        return spec.get("template", {}).get("spec")
    return None


def containers(spec: Obj) -> Iterator[tuple[str, Obj]]:
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or []:
            yield key, c


def check_probes(obj: Obj) -> list[str]:
    """Every container of a long-running workload has liveness and readiness probes."""
    spec = pod_spec(obj)
    if obj.get("kind") not in LONG_RUNNING or spec is None:
        return []
    out = []
    for key, c in containers(spec):
        if key == "initContainers":
            continue
        for probe in ("livenessProbe", "readinessProbe"):
            if not c.get(probe):
                out.append(f"{name_of(obj)} container {c.get('name')}: no {probe} (add one)")
    return out


def image_problem(image: str | None) -> str | None:
    """Why an image reference is not pinned, or None if it is (a tag other than latest, or a digest)."""
    if not image:
        return "no image"
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {image!r} has no tag (pin one, never rely on the implicit :latest)"
    if last.rsplit(":", 1)[1] == "latest":
        return f"image {image!r} is tagged latest (pin a version)"
    return None


def check_images(obj: Obj) -> list[str]:
    spec = pod_spec(obj)
    if spec is None:
        return []
    out = []
    for _key, c in containers(spec):
        problem = image_problem(c.get("image"))
        if problem:
            out.append(f"{name_of(obj)} container {c.get('name')}: {problem}")
    return out


def check_resources(obj: Obj) -> list[str]:
    """Requests for cpu and memory, and a memory limit, on every container."""
    spec = pod_spec(obj)
    if spec is None:
        return []
    out = []
    for _key, c in containers(spec):
        res = c.get("resources") or {}
        missing = [f"requests.{r}" for r in ("cpu", "memory") if r not in (res.get("requests") or {})]
        missing += ["limits.memory"] if "memory" not in (res.get("limits") or {}) else []
        if missing:
            out.append(f"{name_of(obj)} container {c.get('name')}: resources missing {', '.join(missing)}")
    return out


def check_security(obj: Obj, *, read_only_root: bool = True) -> list[str]:
    """Non-root, no privilege escalation, all capabilities dropped, a read-only root
    filesystem with a writable /tmp (unless ``read_only_root`` is False, said why by the caller)."""
    spec = pod_spec(obj)
    if spec is None:
        return []
    out = []
    pod_sc = spec.get("securityContext") or {}
    for _key, c in containers(spec):
        sc = c.get("securityContext") or {}
        where = f"{name_of(obj)} container {c.get('name')}"
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        if non_root is not True:
            out.append(f"{where}: runAsNonRoot is not true (set it in the pod or container securityContext)")
        if uid == 0:
            out.append(f"{where}: runAsUser is 0 (root)")
        if sc.get("privileged"):
            out.append(f"{where}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{where}: allowPrivilegeEscalation is not false")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            out.append(f"{where}: capabilities.drop does not include ALL")
        if read_only_root:
            if sc.get("readOnlyRootFilesystem") is not True:
                out.append(f"{where}: readOnlyRootFilesystem is not true")
            elif not any(m.get("mountPath") == "/tmp" for m in c.get("volumeMounts") or []):
                out.append(f"{where}: read-only root but no volume at /tmp (mount an emptyDir)")
    return out


def check_plaintext_secrets(obj: Obj) -> list[str]:
    """No secret in plain sight: env values or ConfigMap entries named like a secret, URLs or
    conninfo strings carrying a password, and no Secret written out with its data."""
    out = []
    where = name_of(obj)
    if obj.get("kind") == "Secret" and (obj.get("data") or obj.get("stringData")):
        out.append(f"{where}: a Secret with inline data (create it outside the repo, or with a secretGenerator from a git-ignored file)")
    if obj.get("kind") == "ConfigMap":
        for k, v in (obj.get("data") or {}).items():
            if SECRET_NAME.search(k):
                out.append(f"{where}: key {k} looks like a secret (move it to the Secret)")
            elif isinstance(v, str) and SECRET_IN_VALUE.search(v):
                out.append(f"{where}: {k} carries a password (drop it; libpq reads PGPASSWORD from the Secret)")
    spec = pod_spec(obj)
    for _key, c in containers(spec or {}):
        for e in c.get("env") or []:
            value = e.get("value")
            if value is None:
                continue
            if SECRET_NAME.search(e.get("name", "")):
                out.append(f"{where} container {c.get('name')}: env {e['name']} has a plain value (use valueFrom.secretKeyRef)")
            elif SECRET_IN_VALUE.search(str(value)):
                out.append(f"{where} container {c.get('name')}: env {e['name']} carries a password")
    return out


def check_references(objs: Iterable[Obj], external: Iterable[str] = ()) -> list[str]:
    """ConfigMaps, Secrets, PVCs and ServiceAccounts that pods refer to exist in the render
    (or are named in ``external``: created outside it, on purpose)."""
    objs = list(objs)
    have = {(o.get("kind"), o.get("metadata", {}).get("name")) for o in objs}
    for o in objs:  # StatefulSets make their own claims
        for t in (o.get("spec") or {}).get("volumeClaimTemplates") or [] if o.get("kind") == "StatefulSet" else []:
            have.add(("PersistentVolumeClaim", t["metadata"]["name"]))
    external = set(external)
    out = []
    for o in objs:
        spec = pod_spec(o)
        if spec is None:
            continue
        wanted: list[tuple[str, str | None]] = []
        if spec.get("serviceAccountName"):
            wanted.append(("ServiceAccount", spec["serviceAccountName"]))
        for v in spec.get("volumes") or []:
            if "configMap" in v:
                wanted.append(("ConfigMap", v["configMap"].get("name")))
            if "secret" in v:
                wanted.append(("Secret", v["secret"].get("secretName")))
            if "persistentVolumeClaim" in v:
                wanted.append(("PersistentVolumeClaim", v["persistentVolumeClaim"].get("claimName")))
        for _key, c in containers(spec):
            for src in c.get("envFrom") or []:
                if "configMapRef" in src:
                    wanted.append(("ConfigMap", src["configMapRef"].get("name")))
                if "secretRef" in src:
                    wanted.append(("Secret", src["secretRef"].get("name")))
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {})
                if "secretKeyRef" in ref:
                    wanted.append(("Secret", ref["secretKeyRef"].get("name")))
                if "configMapKeyRef" in ref:
                    wanted.append(("ConfigMap", ref["configMapKeyRef"].get("name")))
        for kind, name in wanted:
            if (kind, name) not in have and name not in external:
                out.append(f"{name_of(o)} refers to {kind}/{name}, which the render does not contain")
    return out


def check_all(objs: Iterable[Obj], external: Iterable[str] = ()) -> list[str]:
    objs = list(objs)
    out: list[str] = []
    for o in objs:
        for check in (check_probes, check_images, check_resources, check_security, check_plaintext_secrets):
            out += check(o)
    return out + check_references(objs, external)
