"""Every command of the ``hashkit`` group; main.py registers them in this order."""

from hashkit.cli.add import add_command
from hashkit.cli.bench import bench_command
from hashkit.cli.compact import compact_command
from hashkit.cli.encode import encode_command
from hashkit.cli.eval import eval_command
from hashkit.cli.export import export_images_command
from hashkit.cli.export_milvus import export_group
from hashkit.cli.index import build_index_command
from hashkit.cli.info import info_command
from hashkit.cli.search import search_command
from hashkit.cli.serve import serve_command
from hashkit.cli.train import train_command

COMMANDS: list = [
    train_command,
    encode_command,
    build_index_command,
    add_command,
    compact_command,
    search_command,
    serve_command,
    info_command,
    bench_command,
    eval_command,
    export_images_command,
    export_group,
]
