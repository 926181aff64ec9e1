"""Start-up benchmark: wall time and peak RSS of one `hashkit search INDEX IMAGE` (and of
`hashkit search INDEX --codes` with one query) at several store sizes, next to importing
torch and importing faiss + h5py, before (a copy of the old code) and after, in one run.

    python benchmarks/speed/startup_data.py DATA 69000 1000000
    git archive BASE hashkit cli | tar -x -C BEFORE && mv BEFORE/cli BEFORE/hashkit/cli
    nice -n 5 python benchmarks/speed/startup.py DATA BEFORE 69000 1000000

Each figure is the median of REPEATS runs (one run where the old code is slow, see the JSON);
the peak RSS is /usr/bin/time's maximum resident set size.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
REPEATS = 3


def measure(argv: list[str], pythonpath: str | None, repeats: int) -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    walls, rss = [], []
    for _ in range(repeats):
        with tempfile.NamedTemporaryFile("r") as out:
            start = time.perf_counter()
            subprocess.run(
                ["/usr/bin/time", "-f", "%M", "-o", out.name, *argv],
                env=env,
                cwd=tempfile.gettempdir(),
                check=True,
                stdout=subprocess.DEVNULL,
            )
            walls.append(time.perf_counter() - start)
            rss.append(int(out.read().split()[-1]) / 1024)
    return {
        "wall_s": statistics.median(walls),
        "wall_s_runs": walls,
        "peak_rss_mib": statistics.median(rss),
    }


def main(data: Path, before: str, sizes: list[int]) -> None:
    py = sys.executable
    rows = {
        "python -c 'import torch'": measure([py, "-c", "import torch"], None, REPEATS),
        "python -c 'import faiss, h5py'": measure([py, "-c", "import faiss, h5py"], None, REPEATS),
    }
    for n in sizes:
        index = str(data / f"index_{n}.faiss")
        for version, path in (("before", before), ("after", None)):
            image = [py, "-m", "hashkit.cli.main", "search", index, str(data / "query.png")]
            codes = [py, "-m", "hashkit.cli.main", "search", index, "--codes"]
            codes.append(str(data / "query_codes.h5"))
            slow = version == "before" and n > 100_000
            rows[f"search IMAGE, {n} paths, {version}"] = measure(
                image, path, 1 if slow else REPEATS
            )
            rows[f"search --codes, {n} paths, {version}"] = measure(
                codes, path, 1 if slow else REPEATS
            )
            print(json.dumps(rows, indent=1), flush=True)
    (HERE / "startup.json").write_text(json.dumps(rows, indent=1) + "\n")
    write_markdown(rows)
    plot(rows)


def write_markdown(rows: dict) -> None:
    lines = [
        "# Start-up of `hashkit search`",
        "",
        "Median wall time and peak RSS of one command (the whole process), on the shared",
        "2-core machine under load from other jobs (ratios hold better than times). Store:",
        "32-bit codes, flat index, tiny small-cnn bundle; data from `startup_data.py`.",
        "",
        "```",
        "python benchmarks/speed/startup_data.py /tmp/startup_bench 69000 1000000",
        "git archive 518ac59 hashkit cli | tar -x -C /tmp/startup_before",
        "mv /tmp/startup_before/cli /tmp/startup_before/hashkit/cli",
        "nice -n 5 python benchmarks/speed/startup.py /tmp/startup_bench /tmp/startup_before \\",
        "    69000 1000000",
        "```",
        "",
        "| command | wall s (median) | runs | peak RSS MiB |",
        "|---|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['wall_s']:.2f} | {len(r['wall_s_runs'])} | {r['peak_rss_mib']:.0f} |"
        )
    (HERE / "startup.md").write_text("\n".join(lines) + "\n")


def plot(rows: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(names) + 1))
    ax.barh(names, [rows[n]["wall_s"] for n in names], color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel("wall time, s (median)")
    ax.set_title("hashkit search start-up")
    fig.tight_layout()
    fig.savefig(HERE / "startup.png", dpi=100)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], [int(n) for n in sys.argv[3:]])
