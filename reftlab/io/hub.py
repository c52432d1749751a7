"""Upload a checkpoint folder to, and download one from, the Hugging Face Hub.

Both go through ``huggingface_hub`` (``HfApi.upload_folder``, ``snapshot_download``). A
download is served from the hub client's local cache when it holds the repo, so with
``HF_HUB_OFFLINE=1`` a cached checkpoint still loads. Network or auth failures become
one clear error; an upload never touches the local folder it uploads.
"""

from __future__ import annotations

import re
from pathlib import Path

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def looks_like_repo_id(name: str) -> bool:
    """``"user/name"`` or ``"name"``; a path that exists locally is never a repo id.

    >>> looks_like_repo_id("stanfordnlp/reft-emoji"), looks_like_repo_id("./ckpt/x/y")
    (True, False)
    """
    return bool(_REPO_ID.match(name)) and not Path(name).exists()


def upload_folder(folder: Path, repo_id: str, *, private: bool | None = None, token: str | None = None) -> str:
    """Create ``repo_id`` if needed and upload ``folder``; returns the commit URL."""
    try:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            commit_message="Upload ReFT checkpoint (reftlab)",
        )
    except Exception as e:  # network, offline mode, auth, permissions: all end the same way
        raise RuntimeError(
            f"could not upload {folder} to the Hugging Face Hub as {repo_id!r}: {type(e).__name__}: {e}. "
            f"The local checkpoint at {folder} is intact; retry with push_to_hub({repo_id!r}) once online "
            "and logged in (`hf auth login` or HF_TOKEN)"
        ) from e
    return str(getattr(info, "commit_url", info))


def download(repo_id: str, *, revision: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """The local folder of ``repo_id`` (downloaded, or from the hub client's cache)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                repo_id=repo_id,
                repo_type="model",
                revision=revision,
                cache_dir=None if cache_dir is None else str(cache_dir),
            )
        )
    except Exception as e:
        raise FileNotFoundError(
            f"{repo_id!r} is not a local folder, and the Hugging Face Hub could not provide it "
            f"({type(e).__name__}: {e}); it is not in the local hub cache either. Pass a local checkpoint "
            "folder, or go online (unset HF_HUB_OFFLINE) to download it"
        ) from e
