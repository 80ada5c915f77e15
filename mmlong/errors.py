"""The project's error types, shared by every stage: the CLI prints them as one line."""


class IngestError(Exception):
    """An input that cannot be ingested; the message names the reason."""


class DatasetError(RuntimeError):
    """A dataset folder that cannot be used as asked (not a dataset, options differ...)."""


class TaskError(Exception):
    """A task's exception as its message: what a worker sends back (some exceptions, lxml's
    among them, cannot be pickled, and a worker that cannot send its error looks broken)."""


def describe_error(e: BaseException) -> str:
    """An exception as one line of a failure list: an IngestError or TaskError by its message
    (it names the reason), any other with its type."""
    return str(e) if isinstance(e, (IngestError, TaskError)) else f"{type(e).__name__}: {e}"
