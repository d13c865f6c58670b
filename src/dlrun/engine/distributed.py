"""Data-parallel training under torchrun or srun: one process per device, rank 0 writes.

``torchrun --nproc_per_node=N -m dlrun.train ...`` starts N copies of dlrun with
RANK/WORLD_SIZE/LOCAL_RANK set; inside a SLURM job step (``srun -n N dlrun ...``)
``adopt_slurm`` sets the same variables from SLURM's own. Every rank holds the whole data set on its
device and trains on its shard of each global batch (``dataset.batch_size`` is
the global batch); DistributedDataParallel averages the gradients. Evaluation
splits each data set across the ranks and sums their totals. Only rank 0
writes the run directory, whose path it broadcasts; the others run Hydra in a
throw-away directory (``hydra_overrides``).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    # -- collectives (no-ops in a single process) ----------------------------------
    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean of ``tensor`` over ranks (a new tensor)."""
        if not self.enabled:
            return tensor
        out = tensor.clone()
        torch_dist.all_reduce(out)
        return out / self.world

    def sum(self, totals: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each of ``totals`` summed over ranks, in one all-reduce (float64: counts stay exact)."""
        if not self.enabled:
            return totals
        parts = [torch.as_tensor(t) for t in totals.values()]
        flat = torch.cat([t.reshape(-1).to(_collective_device(), torch.float64) for t in parts])
        torch_dist.all_reduce(flat)
        out = flat.split([t.numel() for t in parts])
        return {
            name: o.reshape(t.shape).to(t.device, t.dtype) for name, o, t in zip(totals, out, parts)
        }

    def max(self, value: int) -> int:
        """The largest of the ranks' ``value``."""
        if not self.enabled:
            return value
        t = torch.tensor([value], device=_collective_device())
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
        return int(t)

    @contextlib.contextmanager
    def main_first(self):
        """Rank 0 runs the block first (e.g. fills the data cache), then the others."""
        if self.enabled and not self.main:
            torch_dist.barrier()
        yield
        if self.enabled and self.main:
            torch_dist.barrier()

    def rows(self, n: int) -> range:
        """This rank's contiguous part of ``n`` rows: evaluation splits a data set this way."""
        return range(n * self.rank // self.world, n * (self.rank + 1) // self.world)

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's part of a global batch of indices (sizes differ by at most one)."""
        return idx.tensor_split(self.world)[self.rank] if self.enabled else idx


SINGLE = Dist()


def _collective_device() -> torch.device:
    if torch_dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def adopt_slurm(env=os.environ) -> None:
    """Inside a SLURM job step of several tasks (``srun -n N dlrun ...``) and not under
    torchrun: set torchrun's variables from SLURM's, so that every rank finds its rank,
    the world size, its local rank and the rendezvous (the step's first node, a port
    derived from the job and step ids). A batch script itself (one process, even with
    ``--ntasks`` above one) is no step and is left alone."""
    tasks = env.get("SLURM_STEP_NUM_TASKS")
    if "WORLD_SIZE" in env or not tasks or int(tasks) <= 1 or "SLURM_PROCID" not in env:
        return
    env["WORLD_SIZE"] = tasks
    env["RANK"] = env["SLURM_PROCID"]
    env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
    env.setdefault("MASTER_ADDR", _first_host(env.get("SLURM_STEP_NODELIST", "localhost")))
    job, step = int(env.get("SLURM_JOB_ID", "0")), int(env.get("SLURM_STEP_ID", "0") or 0)
    env.setdefault("MASTER_PORT", str(20000 + (job * 7 + step) % 20000))


def launcher() -> str:
    """What started this process's ranks: torchrun (its elastic agent says so) or srun."""
    return "torchrun" if "TORCHELASTIC_RUN_ID" in os.environ else "srun"


def _first_host(nodelist: str) -> str:
    """The first host of a SLURM node list such as ``gpu[03-05,09],cpu1``."""
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True
        )
        if out.returncode == 0 and out.stdout.split():
            return out.stdout.split()[0]
    except OSError:  # no scontrol on this node: read the list's first entry ourselves
        pass
    match = re.match(r"([^,\[]+)(?:\[(\d+))?", nodelist)
    return match.group(1) + (match.group(2) or "") if match else nodelist


def from_env() -> Dist:
    """The torchrun rank of this process, or a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    return Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(dist: Dist, device: torch.device) -> None:
    """Join the process group: NCCL between GPUs, gloo on CPU."""
    if dist.enabled and not torch_dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch_dist.init_process_group(backend, rank=dist.rank, world_size=dist.world)


def shutdown(dist: Dist) -> None:
    if dist.enabled and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()


def hydra_overrides(scratch: str) -> list[str]:
    """Overrides for ranks other than 0: their Hydra writes into ``scratch``, not outputs/."""
    return [
        f"hydra.run.dir={scratch}",
        "hydra.output_subdir=null",
        "hydra.job_logging.root.level=WARNING",
    ]
