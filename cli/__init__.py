"""The hashkit command line (installed as the ``hashkit.cli`` package)."""
