"""Every command of the ``hashkit`` group; main.py registers them in this order."""

COMMANDS: list = []
