"""The git commit the program runs from, so stored costs can be compared commit to commit.

Read from the files under `.git` (no subprocess on the common path: `init()` runs in every process
start, web workers included); `git rev-parse HEAD` with a timeout is the fallback for layouts we do
not parse (reftable, `$GIT_DIR`).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

__all__ = ["current_commit"]

_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # sha1, or sha256 repositories
_GIT_TIMEOUT_S = 2.0
_MAX_SYMREF_DEPTH = 5


def current_commit(cwd: str | os.PathLike[str] | None = None) -> str | None:
    """The full commit hash HEAD points at, for the repository containing `cwd` (default: the
    current directory); None outside a repository, in one without commits, or if git is unavailable."""
    start = Path(cwd if cwd is not None else os.getcwd()).resolve()
    if not os.environ.get("GIT_DIR"):
        try:
            git_dir = _find_git_dir(start)
            if git_dir is None:
                return None
            sha = _read_head(git_dir)
            if sha is not None:
                return sha
        except (OSError, UnicodeDecodeError):
            pass
    return _rev_parse(start)


def _find_git_dir(start: Path) -> Path | None:
    for directory in (start, *start.parents):
        dot_git = directory / ".git"
        if dot_git.is_dir():
            return dot_git
        if dot_git.is_file():  # worktrees and submodules: "gitdir: <path>"
            text = dot_git.read_text(encoding="utf-8").strip()
            if text.startswith("gitdir:"):
                return (directory / text[len("gitdir:"):].strip()).resolve()
    return None


def _read_head(git_dir: Path) -> str | None:
    common = git_dir
    commondir = git_dir / "commondir"  # a linked worktree shares branches with the main repository
    if commondir.is_file():
        common = (git_dir / commondir.read_text(encoding="utf-8").strip()).resolve()
    ref = (git_dir / "HEAD").read_text(encoding="utf-8").strip()
    for _ in range(_MAX_SYMREF_DEPTH):
        if _SHA.fullmatch(ref):
            return ref  # detached HEAD, or the value of a loose ref
        if not ref.startswith("ref:"):
            return None
        name = ref[len("ref:"):].strip()
        for base in (git_dir, common):
            loose = base / name
            if loose.is_file():
                ref = loose.read_text(encoding="utf-8").strip()
                break
        else:
            return _packed_ref(common, name)
    return None


def _packed_ref(common: Path, name: str) -> str | None:
    packed = common / "packed-refs"
    if not packed.is_file():
        return None  # an unborn branch, or refs we do not parse: let git answer
    for line in packed.read_text(encoding="utf-8").splitlines():
        if line.startswith(("#", "^")):
            continue
        sha, _, ref_name = line.partition(" ")
        if ref_name.strip() == name and _SHA.fullmatch(sha):
            return sha
    return None


def _rev_parse(cwd: Path) -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "--verify", "--quiet", "HEAD"], cwd=cwd,
                                capture_output=True, text=True, timeout=_GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = result.stdout.strip()
    return sha if result.returncode == 0 and _SHA.fullmatch(sha) else None
