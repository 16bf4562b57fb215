"""Generate a deterministic synthetic EmbeddingQA dataset: passages about fictional products, companies
and policies, with questions worded differently from the passages (synonyms, paraphrases), so that a
finetune measurably improves retrieval over the base model.

    python bench/make_sample_data.py                      # examples/data/{train,val}.json + quickstart ConfigMap
    python bench/make_sample_data.py --bench 2000 --out /tmp/bench   # bench set (not committed)
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

import yaml

PREFIX = [
    "Zor",
    "Vel",
    "Quin",
    "Brax",
    "Lum",
    "Tarn",
    "Oska",
    "Fen",
    "Mira",
    "Kest",
    "Dov",
    "Pell",
    "Ryn",
    "Sol",
]
SUFFIX = ["ix", "ora", "ton", "ex", "ium", "ara", "ent", "ova", "is", "ant", "elle", "or"]
KINDS = [
    "blender",
    "e-bike",
    "router",
    "thermostat",
    "backpack",
    "coffee grinder",
    "drone",
    "desk lamp",
    "air purifier",
    "label printer",
    "water filter",
    "smartwatch",
    "tent",
    "projector",
    "scanner",
]
COMPANIES = [
    "Hollow Pine Labs",
    "Greywater Systems",
    "Northgate Devices",
    "Amberline Goods",
    "Cobalt Harbor",
    "Tidewell Works",
    "Fernbrook Co",
    "Ironleaf Tech",
]
CITIES = ["Lisbon", "Tallinn", "Osaka", "Denver", "Cork", "Porto", "Leipzig", "Halifax", "Perth", "Bergen"]
MATERIALS = ["recycled aluminium", "bamboo fibre", "carbon composite", "stainless steel", "oak veneer"]
COLORS = ["slate grey", "moss green", "sand beige", "midnight blue", "coral red"]

# (passage sentence, question paraphrases): passages and questions use different words on purpose.
FACTS: list[tuple[str, list[str]]] = [
    (
        "The {name} {kind} is covered by a {years}-year limited warranty from {company}.",
        [
            "How long is the guarantee on the {name}?",
            "For how many years does {company} stand behind the {name}?",
        ],
    ),
    (
        "Its rechargeable cell delivers about {hours} hours of operation on a full charge.",
        [
            "How long does the {name} run before it needs to be plugged in?",
            "What is the battery life of the {name}?",
        ],
    ),
    (
        "The {name} weighs {weight} kilograms and its housing is made of {material}.",
        ["How heavy is the {name}?", "What is the {name}'s body built from?"],
    ),
    (
        "{company} assembles every {name} unit at its plant in {city}.",
        ["Where is the {name} manufactured?", "In which town does the {name} get built?"],
    ),
    (
        "Customers may send back an unused {name} within {days} days of delivery for a full refund.",
        ["What is the return window for the {name}?", "Until when can I get my money back on a {name}?"],
    ),
    (
        "The {name} ships in a {color} finish and retails for {price} euros.",
        ["What does the {name} cost?", "Which colour does the {name} come in?"],
    ),
    (
        "Firmware for the {name} is patched every {months} months through the companion app.",
        ["How often does the {name} receive software updates?", "What is the update cadence of the {name}?"],
    ),
    (
        "Support requests about the {name} are answered by the {city} help desk within {support} hours.",
        [
            "How quickly will someone reply if I need help with my {name}?",
            "What is the response time for {name} customer service?",
        ],
    ),
]


def _product(rng: random.Random, used: set[str]) -> dict[str, Any]:
    while True:
        name = rng.choice(PREFIX) + rng.choice(SUFFIX) + f" {rng.randint(2, 99)}"
        if name not in used:
            used.add(name)
            break
    return {
        "name": name,
        "kind": rng.choice(KINDS),
        "company": rng.choice(COMPANIES),
        "city": rng.choice(CITIES),
        "years": rng.randint(1, 6),
        "hours": rng.randint(4, 60),
        "weight": round(rng.uniform(0.2, 9.5), 1),
        "material": rng.choice(MATERIALS),
        "days": rng.choice([14, 30, 45, 60, 90]),
        "color": rng.choice(COLORS),
        "price": rng.randint(19, 1499),
        "months": rng.randint(1, 12),
        "support": rng.choice([4, 8, 12, 24, 48]),
    }


def generate(n_queries: int, seed: int = 7) -> dict[str, Any]:
    """One query per (product, fact) until n_queries; each passage holds one fact, plus distractor text."""
    rng = random.Random(seed)
    queries: dict[str, str] = {}
    corpus: dict[str, str] = {}
    relevant: dict[str, list[str]] = {}
    used: set[str] = set()
    while len(queries) < n_queries:
        prod = _product(rng, used)
        for sentence, questions in FACTS:
            if len(queries) >= n_queries:
                break
            did = f"doc-{len(corpus):05d}"
            other = "{company} was founded in {city} and sells products like the {kind}.".format(**prod)
            corpus[did] = f"{sentence.format(**prod)} {other}"
            qid = f"q-{len(queries):05d}"
            queries[qid] = rng.choice(questions).format(**prod)
            relevant[qid] = [did]
    return {"queries": queries, "corpus": corpus, "relevant_docs": relevant, "mode": "text"}


def split(ds: dict[str, Any], n_val: int, seed: int = 7) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validation queries get their own docs; the validation corpus is its docs plus the training corpus
    (harder: more distractors); the training corpus is its own docs."""
    qids = sorted(ds["queries"])
    random.Random(seed).shuffle(qids)
    val_q, train_q = set(qids[:n_val]), set(qids[n_val:])

    def part(keep: set[str], extra: set[str]) -> dict[str, Any]:
        docs = {d for q in keep for d in ds["relevant_docs"][q]} | extra
        return {
            "queries": {q: t for q, t in ds["queries"].items() if q in keep},
            "corpus": {d: t for d, t in ds["corpus"].items() if d in docs},
            "relevant_docs": {q: v for q, v in ds["relevant_docs"].items() if q in keep},
            "mode": "text",
        }

    train = part(train_q, set())
    return train, part(val_q, set(train["corpus"]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=int, default=300, help="Training queries.")
    parser.add_argument("--val", type=int, default=100, help="Validation queries.")
    parser.add_argument(
        "--bench", type=int, default=0, help="Write a bench set with this many training pairs."
    )
    parser.add_argument("--out", default="examples/data", help="Output dir.")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    n_train = args.bench or args.train
    n_val = args.val if not args.bench else max(args.val, args.bench // 5)
    train, val = split(generate(n_train + n_val, args.seed), n_val, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    texts = {"train.json": json.dumps(train, indent=0), "val.json": json.dumps(val, indent=0)}
    for name, text in texts.items():
        (out / name).write_text(text + "\n", encoding="utf-8")
    print(
        f"{out}: train {len(train['queries'])} queries / {len(train['corpus'])} docs, "
        f"val {len(val['queries'])} queries / {len(val['corpus'])} docs"
    )
    if not args.bench:
        cm = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "quickstart-data"},
            "data": {k: v + "\n" for k, v in texts.items()},
        }
        qs = Path("examples/quickstart")
        qs.mkdir(parents=True, exist_ok=True)
        header = "# Generated by bench/make_sample_data.py: the quickstart FinetuneJobs' training data.\n"
        (qs / "dataset.yaml").write_text(
            header + yaml.safe_dump(cm, sort_keys=False, width=200), encoding="utf-8"
        )


if __name__ == "__main__":
    main()
