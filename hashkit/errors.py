"""One family of errors a user can cause; the command line prints their message on one line."""


class HashkitError(Exception):
    """Base of every error hashkit raises on purpose: bad input, missing files, mismatches."""


class DataError(HashkitError):
    """A dataset, image folder, list file or split cannot be read or is empty."""


class MismatchError(HashkitError):
    """A model, code store and index disagree on bits or fingerprint."""


class ModelError(HashkitError):
    """A model bundle is missing, unreadable or not a hashkit bundle."""


class DeviceError(HashkitError):
    """A device (cuda, cuda:N, mps) is asked for that this machine does not have."""
