"""The zoo's settings: family specs, size presets, the saved settings record and per-model seeds."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from typing import Any

from attributor.errors import ConfigError, UnknownNameError

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class FamilySpec:
    """One independent base model: ``arch`` is "gpt2" (GPT2Config) or "llama" (LlamaConfig)."""

    name: str
    arch: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int | None = None  # llama only: grouped-query attention when < heads
    display: str = ""

    def student(self) -> "FamilySpec":
        """The distilled student: one layer fewer (at least one) and half the width."""
        heads = max(1, self.heads // 2)
        kv = None if self.kv_heads is None else max(1, min(heads, self.kv_heads // 2))
        return replace(self, layers=max(1, self.layers - 1), hidden=self.hidden // 2, heads=heads, kv_heads=kv)


@dataclass(frozen=True)
class ZooPreset:
    """Sizes and training budgets of a zoo; every field is saved in ``zoo.json`` and compared."""

    families: tuple[FamilySpec, ...]
    vocab_size: int = 1024
    context: int = 128
    batch_size: int = 16
    pretrain_steps: int = 400
    pretrain_lr: float = 3e-3
    chat_steps: int = 40
    chat_lr: float = 3e-4
    finetune_steps: int = 40
    finetune_lr: float = 3e-4
    prune_fraction: float = 0.3
    prune_recovery_steps: int = 40
    prune_recovery_lr: float = 5e-4
    distill_steps: int = 250
    distill_lr: float = 3e-3
    distill_temperature: float = 2.0
    family_corpus_fraction: float = 1.0  # each family pretrains on its own seeded share of the documentation sections
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    # the harder derivations (issue 18; :mod:`.hard`): none in the default and tiny presets
    derivations: tuple[str, ...] = ()
    lora_rank: int = 4
    lora_alpha: float = 8.0
    lora_steps: int = 100
    lora_lr: float = 2e-3
    continued_steps: int = 200
    continued_lr: float = 1e-3
    blockdrop_recovery_steps: int = 40


#: Fields that only matter with ``derivations``: left out of the saved settings of a preset without them,
#: so default and tiny zoos built before they existed still match.
HARD_FIELDS = ("derivations", "lora_rank", "lora_alpha", "lora_steps", "lora_lr", "continued_steps", "continued_lr",
               "blockdrop_recovery_steps")
ALL_DERIVATIONS = ("lora", "continued", "blockdrop", "noise1", "noise5", "noise20", "int4", "permuted", "merge")


def _families(hidden: int, wide: int) -> tuple[FamilySpec, ...]:
    return (
        FamilySpec("gpt2-a", "gpt2", hidden, 2, 4, display="GPT-2 A"),
        FamilySpec("gpt2-b", "gpt2", hidden, 2, 4, display="GPT-2 B"),  # same architecture as A, other seed
        FamilySpec("gpt2-c", "gpt2", wide, 2, 4, display="GPT-2 C"),
        FamilySpec("llama-a", "llama", hidden, 2, 4, kv_heads=4, display="Llama A"),
        FamilySpec("llama-b", "llama", wide, 2, 4, kv_heads=2, display="Llama B"),
    )


PRESETS: dict[str, ZooPreset] = {
    "default": ZooPreset(families=_families(64, 96)),
    "tiny": ZooPreset(families=_families(32, 48), context=64, batch_size=8,
                      pretrain_steps=200, chat_steps=25, finetune_steps=25, prune_recovery_steps=10,
                      distill_steps=40),
    # the default zoo plus every harder derivation: 5 x 15 models and a merge of the two GPT-2 A/B families
    "hard": ZooPreset(families=_families(64, 96), derivations=ALL_DERIVATIONS),
    # for tests: three tiny families (GPT-2 A and B, the confusable pair, and the GQA Llama), short runs
    "hard-small": ZooPreset(families=tuple(f for f in _families(32, 48) if f.name in ("gpt2-a", "gpt2-b", "llama-b")),
                            context=64, batch_size=8, pretrain_steps=150, chat_steps=15, finetune_steps=15,
                            prune_recovery_steps=8, distill_steps=25, derivations=ALL_DERIVATIONS,
                            lora_steps=20, continued_steps=40, blockdrop_recovery_steps=8),
}


def resolve_preset(preset: str, changes: dict[str, Any] | None = None) -> ZooPreset:
    """The preset ``preset`` with some of its scalar fields changed (e.g. ``{"finetune_steps": 120}``)."""
    if preset not in PRESETS:
        raise UnknownNameError("zoo preset", preset, list(PRESETS))
    base = PRESETS[preset]
    if not changes:
        return base
    fields = {name: type(getattr(base, name)) for name in base.__dataclass_fields__ if name not in ("families", "derivations")}
    unknown = sorted(set(changes) - set(fields))
    if unknown:
        raise ConfigError(f"unknown zoo setting(s) {unknown}; known: {', '.join(sorted(fields))}")
    typed = {}
    for name, value in changes.items():
        try:
            typed[name] = fields[name](value)
        except (TypeError, ValueError):
            raise ConfigError(f"zoo setting {name} must be a {fields[name].__name__}, got {value!r}") from None
        if typed[name] < 0 or (name == "family_corpus_fraction" and not 0 < typed[name] <= 1):
            raise ConfigError(f"zoo setting {name} is out of range: {value!r}")
    return replace(base, **typed)


def _settings(preset: str, seed: int, spec: ZooPreset) -> dict[str, Any]:
    fields = asdict(spec)
    fields["families"] = [asdict(f) for f in spec.families]
    if spec.derivations:
        fields["derivations"] = list(spec.derivations)
    else:
        for name in HARD_FIELDS:
            fields.pop(name)
    return {"schema_version": SCHEMA_VERSION, "preset": preset, "seed": int(seed), "spec": fields}


def _seed(seed: int, *names: str) -> int:
    """A stable 31-bit seed for one model (or data stream) of a zoo built with ``seed``."""
    digest = hashlib.sha256(":".join([str(seed), *names]).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
