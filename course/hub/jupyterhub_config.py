"""JupyterHub configuration of the Guided Descent course, for one (GPU) machine.

``make hub`` starts JupyterHub with this file. Everything a deployment
changes is an environment variable (the Makefile passes its ``HUB_*``
variables through), so the same file serves a real class and the browser tests:

===========================  ==============================  =====================================
variable                     default                         what it sets
===========================  ==============================  =====================================
``GD_HUB_IP``                ``127.0.0.1``                   address the proxy listens on (loopback:
                                                             put a TLS reverse proxy in front of it)
``GD_HUB_PORT``              ``8000``                        the public port
``GD_HUB_API_PORT``          ``8001``                        the proxy's REST API (loopback)
``GD_HUB_INTERNAL_PORT``     ``8081``                        the hub itself (loopback)
``GD_HUB_STATE``             ``/srv/jupyterhub``             database, cookie secret, proxy pid,
                                                             the per-role Jupyter configuration
``GD_HUB_AUTH``              ``pam``                         ``pam`` (the machine's Unix accounts)
                                                             or ``shared-password`` (trials, tests)
``GD_HUB_PASSWORD``          --                              shared-password: the students' password
``GD_HUB_ADMIN_PASSWORD``    --                              shared-password: the instructors'
                                                             password (32 characters or more)
``GD_HUB_SPAWNER``           ``local``                       ``local``: each user's server runs as
                                                             that Unix user; ``simple``: all run as
                                                             the hub's account (trials, tests only:
                                                             no isolation between users)
``GD_HUB_HOMES``             ``<state>/home``                simple spawner: the users' home folders
``GD_HUB_INSTRUCTORS``       ``instructor``                  comma-separated: hub admins, formgrader
``GD_HUB_STUDENTS``          (anyone who can log in)         comma-separated allow-list of students
``GD_COURSE_ROOT``           this repository                 the nbgrader course root (solutions/,
                                                             assignments/, course/)
``GD_NBGRADER_EXCHANGE``     ``/srv/nbgrader/exchange``      nbgrader's exchange folder
``GD_HUB_CHP``               ``.hub/node_modules/.bin/...``  configurable-http-proxy executable
``GD_HUB_IDLE_TIMEOUT``      ``3600``                        seconds before an idle kernel (and its
                                                             GPU memory) is shut down
===========================  ==============================  =====================================

Roles: instructors get a server rooted at the course root with nbgrader's
formgrader (release, collect, autograde through :mod:`autograder`, feedback);
students get the assignment list (fetch, validate, submit, fetch feedback)
and no formgrader. Every server has two kernels: ``Python 3 (GPU)`` (the
default; CUDA when the machine has it) and ``Python 3 (CPU, quick mode)``.
"""

import os
import shutil
import stat
import sys
from pathlib import Path

c = get_config()  # noqa: F821 - provided by traitlets when it loads this file

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def _env(name, default=""):
    value = os.environ.get(name, "")
    return value if value else default


def _names(value):
    return {name.strip() for name in value.split(",") if name.strip()}


STATE = Path(_env("GD_HUB_STATE", "/srv/jupyterhub")).resolve()
COURSE_ROOT = Path(_env("GD_COURSE_ROOT", str(REPO))).resolve()
EXCHANGE = Path(_env("GD_NBGRADER_EXCHANGE", "/srv/nbgrader/exchange"))
AUTH = _env("GD_HUB_AUTH", "pam")
SPAWNER = _env("GD_HUB_SPAWNER", "local")
INSTRUCTORS = _names(_env("GD_HUB_INSTRUCTORS", "instructor"))
STUDENTS = _names(_env("GD_HUB_STUDENTS"))
IDLE_TIMEOUT = int(_env("GD_HUB_IDLE_TIMEOUT", "3600"))

# --- network: the proxy on loopback by default, the hub and the proxy API on loopback always ---
c.JupyterHub.bind_url = f"http://{_env('GD_HUB_IP', '127.0.0.1')}:{_env('GD_HUB_PORT', '8000')}"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(_env("GD_HUB_INTERNAL_PORT", "8081"))
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{_env('GD_HUB_API_PORT', '8001')}"
_chp = REPO / ".hub" / "node_modules" / ".bin" / "configurable-http-proxy"
c.ConfigurableHTTPProxy.command = [_env("GD_HUB_CHP", str(_chp) if _chp.exists() else "configurable-http-proxy")]

