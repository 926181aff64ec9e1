"""Every command of the ``hashkit`` group; main.py registers them in this order."""

from hashkit.cli.bench import bench_command
from hashkit.cli.eval import eval_command
from hashkit.cli.export import export_images_command
from hashkit.cli.index import build_index_command
from hashkit.cli.search import search_command
from hashkit.cli.train import train_command

COMMANDS: list = [
    train_command,
    build_index_command,
    search_command,
    bench_command,
    eval_command,
    export_images_command,
]
