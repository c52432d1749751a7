"""pyreft's HF Trainer classes, for transformers 5: ``ReftTrainer`` (causal LM, as pyreft's),
``ReftTrainerForCausalLM`` and ``ReftTrainerForSequenceClassification``.

    data_module = reftlab.make_last_position_supervised_data_module(tok, model, prompts, responses)
    trainer = reftlab.ReftTrainerForCausalLM(model=reft_model, tokenizer=tok, args=TrainingArguments(...),
                                             **data_module)
    trainer.train()

``tokenizer=`` (pyreft) and ``processing_class=`` (transformers 5) are both accepted. The
optimizer only sees parameters with ``requires_grad``: the interventions, plus anything
the user unfroze (LoRA, a classifier head). Saving writes only those, as safetensors, to
``{output_dir}/reft`` (a head in ``base_parameters.safetensors``), from the main process only;
``train(resume_from_checkpoint=...)`` and ``load_best_model_at_end`` load that folder back in
place. The causal-LM loss scores logits only where labels are not -100 (same value as the
HF loss). Batches come from HF's own data loaders (seeded shuffling, one shard per
process under ``torchrun``) with every column kept. A subclass written for pyreft, whose
``compute_loss(self, intervenable, inputs, return_outputs=False)`` lacks transformers 5's
``num_items_in_batch``, works as is.

The causal-LM trainers train through ``reftlab.train``'s fast path (cached lower blocks,
packed rows, reused prefix keys/values, sparse logits; ``train.fast_forward``) whenever it
applies, decided once at the first loss: the Trainer's batches carry no example index, so
the cache is keyed by each example's token ids (``content_keys``). A map-style training set
warms the cache before step 1 (in fixed chunks, up to the cache's size, so a resumed run sees
the same numbers); a streaming one (``IterableDataset``) fills it as its batches arrive. The losses are those of
the plain path step for step, for right-, left- or mixed-padded batches (pyreft's leading
pad included: each row's unmasked tokens are packed at their padded positions). ``fast=False``
forces the plain path; ``fast=True`` makes any fallback to the plain path an error; otherwise a
fallback is logged once per reason. ``fast_steps`` and ``plain_steps`` count the losses each
path computed.

Under ``torchrun`` / ``accelerate launch`` the Trainer hands us a ``DistributedDataParallel``
wrapper, which all-reduces gradients only for a forward run through it. The fast path runs on
the ReftModel inside it (``ddp.module``: DDP's reducer then expects no gradients and neither
syncs nor complains), and ``training_step`` averages the trainable parameters' gradients over
the ranks itself, in one flat all-reduce (``ddp.reduce_gradients``), when DDP would have: on the
micro-batch that ends an accumulation window (outside ``no_sync``), with the gradients the
window accumulated. A plain-path fallback goes through the wrapper, and DDP syncs as usual.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer

from ..io import load_into
from .ddp import Ranks, reduce_gradients
from .fast_forward import FastForward, why_not
from .forward import is_wrapped, run_batch, unwrap
from .loss import plain_loss
from .packing import batch_refusal, content_key, content_keys

log = logging.getLogger(__name__)


class ReftTrainer(Trainer):
    """pyreft's ``ReftTrainer``: a ``transformers.Trainer`` for a ``ReftModel``, on the causal-LM
    loss of the response tokens with the interventions at the batch's locations.

    ``fast``: None takes the fast path when it applies, True requires it, False never takes it.
    """

    def __init__(
        self,
        model: Any = None,
        args: Any = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        tokenizer: Any = None,
        model_init: Any = None,
        compute_metrics: Any = None,
        callbacks: Any = None,
        optimizers: tuple[Any, Any] = (None, None),
        preprocess_logits_for_metrics: Any = None,
        *,
        processing_class: Any = None,
        fast: bool | None = None,
        **kwargs: Any,
    ) -> None:
        # pyreft's positional order (transformers 4.45's Trainer, ``tokenizer`` sixth), passed on by name.
        kwargs.update(
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            model_init=model_init,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        )
        self.fast = fast
        self.fast_path: FastForward | None = None
        self._fast_decided = False
        self._refusal: str | None = None  # why the model cannot take the fast path (decided once)
        self._logged: set[str] = set()
        self.fast_steps = 0  # losses computed on the fast path
        self.plain_steps = 0  # losses computed on the plain path (ReftTrainer's own compute_loss)
        self._sync_fast = False  # this micro-batch's fast loss ran around a DDP wrapper
        if tokenizer is not None and processing_class is not None and tokenizer is not processing_class:
            raise ValueError("give the tokenizer once: tokenizer= (pyreft) or processing_class= (transformers 5)")
        if not hasattr(model, "interventions"):
            raise TypeError(f"model must be a ReftModel (reftlab.get_reft_model), got {type(model).__name__}")
        with _hf_config_view(model):
            super().__init__(model=model, args=args, processing_class=processing_class or tokenizer, **kwargs)
        # Our compute_loss returns a per-batch mean: let the Trainer scale for accumulation.
        self.model_accepts_loss_kwargs = False
        _accept_pyreft_compute_loss(self)

    def train(self, *args: Any, **kwargs: Any) -> Any:
        with _hf_config_view(self.model):
            return super().train(*args, **kwargs)

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        with _hf_config_view(self.model):
            return super().evaluate(*args, **kwargs)

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        with _hf_config_view(self.model):
            return super().predict(*args, **kwargs)

    # Every column reaches the collator (the locations are not arguments of ReftModel.forward).
    def _remove_unused_columns(self, dataset: Any, description: str | None = None) -> Any:
        return dataset

    def _get_collator_with_removed_columns(self, data_collator: Any, description: str | None = None) -> Any:
        return data_collator

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        if return_outputs:
            out = run_batch(model, inputs, labels=inputs["labels"])
            return out.loss, out
        fast = self._fast(model, inputs)
        if fast is not None:
            self.fast_steps += 1
            self._sync_fast = is_wrapped(model) and torch.is_grad_enabled()
            return fast.loss(inputs, keys=content_keys(inputs))  # on the ReftModel, around any wrapper
        self.plain_steps += 1
        if is_wrapped(model):  # a DDP wrapper syncs gradients only when called
            return run_batch(model, inputs, labels=inputs["labels"]).loss
        return plain_loss(model, inputs)

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
        """The Trainer's step (loss, scaling, ``accelerator.backward``); then, if the loss ran on
        the fast path around a DDP wrapper, the all-reduce DDP would have done: only where DDP
        syncs (``require_backward_grad_sync``: the last micro-batch of an accumulation window),
        over every gradient the window accumulated, averaged over the ranks as DDP averages."""
        self._sync_fast = False
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self._sync_fast and getattr(model, "require_backward_grad_sync", True):
            params = [p for p in unwrap(model).parameters() if p.requires_grad]
            ranks = Ranks(torch.distributed.get_rank(), torch.distributed.get_world_size())
            reduce_gradients(params, 1, 0.0, ranks)  # weight 1 per rank: DDP's plain mean over ranks
        self._sync_fast = False
        return loss

    def _fast(self, model: Any, inputs: dict[str, Any]) -> FastForward | None:
        """The fast path for this batch, or None (the plain path): an error with ``fast=True``,
        logged once per reason otherwise. Whether the model can take it is decided once, at the
        first loss (the model is then in the mode it trains in)."""
        if self.fast is False:
            return None
        reason = _wrapper_refusal(model)
        if reason is None:
            if not self._fast_decided:
                self._decide(unwrap(model))
            reason = self._refusal or batch_refusal(inputs)
        if reason is None:
            return self.fast_path
        if self.fast:
            raise ValueError(f"fast=True but the fast path does not apply: {reason}; use fast=None or False")
        if reason not in self._logged:
            self._logged.add(reason)
            log.warning("reftlab: this step takes the plain path (same loss, slower): %s", reason)
        return None

    def _decide(self, model: Any) -> None:
        self._fast_decided = True
        self._refusal = why_not(model)
        if self._refusal is not None:
            return
        self.fast_path = FastForward(model)
        data: Any = self.train_dataset  # checked just below: map-style or not
        if not _map_style(data):
            return  # streaming data: the content-keyed cache fills as batches arrive
        # Warm in fixed chunks from the start: a resumed run caches the same numbers as an
        # uninterrupted one. Chunk by chunk, so no more examples are read than the cache holds.
        chunk = 16
        for lo in range(0, len(data), chunk):
            if self.fast_path.full:
                return
            examples = [data[i] for i in range(lo, min(lo + chunk, len(data)))]
            if not all("intervention_locations" in e and "labels" in e and "input_ids" in e for e in examples):
                return
            keys = [content_key(e["input_ids"], e.get("attention_mask")) for e in examples]
            self.fast_path.warm(examples, chunk=chunk, keys=keys)

    def prediction_step(
        self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys: list[str] | None = None
    ) -> Any:
        if prediction_loss_only or self.compute_metrics is None:  # the loss alone: no [batch, pos, vocab] logits kept
            inputs = self._prepare_inputs(inputs)
            with torch.no_grad():
                loss = self.compute_loss(model, inputs)
            return loss.detach(), None, None
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)

    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
        # A subfolder: the Trainer writes its own files (optimizer, state) beside it.
        folder = output_dir or self.args.output_dir
        if folder is None:
            raise ValueError("the Trainer has no output_dir to save to; set TrainingArguments(output_dir=...)")
        if self.args.should_save:
            reft_model = unwrap(self.model)
            with _saved_config(reft_model):
                reft_model.save(Path(folder) / "reft")

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        load_into(unwrap(model if model is not None else self.model), Path(resume_from_checkpoint) / "reft")

    def _load_best_model(self) -> None:
        best = self.state.best_model_checkpoint
        if best is None:
            raise ValueError("load_best_model_at_end: no best checkpoint was recorded (set metric_for_best_model)")
        load_into(unwrap(self.model), Path(best) / "reft")


def _wrapper_refusal(model: Any) -> str | None:
    """Why the fast path cannot run around ``model``'s wrapper, or None (no wrapper, or DDP, whose
    gradient sync ``training_step`` does itself)."""
    if not is_wrapped(model) or isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return None
    return (
        f"the model is wrapped in {type(model).__name__}, which the fast path cannot run around "
        "(only a DistributedDataParallel wrapper's gradient sync is done by the trainer)"
    )


def _map_style(data: Any) -> bool:
    """A dataset the Trainer indexes (``len`` and ``[i]``), not a stream (``IterableDataset``)."""
    if data is None or isinstance(data, torch.utils.data.IterableDataset) or type(data).__name__ == "IterableDataset":
        return False
    return hasattr(data, "__len__") and hasattr(data, "__getitem__")


class ReftTrainerForCausalLM(ReftTrainer):
    """Causal-LM ReFT training: the loss of the response tokens, interventions at the batch's locations."""


