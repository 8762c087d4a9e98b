"""Reading and writing local paths and object-store URLs alike (fsspec, s3fs for `s3://`).

A plain path or `file://` URL is local and goes through `os` and `twins.atomic`, as fast as
before. `s3://bucket/prefix` and the seed's `obs://bucket/prefix` (Huawei OBS speaks S3) go
through s3fs; any other fsspec URL (`gs://`, `memory://`, ...) goes to fsspec as it is.

Credentials and endpoint come only from botocore's own chain (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE, AWS_ENDPOINT_URL(_S3), AWS_REGION,
~/.aws/...); for `obs://` alone, OBS_ENDPOINT names the endpoint when no AWS_ENDPOINT_URL is set.
No message or log line shows them: URLs are printed without any `user:password@` part and
server messages are reduced to their error code; an s3:// or obs:// URL with such a part is
refused (s3fs would not use it, and the run would save it).

Remote calls retry transient failures (refused or reset connections, timeouts, 5xx, SlowDown)
with exponential backoff and jitter (from a generator of their own: a retry changes no random
stream of the training) for TWINS_STORAGE_RETRY_SECONDS (300 by default), with one
warning when a store becomes unreachable and one line when it answers again. Permanent errors
(credentials, a missing bucket) raise one `TwinsError` line at once, naming the fix; a missing
object raises FileNotFoundError.

Filesystem objects are made per process (never one made before a fork: a forked DataLoader
worker must not share the parent's network session) and outside fsspec's instance cache. A
forked child keeps its parent's filesystems referenced, unused, for its whole life: closing or
collecting them there would close the child's copies of the parent's pooled sockets, and
asyncio's close unregisters each from the epoll instance that parent and child share, so the
parent would wait forever on its next answer over that connection.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import random
import shutil
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from twins.atomic import atomic_path
from twins.errors import TwinsError

logger = logging.getLogger(__name__)

RETRY_SECONDS_VARIABLE = "TWINS_STORAGE_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 300.0
# `check_access` runs at start, where a wrong endpoint should be said within seconds.
CHECK_RETRY_SECONDS = 3.0
_FIRST_DELAY = 0.25
# A store back from an outage is noticed within this many seconds (30 made training wait up to
# 30 s more); one attempt every few seconds per process is no load on a store.
_LONGEST_DELAY = 4.0
_S3_PROTOCOLS = ("s3", "s3a", "obs")
# The retries' jitter has its own generator: drawn from the global `random`, the stream a
# loader worker's augmentation draws from, an outage would change the training result.
_jitter = random.Random()
_CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "OBS_ENDPOINT",
)

T = TypeVar("T")


# URLs ------------------------------------------------------------------------------------------


def is_remote(url: str | os.PathLike) -> bool:
    """Whether `url` names something other than a local file (`file://` is local)."""
    url = str(url)
    return "://" in url and not url.startswith("file://")


def local_path(url: str | os.PathLike) -> str:
    """The local path of a plain path or `file://` URL."""
    url = str(url)
    return url[len("file://") :] if url.startswith("file://") else url


def join(url: str | os.PathLike, *parts: str) -> str:
    """`url` with `parts` appended: `join("s3://b/p", "x", "y.pt") == "s3://b/p/x/y.pt"`."""
    url = str(url)
    if not is_remote(url):
        return os.path.join(url, *parts)
    pieces = [url.rstrip("/"), *(part.strip("/") for part in parts)]
    return "/".join(piece for piece in pieces if piece)


def cache_dir() -> Path:
    """This machine's cache of what was read from object stores: TWINS_CACHE_DIR, else
    ~/.cache/twins."""
    return Path(os.environ.get("TWINS_CACHE_DIR") or Path.home() / ".cache" / "twins").expanduser()


def endpoint() -> str:
    """The S3 endpoint the AWS variables name ('' for the default): the same URL at another
    endpoint is another object."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL", "")


def display(url: str | os.PathLike) -> str:
    """`url` as it may be printed: without a `user:password@` part."""
    url = str(url)
    if not is_remote(url):
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()


