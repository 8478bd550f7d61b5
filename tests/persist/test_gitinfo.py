"""current_commit() reads .git by itself (loose and packed refs, detached HEAD, worktrees)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tokenspy_core.gitinfo import current_commit

SHA = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"


def make_git_dir(root: Path, head: str) -> Path:
    git = root / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text(head + "\n")
    return git


def test_branch_with_a_loose_ref_from_a_subdirectory(tmp_path: Path) -> None:
    git = make_git_dir(tmp_path, "ref: refs/heads/main")
    (git / "refs" / "heads" / "main").write_text(SHA + "\n")
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    assert current_commit(tmp_path / "src" / "pkg") == SHA


def test_branch_in_packed_refs(tmp_path: Path) -> None:
    git = make_git_dir(tmp_path, "ref: refs/heads/feature/x")
    (git / "packed-refs").write_text("# pack-refs with: peeled fully-peeled sorted\n"
                                     f"{OTHER} refs/heads/main\n{SHA} refs/heads/feature/x\n^{OTHER}\n")
    assert current_commit(tmp_path) == SHA


def test_detached_head(tmp_path: Path) -> None:
    make_git_dir(tmp_path, SHA)
    assert current_commit(tmp_path) == SHA


def test_linked_worktree_reads_branches_from_the_common_dir(tmp_path: Path) -> None:
    main_git = make_git_dir(tmp_path / "main", "ref: refs/heads/main")
    (main_git / "refs" / "heads" / "topic").write_text(OTHER + "\n")
    wt_git = main_git / "worktrees" / "wt"
    wt_git.mkdir(parents=True)
    (wt_git / "HEAD").write_text("ref: refs/heads/topic\n")
    (wt_git / "commondir").write_text("../..\n")
    (tmp_path / "wt").mkdir()
    (tmp_path / "wt" / ".git").write_text(f"gitdir: {wt_git}\n")
    assert current_commit(tmp_path / "wt") == OTHER


def test_outside_a_repository_is_none(tmp_path: Path) -> None:
    assert current_commit(tmp_path) is None


def test_unborn_branch_is_none(tmp_path: Path) -> None:
    make_git_dir(tmp_path, "ref: refs/heads/main")
    assert current_commit(tmp_path) is None


def test_defaults_to_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_git_dir(tmp_path, SHA)
    monkeypatch.chdir(tmp_path)
    assert current_commit() == SHA


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_agrees_with_git_on_a_real_repository(tmp_path: Path) -> None:
    def git(*args: str) -> str:
        config = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
        return subprocess.run(["git", *config, *args], cwd=tmp_path, capture_output=True, text=True,
                              check=True).stdout.strip()

    git("init", "-q", "-b", "main")
    (tmp_path / "f").write_text("1")
    git("add", "f")
    git("commit", "-q", "-m", "one")
    assert current_commit(tmp_path) == git("rev-parse", "HEAD")
    git("pack-refs", "--all")
    assert current_commit(tmp_path) == git("rev-parse", "HEAD")
    (tmp_path / "f").write_text("2")
    git("commit", "-q", "-am", "two")
    git("checkout", "-q", "--detach", "HEAD~1")
    assert current_commit(tmp_path) == git("rev-parse", "HEAD")
