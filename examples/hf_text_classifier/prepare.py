"""Make this example's inputs in ./work: a Hugging Face text classifier folder and a JSONL file.

Stands in for what a user already has: a BERT sequence classifier saved with
save_pretrained (here a tiny one built from a config, untrained) and reviews.jsonl with a
"text" and a "label" field. Then:

    python examples/hf_text_classifier/prepare.py
    attributor run --config examples/hf_text_classifier/config.yaml --out runs/hf-text

The config fine-tunes the model on the data with 10% of the labels flipped and ranks the
training sentences by self-influence: the flipped ones should come first.
"""

import json
from pathlib import Path

from attributor.data.synthetic import FILLER_WORDS, TOPIC_WORDS, topic_sentences
from attributor.models.tiny_hf import tiny_bert_classifier

HERE = Path(__file__).resolve().parent


def main(work: Path = HERE / "work", n: int = 240) -> None:
    words = [w for topic in TOPIC_WORDS.values() for w in topic] + FILLER_WORDS
    tiny_bert_classifier(work / "model", words, num_labels=2, hidden=32)
    rows = topic_sentences(n, seed=0)
    (work / "reviews.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"wrote {work}/model (BERT, {len(words)} words) and {work}/reviews.jsonl ({n} rows)")


if __name__ == "__main__":
    main()