def _protocol_and_path(url: str) -> tuple[str, str]:
    protocol, _, path = url.partition("://")
    protocol = protocol.lower()
    if protocol in _S3_PROTOCOLS:
        if "@" in path.split("/", 1)[0]:
            # s3fs would not log in with them, and the URL is saved with the run (config.yaml,
            # checkpoints, the output's copy of both).
            raise TwinsError(
                f"{display(url)} was given with credentials in it (user:password@), which are "
                "not used and would be saved with the run: remove them from the URL and set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
            )
        return "s3", path.rstrip("/")
    return protocol, path


# The operations ----------------------------------------------------------------------------------


def exists(url: str | os.PathLike) -> bool:
    """Whether a file or folder (for object stores: an object or a prefix holding some) is
    there."""
    url = str(url)
    if not is_remote(url):
        return os.path.exists(local_path(url))
    try:
        _remote(url, lambda fs, path: fs.info(path))
    except FileNotFoundError:
        return False
    return True


def is_dir(url: str | os.PathLike) -> bool:
    """Whether `url` is a folder (for object stores: a bucket, or a prefix holding objects)."""
    url = str(url)
    if not is_remote(url):
        return os.path.isdir(local_path(url))
    try:
        info = _remote(url, lambda fs, path: fs.info(path))
    except FileNotFoundError:
        return False
    return info["type"] == "directory"


def list_dir(url: str | os.PathLike) -> list[str]:
    """The names (not the URLs) directly under `url`, sorted; FileNotFoundError if nothing is
    there."""
    url = str(url)
    if not is_remote(url):
        return sorted(os.listdir(local_path(url)))
    _, own = _protocol_and_path(url)
    entries = [e.rstrip("/") for e in _remote(url, lambda fs, path: fs.ls(path, detail=False))]
    # Some stores list a folder's own marker object among its entries.
    return sorted({entry.rsplit("/", 1)[-1] for entry in entries if entry != own.rstrip("/")})


def list_files(url: str | os.PathLike) -> list[str]:
    """The relative paths (with `/`) of every file beneath `url`, at any depth, sorted; empty
    when nothing is there."""
    url = str(url)
    if not is_remote(url):
        root = local_path(url)
        found = []
        for folder, _, names in os.walk(root):
            relative = os.path.relpath(folder, root)
            for name in names:
                found.append(name if relative == "." else f"{relative}/{name}".replace(os.sep, "/"))
        return sorted(found)
    _, own = _protocol_and_path(url)
    try:
        entries = _remote(url, lambda fs, path: fs.find(path, detail=True))
    except FileNotFoundError:
        return []
    prefix = own.rstrip("/") + "/"
    return sorted(
        name[len(prefix) :]
        for name, info in entries.items()
        if info.get("type") != "directory" and name.startswith(prefix) and not name.endswith("/")
    )


def size(url: str | os.PathLike) -> int:
    """The size of a file or object in bytes."""
    url = str(url)
    if not is_remote(url):
        return os.path.getsize(local_path(url))
    return int(_remote(url, lambda fs, path: fs.size(path)))


def fingerprint(url: str | os.PathLike) -> str:
    """What changes when a file or object is replaced: its size with its ETag (an object) or
    its modification time (a local file), so a copy cached under it is known to be current."""
    url = str(url)
    if not is_remote(url):
        stat = os.stat(local_path(url))
        return f"{stat.st_size}-{stat.st_mtime_ns}"
    info = _remote(url, lambda fs, path: fs.info(path))
    tag = info.get("ETag") or info.get("LastModified") or ""
    return f"{info.get('size')}-{str(tag).strip(chr(34))}"


def read_bytes(url: str | os.PathLike, start: int | None = None, end: int | None = None) -> bytes:
    """The whole file or object, or its bytes [start, end)."""
    url = str(url)
    if not is_remote(url):
        with open(local_path(url), "rb") as file:
            if start:
                file.seek(start)
            if end is None:
                return file.read()
            return file.read(max(0, end - (start or 0)))
    return _remote(url, lambda fs, path: fs.cat_file(path, start=start, end=end))


