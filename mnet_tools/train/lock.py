"""One run per run folder: an advisory lock that `train` holds from before it touches the folder until it returns.

The lock is `fcntl.flock` on `OUT_DIR/train.lock`, a file that names its
holder (pid, host, start time) for the message a second run gets. The kernel
drops a flock when its holder dies, `kill -9` included, so a stale file never
blocks: the next run takes the lock over and rewrites the file. A run that
ends, however it ends, removes the file, and the folder too if the run made
it (and any parent it made) and left nothing in it: a refused run leaves no trace.

flock is advisory: it keeps out other `train` runs, not other programs. On
network file systems it is as good as the file system's locking.
"""

import contextlib
import datetime
import json
import os
import socket

LOCK_FILE = "train.lock"


class RunFolderInUseError(ValueError):
    """Another `train` holds the run folder's lock."""


def _holder(fd):
    """The holder's record in the lock file, as text for a message."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        holder = json.loads(os.read(fd, 4096).decode("utf-8"))
        return f"pid {holder['pid']} on {holder['host']}, started {holder['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a run that has not written its pid yet (it is starting)"


def _acquire(path):
    """An open descriptor of `path` holding its flock; raises RunFolderInUseError if another holds it."""
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            folder = os.path.dirname(path)
            raise RunFolderInUseError(
                f"Run folder {folder!r} is in use by another train run: {holder} (lock {path}). Wait for it "
                "to end, or give another --out-dir. Nothing was changed in the folder."
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # The previous holder removes the file when it ends; if it did so after we opened it, the lock we hold
        # is on a file no one else will open: lock the one at `path` now.
        try:
            current = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            current = False
        if current:
            return fd
        os.close(fd)


@contextlib.contextmanager
def run_folder_lock(folder):
    """Holds `folder`'s lock (creating the folder) for the `with` block; raises RunFolderInUseError if taken.

    Example:
    ```python
    from mnet_tools.train.lock import run_folder_lock

    with run_folder_lock("runs/flowers"):
        ...  # no other train run writes in runs/flowers meanwhile
    ```
    """
    folder = os.path.abspath(folder)
    created = []  # the folders made for the lock, innermost first
    missing = folder
    while not os.path.isdir(missing) and os.path.dirname(missing) != missing:
        created.append(missing)
        missing = os.path.dirname(missing)
    path = os.path.join(folder, LOCK_FILE)
    while True:
        os.makedirs(folder, exist_ok=True)
        try:
            fd = _acquire(path)
            break
        except FileNotFoundError:  # the folder was removed meanwhile by a refused run that had made it
            continue
    try:
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode("utf-8"), 0)
        yield path
    finally:
        # Removed while still held, so that no run can take a lock on a file that is on its way out.
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        os.close(fd)
        for made in created:
            try:
                os.rmdir(made)
            except OSError:  # not empty: the run wrote in it, or another run is starting
                break
