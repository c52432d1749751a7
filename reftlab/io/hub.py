"""Upload a checkpoint folder to, and download one from, the Hugging Face Hub.

Both go through ``huggingface_hub`` (``HfApi.upload_folder``, ``snapshot_download``). A
download is served from the hub client's local cache when it holds the repo, so with
``HF_HUB_OFFLINE=1`` a cached checkpoint still loads. Network or auth failures become
one clear error; an upload never touches the local folder it uploads. Which strings
are Hub ids and which are paths: ``reftlab.models.source``.
"""

from __future__ import annotations

from pathlib import Path


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
    from ..models.hub import unavailable

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
    except Exception as e:  # offline, not found, gated, network: all end the same way
        raise unavailable(repo_id, revision, e, cache_dir, what="checkpoint") from None