def write_bytes(url: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `url`: locally atomically (`twins.atomic`), remotely in one PUT (an
    object appears whole or not at all)."""
    url = str(url)
    if not is_remote(url):
        with atomic_path(local_path(url)) as temporary:
            temporary.write_bytes(data)
        return
    _remote(url, lambda fs, path: fs.pipe_file(path, data))


def get_file(url: str | os.PathLike, local: str | os.PathLike) -> None:
    """Copy `url` to the local file `local`, through a temporary name beside it: never a half
    file under the final name."""
    url = str(url)
    with atomic_path(local) as temporary:
        if is_remote(url):
            _remote(url, lambda fs, path: fs.get_file(path, str(temporary)))
        else:
            shutil.copyfile(local_path(url), temporary)


def put_file(local: str | os.PathLike, url: str | os.PathLike) -> None:
    """Copy the local file `local` to `url` (s3fs uploads large files in parts; the object
    appears when the upload completes)."""
    url = str(url)
    if not is_remote(url):
        with atomic_path(local_path(url)) as temporary:
            shutil.copyfile(local, temporary)
        return
    _remote(url, lambda fs, path: fs.put_file(str(local), path))


def remove(url: str | os.PathLike) -> None:
    """Remove a file or object; one that is not there is fine."""
    url = str(url)
    if not is_remote(url):
        with contextlib.suppress(FileNotFoundError):
            os.remove(local_path(url))
        return
    with contextlib.suppress(FileNotFoundError):
        _remote(url, lambda fs, path: fs.rm_file(path))


def check_access(url: str | os.PathLike, write: bool = False) -> None:
    """Say at start, in one `TwinsError` line with the fix, what would stop the run later: an
    unreachable endpoint, wrong or missing credentials, a missing bucket, and (when reading) a
    missing folder or prefix. `write=True` also checks that an object can be written there."""
    url = str(url)
    shown = display(url)
    if not is_remote(url):
        if not write and not os.path.exists(local_path(url)):
            raise TwinsError(f"{shown} does not exist: check the path")
        return
    protocol, path = _protocol_and_path(url)
    if protocol != "s3":
        if not write and not exists(url):
            raise TwinsError(f"{shown} does not exist: check the URL")
        return
    bucket, _, key = path.partition("/")
    if not bucket:
        raise TwinsError(f"{shown} names no bucket: write s3://BUCKET/PREFIX")

    def first_key_under(fs: Any, _: str) -> bool:
        prefix = key + "/" if key else ""
        listing = fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix, MaxKeys=1)
        return bool(listing.get("KeyCount") or listing.get("Contents"))

    try:
        holds_objects = _remote(url, first_key_under, budget=CHECK_RETRY_SECONDS)
        if write:
            probe = join(url, f".twins-write-check-{os.getpid()}")
            _remote(probe, lambda fs, path: fs.pipe_file(path, b""), budget=CHECK_RETRY_SECONDS)
            _remote(probe, lambda fs, path: fs.rm_file(path), budget=CHECK_RETRY_SECONDS)
        elif key and not holds_objects:
            # Not a prefix: perhaps one object.
            _remote(url, lambda fs, path: fs.info(path), budget=CHECK_RETRY_SECONDS)
    except FileNotFoundError as error:
        raise TwinsError(
            f"storage: {shown} does not exist in bucket {bucket!r}: check the URL (upload the "
            "data first)"
        ) from error


# Remote calls, their filesystems and their retries ---------------------------------------------

_filesystems: dict[tuple, Any] = {}
_filesystems_lock = threading.Lock()
_unreachable: set[str] = set()  # stores in a retry episode
_unreachable_lock = threading.Lock()
_inherited: list[Any] = []  # a fork child's copies of its parent's filesystems, never closed


def filesystem(url: str | os.PathLike) -> Any:
    """This process's fsspec filesystem for `url`'s protocol and the present credentials."""
    protocol, _ = _protocol_and_path(str(url))
    return _filesystem(protocol, obs=str(url).lower().startswith("obs://"))


def _filesystem(protocol: str, obs: bool = False) -> Any:
    # Keyed by the settings botocore reads, hashed, so that changed credentials make a new
    # client; a fork child starts with none (`_after_fork_in_child`).
    settings = "\0".join(os.environ.get(name, "") for name in _CREDENTIAL_VARIABLES)
    key = (protocol, obs, hashlib.sha256(settings.encode()).hexdigest())
    with _filesystems_lock:
        fs = _filesystems.get(key)
        if fs is None:
            fs = _make_filesystem(protocol, obs)
            _filesystems[key] = fs
        return fs


def _after_fork_in_child() -> None:
    """In a forked child: set the parent's filesystems aside, alive and unused (see the module's
    docstring), and take fresh locks (a parent's thread may have held one at the fork). fsspec
    itself gives the child a new IO loop (`fsspec.asyn.reset_after_fork`)."""
    global _filesystems_lock, _unreachable_lock
    _inherited.extend(_filesystems.values())
    _filesystems.clear()
    _unreachable.clear()
    _filesystems_lock = threading.Lock()
    _unreachable_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _make_filesystem(protocol: str, obs: bool) -> Any:
    import fsspec

    if protocol != "s3":
        return fsspec.filesystem(protocol, skip_instance_cache=True)
    import s3fs

    client_kwargs = {}
    endpoint_set = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if obs and not endpoint_set and os.environ.get("OBS_ENDPOINT"):
        client_kwargs["endpoint_url"] = os.environ["OBS_ENDPOINT"]
    fs = s3fs.S3FileSystem(
        skip_instance_cache=True,
        session=_s3_session(),
        # Other processes write the same bucket (a resumed run, the packer): list afresh.
        use_listings_cache=False,
        client_kwargs=client_kwargs,
        # The retries are ours (`_remote`): one attempt per call below.
        config_kwargs={
            "connect_timeout": 5,
            "read_timeout": 60,
            "retries": {"total_max_attempts": 1},
        },
    )
    fs.retries = 1
    return fs


# botocore's parsed service descriptions (plain data, no connection), shared by the S3 clients of
# this process and inherited by its forked children: parsing them again cost every loader worker
# that downloads shards about 0.25 s of CPU.
_botocore_loader: Any = None


def _s3_session() -> Any:
    """A new aiobotocore session (its own credentials and connections) over the shared loader."""
    global _botocore_loader
    from aiobotocore.session import AioSession

    session = AioSession()
    if _botocore_loader is None:
        _botocore_loader = session.get_component("data_loader")
    else:
        session.register_component("data_loader", _botocore_loader)
    return session


def _remote(url: str, call: Callable[[Any, str], T], budget: float | None = None) -> T:
    """`call(filesystem, path)` for a remote `url`, retried while the failure is transient."""
    protocol, path = _protocol_and_path(url)
    store = f"{protocol}://{path.split('/', 1)[0]}"
    shown = display(url)
    budget = _retry_seconds() if budget is None else budget
    deadline = time.monotonic() + budget
    delay = _FIRST_DELAY
    interruptions = _interruptions
    while True:
        try:
            result = call(filesystem(url), path)
        except Exception as error:
            reason = _transient_reason(error)
            if reason is None:
                _raise_permanent(error, shown, path)
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                with _unreachable_lock:
                    _unreachable.discard(store)  # the episode ends with this error
                raise TwinsError(
                    f"storage: {shown} unreachable ({reason}) for {budget:g} s: check "
                    f"AWS_ENDPOINT_URL{_endpoint_note()} and the network; "
                    f"{RETRY_SECONDS_VARIABLE} sets how long to retry"
                ) from error
            wait = min(left, delay * _jitter.uniform(0.5, 1.0))
            with _unreachable_lock:
                first = store not in _unreachable
                _unreachable.add(store)
            if first:
                logger.warning(
                    "storage: %s unreachable (%s), retrying in %.1fs", shown, reason, wait
                )
            if not _wait(wait, interruptions):
                with _unreachable_lock:
                    _unreachable.discard(store)
                raise TwinsError(
                    f"storage: {shown} unreachable ({reason}): stopped waiting for it, as a "
                    "signal asked"
                ) from error
            delay = min(2 * delay, _LONGEST_DELAY)
            continue
        with _unreachable_lock:
            back = store in _unreachable
            _unreachable.discard(store)
        if back:
            logger.warning("storage: %s reachable again", shown)
        return result


# Incremented by `interrupt_waits` (from a signal handler: nothing there may take a lock).
_interruptions = 0
_WAIT_SLICE = 0.1


def interrupt_waits() -> None:
    """End the retries under way in this process (in any thread) within a tenth of a second,
    each with its `TwinsError` line: for a signal that asks the process to stop, which would
    otherwise wait out the whole retry budget. Retries begun later wait as usual."""
    global _interruptions
    _interruptions += 1


def _wait(seconds: float, interruptions: int) -> bool:
    """Sleep `seconds`; False as soon as `interrupt_waits` was called since `interruptions`."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(left, _WAIT_SLICE))
        if _interruptions != interruptions:
            return False
    return _interruptions == interruptions


def _retry_seconds() -> float:
    value = os.environ.get(RETRY_SECONDS_VARIABLE)
    if not value:
        return DEFAULT_RETRY_SECONDS
    try:
        return max(0.0, float(value))
    except ValueError:
        raise TwinsError(
            f"{RETRY_SECONDS_VARIABLE}={value!r} is not a number of seconds: set it to e.g. 300"
        ) from None


def _endpoint_note() -> str:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return f" (now {display(endpoint)})" if endpoint else " (unset: AWS's own endpoint)"


def _chain(error: BaseException) -> list[BaseException]:
    """`error` and the errors it was raised from or during."""
    seen: list[BaseException] = []
    while error is not None and all(error is not e for e in seen):
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def _error_code(error: BaseException) -> tuple[str | None, int | None]:
    """The S3 error code and HTTP status of a botocore ClientError in the chain."""
    for link in _chain(error):
        response = getattr(link, "response", None)
        if isinstance(response, dict) and "Error" in response:
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return response["Error"].get("Code"), status
    return None, None


_TRANSIENT_CODES = {
    "SlowDown": "slow down",
    "Throttling": "throttled",
    "ThrottlingException": "throttled",
    "RequestTimeout": "request timeout",
    "InternalError": "internal error",
    "ServiceUnavailable": "service unavailable",
}


def _transient_reason(error: BaseException) -> str | None:
    """A few words on why a call failed, if trying again may help; None for a permanent
    failure."""
    import aiohttp
    import botocore.exceptions as boto

    code, status = _error_code(error)
    if code is not None or status is not None:
        if code in _TRANSIENT_CODES:
            return _TRANSIENT_CODES[code]
        if status is not None and (status >= 500 or status == 429):
            return f"HTTP {status}"
        return None
    for link in _chain(error):
        if isinstance(link, ConnectionRefusedError) or getattr(link, "errno", None) == (
            errno.ECONNREFUSED
        ):
            return "connection refused"
    for link in _chain(error):
        if isinstance(link, ConnectionResetError):
            return "connection reset"
        if isinstance(link, (TimeoutError, socket.timeout)) or "Timeout" in type(link).__name__:
            return "timed out"
        if isinstance(link, (boto.ConnectionError, boto.HTTPClientError)):
            return "connection failed"
        if isinstance(link, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)):
            return "connection lost"
        if isinstance(link, ConnectionError):
            return "connection failed"
    return None


