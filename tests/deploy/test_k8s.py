"""deploy/k8s, checked without a cluster: each overlay rendered by a real kustomize, every
object validated against the Kubernetes API schemas (kubernetes-validate's packaged copy,
strict), our own rules (tests/deploy/policy.py) passing on the render and catching bad
objects, and the run pods built by dagster-k8s' own code from the instance config."""

from __future__ import annotations

import base64
import copy
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import policy
from tests.deploy.manifests import (
    K8S_DIR,
    K8S_VERSIONS,
    RenderError,
    by_kind,
    render,
    schema_errors,
)
from trading_pipeline.settings import PROJECT_DIR, Settings

OVERLAYS = ("local", "production")
IMAGE = "trading-pipeline"  # the name base/ uses; overlays pin tag (and registry)


@pytest.fixture(scope="module")
def local_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """deploy/k8s copied out of the repo with a secrets.env for the local overlay's
    secretGenerator (the real file is git-ignored and never exists in a checkout)."""
    root = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S_DIR, root, ignore=shutil.ignore_patterns("secrets.env"))
    password = secrets.token_hex(16)
    (root / "overlays" / "local" / "secrets.env").write_text(f"PGPASSWORD={password}\n")
    return root, password


@pytest.fixture(scope="module")
def rendered(local_tree: tuple[Path, str]) -> dict[str, list[dict[str, Any]]]:
    root, _ = local_tree
    return {name: render(root / "overlays" / name) for name in OVERLAYS}


