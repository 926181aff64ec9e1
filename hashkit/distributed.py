"""Data-parallel work on several processes started by torchrun: the process group, each rank's
share of a batch, the global batch of embeddings (with gradients) and batch norm over it.

Training on N ranks is built so that one step equals one process's step on the concatenated
batch (tests/test_distributed.py checks loss and gradients to 1e-5 with 2 gloo ranks):

- every rank draws the same global batches (the class-balanced sampler is seeded, not random
  per process) and takes its own contiguous slice of each (``rank_share``), so the ranks never
  see the same item in one step;
- the in-batch triplets span the global batch: ``gather_batch`` concatenates every rank's
  embeddings in rank order with ``torch.distributed.nn.functional.all_gather``, whose
  backward sends each rank the gradients of its own rows, summed over the ranks;
- batch norm uses the statistics of the global batch: torch's ``SyncBatchNorm`` on GPUs, and
  on CPUs (where torch's refuses to run) ``GlobalBatchNorm`` below, the same sums through the
  differentiable all-reduce;
- every rank computes the same loss of the global batch; DistributedDataParallel averages the
  parameters' gradients over the ranks, which undoes the sum above.

The process group comes from torchrun's environment (gloo on CPU, NCCL when each rank has a
GPU); without ``WORLD_SIZE`` > 1 nothing here is used and training runs as one process.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

from hashkit.errors import HashkitError


def launched_by_torchrun() -> bool:
    """Whether this process is one of several ranks started by torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextlib.contextmanager
def process_group():
    """The default process group from torchrun's environment, set up and torn down here
    (or the one already set up); yields ``(rank, world size)``."""
    import torch
    import torch.distributed as dist

    own = not dist.is_initialized()
    if own:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    try:
        yield dist.get_rank(), dist.get_world_size()
        if own:
            # Every rank finished its work: tear the group down together, so that no rank
            # exits while a peer's transport threads still talk to it (a rank failing skips
            # this, and torchrun stops the others).
            dist.barrier()
    finally:
        if own:
            dist.destroy_process_group()


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of the default process group, ``(0, 1)`` without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(n: int, rank: int, world: int) -> np.ndarray:
    """Positions ``0..n-1`` of rank ``rank``'s share: contiguous, in order, sizes differing by
    at most one, so that the shares of ranks 0..world-1 concatenate to ``0..n-1``."""
    return np.array_split(np.arange(n, dtype=np.int64), world)[rank]


class RankShare:
    """The batches of ``batch_sampler`` cut to rank ``rank``'s slice: of each global batch of
    ``B`` positions, the ``B / world`` at ``rank``'s place (``B`` a multiple of ``world``, so
    that the ranks' embeddings can be gathered). Passes ``state_dict``/``load_state_dict`` on
    to the sampler."""

    def __init__(self, batch_sampler, rank: int, world: int) -> None:
        self.batch_sampler = batch_sampler
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self):
        for batch in self.batch_sampler:
            batch = np.asarray(batch)
            if len(batch) % self.world:
                raise HashkitError(
                    f"a batch of {len(batch)} cannot be split evenly over {self.world} "
                    "processes; choose a batch size that is a multiple of the process count"
                )
            yield batch[shard(len(batch), self.rank, self.world)]

    def state_dict(self) -> dict:
        return self.batch_sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.batch_sampler.load_state_dict(state)


def gather_batch(x):
    """The global batch: every rank's ``x`` (the same shape on each) concatenated in rank
    order along dimension 0. Gradients flow back to each rank's own rows (summed over the
    ranks that computed a loss of the result). ``x`` itself with one process."""
    rank, world = rank_and_world()
    if world == 1:
        return x
    import torch

    with _public_autograd_collectives():
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(x.contiguous()), dim=0)


def gather_labels(y):
    """Every rank's labels ``y`` concatenated in rank order (no gradients)."""
    rank, world = rank_and_world()
    if world == 1:
        return y
    import torch
    import torch.distributed as dist

    parts = [torch.empty_like(y) for _ in range(world)]
    dist.all_gather(parts, y.contiguous())
    return torch.cat(parts, dim=0)


def _all_reduce_sum(t):
    with _public_autograd_collectives():
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(t)


