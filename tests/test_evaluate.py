"""reftlab.evaluate: per-example tables, metrics, base comparison, loss and classification scores."""

import math

import pandas as pd
import pytest
import torch
from helpers import no_hooks_anywhere, tiny_classifier

import reftlab
from reftlab.data.tasks import collate_classification, encode_task_examples
from reftlab.train.loop import evaluate as loss_of

PROMPTS = ["hello there", "a b c", "the cat sat", "one two three"]


def reft_of(hooked, positions="l1", rank=2):
    torch.manual_seed(0)
    cfg = reftlab.ReftConfig(
        representations=[
            {"layer": 1, "component": "block_output", "positions": positions, "kind": "loreft", "rank": rank}
        ]
    )
    rm = reftlab.get_reft_model(hooked, cfg)
    with torch.no_grad():  # a visible edit: the learned source is far from the projection
        for p in rm.interventions.parameters():
            p.add_(torch.randn_like(p))
    return rm


def test_exact_match_table_and_base_comparison(tok):
    hooked = reftlab.load_model(reftlab.tiny_llama(seed=0), tok)
    rm = reft_of(hooked)
    gen = reftlab.generate(rm, PROMPTS, max_new_tokens=5)
    base = reftlab.generate(hooked, PROMPTS, max_new_tokens=5)
    assert gen.texts != base.texts  # the intervention changes the answers
    # references: the ReFT's own answer for the first two prompts, something else for the others
    data = [{"prompt": p, "response": t if i < 2 else "zzz"} for i, (p, t) in enumerate(zip(PROMPTS, gen.texts))]
    result = reftlab.evaluate(rm, data, metric="exact_match", max_new_tokens=5, batch_size=3, compare="base")
    assert result.score == 0.5 and result.n == 4 and result.metric == "exact_match"
    assert list(result.table["prediction"]) == gen.texts
    assert list(result.table["base_prediction"]) == base.texts
    assert list(result.table["score"]) == [1.0, 1.0, 0.0, 0.0]
    expected_base = sum(b.strip() == d["response"].strip() for b, d in zip(base.texts, data)) / 4
    assert result.compared == {"base": expected_base}
    assert result.trainable_params == rm.num_intervention_parameters()
    summary = result.summary()
    assert summary["metric"] == "exact_match" and summary["score"] == 0.5 and summary["n"] == 4
    assert no_hooks_anywhere(hooked) and rm.interventions.training  # flag restored


def test_callable_metric_and_multiple_choice_accuracy(tok):
    hooked = reftlab.load_model(reftlab.tiny_llama(seed=0), tok)
    rm = reft_of(hooked)
    from reftlab.data.tasks import render_choices

    choices = ["xx", "yy"]
    texts = reftlab.generate(rm, [render_choices(p, choices) for p in PROMPTS], max_new_tokens=4).texts

    def length(prediction, example):
        return float(len(prediction) + len(example["response"]))

    result = reftlab.evaluate(rm, [{"prompt": p, "response": "q"} for p in PROMPTS], metric=length)
    assert result.metric == "length" and list(result.table["score"]) == [
        float(len(t) + 1) for t in result.table["prediction"]
    ]
    # a random model names no choice: accuracy 0, and the prompts carry the options
    mc = [{"prompt": p, "choices": choices, "answer": 1} for p in PROMPTS]
    acc = reftlab.evaluate(rm, mc, task="multiple_choice", max_new_tokens=4)
    assert acc.metric == "accuracy" and list(acc.table["prediction"]) == texts
    expected = [float(reftlab.metrics.match_choice(t, choices) == 1) for t in texts]
    assert list(acc.table["score"]) == expected


def test_loss_metric_is_the_token_weighted_training_loss(tok):
    hooked = reftlab.load_model(reftlab.tiny_llama(seed=0), tok)
    rm = reft_of(hooked, positions="f1+l1")
    data = [{"prompt": p, "response": r} for p, r in zip(PROMPTS, ["ok", "fine thanks", "no", "four five"])]
    result = reftlab.evaluate(rm, data, metric="loss", batch_size=3)
    ds = reftlab.build_dataset(pd.DataFrame(data), tok, positions="f1+l1", num_interventions=1)
    collate = reftlab.ReftDataCollator(pad_token_id=tok.pad_token_id or 0)
    expected = loss_of(rm, [dict(ds[i]) for i in range(len(ds))], collate, batch_size=4)
    assert math.isclose(result.score, expected, rel_tol=1e-5)
    assert not result.higher_is_better and len(result.table) == 4
    base = reftlab.evaluate(hooked, data, metric="loss")
    assert base.trainable_params == 0 and not math.isclose(base.score, result.score, rel_tol=1e-3)


