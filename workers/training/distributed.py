"""Fine-tuning on several devices of one machine with torch.distributed.

The job's own process is rank 0: it keeps the job context (events, checkpoints, cancel checks,
compute metering). `launch()` starts ranks 1..N-1 as subprocesses (`python -m
workers.training.distributed <spec> <rank>`), which build the same model and examples from a spec
file, join the process group (NCCL on CUDA, one device per rank; gloo on CPU) over a local TCP
rendezvous, and train their share of every step under DistributedDataParallel. Subprocesses, not
multiprocessing: a Celery pool process is a daemon and may not fork children of its own."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

RENDEZVOUS_TIMEOUT_SECONDS = 300


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    # No buffer broadcast: rank 0 evaluates alone, and a forward pass must not wait for the others.
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   broadcast_buffers=False)


def init_group(*, rank: int, world_size: int, port: int, device: torch.device) -> None:
    from datetime import timedelta

    import torch.distributed as dist

    dist.init_process_group(backend_for(device), init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size, timeout=timedelta(seconds=RENDEZVOUS_TIMEOUT_SECONDS))


class Launch:
    """Ranks 1..N-1, started: `finish()` waits for them and checks their final weights."""

    def __init__(self, *, workdir: Path, processes: list[subprocess.Popen], port: int, world_size: int):
        self.workdir = workdir
        self.processes = processes
        self.port = port
        self.world_size = world_size

    def finish(self, *, own_digest: str, timeout: float = 120) -> dict[str, Any]:
        for process in self.processes:
            code = process.wait(timeout=timeout)
            if code != 0:
                log = (self.workdir / f"rank-{self.processes.index(process) + 1}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"rank {self.processes.index(process) + 1} exited with {code}: {log}")
        digests = [own_digest] + [json.loads((self.workdir / f"rank-{rank}.json").read_text())["digest"]
                                  for rank in range(1, self.world_size)]
        return {"world_size": self.world_size, "ranks_in_sync": len(set(digests)) == 1}

    def abort(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


def launch(*, world_size: int, device: torch.device, spec: dict[str, Any], resume_bytes: bytes | None) -> Launch:
    if device.type == "cuda" and torch.cuda.device_count() < world_size:
        raise RuntimeError(f"the job asks for {world_size} GPUs; this worker has {torch.cuda.device_count()}")
    workdir = Path(tempfile.mkdtemp(prefix="lode-ddp-"))
    port = free_port()
    if resume_bytes is not None:
        (workdir / "resume.pt").write_bytes(resume_bytes)
    (workdir / "spec.json").write_text(json.dumps({**spec, "port": port, "world_size": world_size,
                                                   "resume": resume_bytes is not None}), encoding="utf-8")
    processes = []
    for rank in range(1, world_size):
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "workers.training.distributed", str(workdir), str(rank)],
            stdout=open(workdir / f"rank-{rank}.log", "wb"), stderr=subprocess.STDOUT, env=dict(os.environ),
        ))
    return Launch(workdir=workdir, processes=processes, port=port, world_size=world_size)


class _Silent:
    """A rank other than 0 reports nothing: rank 0 speaks for the job."""

    def metrics(self, values): ...

    def evaluation(self, values): ...

    def checkpoint(self, step, data, summary): ...

    def progress(self, fraction, message): ...

    def check_cancelled(self): ...


def _rank_main(workdir: Path, rank: int) -> int:
    import django

    django.setup()
    import torch.distributed as dist

    from . import loop
    from .finetune import _seed_everything, build_text_runner

    spec = json.loads((workdir / "spec.json").read_text(encoding="utf-8"))
    device = torch.device(f"cuda:{rank}") if spec["device"] == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    hp = spec["hyperparameters"]
    _seed_everything(hp["seed"])
    built = build_text_runner(task=spec["task"], method=spec["method"], folder=Path(spec["folder"]), hp=hp, device=device,
                              train_rows=spec["train_rows"], validation_rows=spec["validation_rows"])
    init_group(rank=rank, world_size=spec["world_size"], port=spec["port"], device=device)
    try:
        runner = built.runner
        runner.model = wrap(runner.model, device)
        resume = loop.checkpoint_load((workdir / "resume.pt").read_bytes()) if spec["resume"] else None
        try:
            loop.train(runner, hp, _Silent(), resume=resume, distributed=loop.Distributed(rank=rank, world_size=spec["world_size"]))
        except loop._Stop:
            return 0
        (workdir / f"rank-{rank}.json").write_text(json.dumps({"digest": loop.state_digest(runner.trainable_state())}))
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(_rank_main(Path(sys.argv[1]), int(sys.argv[2])))