class ReftTrainerForSequenceClassification(ReftTrainer):
    """ReFT on an HF ``*ForSequenceClassification`` model; the loss is the HF head's own
    (regression, single- or multi-label, from ``config.problem_type`` and the labels).
    An unfrozen head is saved with the checkpoint and loaded back with it."""

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        out = run_batch(model, inputs, labels=inputs["labels"])
        return (out.loss, out) if return_outputs else out.loss


def _accept_pyreft_compute_loss(trainer: Trainer) -> None:
    # pyreft's subclasses define compute_loss(self, intervenable, inputs, return_outputs=False);
    # transformers 5 also passes num_items_in_batch, which such a loss does not use.
    params = inspect.signature(trainer.compute_loss).parameters
    if "num_items_in_batch" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    pyreft_loss = trainer.compute_loss

    def compute_loss(model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        return pyreft_loss(model, inputs, return_outputs=return_outputs)

    trainer.compute_loss = compute_loss  # type: ignore[method-assign]  # an instance-level adapter is the point


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


@contextmanager
def _saved_config(model: Any) -> Iterator[None]:
    # A checkpoint written while the Trainer runs stores the ReftConfig itself, not the view.
    view = model.config
    if isinstance(view, _WritableView):
        model.config = view._wrapped
    try:
        yield
    finally:
        model.config = view


__all__ = ["ReftTrainer", "ReftTrainerForCausalLM", "ReftTrainerForSequenceClassification"]
