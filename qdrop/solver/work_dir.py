"""A run's work dir: created and checked for writing before any long step, owned by one run at a time (a lock
file naming the owner's host and process), and the run's log file in it.

The lock is the file `.lock` in the work dir, created exclusively by rank 0 and removed when the run ends. A
second run on the same work dir is refused at once, naming the owner. A lock whose owner process is gone (a killed
run on the same host) is taken over, so rerunning the same command after a kill resumes. On a shared file system
a lock written on another host cannot be checked from here: the second run is refused, and the message says which
host and process hold it and that the file may be deleted once that process is known to be gone.
"""

import json
import logging
import os
import os.path as osp
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional, Union

import torch.distributed as dist

from mmdet.utils import get_dist_info, get_root_logger
from mmdet.utils.errors import UserError

LOCK_FILE = ".lock"


class WorkDirError(UserError, RuntimeError):
    """The work dir cannot be created or written, or another run owns it."""


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _read_owner(path: str) -> Optional[dict]:
    try:
        with open(path) as f:
            owner = json.load(f)
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


class WorkDirLock:
    """Exclusive ownership of a work dir by this process.

    Args:
        work_dir: the work dir (must exist).
    """

    def __init__(self, work_dir: str):
        self.path = osp.join(work_dir, LOCK_FILE)
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.held = False

    def acquire(self) -> Optional[str]:
        """Take the lock; a stale lock (its process gone, same host) is taken over.

        Returns:
            None when the lock is held now, else why not (naming the owner).
        """
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = _read_owner(self.path)
                if owner is None:  # being written by its owner right now, or damaged: look again
                    time.sleep(0.2)
                    owner = _read_owner(self.path)
                if owner is not None and owner.get("host") == self.owner["host"]:
                    pid = owner.get("pid")
                    if isinstance(pid, int) and not _process_alive(pid):
                        self._remove_stale(owner)
                        continue
                return self._refusal(owner)
            with os.fdopen(fd, "w") as f:
                json.dump(self.owner, f)
            self.held = True
            return None
        return self._refusal(_read_owner(self.path))

    def _remove_stale(self, owner: dict) -> None:
        logging.getLogger("mmdet").warning(
            f"work dir lock {self.path} of process {owner.get('pid')} on {owner.get('host')} (since "
            f"{owner.get('since')}) is stale: that process is gone; taking it over"
        )
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass

    def _refusal(self, owner: Optional[dict]) -> str:
        if owner is None:
            who = "another run (its lock file cannot be read)"
        else:
            who = f"process {owner.get('pid')} on host {owner.get('host')} (since {owner.get('since')})"
        return (
            f"work dir {osp.dirname(self.path)} is in use by {who}: two runs must not write one work dir. Wait "
            f"for that run to end or choose another --work-dir; if that process is known to be gone (e.g. it ran "
            f"on another host), delete {self.path}"
        )

    def release(self) -> None:
        if not self.held:
            return
        owner = _read_owner(self.path)
        if owner is not None and owner.get("pid") == self.owner["pid"] and owner.get("host") == self.owner["host"]:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
        self.held = False


def _make_writable_dir(work_dir: str) -> None:
    try:
        os.makedirs(work_dir, exist_ok=True)
    except OSError as error:
        raise WorkDirError(f"work dir {work_dir} cannot be created: {error.strerror or error}") from None
    if not os.access(work_dir, os.W_OK | os.X_OK):
        raise WorkDirError(f"work dir {work_dir} is not writable by this user")


def _agree(problem: Optional[str]) -> Optional[str]:
    """Rank 0's verdict, given to every rank."""
    if dist.is_available() and dist.is_initialized():
        box = [problem]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return problem


@contextmanager
def open_work_dir(
    work_dir: Optional[str], timestamp: str, log_level: Union[str, int] = "INFO", lock: bool = True
) -> Iterator[logging.Logger]:
    """The run's logger, writing `<timestamp>.log` into the work dir while the `with` block runs.

    Rank 0 creates the work dir and (with `lock`) takes its lock; every rank learns whether that worked, so that all
    refuse together. The log handler is removed and the lock released on exit, also after an error.

    Args:
        work_dir: the work dir, or None for a run that writes no files (console logging only).
        timestamp: names the log file.
        log_level: of the logger.
        lock: own the work dir for the duration.

    Yields:
        The 'mmdet' logger.

    Raises:
        WorkDirError: the work dir cannot be created or written, or another run holds its lock.
    """
    rank, _ = get_dist_info()
    owner = WorkDirLock(work_dir) if work_dir and lock and rank == 0 else None
    problem = None
    if work_dir and rank == 0:
        try:
            _make_writable_dir(work_dir)
            if owner is not None:
                problem = owner.acquire()
        except WorkDirError as error:
            problem = str(error)
    problem = _agree(problem)
    if problem is not None:
        raise WorkDirError(problem)
    log_file = osp.join(work_dir, f"{timestamp}.log") if work_dir else None
    try:
        logger = get_root_logger(log_file=log_file, log_level=log_level)
        yield logger
    finally:
        if log_file is not None:
            logger = logging.getLogger("mmdet")
            for handler in [
                h
                for h in logger.handlers
                if isinstance(h, logging.FileHandler) and h.baseFilename == osp.abspath(log_file)
            ]:
                logger.removeHandler(handler)
                handler.close()
        if owner is not None:
            owner.release()
