"""docker-compose.yml, the Dockerfile, the entrypoint and deploy/*.yaml, checked without a
Docker engine: every command resolves to an installed entry point, the services share one
TRADING_HOME volume, env names match Settings, instance configs validate with Dagster."""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trading_pipeline.settings import PROJECT_DIR, Settings

COMPOSE = yaml.safe_load((PROJECT_DIR / "docker-compose.yml").read_text())
DOCKERFILE = (PROJECT_DIR / "Dockerfile").read_text()
ENTRYPOINT = PROJECT_DIR / "scripts" / "docker-entrypoint.sh"
APP_SERVICES = ("dagster-webserver", "dagster-daemon", "api")
VENV_BIN = Path(sys.executable).parent
# TRADING_* variables that are not Settings fields, and who reads them
NON_SETTINGS_ENV: dict[str, str] = {}  # TRADING_DAGSTER_YAML is read by the entrypoint and by Settings
_VAR = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's ${VAR:-default} with an empty shell environment (the defaults)."""
    env = env or {}
    return _VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)


def service_env(name: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """The container's environment; a key without a value passes the shell's through, if set."""
    raw = COMPOSE["services"][name].get("environment", {})
    out = {}
    for k, v in raw.items():
        if v is None:
            if (env or {}).get(k):
                out[k] = env[k]
        else:
            out[k] = interpolate(str(v), env)
    return out


def console_scripts() -> dict[str, str]:
    return {ep.name: ep.value for ep in md.entry_points(group="console_scripts")}


def test_services_are_those_of_make_up_plus_the_proxy_and_optional_postgres() -> None:
    assert set(COMPOSE["services"]) == {*APP_SERVICES, "proxy", "postgres"}
    assert COMPOSE["services"]["postgres"]["profiles"] == ["postgres"]
    for name in (*APP_SERVICES, "proxy"):
        assert "profiles" not in COMPOSE["services"][name], f"{name} must start by default"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_command_is_an_installed_entry_point(name: str) -> None:
    svc = COMPOSE["services"][name]
    command = svc["command"]
    exe = command[0]
    scripts = console_scripts()
    assert exe in scripts, f"{exe} is not a console script of any installed distribution"
    assert (VENV_BIN / exe).exists(), f"{exe} missing from the venv's bin"
    module, _, attr = scripts[exe].partition(":")
    target = __import__(module, fromlist=["_"])
    for part in attr.split("."):
        target = getattr(target, part)
    assert callable(target)
    # the options the command passes exist (--help parses them without starting anything)
    help_cmd = [str(VENV_BIN / exe), *[a for a in command[1:] if not a.startswith("-") and "." not in a and not a.isdigit()][:1], "--help"]
    out = subprocess.run(help_cmd, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"})
    assert out.returncode == 0, out.stderr[-2000:]
    for flag in (a for a in command[1:] if a.startswith("-")):
        assert flag in out.stdout, f"{' '.join(help_cmd)} does not list {flag}"
    if "-w" in command:
        assert (PROJECT_DIR / command[command.index("-w") + 1]).exists()


def test_healthchecks_are_valid_python_and_processes_get_an_init() -> None:
    for name in APP_SERVICES:
        svc = COMPOSE["services"][name]
        assert svc["init"] is True and svc["stop_signal"] == "SIGINT"
        hc = svc.get("healthcheck")
        if hc:
            assert hc["test"][:3] == ["CMD", "python", "-c"]
            compile(hc["test"][3], f"{name}-healthcheck", "exec")


def test_app_services_share_the_trading_home_volume_and_dagster_home() -> None:
    assert "trading-home" in COMPOSE["volumes"]
    for name in APP_SERVICES:
        svc = COMPOSE["services"][name]
        assert "trading-home:/data" in svc["volumes"], name
        env = service_env(name)
        assert env["TRADING_HOME"] == "/data"
        assert env["DAGSTER_HOME"] == "/data/dagster"  # = Settings(home=/data).dagster_home
        assert svc["entrypoint"] == ["/app/scripts/docker-entrypoint.sh"]
    assert str(Settings(home=Path("/data")).dagster_home) == "/data/dagster"
    # the UI has no login: published on loopback only; the proxy too unless PROXY_BIND says otherwise
    for name in ("dagster-webserver", "proxy"):
        for port in COMPOSE["services"][name]["ports"]:
            assert interpolate(port).startswith("127.0.0.1:"), port
    # the API publishes no host port (clients go through the proxy), so `--scale api=3` works
    assert "ports" not in COMPOSE["services"]["api"]


def test_trading_env_names_are_settings_fields() -> None:
    fields = set(Settings.model_fields)
    for name in APP_SERVICES:
        for key in COMPOSE["services"][name]["environment"]:
            if not key.startswith("TRADING_") or key in NON_SETTINGS_ENV:
                continue
            field = key.removeprefix("TRADING_").lower()
            assert field in fields, f"{name}: {key} is not a Settings field"


def test_postgres_profile_switches_dagster_storage_and_the_ops_store() -> None:
    pg = COMPOSE["services"]["postgres"]
    shell = {
        "TRADING_DAGSTER_YAML": "/app/deploy/dagster-postgres.yaml",
        "TRADING_OPS_URL": "postgresql+psycopg://trading:trading@postgres:5432/trading",
    }
    env = service_env("api", shell)
    # the instance config the entrypoint will copy exists in the image (deploy/ is copied)
    rel = env["TRADING_DAGSTER_YAML"].removeprefix("/app/")
    assert (PROJECT_DIR / rel).exists() and "COPY deploy ./deploy" in DOCKERFILE
    # the ops store URL is what Settings reads and points at the postgres service's database
    s = Settings(home=Path("/data"), ops_url=env["TRADING_OPS_URL"])
    import sqlalchemy as sa

    url = sa.engine.make_url(s.ops_store_url)
    assert url.drivername == "postgresql+psycopg" and url.host == "postgres"
    assert url.database == interpolate(pg["environment"]["POSTGRES_DB"])
    assert url.username == interpolate(pg["environment"]["POSTGRES_USER"])
    # the env vars deploy/dagster-postgres.yaml reads are all set on the app services, and
    # their defaults name the postgres service and the database its init script creates
    pg_yaml = yaml.safe_load((PROJECT_DIR / "deploy/dagster-postgres.yaml").read_text())
    wanted = {v["env"] for v in pg_yaml["storage"]["postgres"]["postgres_db"].values() if isinstance(v, dict)}
    assert wanted <= set(env)
    assert env["DAGSTER_POSTGRES_HOST"] == "postgres"
    assert env["DAGSTER_POSTGRES_USER"] == interpolate(pg["environment"]["POSTGRES_USER"])
    assert env["DAGSTER_POSTGRES_PASSWORD"] == interpolate(pg["environment"]["POSTGRES_PASSWORD"])
    init = COMPOSE["configs"][pg["configs"][0]["source"]]["content"]
    assert f"CREATE DATABASE {env['DAGSTER_POSTGRES_DB']};" in init
    assert pg["configs"][0]["target"].startswith("/docker-entrypoint-initdb.d/")
    # without the profile the same services fall back to the embedded defaults
    default = service_env("api")
    assert "TRADING_OPS_URL" not in default and default["TRADING_DAGSTER_YAML"] == "/app/dagster.yaml"
    assert "TRADING_OPS_URL" in COMPOSE["services"]["api"]["environment"]  # declared, passed through when set
    assert Settings(home=Path("/data")).ops_store_url == "sqlite:////data/ops.sqlite"
    for name in APP_SERVICES:
        dep = COMPOSE["services"][name]["depends_on"]["postgres"]
        assert dep == {"condition": "service_healthy", "required": False}


def test_dockerfile_shape() -> None:
    lines = [ln.strip() for ln in DOCKERFILE.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    assert any(re.match(r'RUN pip install .*"?uv', ln) for ln in lines)
    syncs = [ln for ln in lines if "uv sync" in ln]
    assert syncs and all("--frozen" in ln and "--no-build" in ln for ln in syncs)
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert "TRADING_HOME=/data" in DOCKERFILE and "DAGSTER_HOME=/data/dagster" in DOCKERFILE
    assert 'ENTRYPOINT ["/app/scripts/docker-entrypoint.sh"]' in lines
    # every COPY source exists in the repo
    for ln in lines:
        if ln.startswith("COPY "):
            for src in ln.split()[1:-1]:
                assert (PROJECT_DIR / src).exists(), f"Dockerfile copies missing {src}"
    # the files the running services need are in the image
    copied = " ".join(ln for ln in lines if ln.startswith("COPY "))
    for needed in ("trading_pipeline", "trading_api", "dbt_project", "workspace.yaml", "dagster.yaml", "rules.yaml", "risk.yaml", "scripts"):
        assert needed in copied, needed
    assert os.access(ENTRYPOINT, os.X_OK)


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX shell")
def test_entrypoint_prepares_dagster_home_and_execs_the_command(tmp_path: Path) -> None:
    home = tmp_path / "data"
    env = {"PATH": os.environ["PATH"], "TRADING_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
           "TRADING_DAGSTER_YAML": str(PROJECT_DIR / "dagster.yaml")}
    out = subprocess.run([str(ENTRYPOINT), "sh", "-c", 'echo "ran with $DAGSTER_HOME"'], env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert f"ran with {home / 'dagster'}" in out.stdout
    assert (home / "dagster" / "dagster.yaml").read_text() == (PROJECT_DIR / "dagster.yaml").read_text()
    assert (home / "serving").is_dir()
    # the instance it prepared loads (what dagster-webserver and dagster-daemon will do)
    import dagster as dg

    inst = dg.DagsterInstance.from_config(str(home / "dagster"))
    try:
        assert "Sqlite" in type(inst.run_storage).__name__  # the embedded default
    finally:
        inst.dispose()
    bad = subprocess.run([str(ENTRYPOINT), "true"], env={**env, "TRADING_DAGSTER_YAML": str(tmp_path / "nope.yaml")},
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "no Dagster instance config" in bad.stderr


@pytest.mark.parametrize("path", ["dagster.yaml", "deploy/dagster-postgres.yaml", "deploy/dagster-k8s.yaml", "deploy/dagster-docker.yaml"])
def test_instance_configs_validate_against_dagsters_schema(path: str, tmp_path: Path) -> None:
    from dagster._core.instance.config import dagster_instance_config

    shutil.copy(PROJECT_DIR / path, tmp_path / "dagster.yaml")
    cfg, _cls = dagster_instance_config(str(tmp_path))  # raises DagsterInvalidConfigError if malformed
    assert cfg["concurrency"]["pools"]["default_limit"] == 1, "the duckdb_writer pool must stay at one slot"
    if path != "dagster.yaml":
        assert set(cfg["storage"]["postgres"]["postgres_db"]) >= {"username", "password", "hostname", "db_name"}


@pytest.mark.parametrize(("path", "module", "cls", "install"), [
    # dagster-k8s is the `k8s` dependency group (the cluster image; dev installs it for tests/deploy)
    ("deploy/dagster-k8s.yaml", "dagster_k8s", "K8sRunLauncher", "--group k8s"),
    ("deploy/dagster-docker.yaml", "dagster_docker", "DockerRunLauncher", "NOT installed here"),
])
def test_run_launchers_name_the_optional_packages(path: str, module: str, cls: str, install: str) -> None:
    text = (PROJECT_DIR / path).read_text()
    cfg = yaml.safe_load(text)
    assert cfg["run_launcher"]["module"] == module and cfg["run_launcher"]["class"] == cls
    package = module.replace("_", "-")
    assert package in text and install in text  # the file says how the package gets installed
    try:
        mod = __import__(module)
    except ImportError:
        return  # optional package absent (as documented): the shape above is all we can check
    assert hasattr(mod, cls)


def test_proxy_renders_the_one_nginx_config_for_every_api_replica() -> None:
    """The `proxy` service: a pinned nginx image that renders deploy/proxy/nginx.conf (the file
    tests/ops/test_proxy.py runs) with a value for every placeholder, re-resolving the `api`
    service's replicas through Docker's DNS, with the certificate folder of
    scripts/make-local-cert.sh (git-ignored)."""
    proxy = COMPOSE["services"]["proxy"]
    m = re.fullmatch(r"nginx:(\d+)\.(\d+)\.(\d+)-alpine", proxy["image"])
    assert m, f"pin the nginx image to a full version, not {proxy['image']}"
    assert tuple(map(int, m.groups())) >= (1, 27, 3), "`server ... resolve` needs nginx >= 1.27.3"
    env = {k: interpolate(str(v)) for k, v in proxy["environment"].items()}
    assert env["NGINX_ENVSUBST_OUTPUT_DIR"] == "/etc/nginx" and env["NGINX_ENVSUBST_FILTER"] == "^PROXY_"
    template = PROJECT_DIR / "deploy/proxy/nginx.conf"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in proxy["volumes"] if isinstance(v, str)}
    assert mounts["/etc/nginx/templates/nginx.conf.template"] == "./deploy/proxy/nginx.conf"
    used = set(re.findall(r"\$\{(PROXY_[A-Z0-9_]+)\}", template.read_text()))
    given = {k for k in env if k.startswith("PROXY_")}
    assert used == given, f"placeholders without a value: {used - given}; values for nothing: {given - used}"
    # every replica of the api service, on the port its command listens on, found again as they scale
    api_cmd = COMPOSE["services"]["api"]["command"]
    assert env["PROXY_UPSTREAM_SERVERS"] == f"server api:{api_cmd[api_cmd.index('--port') + 1]} resolve;"
    assert env["PROXY_RESOLVER"] == "127.0.0.11"
    assert proxy["depends_on"] == {"api": {"condition": "service_healthy"}}
    # uvicorn believes the proxy's X-Forwarded-* (its address on the compose network varies)
    assert COMPOSE["services"]["api"]["environment"]["FORWARDED_ALLOW_IPS"] == "*"
    # listens where compose publishes, and redirects http to the published https port
    published = {p.rsplit(":", 1)[1]: interpolate(p).rsplit(":", 2)[1] for p in proxy["ports"]}
    assert set(published) == {env["PROXY_HTTP_LISTEN"], env["PROXY_HTTPS_LISTEN"]}
    assert env["PROXY_PUBLIC_HTTPS_PORT"] == published[env["PROXY_HTTPS_LISTEN"]]
    # the certificate folder: the script's default output, git-ignored, mounted read-only,
    # and never created empty by compose (nginx would then fail with a less helpful message)
    certs = next(v for v in proxy["volumes"] if isinstance(v, dict))
    assert certs["source"] == "./deploy/proxy/certs" and certs["target"] == env["PROXY_CERT_DIR"]
    assert certs["read_only"] is True and certs["bind"]["create_host_path"] is False
    assert "deploy/proxy/certs/" in (PROJECT_DIR / ".gitignore").read_text().splitlines()
    assert "deploy/proxy/certs" in (PROJECT_DIR / "scripts/make-local-cert.sh").read_text()
