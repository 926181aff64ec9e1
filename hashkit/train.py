"""Training SDSH: a hashing network with a triplet loss over all valid triplets of
class-balanced mini-batches, then the rotation R (random search, ITQ or none), into a bundle.
The baselines (hashkit.methods) train the same way with their own head and loss.
"""

from __future__ import annotations

import math
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

# tells the augmentation's random stream apart from the others seeded by the training seed
AUGMENT_STREAM = 1


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
):
    """The training batches ``(x on device, labels, dataset indices)`` of ``sampler``'s
    batches, each augmented as a whole uint8 batch with draws seeded by ``seed``."""
    from hashkit.data.batches import TrainingBatches

    # Not manual_seed(seed) itself: torch's global generator, which initialises the weights
    # and draws the dropout masks, is seeded with it too, and the two would share one stream.
    augment_seed = int(np.random.SeedSequence([seed, AUGMENT_STREAM]).generate_state(1)[0])
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
) -> tuple[HashNet, list[float]]:
    """The hashing network trained on the items ``indices`` (int64) of ``dataset``, in eval
    mode on its device, and the mean loss of each epoch.

    Class-balanced batches, the loss of ``config.method`` (SDSH's: every valid triplet of
    each batch), Adam with a cosine schedule, the augmentation ``config.augment`` (none, crop,
    crop-flip, affine). The recipe and the training set are checked before any work
    (HashkitError); a loss that turns NaN or infinite stops the run. ``progress`` gets one bar
    over every step of every epoch, with the last epoch's loss as its postfix; ``log`` one
    line per epoch.
    """
    log = log or (lambda _msg: None)
    config.check()
    if dataset.labels is None:
        raise DataError(f"dataset {dataset.name!r} has no labels: supervised training needs them")
    if len(indices) < 2:
        raise DataError("the training split holds fewer than 2 images")
    # built first: it refuses a training set whose batches could hold no triplet
    sampler = ClassBalancedBatchSampler(
        dataset.labels[indices], config.batch_size, config.per_class, seed=config.seed
    )
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    net_config = network_config_for(dataset, config)
    net_config.mean, net_config.std = _normalisation(dataset, indices, config, net_config.channels)
    net = HashNet(net_config)
    if config.pretrained:
        missing = load_pretrained(net, None if config.pretrained == "cache" else config.pretrained)
        log(f"loaded pretrained weights; {len(missing)} tensors left at random init")
    net.to(device)
    # The method decides the loss (and the head, above); a loss may have weights of its own
    # (GreedyHash's classifier), trained with the network but not kept in the bundle.
    loss_fn = make_method_loss(config, dataset.labels).to(device)
    parameters = [*net.parameters(), *loss_fn.parameters()]
    optimiser = torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, config.epochs))
    batches = _training_batches(
        dataset,
        indices,
        net_config,
        sampler,
        config.augment,
        config.num_workers,
        seed=config.seed,
        device=device,
    )
    per_epoch = len(sampler)
    # one bar over every step of every epoch (its ETA covers the whole run); the sampler's
    # len() is exactly the batches it yields, so epochs end on multiples of per_epoch
    steps = (batch for _ in range(config.epochs) for batch in batches)
    if progress is not None:
        steps = progress(steps, total=config.epochs * per_epoch, desc="training", unit="step")
    show = getattr(steps, "set_postfix", None)
    epoch_losses: list[float] = []
    started = time.perf_counter()
    total, count = 0.0, 0
    net.train()
    for step, (x, y, _) in enumerate(steps, 1):
        h = net(x.to(device, non_blocking=True))
        loss = loss_fn(h, y.to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise HashkitError(
                f"training diverged in epoch {len(epoch_losses) + 1} (loss {value}); "
                "lower the learning rate"
            )
        total += value * len(x)
        count += len(x)
        if step % per_epoch:
            continue
        scheduler.step()
        epoch_losses.append(total / count)
        total, count = 0.0, 0
        epoch = len(epoch_losses)
        if show is not None:
            show(epoch=f"{epoch}/{config.epochs}", loss=f"{epoch_losses[-1]:.4f}", refresh=False)
        log(
            f"epoch {epoch}/{config.epochs}  loss {epoch_losses[-1]:.4f}  "
            f"({time.perf_counter() - started:.0f}s)"
        )
    net.eval()
    return net, epoch_losses


def train(
    dataset: Dataset,
    split: Split,
    config: TrainConfig,
    *,
    progress: Callable | None = None,
    log: Callable[[str], None] | None = None,
    evaluate: bool = True,
) -> TrainResult:
    """Train a hashing network on ``split.train`` and learn its rotation.

    ``log`` receives one line per epoch and per stage; ``progress`` is a tqdm-like factory.
    With ``evaluate`` the mAP of sgn(h) and of sgn(R h) is measured (whole database, ties by
    database order) twice: on the training set (the rotation's own queries vs database, or
    training vs training when there is no search) and query vs database; both are stored in
    the bundle's metrics as ``train_map_sign``, ``train_map_rotated``, ``map_sign`` and
    ``map_rotated``, with the query mAP@k of the protocol (``top_k``: 5,000 for multi-label
    data, else 1,000) as ``map_at_k_sign`` and ``map_at_k_rotated``.
    """
    from hashkit.metrics import evaluate_retrieval, mean_average_precision, protocol_top_k

    log = log or (lambda _msg: None)
    started = time.perf_counter()
    net, epoch_losses = train_network(dataset, split.train, config, progress=progress, log=log)
    device = next(net.parameters()).device
    h_train = embed_dataset(
        net, dataset, split.train, device, progress=progress, num_workers=config.num_workers
    )
    labels_train = dataset.labels[split.train]
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
