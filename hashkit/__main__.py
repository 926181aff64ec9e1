"""``python -m hashkit``: the command line (also what ``torchrun -m hashkit`` runs)."""

from hashkit.cli.main import main

main()
