"""Train a ReftModel on a task's rows with one TrainConfig, whatever the task type.

Generation and multiple choice are causal-LM training: ``reftlab.train`` (the native
loop, fast path included). Classification goes through
``ReftTrainerForSequenceClassification`` (the HF Trainer), with the classifier head
trained alongside the interventions and the TrainConfig's settings mapped onto
``TrainingArguments`` (epochs or max_steps, batch size, accumulation, lr, schedule,
warmup, weight decay, clipping, seed). Both return a ``TrainResult``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from .config import TrainConfig
from .loop import TrainResult, train


def train_task(
    reft_model: Any,
    rows: Sequence[dict[str, Any]],
    task: str,
    config: TrainConfig,
    *,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train on ``rows`` (``reftlab.data.tasks.encode_task_examples``) for ``task``."""
    if task != "classification":
        return train(reft_model, rows, config, on_step=on_step)
    return _train_classifier(reft_model, rows, config, on_step)


def _train_classifier(
    reft_model: Any, rows: Sequence[dict[str, Any]], config: TrainConfig, on_step: Callable[[int, float], None] | None
) -> TrainResult:
    from transformers import PrinterCallback, TrainerCallback, TrainingArguments

    from ..data.tasks import collate_classification
    from ..models.classifier import classifier_head
    from .hf_trainer import ReftTrainerForSequenceClassification

    head = classifier_head(reft_model.hooked)
    head.requires_grad_(True)
    was = reft_model.interventions.training
    tok = reft_model.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    result = TrainResult()

    class _Record(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                result.losses.append(float(logs["loss"]))
                if on_step is not None:
                    on_step(state.global_step, float(logs["loss"]))

    with tempfile.TemporaryDirectory(prefix="reftlab-cls-") as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            num_train_epochs=config.epochs,
            max_steps=config.max_steps if config.max_steps is not None else -1,
            per_device_train_batch_size=config.batch_size,
            gradient_accumulation_steps=config.grad_accum,
            learning_rate=config.lr,
            weight_decay=config.weight_decay,
            adam_beta1=config.betas[0],
            adam_beta2=config.betas[1],
            lr_scheduler_type=config.schedule,
            warmup_steps=config.warmup_steps or int(config.warmup_ratio * config.total_steps(len(rows))),
            max_grad_norm=config.max_grad_norm if config.max_grad_norm is not None else 0.0,
            seed=config.seed,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            disable_tqdm=not config.progress,
            use_cpu=reft_model.hooked.device.type == "cpu",
        )
        trainer = ReftTrainerForSequenceClassification(
            model=reft_model,
            tokenizer=tok,
            args=args,
            train_dataset=list(rows),
            data_collator=lambda batch: collate_classification(batch, int(pad)),
            callbacks=[_Record()],
        )
        if not config.progress:
            trainer.remove_callback(PrinterCallback)  # it prints every log line when tqdm is off
        t0 = time.perf_counter()
        trainer.train()
    result.seconds = time.perf_counter() - t0
    result.steps = config.total_steps(len(rows))
    reft_model.hooked.hf_model.eval()  # the Trainer left everything in training mode
    reft_model.interventions.train(was)
    return result
