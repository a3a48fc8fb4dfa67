"""The processes of one ``torchrun`` / ``accelerate launch`` that train a generator together.

``python -m benchmark generate`` under a launcher with ``WORLD_SIZE`` > 1 joins the process
group at once (:meth:`Ranks.join`, accelerate's ``PartialState``) and hands the
:class:`Ranks` to the stage store (:class:`benchmark.stages.StageStore`): the main process
(rank 0) decides whether a stage exists and computes it alone, and every other rank takes
its answer by broadcast, except for a collective stage (the generator's training, data
parallel through DDP) that all ranks compute while only the main one writes it. No rank
waits on a file lock: only the main process takes them.

Nothing here runs, and torch is not imported, in a plain single-process run.
"""

from __future__ import annotations

import os
from typing import Any


def world_size() -> int:
    """Processes of this launch: the launcher's ``WORLD_SIZE``; 1 when run plainly."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def refuse_several(command: str, why: str) -> None:
    """Stop at once, with ``why``, if ``command`` was started under a multi-process launch."""
    if world_size() > 1:
        raise RuntimeError(
            f"{command} does not run under torchrun / accelerate launch "
            f"(WORLD_SIZE={world_size()}): {why}"
        )


class Ranks:
    """This process's place among the launch's processes; rank 0 is the main one."""

    def __init__(self, index: int, count: int) -> None:
        self.index = index
        self.count = count

    @property
    def is_main(self) -> bool:
        return self.index == 0

    @classmethod
    def join(cls, cpu: bool) -> Ranks:
        """Initialise the process group (gloo with ``cpu``, else the device's backend, NCCL
        on CUDA) as the ``Accelerator`` of the training will find it."""
        from accelerate import PartialState

        state = PartialState(cpu=cpu)
        return cls(state.process_index, state.num_processes)

    def broadcast(self, obj: Any = None) -> Any:
        """The main process's ``obj`` (any picklable object), on every rank; a collective
        every rank must enter. Other ranks' ``obj`` is ignored."""
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def leave(self) -> None:
        """Leave the process group, every rank at the same point: what runs after is each
        process's own (torchmetrics, for one, would sync a metric of the main process's
        with ranks that have gone)."""
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
