"""What every benchmark in bench/ shares: logging, percentiles, free ports, and the project's own
processes (infra/web.sh, infra/worker.sh) started in their own process groups and stopped with them."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

class BenchError(RuntimeError):
    pass


def log(message: str = "") -> None:
    print(message, flush=True)


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- processes ------------------------------------------------------------------------------------


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log_path: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """Stops the process group the service was started in (bash exec's into gunicorn/celery;
        their children share the group)."""
        if self.proc.poll() is not None:
            return
        pgid = self.proc.pid  # started with start_new_session=True: its own process group
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # Children of the group that outlived the leader (prefork children, gunicorn workers).
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_service(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Service:
    log_path = log_dir / f"{name}.log"
    handle = open(log_path, "wb")
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    handle.close()
    return Service(name=name, proc=proc, log_path=log_path)


def migrate() -> None:
    log("migrating the dev database (manage.py migrate --database owner) ...")
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--database", "owner", "--noinput", "-v", "0"],
        cwd=ROOT, capture_output=True, text=True,
    )
    if done.returncode != 0:
        raise BenchError(f"migrate failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")


def wait_web(service: Service, base_url: str, timeout: float = 120.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.alive():
            raise BenchError(f"the web server exited (code {service.proc.returncode}):\n{tail(service.log_path)}")
        try:
            if requests.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise BenchError(f"the web server did not answer /healthz in {timeout:.0f}s:\n{tail(service.log_path)}")


def run_cli(name: str, run, args, *, interrupted: str = "interrupted; processes stopped") -> int:
    """Runs a benchmark's `run(args)` with SIGTERM and Ctrl-C stopping it cleanly (its `finally`
    blocks stop the processes it started); returns the exit status."""

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C raises KeyboardInterrupt even when started in the background (SIGINT inherited ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        run(args)
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"{name} benchmark failed: {exc}", file=sys.stderr)
        return 1
    return 0


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a benchmark's child interpreter: the checkout and platform/ on its path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), str(ROOT / "platform"), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


def child_result(script: str, mode: str, spec: dict, *, mark: str, env: dict[str, str], timeout: float) -> dict:
    """Runs `script --child mode SPEC` in a fresh interpreter (so its peak RSS is its own) and
    returns the JSON it printed after `mark`; a failure or a timeout raises BenchError with its output."""
    try:
        done = subprocess.run([sys.executable, script, "--child", mode, json.dumps(spec)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"the {mode} process ran past {timeout:.0f} s and was killed") from None
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(mark):
            if done.returncode == 0:
                return json.loads(line[len(mark):])
            break
    output = (done.stdout + done.stderr)[-4000:]
    raise BenchError(f"the {mode} process failed (exit {done.returncode}):\n{output}")
