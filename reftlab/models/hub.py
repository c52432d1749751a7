"""The Hugging Face cache, as seen by a user whose Hub id did not load.

Models come through transformers' own ``from_pretrained``, which uses the hub client's
cache (``$HF_HUB_CACHE``, default ``$HF_HOME/hub``, default ``~/.cache/huggingface/hub``)
and honours ``HF_HUB_OFFLINE=1``. When a Hub id is neither cached nor downloadable,
``unavailable`` turns transformers' error into one message naming the id, the cache
folder and the command that fills it.
"""

from __future__ import annotations

import os
import re
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path


def hub_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder the hub client reads and fills (read at call time, so ``HF_HOME`` set later counts)."""
    if cache_dir is not None:
        return Path(cache_dir)
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def resolved_commit(repo_id: str, revision: str | None, cache_dir: str | os.PathLike | None = None) -> str | None:
    """The commit hash ``revision`` (a branch, tag, commit or None for main) resolved to, as the cache holds it.

    Read from the snapshot folder of the repo's ``config.json`` (``snapshots/<commit>/``);
    None if it cannot be resolved.
    """
    from huggingface_hub import hf_hub_download

    try:
        path = Path(
            hf_hub_download(
                repo_id, "config.json", revision=revision, cache_dir=None if cache_dir is None else str(cache_dir)
            )
        )
    except Exception:  # the model loaded, so this only fails for unusual repos: the record stays as asked
        return None
    commit = path.parent.name
    return commit if _COMMIT.fullmatch(commit) else None


_COMMIT = re.compile(r"[0-9a-f]{40}")


def download_command(repo_id: str, revision: str | None = None) -> str:
    """The installed hub client's download command: ``hf download`` (huggingface_hub >= 1) or ``huggingface-cli``.

    >>> download_command("org/name", "v2").split()[1:]
    ['download', 'org/name', '--revision', 'v2']
    """
    return f"{_tool()} download {repo_id}" + (f" --revision {revision}" if revision else "")


def _tool() -> str:
    try:
        scripts = {ep.name for ep in distribution("huggingface_hub").entry_points if ep.group == "console_scripts"}
    except PackageNotFoundError:
        scripts = set()
    return "huggingface-cli" if "huggingface-cli" in scripts and "hf" not in scripts else "hf"


def unavailable(
    repo_id: str,
    revision: str | None,
    cause: BaseException,
    cache_dir: str | os.PathLike | None = None,
    *,
    what: str = "model",
) -> FileNotFoundError:
    """The one error for a Hub id that neither the cache nor the Hub could provide (``what``: model, checkpoint)."""
    cache = hub_cache_dir(cache_dir)
    repo = f"{repo_id!r}" + (f" (revision {revision!r})" if revision else "")
    reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    if len(reason) > 200:
        reason = reason[:200] + "..."
    if offline():
        why = "downloads are off (HF_HUB_OFFLINE=1)"
    else:
        why = f"the Hub could not provide it ({type(cause).__name__}: {reason})"
    env = "HF_HUB_CACHE" if os.environ.get("HF_HUB_CACHE") else "HF_HOME"
    return FileNotFoundError(
        f"cannot load {what} {repo}: it is not a local folder, it is not (completely) in the Hugging Face "
        f"cache at {cache}, and {why}. Fill the cache where the Hub is reachable: "
        f"`{download_command(repo_id, revision)}` (with {env} pointing at the cache to fill; gated or private "
        f"repos need `{_tool()} {'auth login' if _tool() == 'hf' else 'login'}` first), or pass a local folder"
    )
