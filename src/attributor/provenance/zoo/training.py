"""Training the zoo's models: pretraining and fine-tuning, chat instruction tuning and distillation."""

from __future__ import annotations

import math
import time
from typing import Any, Callable

from attributor.provenance.zoo.corpora import ASSISTANT, USER, chat_dialogues
from attributor.provenance.zoo.settings import ZooPreset


def _train(model: Any, loss_fn: Callable[[int], Any], steps: int, lr: float, preset: ZooPreset, *, desc: str,
           progress: bool, after_step: Callable[[], None] | None = None) -> dict[str, Any]:
    """AdamW with linear warm-up and cosine decay; returns the mean loss of the first and last
    tenth of the steps (``first_loss``, ``final_loss``)."""
    import torch

    from attributor.progress import progress_bar

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=preset.weight_decay, betas=(0.9, 0.98))
    warmup = max(1, int(preset.warmup_fraction * steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    losses = []
    model.train()
    start = time.perf_counter()
    with progress_bar(steps, desc, progress) as bar:
        for step in range(steps):
            loss = loss_fn(step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            if after_step is not None:
                after_step()
            losses.append(loss.item())
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    window = max(1, steps // 10)
    return {"steps": steps, "lr": lr, "first_loss": round(sum(losses[:window]) / window, 4),
            "final_loss": round(sum(losses[-window:]) / window, 4), "seconds": round(time.perf_counter() - start, 2)}


def _windows(stream: Any, preset: ZooPreset, generator: Any) -> Any:
    """A (batch, context) batch of random windows of a token stream."""
    import torch

    starts = torch.randint(0, len(stream) - preset.context, (preset.batch_size,), generator=generator)
    return torch.stack([stream[s:s + preset.context] for s in starts.tolist()])


def _lm_loss(model: Any, batch: Any) -> Any:
    import torch.nn.functional as F

    logits = model(input_ids=batch).logits
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


def _lm_training(model: Any, stream: Any, steps: int, lr: float, preset: ZooPreset, seed: int, desc: str,
                 progress: bool, after_step: Callable[[], None] | None = None) -> dict[str, Any]:
    """Next-token training on random windows of ``stream`` (pretraining, fine-tuning, recovery)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return _train(model, lambda _: _lm_loss(model, _windows(stream, preset, generator)), steps, lr, preset,
                  desc=desc, progress=progress, after_step=after_step)


def _chat_examples(tokenizer: Any, context: int) -> list[tuple[list[int], int]]:
    """Each dialogue as (ids, prompt length): ``<|user|> Q\\n<|assistant|>`` then `` A<|endoftext|>``."""
    examples = []
    for question, answer in chat_dialogues():
        prompt = tokenizer(f"{USER} {question}\n{ASSISTANT}", add_special_tokens=False)["input_ids"]
        reply = tokenizer(f" {answer}", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = (prompt + reply)[:context]
        if len(prompt) < len(ids):
            examples.append((ids, len(prompt)))
    return examples


def _chat_training(model: Any, tokenizer: Any, preset: ZooPreset, seed: int, desc: str, progress: bool) -> dict[str, Any]:
    """Instruction tuning: loss on the assistant's reply only, right-padded batches."""
    import torch
    import torch.nn.functional as F

    examples = _chat_examples(tokenizer, preset.context)
    generator = torch.Generator().manual_seed(seed)

    def loss_fn(_: int) -> Any:
        picks = torch.randint(0, len(examples), (preset.batch_size,), generator=generator).tolist()
        width = max(len(examples[i][0]) for i in picks)
        ids = torch.full((len(picks), width), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(picks), width), -100, dtype=torch.long)
        for row, i in enumerate(picks):
            seq, prompt = examples[i]
            ids[row, :len(seq)] = torch.tensor(seq)
            labels[row, prompt:len(seq)] = torch.tensor(seq[prompt:])
        logits = model(input_ids=ids).logits  # right padding: causal attention never sees the pads
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)

    record = _train(model, loss_fn, preset.chat_steps, preset.chat_lr, preset, desc=desc, progress=progress)
    return {**record, "dialogues": len(examples)}


def _distill_training(student: Any, teacher: Any, stream: Any, preset: ZooPreset, seed: int, desc: str,
                      progress: bool) -> dict[str, Any]:
    """Knowledge distillation (Hinton et al., 2015): minimise T^2 * KL(p_teacher^T || p_student^T)
    per token on windows of the pretraining text; the student never sees a label or a teacher weight."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(seed)
    temperature = preset.distill_temperature

    def loss_fn(_: int) -> Any:
        batch = _windows(stream, preset, generator)
        with torch.no_grad():
            target = F.log_softmax(teacher(input_ids=batch).logits / temperature, dim=-1)
        logp = F.log_softmax(student(input_ids=batch).logits / temperature, dim=-1)
        vocab = logp.shape[-1]
        return F.kl_div(logp.reshape(-1, vocab), target.reshape(-1, vocab), log_target=True,
                        reduction="batchmean") * temperature ** 2

    teacher.eval()
    return _train(student, loss_fn, preset.distill_steps, preset.distill_lr, preset, desc=desc, progress=progress)
