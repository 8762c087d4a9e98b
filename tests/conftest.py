"""Fixtures shared across the test folders: the record fixtures, tiny image folders and tiny
training configs (made by `factories`), a real S3 server (`s3_server`) and an offline Hugging
Face Hub cache (`offline_hub_cache`)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch

from factories import make_config, write_imagefolder
from s3_server import S3Server
from twins.config import TrainConfig

# Checkpoints written by the seed's own MindSpore training code, with inputs and the logits that
# code produced (see the README beside them).
MINDSPORE_FIXTURES = Path(__file__).parent / "fixtures" / "mindspore"


@pytest.fixture
def seed_fixtures() -> Path:
    assert (MINDSPORE_FIXTURES / "seed_pcpvt_train.ckpt").is_file(), "fixtures missing"
    return MINDSPORE_FIXTURES


@pytest.fixture(scope="session")
def make_imagefolder():
    """`make_imagefolder(root, train_per_class, val_per_class, ...)`: `write_imagefolder`."""
    return write_imagefolder


@pytest.fixture(scope="session")
def imagefolder(tmp_path_factory) -> Path:
    """4 classes, 16 training images each, an uneven validation split of 5+4+3+2 = 14 images."""
    return write_imagefolder(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def tiny_config():
    """`tiny_config(data, output, **changes)`: the config of a tiny, fast run."""

    def tiny(data: Path, output: Path, **changes) -> TrainConfig:
        return make_config(data_url=str(data), train_url=str(output), **changes)

    return tiny


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and sharing the machine's cores does not slow
    them down by oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A SeaweedFS S3 server on 127.0.0.1 for the whole session (`s3_server.S3Server`):
    `endpoint`, `bucket`, `key`, `secret`, `url(*parts)`, `environment()`, `stop(kill=False)`,
    `start()`, `restart(kill=False)`. Ended at the end of the session."""
    server = S3Server(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.stop()


# Short retries in tests; the outage test sets its own.
TEST_RETRY_SECONDS = "2"


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> S3Server:
    """The server, running, with its endpoint and credentials in the AWS variables (and nothing
    from the user's ~/.aws, no instance-metadata lookups)."""
    s3_server.start()  # a test that stopped it may have failed before starting it again
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "OBS_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("TWINS_STORAGE_RETRY_SECONDS", TEST_RETRY_SECONDS)
    return s3_server


@pytest.fixture
def s3_prefix(s3_env) -> str:
    """`s3://<bucket>/<fresh prefix>`, empty, for one test; the AWS variables set."""
    return s3_env.url("tests", uuid.uuid4().hex[:12])


@pytest.fixture
def offline_hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face Hub cache folder, read with HF_HUB_OFFLINE=1: the variables set,
    and huggingface_hub's constants too (it reads them once, at its import); fill it with
    `hub_cache.add_to_hub_cache`."""
    import huggingface_hub.constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache
