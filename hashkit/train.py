"""Training SDSH: a hashing network with a triplet loss over all valid triplets of
class-balanced mini-batches, then the rotation R (random search, ITQ or none), into a bundle.
The baselines (hashkit.methods) train the same way with their own head and loss.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from hashkit.bundle import Bundle
from hashkit.codes import sign_codes
from hashkit.config import TrainConfig
from hashkit.data.base import Dataset
from hashkit.data.protocol import Split
from hashkit.encode import embed_arrays, input_transform, resolve_device
from hashkit.errors import DataError, HashkitError
from hashkit.methods import get_method, make_method_loss
from hashkit.models import HashNet, NetworkConfig, load_pretrained
from hashkit.rotation import ROTATIONS, itq_rotation, random_search_rotation
from hashkit.sampling import ClassBalancedBatchSampler

# tell the augmentation's and the dropout's random streams apart from the others seeded by the
# training seed
AUGMENT_STREAM = 1
DROPOUT_STREAM = 2
VALIDATION_STREAM = 3


def _stream_seed(seed: int, stream: int, rank: int = 0) -> int:
    """A seed of its own for the random stream ``stream`` of rank ``rank`` (rank 0's is the
    one a single process uses)."""
    key = [seed, stream] if rank == 0 else [seed, stream, rank]
    return int(np.random.SeedSequence(key).generate_state(1)[0])


@dataclass
class TrainResult:
    bundle: Bundle
    epoch_losses: list[float] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)


def network_config_for(dataset: Dataset, config: TrainConfig) -> NetworkConfig:
    """Input size and channels from the data (arrays) or the backbone (files); the
    normalisation is filled in by ``train``."""
    if dataset.images is not None:
        channels = 1 if dataset.images.ndim == 3 else 3
        size = config.input_size or dataset.images.shape[1]
    else:
        channels = 3
        size = config.input_size or (32 if config.backbone == "small-cnn" else 224)
    if config.backbone != "small-cnn":
        channels = 3
    return NetworkConfig(
        bits=config.bits,
        backbone=config.backbone,
        input_size=size,
        channels=channels,
        head=get_method(config.method).head,
    )


def _normalisation(dataset: Dataset, indices: np.ndarray, config: TrainConfig, channels: int):
    """ImageNet statistics for pretrained backbones, else the training images' own."""
    if config.pretrained:
        from hashkit.models import IMAGENET_MEAN, IMAGENET_STD

        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    from hashkit.data.torch_images import channel_stats

    mean, std = channel_stats(dataset, indices, channels, max_images=5000, seed=config.seed)
    return list(mean), list(std)


def _training_batches(
    dataset: Dataset,
    indices: np.ndarray,
    net_config: NetworkConfig,
    sampler: ClassBalancedBatchSampler,
    augment: str,
    num_workers: int,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    stream: int = 0,
):
    """The training batches ``(x on device, labels, dataset indices)`` of ``sampler``'s
    batches, each augmented as a whole uint8 batch with draws seeded by ``seed`` (and the
    rank ``stream`` of a data-parallel run, whose ranks each draw their own)."""
    from hashkit.data.batches import TrainingBatches

    # Not manual_seed(seed) itself: torch's global generator, which initialises the weights
    # and draws the dropout masks, is seeded with it too, and the two would share one stream.
    augment_seed = _stream_seed(seed, AUGMENT_STREAM, stream)
    return TrainingBatches(
        dataset,
        indices,
        input_transform(net_config, augment),
        sampler,
        generator=torch.Generator().manual_seed(augment_seed),
        num_workers=num_workers,
        device=device,
    )


def embed_dataset(
    net: HashNet,
    dataset: Dataset,
    indices: np.ndarray,
    device,
    *,
    progress: Callable | None = None,
    num_workers: int = 0,
) -> np.ndarray:
    """float32 ``len(indices) x bits`` embeddings of dataset items."""
    if dataset.images is not None:
        return embed_arrays(net, dataset.images[indices], device=device, progress=progress)
    from hashkit.encode import iter_file_embeddings

    out = np.zeros((len(indices), net.config.bits), dtype=np.float32)
    paths = [dataset.paths[i] for i in indices]
    for pos, h in iter_file_embeddings(
        net, paths, device=device, strict=True, num_workers=num_workers, progress=progress
    ):
        out[pos] = h
    return out


def _search_seed(config: TrainConfig) -> int:
    return config.seed if config.rotation_seed is None else config.rotation_seed


