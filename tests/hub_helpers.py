"""A Hugging Face Hub cache written the way the hub client writes it, for offline tests.

Layout (huggingface_hub's "manage cache" guide)::

    <HF_HOME>/hub/models--<org>--<name>/
        blobs/<etag>                       file contents; etag = sha256 for LFS files
                                           (weights), git blob sha1 for the others
        refs/<branch>                      the commit hash the branch points at
        snapshots/<commit>/<file>          relative symlink -> ../../blobs/<etag>

``huggingface_hub.scan_cache_dir`` parses it (tests check that it does), and
transformers' ``from_pretrained`` resolves ids, branches and commit hashes from it
with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import huggingface_hub.constants
import pytest

LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


def etag(path: Path) -> str:
    data = path.read_bytes()
    if path.name.endswith(LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def add_snapshot(hub_cache: Path, repo_id: str, folder: Path, commit: str, refs: tuple[str, ...] = ("main",)) -> Path:
    """Put every file of ``folder`` into the cache as ``commit`` of ``repo_id``; point ``refs`` at it."""
    repo = hub_cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for src in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = src.relative_to(folder)
        blob = repo / "blobs" / etag(src)
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            blob.write_bytes(src.read_bytes())
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot


def save_tiny(folder: Path, seed: int) -> Path:
    """A tiny random Llama and the tiny tokenizer saved as an HF folder."""
    import reftlab

    reftlab.tiny_llama(seed=seed).save_pretrained(folder)
    reftlab.tiny_tokenizer().save_pretrained(folder)
    return folder


def offline_hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HF_HOME with downloads off (the ``hf_home`` fixture); returns its hub cache folder.

    The environment is set for subprocesses; huggingface_hub reads it once at import, so
    its constants are set too for this process.
    """
    home = tmp_path / "hf-home"
    cache = home / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HOME", str(home))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache
