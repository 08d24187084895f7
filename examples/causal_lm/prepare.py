"""Make this example's inputs in ./work: a fine-tuned causal LM, its documents, and its answers.

Stands in for what a user already has: a GPT-2 style model (here a tiny one built from a
config) fine-tuned on documents that each state one fact about a fictional place, its
checkpoints, and the answers it generates to questions about those facts. Then:

    python examples/causal_lm/prepare.py
    attributor run --config examples/causal_lm/config.yaml --out runs/causal-lm
    python examples/causal_lm/prepare.py --evaluate runs/causal-lm

The last line checks the attribution: is the document that states the fact the top
proponent of the model's answer? (recall@1, recall@5 and MRR beside chance).
"""

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from attributor.data.synthetic import fictional_facts
from attributor.models.loading import load_hf_model, load_tokenizer
from attributor.models.tiny_hf import tiny_gpt2

HERE = Path(__file__).resolve().parent


def main(work: Path = HERE / "work", n_entities: int = 24, epochs: int = 100) -> None:
    folder = tiny_gpt2(work / "model", width=96, layers=2)
    tokenizer, model = load_tokenizer(folder), load_hf_model(folder, task_name="causal-lm")
    documents, queries = fictional_facts(n_entities, seed=0)
    _write(work / "documents.jsonl", documents)
    encoded = [tokenizer(d["text"] + tokenizer.eos_token)["input_ids"] for d in documents]
    length = max(map(len, encoded))
    ids = torch.tensor([e + [tokenizer.pad_token_id] * (length - len(e)) for e in encoded])
    mask = torch.tensor([[1] * len(e) + [0] * (length - len(e)) for e in encoded])
    # the user's fine-tuning loop: plain PyTorch, a checkpoint every 50 epochs
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    (work / "checkpoints").mkdir(exist_ok=True)
    for epoch in range(1, epochs + 1):
        for batch in DataLoader(range(len(ids)), batch_size=8, shuffle=True):
            labels = ids[batch].masked_fill(mask[batch] == 0, -100)
            optimizer.zero_grad()
            model(input_ids=ids[batch], attention_mask=mask[batch], labels=labels).loss.backward()
            optimizer.step()
        if epoch % 50 == 0:
            torch.save(model.state_dict(), work / "checkpoints" / f"epoch_{epoch}.pt")
    model.eval()
    answers = []
    for query in queries:  # the model's own greedy answer to each question
        prompt = tokenizer(query["prompt"], return_tensors="pt")
        out = model.generate(**prompt, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        text = tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True).split(".")[0]
        answers.append({"prompt": query["prompt"], "text": text, "true_answer": query["text"], "source": query["source"]})
    _write(work / "answers.jsonl", answers)
    correct = np.mean([a["text"].strip() == a["true_answer"].strip() for a in answers])
    print(f"wrote {work}: model, checkpoints/epoch_{{50,100}}.pt, documents.jsonl, answers.jsonl "
          f"({correct:.0%} of the answers are the stated fact)")


def evaluate(run: Path, work: Path = HERE / "work") -> dict:
    """Rank of each answer's source document among the training documents, by score."""
    answers = [json.loads(line) for line in (work / "answers.jsonl").read_text().splitlines()]
    scores = np.load(run / "scores" / "scores.npy")
    ranks = np.array([1 + int((scores[q] > scores[q, a["source"]]).sum()) for q, a in enumerate(answers)])
    n = scores.shape[1]
    result = {"recall@1": float((ranks <= 1).mean()), "recall@5": float((ranks <= 5).mean()), "mrr": float((1 / ranks).mean()),
              "chance_recall@1": 1 / n, "chance_recall@5": min(5, n) / n, "chance_mrr": float(np.mean(1 / np.arange(1, n + 1)))}
    print(json.dumps(result, indent=1))
    return result


def _write(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evaluate", type=Path, help="a scored run directory to evaluate")
    args = parser.parse_args()
    evaluate(args.evaluate) if args.evaluate else main()
