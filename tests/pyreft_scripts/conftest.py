"""What pyreft's example scripts find on disk, built offline: a model folder and data files.

The scripts load a model and tokenizer with ``from_pretrained(model_name_or_path)`` and
set ``tokenizer.pad_token = tokenizer.unk_token``; the folder holds a tiny random Llama
and the byte-level tokenizer with an unk token, so those lines run as written.
"""

import datasets
import huggingface_hub
import pytest

import reftlab


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory):
    """A ``model_name_or_path`` folder: tiny Llama (seed 0) + tokenizer whose unk token is ``<pad>``."""
    folder = tmp_path_factory.mktemp("model")
    tok = reftlab.tiny_tokenizer()
    tok.unk_token = "<pad>"
    reftlab.tiny_llama(seed=0).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture
def offline_datasets(monkeypatch, tmp_path):
    """``datasets.load_dataset`` offline, caching under ``tmp_path`` (never the user's cache)."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets_cache")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
