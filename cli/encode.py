"""``hashkit encode``."""

from __future__ import annotations

import os
from pathlib import Path

import click
import numpy as np

from hashkit.cli.options import FilePath, data_options, encoding_options, load_data
from hashkit.cli.progress import log_factory, progress_factory, warn_unlisted, warn_unreadable


def _check_output(ctx, param, args):
    """CODES.h5, the last argument, is a file hashkit writes: refused now if it cannot be."""
    if args:
        FilePath(dir_okay=False, output=True).convert(args[-1], param, ctx)
    return args


@click.command("encode")
@click.argument(
    "args", metavar="[IMAGES|DATA] CODES.h5", nargs=-1, required=True, callback=_check_output
)
@click.option(
    "--model",
    required=True,
    type=FilePath(exists=True, dir_okay=False),
    help="Model bundle that encodes the images.",
)
@data_options(model_defaults=True)
@click.option(
    "--part",
    type=click.Choice(["all", "query", "database", "train"]),
    default="all",
    show_default=True,
    help="Which items of DATA to encode (its protocol split).",
)
@encoding_options
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an encode that stopped (crash, kill, Ctrl-C): the codes it saved in "
    "CODES.h5.partial/ are kept, the rest encoded (one process only).",
)
def encode_command(
    args,
    model,
    data,
    root,
    protocol,
    split_file,
    split_seed,
    part,
    batch_size,
    workers,
    strict,
    device,
    quiet,
    resume,
):
    """Encode images into a code store (HDF5), in batches, without building an index.

    IMAGES is a folder searched recursively for image files (stored with their absolute
    paths, no labels, all of them: a folder has no protocol parts). DATA (a positional
    argument or --data) is a built-in dataset, a labelled image folder or a list file: its
    items go in with their labels and their dataset indices as ids, so `hashkit eval` can
    score a query store against a database store; --data FOLDER reads a folder as DATA.
    The store appears only when complete; meanwhile the codes made so far are saved about
    once a minute in CODES.h5.partial/, and after a crash the same command with --resume
    continues from them. Launched by torchrun (`torchrun --nproc-per-node N
    -m hashkit encode ...`), each process encodes a share of the items and the result is one
    store, equal to what one process writes (its rows in segment files under CODES.h5.d/).

    \b
    Examples:
      hashkit encode --model model.pt images/ codes.h5
      hashkit encode --model model.pt images/ codes.h5 --resume     # after a crash
      hashkit encode --model model.pt fashion-mnist query.h5 --part query
      hashkit encode --model model.pt --data fashion-mnist --part database db.h5
      hashkit eval query.h5 db.h5
    """
    from hashkit.bundle import load_bundle
    from hashkit.errors import HashkitError

    if len(args) > 2:
        raise click.UsageError("give at most one source and one output file")
    out = Path(args[-1])
    source = args[0] if len(args) == 2 else None
    if source is not None and data is not None:
        raise click.UsageError("give the data as an argument or as --data, not both")
    folder = source is not None and Path(source).is_dir()
    if folder:
        given = {
            "--part": part != "all",
            "--root": root is not None,
            "--protocol": protocol is not None,
            "--split": split_file is not None,
            "--split-seed": split_seed is not None,
        }
        if any(given.values()):
            options = ", ".join(name for name, on in given.items() if on)
            raise HashkitError(
                f"{options}: the image folder {source} has no protocol parts, every image in it "
                f"is encoded; to encode a part of a labelled folder, give it as --data {source}"
            )
    from hashkit.atomic import check_outputs

    check_outputs(
        {"the output CODES.h5": out},
        {"the model (--model)": model, "the data": source or data, "the split": split_file},
    )
    from hashkit.distributed import launched_by_torchrun
    from hashkit.sharded_encode import encode_sharded

    sharded = launched_by_torchrun()
    if sharded and resume:
        raise click.UsageError("--resume is for an encode on one process, not under torchrun")
    bundle = load_bundle(model)
    first_rank = not sharded or os.environ.get("RANK", "0") == "0"
    progress = progress_factory(quiet or not first_rank)
    # one process saves its codes as they come (hashkit.encode_checkpoint); ranks do not
    checkpointing = None if sharded else resume
    note = log_factory(quiet)
    if folder:
        from hashkit.encode import encode_files_to_store, find_images

        skipped = None if strict else []
        paths = find_images(Path(source).resolve(), skipped)
        if first_rank:
            warn_unlisted(skipped or [])

        def write(store, positions, allow_empty=False):
            return encode_files_to_store(
                bundle,
                [paths[i] for i in positions],
                store,
                batch_size=batch_size,
                num_workers=workers,
                device=device,
                strict=strict,
                first_id=int(positions[0]) if len(positions) else 0,
                progress=progress,
                allow_empty=allow_empty,
                resume=checkpointing,
                note=note,
            )

        count = len(paths)
    else:
        dataset, split = load_data(
            source or data, root, protocol, split_file, split_seed, defaults=bundle.train_config,
            split_needed=part != "all",
        )  # fmt: skip
        indices = np.arange(len(dataset)) if part == "all" else getattr(split, part)

        def write(store, positions, allow_empty=False):
            return _encode_dataset(
                bundle, dataset, split, part, indices[positions], store,
                batch_size, workers, device, strict, progress, allow_empty, checkpointing, note,
            )  # fmt: skip

        count = len(indices)
    if sharded:
        report = encode_sharded(out, count, lambda store, positions: write(store, positions, True))
    else:
        from hashkit.lock import FileLock

        # held throughout: no other writer of CODES.h5 meanwhile, nor of its saved codes
        with FileLock(out, on_wait=note, purpose="hashkit encode"):
            report = write(out, np.arange(count))
    if first_rank:
        warn_unreadable(report.skipped)
        click.echo(f"wrote {out}: {report.encoded} {bundle.bits}-bit codes")


