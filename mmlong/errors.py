"""The project's error types, shared by every stage: the CLI prints them as one line."""


class IngestError(Exception):
    """An input that cannot be ingested; the message names the reason."""


class DatasetError(RuntimeError):
    """A dataset folder that cannot be used as asked (not a dataset, options differ...)."""