def _raise_permanent(error: BaseException, shown: str, path: str) -> None:
    """Raise the `TwinsError` for credentials and a missing bucket; leave other errors (a
    missing object: FileNotFoundError) to the caller."""
    import botocore.exceptions as boto

    bucket = path.split("/", 1)[0]
    code, status = _error_code(error)
    fixes = {
        "InvalidAccessKeyId": "the access key id is not known to the endpoint: check "
        "AWS_ACCESS_KEY_ID (or AWS_PROFILE) and AWS_ENDPOINT_URL",
        "SignatureDoesNotMatch": "the secret key does not match the access key id: check "
        "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)",
        "AccessDenied": "access denied: give these credentials access to it, or use others "
        "(AWS_ACCESS_KEY_ID, AWS_PROFILE)",
        "RequestTimeTooSkewed": "this machine's clock is off: set it right (NTP)",
        "ExpiredToken": "the session token has expired: renew AWS_SESSION_TOKEN",
        "InvalidToken": "the session token is not valid: check AWS_SESSION_TOKEN",
        "NoSuchBucket": f"bucket {bucket!r} does not exist at the endpoint: create it, or "
        "check the URL and AWS_ENDPOINT_URL",
    }
    if code in fixes:
        raise TwinsError(f"storage: {shown}: {fixes[code]}") from error
    if code in ("403", "Forbidden") or status == 403:  # answers to HEAD carry no code
        raise TwinsError(
            f"storage: {shown}: access refused (HTTP 403): check AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), and that they may access it"
        ) from error
    for link in _chain(error):
        if isinstance(link, boto.NoCredentialsError):
            raise TwinsError(
                f"storage: {shown}: no credentials found: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
            ) from error