def _encode_dataset(
    bundle, dataset, split, part, indices, out, batch_size, workers, device, strict, progress,
    allow_empty, resume, note,
):  # fmt: skip
    from hashkit.encode import EncodeReport, iter_dataset_codes
    from hashkit.encode_checkpoint import checkpointed, item_digest
    from hashkit.errors import DataError
    from hashkit.store import StoreWriter

    labels = dataset.labels
    label_width = None if labels is None else (0 if labels.ndim == 1 else labels.shape[1])
    attrs = {"dataset": dataset.name, "part": part}
    if split is not None:
        attrs["protocol"] = split.protocol
    if bundle.path:
        attrs["model_path"] = str(bundle.path)
    report = EncodeReport()

    def encode_from(start):
        return iter_dataset_codes(
            bundle,
            dataset,
            indices[start:],
            batch_size=batch_size,
            num_workers=workers,
            device=device,
            strict=strict,
            report=report,
            progress=progress,
        )

    def items():
        return {
            "kind": "dataset",
            "dataset": str(dataset.name),
            "part": part,
            "indices": item_digest(np.asarray(indices)),
        }

    checkpoint, source = checkpointed(
        out, bundle, strict, items, len(indices), encode_from, report, resume=resume, note=note
    )
    with StoreWriter(
        out,
        bundle.bits,
        fingerprint=bundle.fingerprint,
        label_width=label_width,
        class_names=dataset.class_names or None,
        extra_attrs=attrs,
    ) as writer:
        for idx, codes in source:
            writer.append(
                codes,
                idx,
                [dataset.paths[i] for i in idx] if dataset.paths else None,
                None if labels is None else labels[idx],
            )
        if report.encoded == 0 and not allow_empty:
            raise DataError(f"none of the {len(indices)} items could be encoded")
    if checkpoint is not None:
        checkpoint.finished()
    return report
