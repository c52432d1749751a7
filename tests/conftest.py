import pytest
import torch
from helpers import as_users_see_it

import reftlab
from reftlab.models import tiny_gpt2, tiny_llama, tiny_tokenizer

# Scripts under fixtures/ run in other environments (pyreft's own venv): never collect them.
collect_ignore_glob = ["fixtures/*"]


@pytest.fixture(params=["llama", "gpt2"])
def tiny_hf(request):
    return (tiny_llama if request.param == "llama" else tiny_gpt2)(seed=0)


@pytest.fixture
def tiny_hooked(tiny_hf):
    return reftlab.load_model(tiny_hf, tiny_tokenizer())


@pytest.fixture
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def smol():
    """The embedded SmolLM2-135M-Instruct: (HookedModel, untouched HF model, tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = reftlab.embedded_model_path()
    ref = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    return reftlab.load_model(), ref, tok


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    """An empty offline Hugging Face cache under a temp HF_HOME (see hub_helpers)."""
    from hub_helpers import offline_hf_home

    return offline_hf_home(tmp_path, monkeypatch)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _runtime_checks(request):
    """Tests marked ``user_errors`` run as users do: without jaxtyping/beartype's runtime checks."""
    if request.node.get_closest_marker("user_errors") is None:
        yield
        return
    with as_users_see_it():
        yield
