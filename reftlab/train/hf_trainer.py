"""pyreft's HF Trainer classes, for transformers 5: ``ReftTrainerForCausalLM`` and
``ReftTrainerForSequenceClassification``.

    data_module = reftlab.make_last_position_supervised_data_module(tok, model, prompts, responses)
    trainer = reftlab.ReftTrainerForCausalLM(model=reft_model, tokenizer=tok, args=TrainingArguments(...),
                                             **data_module)
    trainer.train()

``tokenizer=`` (pyreft) and ``processing_class=`` (transformers 5) are both accepted. The
optimizer only sees parameters with ``requires_grad``: the interventions, plus anything
the user unfroze (LoRA, a classifier head). Saving writes only those, as safetensors, to ``{output_dir}/reft``.
The causal-LM loss scores logits only where labels are not -100 (same value as the
HF loss). Batches come straight from the data collator; columns are never dropped.

``ReftTrainerForCausalLM`` trains through ``reftlab.train``'s fast path (cached lower blocks,
packed rows, reused prefix keys/values, sparse logits; ``train.fast_forward``) whenever it
applies, decided once at the first training step: the Trainer's batches carry no example
index, so the cache is keyed by each example's token ids (``content_keys``). The losses are
those of the plain path step for step; ``fast=False`` forces the plain path, ``fast=True``
makes a model that cannot take the fast path an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader
from transformers import Trainer

from .fast_forward import FastForward, content_keys, why_not
from .loss import batch_positions, plain_loss


class ReftTrainer(Trainer):
    """A ``transformers.Trainer`` for a ``ReftModel`` (abstract: use a subclass below)."""

    def __init__(
        self, model: Any = None, args: Any = None, *, tokenizer: Any = None, processing_class: Any = None, **kwargs: Any
    ) -> None:
        if tokenizer is not None and processing_class is not None and tokenizer is not processing_class:
            raise ValueError("give the tokenizer once: tokenizer= (pyreft) or processing_class= (transformers 5)")
        if not hasattr(model, "interventions"):
            raise TypeError(f"model must be a ReftModel (reftlab.get_reft_model), got {type(model).__name__}")
        with _hf_config_view(model):
            super().__init__(model=model, args=args, processing_class=processing_class or tokenizer, **kwargs)
        # Our compute_loss returns a per-batch mean: let the Trainer scale for accumulation.
        self.model_accepts_loss_kwargs = False

    def train(self, *args: Any, **kwargs: Any) -> Any:
        with _hf_config_view(self.model):
            return super().train(*args, **kwargs)

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        with _hf_config_view(self.model):
            return super().evaluate(*args, **kwargs)

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        with _hf_config_view(self.model):
            return super().predict(*args, **kwargs)

    def _loader(self, dataset: Any, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
        )

    def get_train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise ValueError("the trainer has no train_dataset")
        return self._loader(self.train_dataset, self._train_batch_size, shuffle=True)

    def get_eval_dataloader(self, eval_dataset: Any = None) -> DataLoader:
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("the trainer has no eval_dataset")
        return self._loader(dataset, self.args.eval_batch_size, shuffle=False)

    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
        # A subfolder: the Trainer writes its own files (optimizer, state) beside it.
        self.model.save(Path(output_dir or self.args.output_dir) / "reft")


class ReftTrainerForCausalLM(ReftTrainer):
    """Causal-LM ReFT training: the loss of the response tokens, interventions at the batch's locations.

    ``fast``: None takes the fast path when it applies, True requires it, False never takes it.
    """

    def __init__(self, *args: Any, fast: bool | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast = fast
        self.fast_path: FastForward | None = None
        self._decided = False

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        if return_outputs:
            positions = batch_positions(inputs, len(model.interventions))
            out = model.run(inputs["input_ids"], inputs["attention_mask"], positions=positions, labels=inputs["labels"])
            return out.loss, out
        fast = self._fast_path(model)
        if fast is not None:
            return fast.loss(inputs, keys=content_keys(inputs))
        return plain_loss(model, inputs)

    def _fast_path(self, model: Any) -> FastForward | None:
        """Decided once, at the first loss (the model is then in the mode it trains in)."""
        if not self._decided:
            self._decided = True
            reason = None if self.fast is False else why_not(model)
            if self.fast and reason is not None:
                raise ValueError(f"fast=True but the fast path does not apply: {reason}; use fast=None or False")
            if self.fast is not False and reason is None:
                self.fast_path = FastForward(model)
        return self.fast_path


class ReftTrainerForSequenceClassification(ReftTrainer):
    """ReFT on an HF ``*ForSequenceClassification`` model; the loss is the HF head's own
    (regression, single- or multi-label, from ``config.problem_type`` and the labels)."""

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        positions = batch_positions(inputs, len(model.interventions))
        out = model.run(inputs["input_ids"], inputs["attention_mask"], positions=positions, labels=inputs["labels"])
        return (out.loss, out) if return_outputs else out.loss


class _WritableView:
    """What the Trainer takes for ``model.config``: reads fall through to the ReftConfig,
    writes (``use_cache``, special-token ids) stay on the view, which is its own text config."""

    def __init__(self, wrapped: Any, hf_config: Any) -> None:
        object.__setattr__(self, "_wrapped", wrapped)
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):  # the base model's, as HF would see them
            object.__setattr__(self, name, getattr(hf_config, name, None))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)

    def get_text_config(self, *args: Any, **kwargs: Any) -> "_WritableView":
        return self


@contextmanager
def _hf_config_view(model: Any) -> Iterator[None]:
    # transformers' Trainer reads and writes `model.config` as an HF PretrainedConfig (pyvene's
    # config is one); a ReftConfig is frozen data, so the Trainer works on a view while it runs.
    config = model.config
    model.config = _WritableView(config, model.hooked.hf_model.config)
    try:
        yield
    finally:
        model.config = config


__all__ = ["ReftTrainer", "ReftTrainerForCausalLM", "ReftTrainerForSequenceClassification"]
