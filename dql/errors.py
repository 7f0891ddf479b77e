"""The project's error for bad input, on the ground floor so that every layer can raise it."""


class DatasetError(ValueError):
    """A dataset (or the environment that evaluates it) that cannot be used: the message names the source, the key
    or flag, and what was expected."""