# --- state: the database, the cookie secret and the proxy's pid file ---
STATE.mkdir(parents=True, exist_ok=True)
c.JupyterHub.db_url = f"sqlite:///{STATE / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(STATE / "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.pid_file = str(STATE / "jupyterhub-proxy.pid")

# --- authentication and the class list ---
c.Authenticator.admin_users = INSTRUCTORS
if STUDENTS:
    c.Authenticator.allowed_users = STUDENTS | INSTRUCTORS
else:
    c.Authenticator.allow_all = True  # every account that can log in (pam: the machine's users) is a student
if AUTH == "pam":
    c.JupyterHub.authenticator_class = "pam"
elif AUTH == "shared-password":
    c.JupyterHub.authenticator_class = "shared-password"
    c.SharedPasswordAuthenticator.user_password = _env("GD_HUB_PASSWORD") or None
    c.SharedPasswordAuthenticator.admin_password = _env("GD_HUB_ADMIN_PASSWORD") or None
else:
    c.JupyterHub.authenticator_class = AUTH  # any other authenticator, by entry-point name or import path

# --- the per-role Jupyter configuration, copied where every user can read it ---
# (the course root holds solutions/ and must stay private to the instructors)
JUPYTER = STATE / "jupyter"
shutil.copytree(HERE / "jupyter", JUPYTER, dirs_exist_ok=True)
for folder, _, files in os.walk(JUPYTER):
    os.chmod(folder, 0o755)
    for name in files:
        os.chmod(os.path.join(folder, name), 0o644)
os.chmod(STATE, 0o755)

# --- nbgrader's exchange: world-writable with the sticky bit, as nbgrader documents ---
if not EXCHANGE.exists():
    EXCHANGE.mkdir(parents=True)
    os.chmod(EXCHANGE, 0o777 | stat.S_ISVTX)

# --- the single-user servers ---
c.Spawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]
c.Spawner.default_url = "/lab"
c.Spawner.http_timeout = 120  # a loaded machine may take a while to start JupyterLab
c.Spawner.start_timeout = 180
# LocalProcessSpawner's own list, plus the course's switches (quick mode, device) for trials and tests
c.LocalProcessSpawner.env_keep = [
    "CONDA_DEFAULT_ENV",
    "CONDA_ROOT",
    "JUPYTERHUB_SINGLEUSER_APP",
    "LANG",
    "LC_ALL",
    "LD_LIBRARY_PATH",
    "PATH",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "GD_QUICK",
    "GD_DEVICE",
    "CUDA_VISIBLE_DEVICES",
]
c.Spawner.args = [
    f"--MappingKernelManager.cull_idle_timeout={IDLE_TIMEOUT}",
    "--MappingKernelManager.cull_interval=300",
]
if SPAWNER == "simple":
    c.JupyterHub.spawner_class = "simple"
    c.SimpleLocalProcessSpawner.home_dir_template = str(Path(_env("GD_HUB_HOMES", str(STATE / "home"))) / "{username}")
    if os.geteuid() == 0:
        c.Spawner.args.append("--allow-root")  # the simple spawner runs every server as the hub's account
else:
    c.JupyterHub.spawner_class = "localprocess"


def role(username):
    """'instructor' or 'student'."""
    return "instructor" if username in INSTRUCTORS else "student"


def course_environment(spawner):
    """Per-role settings of a user's server: where its Jupyter and nbgrader configuration live."""
    name = spawner.user.name
    env = {
        "GD_NBGRADER_EXCHANGE": str(EXCHANGE),
        "JUPYTER_PATH": str(JUPYTER / "share"),  # the two kernels
        "GD_HUB_ROLE": role(name),
        # the simple spawner runs everybody under one Unix account: nbgrader must not
        # take the account's name for the student's
        "GD_STUDENT_ID": name if SPAWNER == "simple" else "",
    }
    if role(name) == "instructor":
        # course/nbgrader_config.py (the course, the autograder) for formgrader; the server opens at the course root
        env["GD_COURSE_ROOT"] = str(COURSE_ROOT)
        env["JUPYTER_CONFIG_PATH"] = os.pathsep.join([str(COURSE_ROOT / "course"), str(JUPYTER / "instructor")])
        spawner.notebook_dir = str(COURSE_ROOT)
    else:
        env["JUPYTER_CONFIG_PATH"] = str(JUPYTER / "student")
    spawner.environment = {**spawner.environment, **env}


c.Spawner.pre_spawn_hook = course_environment