def _rotation_subsets(n: int, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint sorted positions (queries, database) of the training items the rotation search
    scores: up to ``rotation_queries`` (at most a third) and up to ``rotation_database``."""
    rng = np.random.default_rng(_search_seed(config) + 1)
    nq = min(config.rotation_queries, max(1, n // 3))
    order = rng.permutation(n)
    return np.sort(order[:nq]), np.sort(order[nq:][: config.rotation_database])


def learn_rotation(
    h_train: np.ndarray,
    labels_train: np.ndarray,
    config: TrainConfig,
    *,
    progress: Callable | None = None,
) -> tuple[np.ndarray, dict]:
    """R for codes sgn(R h) from training embeddings, and a dict of what the search saw.

    Random search measures mAP of up to ``rotation_queries`` training queries against up to
    ``rotation_database`` other training items (docs/method.md, section 3).
    """
    if config.rotation not in ROTATIONS:
        raise HashkitError(f"unknown rotation {config.rotation!r}; choose one of {ROTATIONS}")
    bits = h_train.shape[1]
    if config.rotation == "none":
        return np.eye(bits, dtype=np.float32), {}
    init = None
    if config.rotation == "itq" or config.rotation_init == "itq":
        init = itq_rotation(h_train, config.itq_iterations, seed=_search_seed(config))
        if config.rotation == "itq":
            return init, {}
    q, db = _rotation_subsets(len(h_train), config)
    result = random_search_rotation(
        h_train[q],
        h_train[db],
        labels_train[q],
        labels_train[db],
        steps=config.rotation_steps,
        init=init,
        seed=_search_seed(config),
        progress=progress,
    )
    return result.rotation, {
        "search_queries": int(len(q)),
        "search_database": int(len(db)),
        "search_map_start": result.initial_map,
        "search_map_end": result.final_map,
        "search_accepted": result.accepted,
    }


def train_network(
    dataset: Dataset,
    indices: np.ndarray,
    config: TrainConfig,
    *,
    progress: Callable | None = None,
    log: Callable[[str], None] | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    epoch_log: str | os.PathLike | None = None,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[HashNet, list[float]]:
    """The hashing network trained on the items ``indices`` (int64) of ``dataset``, in eval
    mode on its device, and the mean loss of each epoch.

    Class-balanced batches, the loss of ``config.method`` (SDSH's: every valid triplet of
    each batch), Adam with a cosine schedule, the augmentation ``config.augment`` (none, crop,
    crop-flip, affine). The recipe and the training set are checked before any work
    (HashkitError); a loss that turns NaN or infinite stops the run. ``progress`` gets one bar
    over every step of every epoch, with the last epoch's loss as its postfix; ``log`` one
    line per epoch.

    Launched by torchrun (a process group is set up), the run is data-parallel
    (:mod:`hashkit.distributed`): each rank trains on its slice of every global batch of
    ``config.batch_size`` and the loss spans the global batch; every rank returns the same
    network. ``checkpoint``: a file written (by rank 0) after every epoch; with ``resume`` the
    run starts from it and ends as the uninterrupted run would. ``epoch_log``: the per-epoch
    CSV (hashkit.epoch_log). ``validation``: ``(query items, database items)`` of ``dataset``
    whose sgn(h) mAP is measured after every epoch (by rank 0) and logged.
    """
    from hashkit import distributed
    from hashkit.checkpoint import load_checkpoint, save_checkpoint, training_identity

    log = log or (lambda _msg: None)
    config.check()
    if dataset.labels is None:
        raise DataError(f"dataset {dataset.name!r} has no labels: supervised training needs them")
    if len(indices) < 2:
        raise DataError("the training split holds fewer than 2 images")
    rank, world = distributed.rank_and_world()
    if config.batch_size % world:
        raise HashkitError(
            f"a batch of {config.batch_size} cannot be split evenly over {world} processes; "
            "choose a batch size that is a multiple of the process count"
        )
    # built first: it refuses a training set whose batches could hold no triplet
    sampler = ClassBalancedBatchSampler(
        dataset.labels[indices], config.batch_size, config.per_class, seed=config.seed
    )
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    if world > 1 and device.type == "cuda":
        # one GPU per process: torchrun's LOCAL_RANK, made current by the process group
        device = torch.device("cuda", torch.cuda.current_device())
    net_config = network_config_for(dataset, config)
    net_config.mean, net_config.std = _normalisation(dataset, indices, config, net_config.channels)
    net = HashNet(net_config)
    if config.pretrained:
        missing = load_pretrained(net, None if config.pretrained == "cache" else config.pretrained)
        log(f"loaded pretrained weights; {len(missing)} tensors left at random init")
    net.to(device)
    # The method decides the loss (and the head, above); a loss may have weights of its own
    # (GreedyHash's classifier), trained with the network but not kept in the bundle. Every
    # rank computes the same loss of the same global batch, so these weights' gradients are
    # already equal on every rank and need no averaging.
    loss_fn = make_method_loss(config, dataset.labels).to(device)
    parameters = [*net.parameters(), *loss_fn.parameters()]
    optimiser = torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, config.epochs))
    batches = _training_batches(
        dataset,
        indices,
        net_config,
        distributed.RankShare(sampler, rank, world) if world > 1 else sampler,
        config.augment,
        config.num_workers,
        seed=config.seed,
        device=device,
        stream=rank,
    )
    if rank > 0:
        # the same weights and loss on every rank (built above from the training seed; DDP
        # also sends rank 0's weights), but dropout masks of its own
        torch.manual_seed(_stream_seed(config.seed, DROPOUT_STREAM, rank))
    identity = training_identity(config.to_dict(), dataset.name, indices, world)
    epoch_losses: list[float] = []
    records: list[dict] = []
    if resume:
        if checkpoint is None:
            raise HashkitError("resume needs the checkpoint file to resume from")
        state = load_checkpoint(checkpoint, identity)
        net.load_state_dict(state["net"])
        loss_fn.load_state_dict(state["loss"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["torch_rng"][rank])
        batches.generator.set_state(state["augment_rng"][rank])
        if device.type == "cuda" and state.get("cuda_rng"):
            torch.cuda.set_rng_state(state["cuda_rng"][rank], device)
        epoch_losses = list(state["epoch_losses"])
        records = list(state["records"])
        log(f"resumed from {checkpoint} after epoch {len(epoch_losses)}/{config.epochs}")
    writer = None
    if epoch_log is not None and rank == 0:
        from hashkit.epoch_log import EpochLog

        writer = EpochLog(epoch_log, records)
    model = net
    if world > 1:
        distributed.sync_batch_norms(net, device)
        gpu = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=gpu)
    first = len(epoch_losses)
    per_epoch = len(sampler)
    # one bar over every step of every epoch left (its ETA covers the whole run); the
    # sampler's len() is exactly the batches it yields, so epochs end on multiples of per_epoch
    steps = (batch for _ in range(first, config.epochs) for batch in batches)
    if progress is not None:
        steps = progress(
            steps, total=(config.epochs - first) * per_epoch, desc="training", unit="step"
        )
    show = getattr(steps, "set_postfix", None)
    started = time.perf_counter() - (records[-1]["seconds"] if records else 0.0)
    total, count = 0.0, 0
    model.train()
    for step, (x, y, _) in enumerate(steps, 1):
        h = distributed.gather_batch(model(x.to(device, non_blocking=True)))
        loss = loss_fn(h, distributed.gather_labels(y.to(device)))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise HashkitError(
                f"training diverged in epoch {len(epoch_losses) + 1} (loss {value}); "
                "lower the learning rate"
            )
        total += value * len(h)
        count += len(h)
        if step % per_epoch:
            continue
        lr = optimiser.param_groups[0]["lr"]
        scheduler.step()
        epoch_losses.append(total / count)
        total, count = 0.0, 0
        epoch = len(epoch_losses)
        record = {
            "epoch": epoch,
            "loss": epoch_losses[-1],
            "lr": lr,
            "seconds": round(time.perf_counter() - started, 3),
            "val_map": None,
        }
        if validation is not None and rank == 0:
            record["val_map"] = _validation_map(net, dataset, validation, config, device)
            model.train()
        records.append(record)
        if checkpoint is not None:
            _save_training_state(
                checkpoint, net, loss_fn, optimiser, scheduler, sampler, batches, identity,
                epoch_losses, records, rank, device, save_checkpoint,
            )  # fmt: skip
        if writer is not None:
            writer.add(record)
        if show is not None:
            show(epoch=f"{epoch}/{config.epochs}", loss=f"{epoch_losses[-1]:.4f}", refresh=False)
        val = "" if record["val_map"] is None else f"  validation mAP {record['val_map']:.4f}"
        log(
            f"epoch {epoch}/{config.epochs}  loss {epoch_losses[-1]:.4f}{val}  "
            f"({record['seconds']:.0f}s)"
        )
    if writer is not None:
        writer.close()
    if world > 1:
        distributed.restore_batch_norms(net)
    net.eval()
    if world > 1:
        _check_ranks_agree(net)
    return net, epoch_losses


def _validation_map(net, dataset, validation, config, device) -> float:
    """mAP of sgn(h) of the validation queries against the validation database."""
    from hashkit import distributed
    from hashkit.metrics import mean_average_precision

    query, database = validation
    _, world = distributed.rank_and_world()
    net = distributed.plain_copy(net) if world > 1 else net
    net.eval()
    with torch.no_grad():
        hq = embed_dataset(net, dataset, query, device, num_workers=config.num_workers)
        hd = embed_dataset(net, dataset, database, device, num_workers=config.num_workers)
    labels = dataset.labels
    return mean_average_precision(
        sign_codes(hq), sign_codes(hd), labels[query], labels[database], config.bits
    )


def _save_training_state(
    path, net, loss_fn, optimiser, scheduler, sampler, batches, identity, epoch_losses,
    records, rank, device, save,
) -> None:  # fmt: skip
    """Rank 0 writes the checkpoint, with every rank's random streams."""
    from hashkit import distributed

    streams = distributed.gather_objects(
        (
            torch.get_rng_state(),
            batches.generator.get_state(),
            torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        )
    )
    if rank != 0:
        return
    save(
        path,
        {
            "identity": identity,
            "net": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "loss": loss_fn.state_dict(),
            "optimiser": optimiser.state_dict(),
            "scheduler": scheduler.state_dict(),
            "sampler": sampler.state_dict(),
            "torch_rng": [s[0] for s in streams],
            "augment_rng": [s[1] for s in streams],
            "cuda_rng": [s[2] for s in streams] if device.type == "cuda" else [],
            "epoch_losses": list(epoch_losses),
            "records": list(records),
        },
    )


def _check_ranks_agree(net: HashNet) -> None:
    """HashkitError unless every rank ends with the same weights (DDP keeps them equal)."""
    from hashkit import distributed

    total = sum(float(v.double().sum()) for v in net.state_dict().values() if v.is_floating_point())
    sums = distributed.gather_objects(total)
    if any(abs(s - sums[0]) > 1e-6 * max(1.0, abs(sums[0])) for s in sums):
        raise HashkitError(f"the processes ended with different networks (weight sums {sums})")


def train(
    dataset: Dataset,
    split: Split,
    config: TrainConfig,
    *,
    progress: Callable | None = None,
    log: Callable[[str], None] | None = None,
    evaluate: bool = True,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    epoch_log: str | os.PathLike | None = None,
) -> TrainResult:
    """Train a hashing network on ``split.train`` and learn its rotation.

    ``log`` receives one line per epoch and per stage; ``progress`` is a tqdm-like factory.
    With ``evaluate`` the mAP of sgn(h) and of sgn(R h) is measured (whole database, ties by
    database order) twice: on the training set (the rotation's own queries vs database, or
    training vs training when there is no search) and query vs database; both are stored in
    the bundle's metrics as ``train_map_sign``, ``train_map_rotated``, ``map_sign`` and
    ``map_rotated``, with the query mAP@k of the protocol (``top_k``: 5,000 for multi-label
    data, else 1,000) as ``map_at_k_sign`` and ``map_at_k_rotated``.

    ``config.val_images`` > 0 holds that many training images out of training, as validation
    queries against the other training images (their mAP is logged after every epoch).
    ``checkpoint``, ``resume`` and ``epoch_log``: see ``train_network``. Launched by torchrun,
    every rank trains; rank 0 alone learns the rotation and evaluates, and every rank returns
    its bundle.
    """
    from hashkit import distributed

    log = log or (lambda _msg: None)
    started = time.perf_counter()
    train_items, validation = split.train, None
    if config.val_images:
        train_items, validation = validation_items(dataset, split.train, config)
        log(
            f"validation: {len(validation[0])} of the training images, against "
            f"{len(validation[1])} others; training on {len(train_items)}"
        )
    net, epoch_losses = train_network(
        dataset,
        train_items,
        config,
        progress=progress,
        log=log,
        checkpoint=checkpoint,
        resume=resume,
        epoch_log=epoch_log,
        validation=validation,
    )
    rank, _ = distributed.rank_and_world()
    outcome = None
    if rank == 0:
        try:
            outcome = ("", *_rotation_and_metrics(
                net, dataset, split, train_items, config, progress, log, evaluate, started
            ))  # fmt: skip
        except HashkitError as exc:
            outcome = (str(exc), None, None)
        finally:
            outcome = distributed.broadcast_object(outcome)
    else:
        outcome = distributed.broadcast_object(outcome)
    if outcome is None:
        raise HashkitError("the process of rank 0 failed after training (see its error)")
    error, rotation, metrics = outcome
    if error:
        raise HashkitError(error)
    bundle = Bundle(
        network=net.config,
        state_dict={k: v.detach().cpu() for k, v in net.state_dict().items()},
        rotation=rotation,
        train_config={
            **config.to_dict(),
            "dataset": dataset.name,
            "protocol": split.protocol,
            "split_seed": split.seed,
            "unseen_classes": split.unseen_classes,
        },
        class_names=list(dataset.class_names),
        metrics=metrics,
    )
    return TrainResult(bundle=bundle, epoch_losses=epoch_losses, metrics=metrics)


def validation_items(
    dataset: Dataset, train: np.ndarray, config: TrainConfig
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """``(training items left, (validation queries, validation database))``: ``val_images``
    of ``train`` drawn with the training seed (sorted), and as their database the other
    training items (up to ``rotation_database`` of them)."""
    if config.val_images >= len(train) - 1:
        raise DataError(
            f"{config.val_images} validation images leave too few of the {len(train)} training "
            "images to train on"
        )
    rng = np.random.default_rng([config.seed, VALIDATION_STREAM])
    order = rng.permutation(len(train))
    queries = np.sort(train[order[: config.val_images]])
    rest = np.sort(train[order[config.val_images :]])
    database = rest
    if len(rest) > config.rotation_database:
        database = np.sort(rng.choice(rest, config.rotation_database, replace=False))
    return rest, (queries, database)


def _rotation_and_metrics(
    net, dataset, split, train_items, config, progress, log, evaluate, started
):
    """The rotation learned on the training items and the metrics ``train`` documents."""
    from hashkit.metrics import evaluate_retrieval, mean_average_precision, protocol_top_k

    device = next(net.parameters()).device
    h_train = embed_dataset(
        net, dataset, train_items, device, progress=progress, num_workers=config.num_workers
    )
    labels_train = dataset.labels[train_items]
    log(f"learning the rotation ({config.rotation})")
    rotation, search_info = learn_rotation(h_train, labels_train, config, progress=progress)
    metrics = {"train_seconds": time.perf_counter() - started, **search_info}
    if evaluate:
        q, db = _rotation_subsets(len(h_train), config)
        for name, rot in (("sign", None), ("rotated", rotation)):
            metrics[f"train_map_{name}"] = mean_average_precision(
                sign_codes(h_train[q], rot),
                sign_codes(h_train[db], rot),
                labels_train[q],
                labels_train[db],
                config.bits,
            )
        log(
            f"training mAP ({len(q)} vs {len(db)} training images): "
            f"sgn(h) {metrics['train_map_sign']:.4f}, sgn(Rh) {metrics['train_map_rotated']:.4f}"
        )
    if evaluate and len(split.query) and len(split.database):
        h_query = embed_dataset(
            net, dataset, split.query, device, progress=progress, num_workers=config.num_workers
        )
        h_db = embed_dataset(
            net, dataset, split.database, device, progress=progress, num_workers=config.num_workers
        )
        lq, ldb = dataset.labels[split.query], dataset.labels[split.database]
        k = metrics["top_k"] = protocol_top_k(ldb)
        for name, rot in (("sign", None), ("rotated", rotation)):
            ev = evaluate_retrieval(
                sign_codes(h_query, rot),
                sign_codes(h_db, rot),
                lq,
                ldb,
                config.bits,
                top_k=(k,),
                precision_ks=(),
            )
            metrics[f"map_{name}"], metrics[f"map_at_k_{name}"] = ev["map"], ev["map_at"][k]
        log(
            f"query vs database mAP: sgn(h) {metrics['map_sign']:.4f}, "
            f"sgn(Rh) {metrics['map_rotated']:.4f}; mAP@{k}: sgn(h) "
            f"{metrics['map_at_k_sign']:.4f}, sgn(Rh) {metrics['map_at_k_rotated']:.4f}"
        )
    return rotation, metrics
