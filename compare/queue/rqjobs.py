"""The job function the RQ workers import (RQ enqueues a function reference)."""


def noop(i: int) -> None:
    return None
