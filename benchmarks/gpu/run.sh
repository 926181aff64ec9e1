#!/usr/bin/env bash
# The GPU benchmark (see run.py): on a machine with a CUDA GPU it finishes within 8 minutes and
# writes benchmarks/gpu/results.{json,md}; `run.sh --dry-run` checks every code path on the
# CPU in a minute or two and writes benchmarks/gpu/dry-run.{json,md}.
# PYTHON picks the interpreter (default: the repository's .venv, else python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
python="${PYTHON:-.venv/bin/python}"
[ -x "$python" ] || python=python3
# 480 s hard stop; run.py plans for 450 s and saves each section as soon as it is done
exec timeout --kill-after=10 480 "$python" benchmarks/gpu/run.py "$@"
