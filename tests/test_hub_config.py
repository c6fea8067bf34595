"""The course hub's configuration, without a browser: course/hub/jupyterhub_config.py
(one machine, ``make hub``) and course/hub/k8s/ (Zero to JupyterHub: values.yaml,
the image's Dockerfile). The browser tests run the hub for real; these check the
settings a real class relies on and the browser tests cannot reach (PAM, real
Unix users, the Kubernetes profiles). The image cannot be built here (no Docker
daemon), so its recipe is checked as text."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from traitlets.config.loader import PyFileConfigLoader

ROOT = Path(__file__).resolve().parents[1]
HUB = ROOT / "course" / "hub"


def _load(monkeypatch, tmp_path, **env):
    for name in (
        "GD_HUB_AUTH",
        "GD_HUB_SPAWNER",
        "GD_HUB_STUDENTS",
        "GD_HUB_INSTRUCTORS",
        "GD_COURSE_ROOT",
        "GD_HUB_PORT",
        "GD_HUB_IP",
        "GD_HUB_HOMES",
        "GD_HUB_CHP",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GD_HUB_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("GD_NBGRADER_EXCHANGE", str(tmp_path / "exchange"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return PyFileConfigLoader("jupyterhub_config.py", path=str(HUB)).load_config()


def _spawn(config, user):
    spawner = SimpleNamespace(user=SimpleNamespace(name=user), environment={"KEEP": "1"}, notebook_dir="")
    config.Spawner.pre_spawn_hook(spawner)
    return spawner


def test_class_mode_uses_the_machines_accounts_on_loopback(monkeypatch, tmp_path):
    config = _load(monkeypatch, tmp_path)
    assert config.JupyterHub.authenticator_class == "pam"
    assert config.JupyterHub.spawner_class == "localprocess"
    assert config.JupyterHub.bind_url == "http://127.0.0.1:8000"
    assert config.JupyterHub.hub_ip == "127.0.0.1" and "127.0.0.1" in config.ConfigurableHTTPProxy.api_url
    assert config.Authenticator.admin_users == {"instructor"} and config.Authenticator.allow_all is True
    assert "--allow-root" not in config.Spawner.args  # each server runs as its own user
    assert any("cull_idle_timeout=3600" in arg for arg in config.Spawner.args)
    # the state lives in GD_HUB_STATE, with the per-role configuration readable by every user
    assert config.JupyterHub.db_url == f"sqlite:///{tmp_path / 'state' / 'jupyterhub.sqlite'}"
    shared = tmp_path / "state" / "jupyter"
    assert (shared / "student" / "nbgrader_config.py").stat().st_mode & 0o004
    assert (shared / "share" / "kernels" / "python3" / "kernel.json").exists()
    # the exchange is created world-writable and sticky, as nbgrader documents
    assert (tmp_path / "exchange").stat().st_mode & 0o1777 == 0o1777


def test_roles_get_their_own_jupyter_configuration(monkeypatch, tmp_path):
    config = _load(
        monkeypatch,
        tmp_path,
        GD_HUB_INSTRUCTORS="prof,ta",
        GD_HUB_STUDENTS="alice,bob",
        GD_COURSE_ROOT=str(tmp_path / "course-root"),
    )
    assert config.Authenticator.allowed_users == {"prof", "ta", "alice", "bob"}
    shared = tmp_path / "state" / "jupyter"

    instructor = _spawn(config, "ta")
    env = instructor.environment
    assert env["KEEP"] == "1"  # the spawner's own environment is kept
    assert env["GD_COURSE_ROOT"] == str(tmp_path / "course-root")
    assert env["JUPYTER_CONFIG_PATH"].split(":")[0] == str(tmp_path / "course-root" / "course")
    assert instructor.notebook_dir == str(tmp_path / "course-root")  # formgrader needs the course inside the root
    assert env["GD_NBGRADER_EXCHANGE"] == str(tmp_path / "exchange")
    assert env["GD_STUDENT_ID"] == ""  # real Unix users: nbgrader takes the account's name

    student = _spawn(config, "alice")
    env = student.environment
    assert "GD_COURSE_ROOT" not in env and student.notebook_dir == ""
    assert env["JUPYTER_CONFIG_PATH"] == str(shared / "student")
    assert env["JUPYTER_PATH"] == str(shared / "share")


def test_trial_mode_runs_everyone_under_one_account_with_shared_passwords(monkeypatch, tmp_path):
    config = _load(
        monkeypatch,
        tmp_path,
        GD_HUB_AUTH="shared-password",
        GD_HUB_SPAWNER="simple",
        GD_HUB_PASSWORD="student-pw",
        GD_HUB_ADMIN_PASSWORD="x" * 32,
        GD_HUB_PORT="18000",
    )
    assert config.JupyterHub.authenticator_class == "shared-password"
    assert config.SharedPasswordAuthenticator.user_password == "student-pw"
    assert config.JupyterHub.spawner_class == "simple"
    assert config.SimpleLocalProcessSpawner.home_dir_template == str(tmp_path / "state" / "home" / "{username}")
    assert config.JupyterHub.bind_url == "http://127.0.0.1:18000"
    # one Unix account for everybody: nbgrader is told the hub user's name
    assert _spawn(config, "alice").environment["GD_STUDENT_ID"] == "alice"


def _nbgrader_config(path: Path, monkeypatch, **env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return PyFileConfigLoader(path.name, path=str(path.parent)).load_config()


def test_students_and_the_course_share_course_id_and_exchange(monkeypatch, tmp_path):
    monkeypatch.setenv("GD_NBGRADER_EXCHANGE", str(tmp_path / "x"))
    student = _nbgrader_config(HUB / "jupyter" / "student" / "nbgrader_config.py", monkeypatch, GD_STUDENT_ID="alice")
    course = _nbgrader_config(ROOT / "course" / "nbgrader_config.py", monkeypatch)
    assert student.CourseDirectory.course_id == course.CourseDirectory.course_id == "guided-descent"
    assert student.Exchange.root == course.Exchange.root == str(tmp_path / "x")
    assert student.CourseDirectory.student_id == "alice"
    monkeypatch.delenv("GD_NBGRADER_EXCHANGE")
    monkeypatch.delenv("GD_STUDENT_ID")
    student = _nbgrader_config(HUB / "jupyter" / "student" / "nbgrader_config.py", monkeypatch)
    assert student.Exchange.root == "/srv/nbgrader/exchange" and "student_id" not in student.CourseDirectory


def test_students_have_no_formgrader():
    server = json.loads((HUB / "jupyter" / "student" / "jupyter_server_config.json").read_text())
    assert server["ServerApp"]["jpserver_extensions"]["nbgrader.server_extensions.formgrader"] is False
    page = json.loads((HUB / "jupyter" / "student" / "labconfig" / "page_config.json").read_text())
    assert page["disabledExtensions"]["@jupyter/nbgrader:formgrader"] is True


def test_kernels_gpu_by_default_and_a_cpu_one_in_quick_mode():
    kernels = HUB / "jupyter" / "share" / "kernels"
    gpu = json.loads((kernels / "python3" / "kernel.json").read_text())
    cpu = json.loads((kernels / "python3-cpu" / "kernel.json").read_text())
    assert gpu["argv"][0] == cpu["argv"][0] == "python"  # jupyter_client runs its own interpreter
    assert "CUDA_VISIBLE_DEVICES" not in gpu.get("env", {})
    assert cpu["env"] == {"CUDA_VISIBLE_DEVICES": "", "GD_DEVICE": "cpu", "GD_QUICK": "1"}


@pytest.fixture(scope="module")
def values():
    return yaml.safe_load((HUB / "k8s" / "values.yaml").read_text())


def test_values_have_a_cpu_and_a_gpu_profile(values):
    profiles = {p["slug"]: p for p in values["singleuser"]["profileList"]}
    assert set(profiles) == {"cpu", "gpu"}
    assert profiles["cpu"].get("default") is True
    assert "nvidia.com/gpu" not in profiles["cpu"]["kubespawner_override"].get("extra_resource_limits", {})
    gpu = profiles["gpu"]["kubespawner_override"]
    assert int(gpu["extra_resource_limits"]["nvidia.com/gpu"]) == 1
    # the GPU profile gets more memory, which also bounds its in-memory /dev/shm
    assert int(gpu["mem_limit"].rstrip("G")) > int(profiles["cpu"]["kubespawner_override"]["mem_limit"].rstrip("G"))


def test_values_mount_a_large_shm_and_the_exchange_and_cull_idle_servers(values):
    storage = values["singleuser"]["storage"]
    volumes = {v["name"]: v for v in storage["extraVolumes"]}
    mounts = {m["mountPath"]: m["name"] for m in storage["extraVolumeMounts"]}
    shm = volumes[mounts["/dev/shm"]]["emptyDir"]
    assert shm["medium"] == "Memory" and int(shm["sizeLimit"].rstrip("Gi")) >= 1
    exchange = volumes[mounts["/srv/nbgrader/exchange"]]
    pvc = yaml.safe_load((HUB / "k8s" / "exchange-pvc.yaml").read_text())
    assert exchange["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert values["cull"]["enabled"] is True and 0 < values["cull"]["timeout"] <= 4 * 3600


def test_values_hub_hook_compiles_and_sets_roles(values):
    code = values["hub"]["extraConfig"]["guided-descent-roles"]
    config = SimpleNamespace(
        Authenticator=SimpleNamespace(admin_users=values["hub"]["config"]["Authenticator"]["admin_users"]),
        KubeSpawner=SimpleNamespace(),
    )
    exec(compile(code, "values.yaml:extraConfig", "exec"), {"c": config})
    hook = config.KubeSpawner.pre_spawn_hook
    teacher = SimpleNamespace(user=SimpleNamespace(name="instructor"), environment={}, user_options={"profile": "gpu"})
    hook(teacher)
    assert teacher.environment["GD_COURSE_ROOT"] == "/home/jovyan/guided-descent"
    assert teacher.environment["GD_QUICK"] == "0"
    student = SimpleNamespace(user=SimpleNamespace(name="alice"), environment={}, user_options={})
    hook(student)
    assert student.environment["JUPYTER_CONFIG_PATH"].endswith("/student")
    assert student.environment["GD_QUICK"] == "1" and "GD_COURSE_ROOT" not in student.environment


def test_image_recipe_installs_environment_yml_and_never_the_solutions():
    recipe = (HUB / "k8s" / "Dockerfile").read_text()
    copies = [line.split()[1:-1] for line in recipe.splitlines() if line.startswith("COPY")]
    sources = [source for sources in copies for source in sources]
    assert "environment.yml" in sources
    assert not any(
        source.rstrip("/") in {".", "solutions", "course"} or source.startswith("solutions") for source in sources
    )
    assert re.search(r"mamba env update .*--file environment\.yml", recipe)
    image = yaml.safe_load((HUB / "k8s" / "values.yaml").read_text())["singleuser"]["image"]
    assert image["name"] and image["tag"]