def without_generated_secret(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The render minus the Secret the local overlay generates from the git-ignored file."""
    return [o for o in objs if not (o["kind"] == "Secret" and o["metadata"]["name"] == "trading-secrets")]


def trading_env(objs: list[dict[str, Any]]) -> dict[str, str]:
    return by_kind(objs, "ConfigMap")["trading-env"]["data"]


def container(obj: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    cs = obj["spec"]["template"]["spec"]["containers"]
    return next(c for c in cs if name is None or c["name"] == name)


# -- the renders are valid Kubernetes ---------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_rendered_object_is_valid_against_the_api_schema(rendered, overlay: str, version: str) -> None:
    objs = rendered[overlay]
    errors = [e for o in objs for e in schema_errors(o, version)]
    assert errors == []
    kinds = {o["kind"] for o in objs}
    assert {"Namespace", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "ConfigMap", "PersistentVolumeClaim", "ServiceAccount", "Role", "RoleBinding"} <= kinds
    assert all(o["metadata"].get("namespace") == "trading" for o in objs if o["kind"] != "Namespace")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_renders_pass_our_policy(rendered, overlay: str) -> None:
    objs = rendered[overlay]
    # the local Secret is generated from the git-ignored file: its data is expected, and it
    # must be in the render; production's is created outside it (docs/operations.md)
    assert policy.check_all(without_generated_secret(objs), external={"trading-secrets"}) == []
    external = {"trading-secrets"} if overlay == "production" else set()
    assert policy.check_references(objs, external=external) == []


# -- the API ----------------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_is_replicated_probed_autoscaled_and_protected(rendered, overlay: str) -> None:
    objs = rendered[overlay]
    dep = by_kind(objs, "Deployment")["trading-api"]
    api = container(dep, "api")
    assert dep["spec"]["replicas"] >= 2
    assert api["args"] == ["trading", "api", "--host", "0.0.0.0", "--port", "8000"]
    assert api["readinessProbe"]["httpGet"]["path"] == "/health"
    # liveness accepts /health's 503 (no snapshot published yet): a fresh cluster must not
    # restart its API forever while it waits for the first pipeline run
    live = "\n".join(api["livenessProbe"]["exec"]["command"])
    assert "/health" in live and "503" in live
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()

    hpa = by_kind(objs, "HorizontalPodAutoscaler")["trading-api"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "trading-api"}
    assert 2 <= hpa["spec"]["minReplicas"] == dep["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    pdb = by_kind(objs, "PodDisruptionBudget")["trading-api"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert 1 <= pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "a drain must be able to evict one pod"

    svc = by_kind(objs, "Service")["trading-api"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= {p["name"] for p in api["ports"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_pinned_image_everywhere_and_runs_start_from_it(rendered, overlay: str) -> None:
    objs = rendered[overlay]
    images = {container(d)["image"] for d in by_kind(objs, "Deployment").values()}
    assert len(images) == 1
    (image,) = images
    assert image.endswith(f"{IMAGE}:0.1.0") and policy.image_problem(image) is None
    if overlay == "production":
        assert image.startswith("registry.example.com/")
    # the K8sRunLauncher's job_image (env DAGSTER_K8S_JOB_IMAGE) is the overlay's image
    assert trading_env(objs)["DAGSTER_K8S_JOB_IMAGE"] == image


# -- Dagster ----------------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_dagster_webserver_and_daemon_launch_runs_as_pods(rendered, overlay: str) -> None:
    objs = rendered[overlay]
    deps = by_kind(objs, "Deployment")
    assert container(deps["dagster-webserver"])["args"][0] == "dagster-webserver"
    assert container(deps["dagster-daemon"])["args"][:2] == ["dagster-daemon", "run"]
    assert deps["dagster-daemon"]["spec"]["replicas"] == 1
    assert deps["dagster-daemon"]["spec"]["strategy"]["type"] == "Recreate", "never two daemons at once"
    for name in ("dagster-webserver", "dagster-daemon"):
        spec = deps[name]["spec"]["template"]["spec"]
        assert spec["serviceAccountName"] == "dagster"
        env = {e["name"]: e for e in container(deps[name]).get("env", [])}
        assert env["DAGSTER_K8S_JOB_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    role = by_kind(objs, "Role")["dagster-run-launcher"]
    jobs_rule = next(r for r in role["rules"] if "jobs" in r["resources"])
    assert {"create", "delete", "get", "list", "watch"} <= set(jobs_rule["verbs"])
    binding = by_kind(objs, "RoleBinding")["dagster-run-launcher"]
    assert {"kind": "ServiceAccount", "name": "dagster", "namespace": "trading"} in binding["subjects"]
    assert by_kind(objs, "ConfigMap")["dagster-instance"]["metadata"]["name"] == "dagster-instance", \
        "the run launcher names the instance ConfigMap: no hash suffix"


def instance_config(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return yaml.safe_load(by_kind(objs, "ConfigMap")["dagster-instance"]["data"]["dagster.yaml"])


def test_instance_config_validates_against_dagsters_schema(rendered, tmp_path: Path) -> None:
    from dagster._core.instance.config import dagster_instance_config

    (tmp_path / "dagster.yaml").write_text(by_kind(rendered["local"], "ConfigMap")["dagster-instance"]["data"]["dagster.yaml"])
    cfg, _ = dagster_instance_config(str(tmp_path))
    assert cfg["run_launcher"]["class"] == "K8sRunLauncher"
    assert cfg["concurrency"]["pools"]["default_limit"] == 1, "the duckdb_writer pool stays at one slot"
    # same shape as deploy/dagster-k8s.yaml, the documented reference
    ref = yaml.safe_load((PROJECT_DIR / "deploy" / "dagster-k8s.yaml").read_text())
    assert cfg["run_launcher"]["module"] == ref["run_launcher"]["module"]
    assert cfg["run_launcher"]["config"]["env_config_maps"] == ref["run_launcher"]["config"]["env_config_maps"]
    assert cfg["run_launcher"]["config"]["env_secrets"] == ref["run_launcher"]["config"]["env_secrets"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_run_pods_built_by_dagster_k8s_are_valid_and_locked_down(rendered, overlay: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The Job the K8sRunLauncher would submit for a run, built by dagster-k8s' own code from
    the rendered instance config and environment: schema-valid, non-root, resources set, and
    every volume and env source it names exists in the same render."""
    from dagster import DagsterRun
    from dagster._config import process_config
    from dagster_k8s import K8sRunLauncher
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import construct_dagster_k8s_job
    from kubernetes.client import ApiClient

    objs = rendered[overlay]
    env = trading_env(objs)
    monkeypatch.setenv("DAGSTER_K8S_JOB_IMAGE", env["DAGSTER_K8S_JOB_IMAGE"])
    monkeypatch.setenv("DAGSTER_K8S_JOB_NAMESPACE", "trading")
    raw = instance_config(objs)["run_launcher"]["config"]
    result = process_config(K8sRunLauncher.config_type(), raw)
    assert result.success, [e.message for e in result.errors or []]
    # outside a cluster: a kubeconfig that is only parsed (nothing connects to it)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "t",
        "clusters": [{"name": "t", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "t", "user": {"token": "unused"}}],
        "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}],
    }))
    launcher = K8sRunLauncher.from_config_value(
        None, {**result.value, "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)})
    ctx = K8sContainerContext.create_for_run(DagsterRun(job_name="ingest_daily", run_id="0" * 36), launcher,
                                             include_run_tags=True)
    job_config = ctx.get_k8s_job_config(job_image=None, run_launcher=launcher)
    job = construct_dagster_k8s_job(job_config, args=["dagster", "api", "execute_run", "{}"],
                                    job_name="dagster-run-0000", user_defined_k8s_config=ctx.run_k8s_config,
                                    component="run_worker")
    manifest = ApiClient().sanitize_for_serialization(job)
    manifest["metadata"]["namespace"] = "trading"

    for version in K8S_VERSIONS:
        assert schema_errors(manifest, version) == []
    # dbt writes target/ inside the image's project at every build: the run container's root
    # stays writable, everything else is as strict as the long-running containers
    assert policy.check_security(manifest, read_only_root=False) == []
    assert policy.check_resources(manifest) == policy.check_images(manifest) == []
    assert policy.check_plaintext_secrets(manifest) == []
    assert policy.check_references([manifest, *objs], external={"trading-secrets"}) == []
    spec = manifest["spec"]["template"]["spec"]
    run = spec["containers"][0]
    assert run["image"] == env["DAGSTER_K8S_JOB_IMAGE"]
    assert {"configMapRef": {"name": "trading-env"}} in run["envFrom"]
    assert {"secretRef": {"name": "trading-secrets"}} in run["envFrom"]
    assert {m["mountPath"] for m in run["volumeMounts"]} >= {"/data", "/etc/dagster", "/tmp"}
    assert spec["serviceAccountName"] == "dagster-run" and spec["automountServiceAccountToken"] is False
    assert manifest["spec"]["backoffLimit"] == 0, "a failed run is retried by Dagster, not by Kubernetes"


# -- Postgres, the warehouse, settings --------------------------------------------------------

def test_local_runs_postgres_as_a_statefulset_with_its_own_volume(rendered) -> None:
    objs = rendered["local"]
    sts = by_kind(objs, "StatefulSet")["postgres"]
    svc = by_kind(objs, "Service")["postgres"]
    assert svc["spec"]["clusterIP"] == "None" and sts["spec"]["serviceName"] == "postgres"
    assert svc["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    pg = container(sts)
    assert pg["image"].startswith("postgres:16.") and policy.image_problem(pg["image"]) is None
    pw = next(e for e in pg["env"] if e["name"] == "POSTGRES_PASSWORD")
    assert pw["valueFrom"]["secretKeyRef"] == {"name": "trading-secrets", "key": "PGPASSWORD"}
    init = by_kind(objs, "ConfigMap")["postgres-init"]["data"]["10-databases.sql"]
    env = trading_env(objs)
    for db in ("dagster", "warehouse"):  # the ops store's `trading` is POSTGRES_DB
        assert f"CREATE DATABASE {db};" in init
    assert env["DAGSTER_POSTGRES_DB"] == "dagster" and "dbname=warehouse" in env["TRADING_WAREHOUSE"]
    assert env["TRADING_OPS_URL"].endswith("@postgres:5432/trading")
    # the lake's Parquet files on the shared volume every pod mounts at /data
    assert env["TRADING_WAREHOUSE_DATA_PATH"].startswith("/data/")
    assert by_kind(objs, "PersistentVolumeClaim")["trading-data"]["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_production_uses_an_external_database_and_an_object_store(rendered) -> None:
    objs = rendered["production"]
    assert by_kind(objs, "StatefulSet") == {}
    assert "postgres" not in by_kind(objs, "Service") and "postgres-init" not in by_kind(objs, "ConfigMap")
    assert by_kind(objs, "Secret") == {}, "production's Secret is created outside the repo"
    env = trading_env(objs)
    assert env["TRADING_WAREHOUSE_DATA_PATH"].startswith("s3://")
    assert env["TRADING_WAREHOUSE"].startswith("ducklake:postgres:")
    for key in ("TRADING_OPS_URL", "TRADING_WAREHOUSE", "DAGSTER_POSTGRES_HOST"):
        assert "postgres:" not in env[key].replace("ducklake:postgres:", "").replace("postgresql+psycopg:", "")
        assert "db.internal.example" in env[key]
    assert by_kind(objs, "PersistentVolumeClaim")["trading-data"]["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_trading_env_uses_real_setting_names_and_parses(rendered, overlay: str) -> None:
    env = trading_env(rendered[overlay])
    fields = set(Settings.model_fields)
    unknown = [k for k in env if k.startswith("TRADING_") and k.removeprefix("TRADING_").lower() not in fields]
    assert unknown == []
    settings = Settings(_env_file=None, **{k.removeprefix("TRADING_").lower(): v for k, v in env.items()
                                           if k.startswith("TRADING_")})
    assert str(settings.warehouse_path).startswith("ducklake:postgres:")
    assert settings.warehouse_data_path == env["TRADING_WAREHOUSE_DATA_PATH"]
    assert settings.ops_store_url.startswith("postgresql+psycopg://trading@")
    assert str(settings.home) == "/data" and str(settings.dagster_yaml) == "/etc/dagster/dagster.yaml"


# -- secrets ----------------------------------------------------------------------------------

def test_local_secret_comes_from_the_git_ignored_file(rendered, local_tree, tmp_path: Path) -> None:
    _, password = local_tree
    secret = by_kind(rendered["local"], "Secret")["trading-secrets"]
    assert base64.b64decode(secret["data"]["PGPASSWORD"]).decode() == password
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/k8s/overlays/local/secrets.env"], cwd=PROJECT_DIR)
    assert ignored.returncode == 0, "secrets.env must be git-ignored"
    # without the file, kustomize stops before producing anything, naming the file
    bare = tmp_path / "k8s"
    shutil.copytree(K8S_DIR, bare, ignore=shutil.ignore_patterns("secrets.env"))
    with pytest.raises(RenderError, match="secrets.env"):
        render(bare / "overlays" / "local")


def test_repo_holds_no_secret_values() -> None:
    tracked = subprocess.run(["git", "ls-files", "--others", "--cached", "--exclude-standard", "deploy/k8s"],
                             cwd=PROJECT_DIR, capture_output=True, text=True, check=True).stdout.split()
    assert tracked, "deploy/k8s has no files"
    assert not [f for f in tracked if f.endswith("secrets.env")]
    for rel in tracked:
        path = PROJECT_DIR / rel
        if path.suffix in (".yaml", ".yml"):
            for doc in yaml.safe_load_all(path.read_text()):
                if isinstance(doc, dict) and "kind" in doc:
                    assert policy.check_plaintext_secrets(doc) == [], rel
        if path.name.endswith(".env.example"):
            values = [line.split("=", 1)[1] for line in path.read_text().splitlines()
                      if "=" in line and not line.lstrip().startswith("#")]
            assert values and all(v == "" for v in values), f"{rel} must carry names only"


# -- the checks catch bad manifests -----------------------------------------------------------

def _api(rendered) -> dict[str, Any]:
    return copy.deepcopy(by_kind(rendered["production"], "Deployment")["trading-api"])


def _break(rendered, how: str) -> tuple[list[dict[str, Any]], str]:
    """A deliberately bad variant of the render, and the words the problem report must contain."""
    objs = copy.deepcopy(rendered["production"])
    api = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "trading-api")
    c = container(api)
    pod = api["spec"]["template"]["spec"]
    if how == "no_readiness":
        del c["readinessProbe"]
        return objs, "no readinessProbe"
    if how == "no_liveness":
        del c["livenessProbe"]
        return objs, "no livenessProbe"
    if how == "latest":
        c["image"] = "registry.example.com/trading/trading-pipeline:latest"
        return objs, "tagged latest"
    if how == "untagged":
        c["image"] = "registry.example.com:5000/trading/trading-pipeline"
        return objs, "has no tag"
    if how == "no_resources":
        del c["resources"]
        return objs, "resources missing requests.cpu, requests.memory, limits.memory"
    if how == "env_password":
        c["env"] = [{"name": "PGPASSWORD", "value": "hunter2"}]
        return objs, "env PGPASSWORD has a plain value"
    if how == "url_password":
        c["env"] = [{"name": "TRADING_OPS_URL", "value": "postgresql+psycopg://trading:hunter2@db/trading"}]
        return objs, "carries a password"
    if how == "configmap_password":
        trading_env(objs)["TRADING_WAREHOUSE"] = "ducklake:postgres:dbname=w host=db password=hunter2"
        return objs, "carries a password"
    if how == "configmap_key":
        trading_env(objs)["TRADING_ALPACA_SECRET_KEY"] = "abc"
        return objs, "looks like a secret"
    if how == "inline_secret":
        objs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "trading-secrets"},
                     "stringData": {"PGPASSWORD": "hunter2"}})
        return objs, "inline data"
    if how == "root":
        pod["securityContext"]["runAsUser"] = 0
        return objs, "runAsUser is 0"
    if how == "maybe_root":
        del pod["securityContext"]["runAsNonRoot"]
        del c["securityContext"]["runAsNonRoot"]
        return objs, "runAsNonRoot is not true"
    if how == "escalation":
        c["securityContext"]["allowPrivilegeEscalation"] = True
        return objs, "allowPrivilegeEscalation"
    if how == "capabilities":
        c["securityContext"]["capabilities"] = {"add": ["NET_ADMIN"]}
        return objs, "capabilities.drop"
    if how == "writable_root":
        c["securityContext"]["readOnlyRootFilesystem"] = False
        return objs, "readOnlyRootFilesystem"
    if how == "no_tmp":
        c["volumeMounts"] = [m for m in c["volumeMounts"] if m["mountPath"] != "/tmp"]
        return objs, "no volume at /tmp"
    if how == "dangling_ref":
        c["envFrom"].append({"configMapRef": {"name": "tradng-env"}})
        return objs, "ConfigMap/tradng-env"
    raise AssertionError(how)


BREAKS = ["no_readiness", "no_liveness", "latest", "untagged", "no_resources", "env_password", "url_password",
          "configmap_password", "configmap_key", "inline_secret", "root", "maybe_root", "escalation",
          "capabilities", "writable_root", "no_tmp", "dangling_ref"]


@pytest.mark.parametrize("how", BREAKS)
def test_policy_catches_a_bad_manifest(rendered, how: str) -> None:
    objs, expected = _break(rendered, how)
    problems = policy.check_all(objs, external={"trading-secrets"})
    assert problems, f"{how}: not caught"
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(("path", "value", "expected"), [
    (("spec", "replicas"), "two", "'two' is not of type"),
    (("spec", "template", "spec", "containers", 0, "livenesProbe"), {"httpGet": {"path": "/health", "port": 8000}},
     "livenesProbe"),
    (("spec", "template", "spec", "containers", 0, "resources", "limits", "memory"), {"gi": 1}, "memory"),
])
def test_schema_validation_catches_a_bad_object(rendered, path: tuple, value: object, expected: str) -> None:
    bad = _api(rendered)
    node = bad
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    for version in K8S_VERSIONS:
        errors = schema_errors(bad, version)
        assert errors and expected in errors[0], errors


def test_schema_validation_refuses_an_unknown_kind() -> None:
    errors = schema_errors({"apiVersion": "apps/v1", "kind": "Deploymnet", "metadata": {"name": "x"}}, K8S_VERSIONS[0])
    assert errors and "Deploymnet" in errors[0]


# -- the API's probes, run against a real server ----------------------------------------------

def test_api_probes_behave_as_documented_against_a_real_server(rendered, tmp_path: Path) -> None:
    """The rendered probes, run as the kubelet would against a real `trading api`: not Ready
    while /health says 503 (nothing published), Ready once a snapshot is published, alive in
    both states, dead when nothing answers."""
    import httpx

    from tests.api.support import ApiEnv, Server, build_warehouse
    from trading_pipeline.serving.publish import publish_snapshot

    api = container(by_kind(rendered["production"], "Deployment")["trading-api"], "api")
    home = tmp_path / "home"
    home.mkdir()
    settings = Settings(_env_file=None, home=home)
    server = Server(ApiEnv(home, settings, settings.warehouse_path, settings.serving_dir, "", settings.ops_store_url))

    def ready() -> bool:  # httpGet: any status in [200, 400) passes
        get = api["readinessProbe"]["httpGet"]
        assert get["port"] == "http"
        return 200 <= httpx.get(f"{server.url}{get['path']}", timeout=5).status_code < 400

    def alive() -> bool:  # exec: exit status 0 passes; the manifest's port, pointed at this server
        for probe in ("livenessProbe", "startupProbe"):
            command = [a.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}") for a in api[probe]["exec"]["command"]]
            assert command[0] == "python"
            code = subprocess.run([sys.executable, *command[1:]], capture_output=True, timeout=30).returncode
            if code != 0:
                return False
        return True

    try:
        assert not ready() and alive()
        build_warehouse(settings.warehouse_path)
        publish_snapshot(settings.warehouse_path, settings.serving_dir)
        deadline = time.monotonic() + 20
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ready() and alive()
    finally:
        server.stop()
    assert not alive()


# -- the settings reach a password-protected Postgres through PGPASSWORD ----------------------

@pytest.fixture
def password_postgres():
    """A throwaway cluster (tests/pg.py) where role ``trading`` must give its password over TCP,
    with the three databases the local overlay's init script creates."""
    from tests.pg import start_cluster

    try:
        cluster = start_cluster()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    password = secrets.token_hex(16)
    try:
        with cluster.connect() as conn:
            conn.execute(f"CREATE ROLE trading LOGIN PASSWORD '{password}'")
            for db in ("trading", "dagster", "warehouse"):
                conn.execute(f"CREATE DATABASE {db} OWNER trading")
        hba = cluster.datadir / "pg_hba.conf"
        hba.write_text(f"host all trading {cluster.host}/32 scram-sha-256\n" + hba.read_text())
        with cluster.connect() as conn:
            conn.execute("SELECT pg_reload_conf()")
        yield cluster, password
    finally:
        try:
            cluster.stop()
        finally:
            cluster.remove()


def test_local_settings_reach_postgres_with_the_password_only_in_pgpassword(
        rendered, password_postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """trading-env as rendered (host and port pointed at the throwaway server): the ops store,
    the lake catalog and Dagster's storage all log in with PGPASSWORD from the Secret; a wrong
    password is refused with Postgres' own message and nothing is written."""
    import psycopg
    from dagster import DagsterInstance
    from sqlalchemy.exc import OperationalError

    from tests.api.support import daily_bars
    from trading_api.keys import create_key
    from trading_pipeline.marketdata import warehouse as wh
    from trading_pipeline.settings import get_settings
    from trading_pipeline.trading.store import OpsStore

    cluster, password = password_postgres
    env = dict(trading_env(rendered["local"]))
    for key, value in env.items():
        value = value.replace("@postgres:5432/", f"@{cluster.host}:{cluster.port}/")
        value = value.replace("host=postgres port=5432", f"host={cluster.host} port={cluster.port}")
        env[key] = cluster.host if key == "DAGSTER_POSTGRES_HOST" else value
    env.update(TRADING_HOME=str(tmp_path / "home"), TRADING_WAREHOUSE_DATA_PATH=f"{tmp_path / 'lake'}/",
               DAGSTER_HOME=str(tmp_path / "home" / "dagster"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert password not in "".join(env.values())

    monkeypatch.setenv("PGPASSWORD", "wrong-" + password)
    get_settings.cache_clear()
    settings = get_settings()
    with pytest.raises(OperationalError, match="password authentication failed"):
        OpsStore(settings.ops_store_url).close()
    with cluster.connect("trading") as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0

    monkeypatch.setenv("PGPASSWORD", password)
    get_settings.cache_clear()
    try:
        store = OpsStore(settings.ops_store_url)
        try:
            create_key(store, "k8s")
        finally:
            store.close()
        with wh.writer(settings.warehouse_path) as con:  # a new lake: its data path from the setting
            wh.upsert_bars(con, "raw.bars_daily", daily_bars("GOOG", 30), "test")
        con = wh.connect(settings.warehouse_path, read_only=True)
        try:
            assert wh.fetch_one(con, "SELECT count(*) FROM raw.bars_daily")[0] == 30
        finally:
            con.close()
        assert list((tmp_path / "lake").rglob("*.parquet"))
        # Dagster's storage from the instance config, minus the in-cluster-only run launcher
        instance_dir = tmp_path / "home" / "dagster"
        instance_dir.mkdir(parents=True)
        cfg = instance_config(rendered["local"])
        del cfg["run_launcher"]
        cfg["storage"]["postgres"]["postgres_db"]["port"] = cluster.port  # 5432 in the cluster
        (instance_dir / "dagster.yaml").write_text(yaml.safe_dump(cfg))
        with DagsterInstance.from_config(str(instance_dir)) as instance:
            assert instance.get_runs() == []
    finally:
        get_settings.cache_clear()
    with psycopg.connect(f"host={cluster.host} port={cluster.port} user=trading dbname=dagster password={password}") as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'runs'").fetchone()[0] == 1
