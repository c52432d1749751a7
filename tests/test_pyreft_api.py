"""Every one of pyreft 0.1.0's 26 public names is importable from reftlab and takes every call pyreft's takes.

``tests/fixtures/pyreft/signatures.json`` is pyreft's own ``inspect.signature`` of each name,
written by ``make_signatures.py`` in pyreft's venv. A call valid for pyreft is valid for
reftlab when every pyreft parameter exists in reftlab under the same name, positional ones at
the same place, with the same default; where pyreft takes ``**kwargs`` and reads fixed keys,
reftlab accepts each of those keys by name. reftlab may add keyword-only parameters.

One exception, documented in docs/pyreft.md: ``ReftModel(config, model)`` is pyvene's
internal constructor (pyreft's README and examples build models with ``get_reft_model``);
reftlab refuses it with an error that names ``get_reft_model``.
"""

import enum
import inspect
import json

import pytest
from helpers import FIXTURES

import reftlab

SIGNATURES = json.loads((FIXTURES / "pyreft" / "signatures.json").read_text())
PYREFT, METHODS = SIGNATURES["names"], SIGNATURES["methods"]
POSITIONAL = ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD")


def test_the_list_is_pyrefts_26_names_and_all_are_exported():
    assert len(PYREFT) == 26
    assert set(PYREFT) <= set(reftlab.__all__)


def incompatibilities(name: str) -> list[str]:
    """Why a call that pyreft's ``name`` takes would fail on reftlab's (``[]``: none)."""
    if "." in name:
        owner, method = name.split(".")
        return compare(METHODS[name], getattr(getattr(reftlab, owner), method))
    return compare(PYREFT[name], getattr(reftlab, name))


def compare(want: dict, obj) -> list[str]:
    if "enum" in want:
        assert isinstance(obj, type) and issubclass(obj, enum.Enum)
        return [] if [m.name for m in obj] == want["enum"] else [f"members {[m.name for m in obj]} != {want['enum']}"]
    ours = {k: p for k, p in inspect.signature(obj).parameters.items() if k != "self"}
    ours_positional = [p.name for p in ours.values() if p.kind.name in POSITIONAL]
    takes_any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in ours.values())
    problems = []
    theirs_positional = [n for n, kind, _ in want["params"] if kind in POSITIONAL]
    for n, kind, default in want["params"]:
        if kind in ("VAR_POSITIONAL", "VAR_KEYWORD"):
            if kind == "VAR_KEYWORD" and "reads" not in want and not takes_any_keyword:
                problems.append("pyreft takes **kwargs and passes them on; reftlab takes no **kwargs")
            continue
        if n not in ours:
            problems.append(f"no parameter {n!r}")
            continue
        mine = ours[n]
        place = theirs_positional.index(n) if kind in POSITIONAL else None
        if place is not None and ours_positional[place : place + 1] != [n]:
            problems.append(f"{n!r} is not positional at place {place}")
        if default is not None and (mine.default is inspect.Parameter.empty or repr(mine.default) != default):
            problems.append(f"{n!r} defaults to {mine.default!r}, pyreft's to {default}")
    for key in want.get("reads", []):
        if key not in ours and not takes_any_keyword:
            problems.append(f"pyreft reads {key!r} from **kwargs; reftlab has no such parameter")
    return problems


@pytest.mark.parametrize("name", sorted(set(PYREFT) - {"ReftModel"}))
def test_takes_every_call_pyrefts_signature_takes(name):
    assert incompatibilities(name) == []


# What a pyreft call can meet on these methods, each documented in docs/pyreft.md.
METHOD_DIFFERENCES = {
    "ReftModel.save": [
        # pyreft uploads to a placeholder repo 'my-awesome-model' when none is named; reftlab asks for one
        "'hf_repo_name' defaults to None, pyreft's to 'my-awesome-model'",
    ],
    # pyvene's default False would leave the prompt unedited; False is refused with the reason
    "ReftModel.generate": ["'intervene_on_prompt' defaults to True, pyreft's to False"],
    # transformers' name for the first argument; the Trainer and pyreft's scripts pass it by position
    "ReftTrainer.compute_loss": ["no parameter 'intervenable'"],
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_the_methods_pyrefts_scripts_call_take_pyrefts_calls(name):
    assert incompatibilities(name) == METHOD_DIFFERENCES.get(name, [])


@pytest.mark.user_errors
def test_pyvenes_reft_model_constructor_is_refused_with_the_way_to_build_one():
    assert incompatibilities("ReftModel")  # the one documented difference
    config = reftlab.ReftConfig(representations={"layer": 1, "component": "block_output", "rank": 2, "kind": "loreft"})
    with pytest.raises(TypeError, match=r"reftlab.get_reft_model\(model, config\)"):
        reftlab.ReftModel(config, reftlab.tiny_llama())


def test_the_trainers_take_pyrefts_positional_order(tmp_path):
    from transformers import TrainingArguments

    tok = reftlab.tiny_tokenizer()
    rep = {"layer": 1, "component": "block_output", "rank": 2, "kind": "loreft"}
    reft = reftlab.get_reft_model(reftlab.tiny_llama(), reftlab.ReftConfig(representations=rep), tokenizer=tok)
    dm = reftlab.make_last_position_supervised_data_module(tok, reft.model, ["Say hi:", "Say yo:"], ["hi", "yo"])
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, max_steps=1)
    # model, args, data_collator, train_dataset, eval_dataset, tokenizer: as transformers 4.45 (pyreft) orders them
    trainer = reftlab.ReftTrainerForCausalLM(reft, args, dm["data_collator"], dm["train_dataset"], None, tok)
    assert trainer.data_collator is dm["data_collator"] and trainer.train_dataset is dm["train_dataset"]
    assert trainer.processing_class is tok
    assert trainer.train().global_step == 1


def test_pyvenes_source_arguments_are_refused_and_its_model_arguments_pass_through():
    tok = reftlab.tiny_tokenizer()
    rep = {"layer": 1, "component": "block_output", "rank": 2, "kind": "loreft"}
    reft = reftlab.get_reft_model(reftlab.tiny_llama(), reftlab.ReftConfig(representations=rep), tokenizer=tok)
    base = dict(tok(["Say hi:"], return_tensors="pt"))
    where = {"sources->base": (None, [[[1]]])}
    for call in (
        lambda: reft(base, None, where, {"x": 1}),  # source_representations, by position
        lambda: reft(base, unit_locations=where, output_original_output=True),
        lambda: reft.generate(base, unit_locations=where, subspaces=[[0]], max_new_tokens=2),
        lambda: reft.generate(base, None, where, None, True, None, False, {"k": 1}, max_new_tokens=2),
    ):
        with pytest.raises(ValueError, match="sourceless"):
            call()
    _, out = reft(base, None, where, None, None, None, False, False, False)  # return_dict=False: a tuple
    assert isinstance(out, tuple) and out[0].shape[:2] == base["input_ids"].shape
    _, ids = reft.generate(base, None, where, None, True, max_new_tokens=2, do_sample=False)
    assert ids.shape[1] == base["input_ids"].shape[1] + 2
    with pytest.raises(ValueError, match="include_model=True"):
        reft.save("unused", False, None, True)
