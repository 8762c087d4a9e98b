"""Where the weights a name gives are on this machine: the one resolver behind every place that
takes weights (`pretrained=`, `--checkpoint`, `twins convert`'s source, `load_model`).

- A local path: a weights file, or a folder in the Hugging Face Hub layout (`model.safetensors`
  and `config.json`, as `twins export --format hf` and timm's `push_to_hf_hub` write it).
- `hf-hub:org/name[@revision]`: that repository's weights (`model.safetensors`, else
  `pytorch_model.bin`, read with `weights_only`) and its `config.json`, through huggingface_hub
  and its cache (HF_HOME / HF_HUB_CACHE): with HF_HUB_OFFLINE=1 a cached repository is read
  without the network. The answer is the snapshot folder, a Hub-layout folder.
- `s3://`, `obs://` (any URL `twins.storage` reads): a file, or a Hub-layout folder, downloaded
  whole into `<TWINS_CACHE_DIR>/weights/<hash of URL and endpoint>/` (the cache of the shards'
  machine, `twins.storage.cache_dir`), to a temporary name then renamed, and fetched again
  when the object changes (its size and ETag). A lock makes the processes of a node download
  it once.

No file from the network is ever unpickled: the readers take safetensors, or torch files with
`weights_only=True` (`twins.weights.torch_pth`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from twins import storage
from twins.atomic import remove_temporaries, write_text
from twins.errors import TwinsError

HUB_PREFIX = "hf-hub:"
# The weights of a Hub-layout folder, the preferred first (timm writes both, transformers the
# first), and the file that describes its model.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
CONFIG_FILE = "config.json"
_FINGERPRINT_SUFFIX = ".source"


def local_weights_file(spec: str | os.PathLike) -> Path:
    """The local file or Hub-layout folder that `spec` names (see the module notes); what
    it holds is left to `twins.load_weights` to judge."""
    text = os.fspath(spec)
    if text.startswith(HUB_PREFIX):
        return _from_hub(text)
    if storage.is_remote(text):
        return _from_store(text)
    return Path(storage.local_path(text)).expanduser()


def hub_folder_weights(folder: Path) -> Path | None:
    """The weights file of a Hub-layout folder, None where it holds none."""
    return next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)


def parse_hub_id(spec: str) -> tuple[str, str | None]:
    """("org/name", revision or None) of `hf-hub:org/name[@revision]`."""
    repository, _, revision = spec[len(HUB_PREFIX) :].partition("@")
    if repository.count("/") != 1 or not all(repository.split("/")) or (_ and not revision):
        raise TwinsError(
            f"{spec}: not a Hub id; write hf-hub:org/name, or hf-hub:org/name@revision "
            "(a branch, tag or commit)"
        )
    return repository, revision or None


def _from_hub(spec: str) -> Path:
    """The snapshot folder of the repository `spec` names, with its weights and config.json
    fetched into the Hub cache (or found there)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RemoteEntryNotFoundError

    repository, revision = parse_hub_id(spec)
    reasons = []
    for name in WEIGHT_FILES:
        try:
            weights = Path(hf_hub_download(repository, name, revision=revision))
            break
        except RemoteEntryNotFoundError:
            reasons.append(f"no {name} in the repository")
        except EntryNotFoundError as error:  # offline and not in the cache
            reasons.append(_first_line(error))
        except Exception as error:  # network, authentication, a missing repository or revision
            raise _hub_error(spec, f"{type(error).__name__}: {_first_line(error)}") from error
    else:
        raise _hub_error(spec, "; ".join(reasons))
    with contextlib.suppress(EntryNotFoundError):  # a repository of bare weights has none
        hf_hub_download(repository, CONFIG_FILE, revision=revision)
    return weights.parent


def _hub_error(spec: str, reason: str) -> TwinsError:
    return TwinsError(
        f"{spec}: cannot get its weights from the Hugging Face Hub ({reason}); check the id and "
        "revision, the network and HF_ENDPOINT (the Hub's address), and HF_TOKEN for a private "
        "repository; with HF_HUB_OFFLINE=1 only the cache (HF_HUB_CACHE) is read: download it "
        "once where the Hub is reachable (hf download org/name)"
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _from_store(url: str) -> Path:
    """The local copy of the file or Hub-layout folder at `url`, current with the store."""
    shown = storage.display(url)
    key = f"{url.rstrip('/')}\n{storage.endpoint()}"
    folder = storage.cache_dir() / "weights" / hashlib.sha256(key.encode()).hexdigest()[:16]
    try:
        if not storage.is_dir(url):
            return _cached(url, folder, url.rstrip("/").rsplit("/", 1)[-1])
        present = storage.list_dir(url)
        name = next((name for name in WEIGHT_FILES if name in present), None)
        if name is None:
            raise TwinsError(
                f"{shown} is a folder without {' or '.join(WEIGHT_FILES)}: name a weights file, "
                "or a folder `twins export --format hf` wrote"
            )
        for wanted in (name, CONFIG_FILE) if CONFIG_FILE in present else (name,):
            _cached(storage.join(url, wanted), folder, wanted)
        return folder
    except FileNotFoundError as error:
        raise TwinsError(f"{shown}: no such file or object; check the URL") from error


def _cached(url: str, folder: Path, name: str) -> Path:
    """`folder / name`, downloaded from `url` unless the copy there is of the same object."""
    fingerprint = storage.fingerprint(url)  # first: a store that refuses us leaves no folder
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    stamp = folder / (name + _FINGERPRINT_SUFFIX)
    with _locked(folder / ".lock"):
        current = stamp.is_file() and stamp.read_text() == fingerprint and target.is_file()
        if not current:
            remove_temporaries(folder)  # of a process killed while downloading
            storage.get_file(url, target)  # a temporary name, renamed when whole
            write_text(stamp, fingerprint)
    return target


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path`: one process of the node downloads, the others wait."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
