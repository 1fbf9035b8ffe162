"""CodeCommit's default branch and branches, which moto 5.2 lacks, read from the git stand-in.

moto keeps only a repository's metadata: GetRepository never reports a default branch,
and UpdateDefaultBranch and GetBranch answer "not implemented". Here the branches are the
ones in the bare repository the CodeCommit git stand-in serves
(`$PILLAR_CODECOMMIT_REPOS_DIR/<name>.git`), and the default branch is its HEAD, as in
CodeCommit, where the default branch is the one a clone checks out:
- GetRepository reports `defaultBranch` once that branch exists;
- UpdateDefaultBranch moves HEAD, refusing a branch that does not exist
  (BranchDoesNotExistException);
- GetBranch gives a branch's commit id;
- DeleteRepository also deletes the repository's git data.
"""

import json
import os
import shutil
import subprocess

from moto.codecommit.models import codecommit_backends
from moto.codecommit.responses import CodeCommitResponse

from errors import error

REPOS_DIR = os.environ.get("PILLAR_CODECOMMIT_REPOS_DIR", "")


def git_dir(response, name):
    """The bare repository behind `name`, after checking the API knows the repository."""
    codecommit_backends[response.current_account][response.region].get_repository(name)
    return os.path.join(REPOS_DIR, f"{name}.git")


def git(directory, *args):
    """git's output, or None when it fails (no such repository or ref)."""
    if not os.path.isdir(directory):
        return None
    run = subprocess.run(["git", "--git-dir", directory, *args], capture_output=True, text=True)
    return run.stdout.strip() if run.returncode == 0 else None


def commit_of(directory, branch):
    return git(directory, "rev-parse", "-q", "--verify", f"refs/heads/{branch}^{{commit}}")


def default_branch(directory):
    head = git(directory, "symbolic-ref", "-q", "HEAD") or ""
    branch = head.removeprefix("refs/heads/")
    return branch if branch != head and commit_of(directory, branch) else None


original_get_repository = CodeCommitResponse.get_repository


def get_repository(self):
    name = self._get_param("repositoryName")
    answer = json.loads(original_get_repository(self))
    branch = default_branch(git_dir(self, name))
    if branch:
        answer["repositoryMetadata"]["defaultBranch"] = branch
    return json.dumps(answer)


def branch_missing(name, branch):
    return error("BranchDoesNotExistException", f"Branch '{branch}' does not exist in repository '{name}'.")


def update_default_branch(self):
    name, branch = self._get_param("repositoryName"), self._get_param("defaultBranchName")
    if not branch:
        raise error("BranchNameRequiredException", "A branch name is required.")
    directory = git_dir(self, name)
    if not commit_of(directory, branch):
        raise branch_missing(name, branch)
    git(directory, "symbolic-ref", "HEAD", f"refs/heads/{branch}")
    return "{}"


def get_branch(self):
    name, branch = self._get_param("repositoryName"), self._get_param("branchName")
    commit = commit_of(git_dir(self, name), branch)
    if not commit:
        raise branch_missing(name, branch)
    return json.dumps({"branch": {"branchName": branch, "commitId": commit}})


original_delete_repository = CodeCommitResponse.delete_repository


def delete_repository(self):
    name = self._get_param("repositoryName")
    answer = original_delete_repository(self)
    if REPOS_DIR and name and "/" not in name:
        shutil.rmtree(os.path.join(REPOS_DIR, f"{name}.git"), ignore_errors=True)
    return answer


def install():
    if not REPOS_DIR:
        raise SystemExit("PILLAR_CODECOMMIT_REPOS_DIR is not set: the git stand-in's repositories")
    CodeCommitResponse.get_repository = get_repository
    CodeCommitResponse.update_default_branch = update_default_branch
    CodeCommitResponse.get_branch = get_branch
    CodeCommitResponse.delete_repository = delete_repository