@contextlib.contextmanager
def _public_autograd_collectives():
    """torch.distributed.nn's differentiable collectives without their FutureWarning: the
    replacement it names (torch.distributed._functional_collectives) is a private module."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed")
        warnings.filterwarnings("ignore", message=".*torch.distributed.nn.functional.*")
        yield


def global_batch_norm_class():
    """``GlobalBatchNorm``, defined on first use so that importing this module needs no torch."""
    global _GLOBAL_BATCH_NORM
    if _GLOBAL_BATCH_NORM is not None:
        return _GLOBAL_BATCH_NORM
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm

    class GlobalBatchNorm(_BatchNorm):
        """Batch norm (1-D or 2-D) whose training statistics are those of the global batch
        of every rank: the mean, then the mean squared deviation, each from sums all-reduced
        through ``torch.distributed.nn`` (differentiable), as one process computes them on the
        concatenated batch. Evaluation uses the running statistics, like BatchNorm. Written
        for CPUs, where torch's SyncBatchNorm refuses to run; the parameters and buffers are
        BatchNorm's, so a state dict moves between the two unchanged."""

        def _check_input_dim(self, input):
            if input.dim() not in (2, 4):
                raise ValueError(f"expected 2-D or 4-D input (got {input.dim()}-D input)")

        def forward(self, x):
            if not self.training:
                return super().forward(x)
            dims = [0, *range(2, x.dim())]
            shape = [1, -1] + [1] * (x.dim() - 2)
            local = torch.tensor([x.numel() // x.shape[1]], dtype=x.dtype, device=x.device)
            total = _all_reduce_sum(torch.cat([x.sum(dims), local]))
            n = total[-1]
            mean = total[:-1] / n
            centred = x - mean.reshape(shape)
            var = _all_reduce_sum((centred * centred).sum(dims)) / n
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum
                if m is None:
                    m = 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                unbiased = var.detach() * (n / max(float(n) - 1, 1.0))
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
            y = centred * torch.rsqrt(var + self.eps).reshape(shape)
            if self.affine:
                y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
            return y

    _GLOBAL_BATCH_NORM = GlobalBatchNorm
    return GlobalBatchNorm


_GLOBAL_BATCH_NORM = None


def sync_batch_norms(net, device) -> None:
    """Replace every batch norm in ``net`` by one over the global batch (SyncBatchNorm on a
    GPU, GlobalBatchNorm on a CPU). The new modules hold the very parameter and buffer
    tensors of the old ones, so an optimiser built before still updates them, and
    ``restore_batch_norms`` puts plain batch norms back with the state they reached."""
    import torch

    gpu = torch.device(device).type == "cuda"
    cls = torch.nn.SyncBatchNorm if gpu else global_batch_norm_class()
    _replace_batch_norms(net, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d), lambda _: cls)


def restore_batch_norms(net) -> None:
    """Put back the plain batch norms that ``sync_batch_norms`` replaced, holding the same
    tensors."""
    import torch

    kinds = (torch.nn.SyncBatchNorm, global_batch_norm_class())
    _replace_batch_norms(net, kinds, lambda old: old.plain_class)


def plain_copy(net):
    """A copy of ``net`` with plain batch norms, e.g. for inference (torch.fx cannot trace the
    global batch norm's all-reduce)."""
    import copy

    twin = copy.deepcopy(net)
    restore_batch_norms(twin)
    return twin


def _replace_batch_norms(net, kinds, new_class) -> None:
    for parent in list(net.modules()):
        for name, old in list(parent.named_children()):
            if not isinstance(old, kinds):
                continue
            new = new_class(old)(
                old.num_features,
                eps=old.eps,
                momentum=old.momentum,
                affine=old.affine,
                track_running_stats=old.track_running_stats,
            )
            for key in ("weight", "bias"):
                setattr(new, key, getattr(old, key))
            for key in ("running_mean", "running_var", "num_batches_tracked"):
                setattr(new, key, getattr(old, key))
            new.plain_class = getattr(old, "plain_class", type(old))
            new.train(old.training)
            setattr(parent, name, new)


def broadcast_object(obj, src: int = 0):
    """``obj`` of rank ``src`` on every rank (``obj`` itself with one process)."""
    rank, world = rank_and_world()
    if world == 1:
        return obj
    import torch.distributed as dist

    box = [obj if rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj) -> list:
    """Every rank's ``obj`` in rank order, on every rank (``[obj]`` with one process)."""
    rank, world = rank_and_world()
    if world == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * world
    dist.all_gather_object(out, obj)
    return out