def test_classification_predicts_the_heads_argmax(tok):
    torch.manual_seed(0)
    hooked = reftlab.load_model(tiny_classifier(tok), tok)
    rm = reft_of(hooked)
    data = [{"prompt": p, "label": i % 2} for i, p in enumerate(PROMPTS)]
    result = reftlab.evaluate(rm, data, labels=["no", "yes"], batch_size=3)
    assert result.task == "classification" and result.metric == "accuracy"
    examples = reftlab.data.tasks.read_examples(data, "classification", labels=["no", "yes"])
    rows = encode_task_examples(tok, examples, "classification", positions="l1", num_interventions=1)
    batch = collate_classification(rows, tok.pad_token_id)
    logits = rm.run(batch["input_ids"], batch["attention_mask"], positions=batch["intervention_locations"][:, 0]).logits
    predicted = [["no", "yes"][i] for i in logits.argmax(-1).tolist()]
    assert list(result.table["prediction"]) == predicted
    assert result.score == sum(p == ["no", "yes"][i % 2] for i, p in enumerate(predicted)) / 4


def test_bad_metric_and_task_are_named(tok):
    hooked = reftlab.load_model(reftlab.tiny_llama(seed=0), tok)
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        reftlab.evaluate(hooked, [{"prompt": "a", "response": "b"}], metric="bleu")
    with pytest.raises(ValueError, match="task='summarise' is not a task type"):
        reftlab.evaluate(hooked, [{"prompt": "a", "response": "b"}], task="summarise")


def test_prompts_are_formatted_as_the_model_records(tok):
    from reftlab.data.prompt_format import PromptFormat

    hooked = reftlab.load_model(reftlab.tiny_llama(seed=0), tok)
    rm = reft_of(hooked)
    data = [{"prompt": p, "response": "x"} for p in PROMPTS]
    chat = reftlab.evaluate(rm, data, chat_template=True, max_new_tokens=4).table["prediction"].tolist()
    raw = reftlab.evaluate(rm, data, chat_template=False, max_new_tokens=4).table["prediction"].tolist()
    assert chat != raw
    rm.prompt_format = PromptFormat(chat_template=True)  # what a checkpoint trained on chat prompts records
    assert reftlab.evaluate(rm, data, max_new_tokens=4).table["prediction"].tolist() == chat
    assert reftlab.evaluate(rm, data, chat_template=False, max_new_tokens=4).table["prediction"].tolist() == raw


def test_a_checkpoint_without_positions_is_evaluated_at_given_positions(tok, tmp_path):
    """pyreft's way (no positions saved): evaluate refuses, naming positions=; with them it scores
    exactly as the same ReFT saved with those positions."""
    hooked = reftlab.load_model(reftlab.tiny_llama(seed=0), tok)
    with_l1 = reft_of(hooked, positions="l1")
    bare = reftlab.ReftModel(
        hooked,
        reftlab.ReftConfig(representations=[{"layer": 1, "component": "block_output", "kind": "loreft", "rank": 2}]),
        list(with_l1.interventions.values()),
    )
    data = [{"prompt": p, "response": "a b"} for p in PROMPTS]
    with pytest.raises(ValueError, match="pass positions= to evaluate"):
        reftlab.evaluate(bare, data, metric="loss")
    for metric in ("loss", "exact_match"):
        want = reftlab.evaluate(with_l1, data, metric=metric, max_new_tokens=4)
        got = reftlab.evaluate(bare, data, metric=metric, max_new_tokens=4, positions="l1")
        assert got.score == want.score
        assert list(got.table["score"]) == list(want.table["score"])
    assert list(got.table["prediction"]) == list(want.table["prediction"])
    with pytest.raises(ValueError, match="the bare base model has none"):
        reftlab.evaluate(hooked, data, positions="l1")


def test_eval_settings_are_checked_and_name_the_field():
    for bad, field in (
        ({"task": "summarize"}, "task"),
        ({"metric": "bleu"}, "metric"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"batch_size": -1}, "batch_size"),
    ):
        with pytest.raises(ValueError, match=field):
            reftlab.EvalSettings(**bad)
    s = reftlab.EvalSettings(task="classification", labels=["neg", "pos"])
    assert s.labels == ("neg", "pos") and s.scorer().name == "accuracy"
    assert s.replace(metric="loss").scorer().name == "loss" and s.metric is None  # frozen: replace copies
    with pytest.raises(ValueError, match="needs a task or a metric"):
        reftlab.EvalSettings().scorer()


def test_settings_and_keywords_evaluate_alike(tok):
    hooked = reftlab.load_model(reftlab.tiny_llama(seed=0), tok)
    rm = reft_of(hooked)
    data = [{"prompt": p, "response": "zzz"} for p in PROMPTS]
    by_keywords = reftlab.evaluate(rm, data, metric="loss", batch_size=3)
    settings = reftlab.EvalSettings(metric="loss", batch_size=3)
    by_settings = reftlab.evaluate(rm, data, settings=settings)
    assert by_settings.score == by_keywords.score and by_settings.task == "generation"
    # a keyword given beside settings replaces that field
    generated = reftlab.evaluate(rm, data, settings=settings, metric="exact_match", max_new_tokens=2)
    assert generated.metric == "exact_match"
    assert list(generated.table["prediction"]) == reftlab.generate(rm, PROMPTS, max_new_tokens=2).texts
