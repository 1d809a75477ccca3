"""Running a command on several processes with PyTorch's launcher::

    torchrun --nproc_per_node 2 -m darknet_prn detect CFG WEIGHTS DIR --json out.json

torchrun sets ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT``; :func:`init` joins the process group
(gloo: CPU, any machine), the command shards its inputs with :func:`shard`, and rank 0 merges the parts.
Without those variables everything here is a no-op for one process."""
from __future__ import annotations

import os


class World:
    """This process's place in the run: ``rank``, ``size``; ``active`` when a process group was joined."""

    def __init__(self):
        self.rank, self.size, self.active = 0, 1, False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list) -> list:
        """``(index, item)`` pairs of this rank: every ``size``-th item from ``rank`` (round robin keeps the
        shards even when big inputs cluster)."""
        return [(i, it) for i, it in enumerate(items) if i % self.size == self.rank]

    def gather(self, obj) -> list | None:
        """Every rank's ``obj`` on rank 0 (in rank order), ``None`` elsewhere."""
        if not self.active:
            return [obj]
        import torch.distributed as dist
        out = [None] * self.size if self.main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        import torch.distributed as dist
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self):
        if self.active:
            import torch.distributed as dist
            dist.destroy_process_group()
            self.active = False


def init() -> World:
    """Joins the torchrun process group when the environment has one of more than one process."""
    w = World()
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return w
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    w.rank, w.size, w.active = dist.get_rank(), dist.get_world_size(), True
    return w
