"""What a process runs with: versions, GPUs, the CPU model, and the commit of the checkout it
runs from, read from real git repositories (a plain one, a worktree, packed refs, a detached
HEAD) and from a folder outside any."""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch

from twins.environment import accelerators, cpu_model, source_commit, versions


def git(folder: Path, *argv: str) -> str:
    command = ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t", *argv]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def test_versions_gpus_and_cpu():
    found = versions()
    assert found["torch"] == torch.__version__ and found["python"].count(".") == 2
    assert found["twins"] and found["timm"] and found["torchvision"]
    assert found["cuda"] == torch.version.cuda
    gpus = accelerators()
    assert (
        gpus["count"]
        == len(gpus["names"])
        == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    )
    assert cpu_model()


def test_the_commit_of_a_checkout_its_worktree_and_packed_refs(tmp_path):
    repository = tmp_path / "repository"
    repository.mkdir()
    git(repository, "init", "-q", "-b", "main")
    (repository / "src").mkdir()
    (repository / "src" / "module.py").write_text("")
    git(repository, "add", ".")
    git(repository, "commit", "-q", "-m", "first")
    first = git(repository, "rev-parse", "HEAD")
    assert source_commit(repository / "src" / "module.py") == first

    git(repository, "commit", "-q", "--allow-empty", "-m", "second")
    git(repository, "pack-refs", "--all")  # the branch now lives in packed-refs only
    second = git(repository, "rev-parse", "HEAD")
    assert source_commit(repository / "src" / "module.py") == second

    git(repository, "worktree", "add", "-q", "-b", "other", str(tmp_path / "worktree"), first)
    assert source_commit(tmp_path / "worktree" / "src" / "module.py") == first

    git(repository, "checkout", "-q", "--detach", first)
    assert source_commit(repository / "src") == first


def test_no_commit_outside_a_checkout(tmp_path):
    (tmp_path / "module.py").write_text("")
    assert source_commit(tmp_path / "module.py") is None
