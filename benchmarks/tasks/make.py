"""Writes the benchmark tasks that ship their own data (no download): ``python benchmarks/tasks/make.py``.

``number_words``: a number written in English words, answered in digits ("Write in digits: three
hundred forty-seven" -> "347"), 360 distinct numbers in 1..999 (seeded): 240 train, 120 test.
SmolLM2-135M reads number words but answers in prose; the task asks for the exact digits, so
training must teach both the format and the reading. Scored by exact match.

``arithmetic_1digit``: every 1-digit addition and subtraction in BIG-bench's phrasing ("What is
7 minus 2?" -> "5"), 200 in all, shuffled (seeded): 140 train, 60 test. The offline stand-in for
``benchmarks/arithmetic_1digit.yaml``, whose BIG-bench archive a registry may not serve.

``categories`` (multiple choice): "Which of these is a fruit?" with three words, one from the
category and two from others (eight everyday categories of 15 words each); 360 questions (seeded):
240 train, 120 test. Scored by accuracy (the answer names the right word).

``compare`` (classification): "Is 47 greater than 74?" -> yes / no, two distinct numbers in
10..99 (seeded, no pair repeated): 360 questions, 240 train, 120 test, about half of them "yes".

The files are committed; ``tests/test_benchmarks_recipes.py`` checks that this script rewrites
them byte for byte.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def words(n: int) -> str:
    """``n`` (0..999) in English words: 347 -> 'three hundred forty-seven'."""
    if not 0 <= n <= 999:
        raise ValueError(f"words({n}): only 0..999")
    if n < 20:
        return ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return TENS[tens] + (f"-{ONES[ones]}" if ones else "")
    hundreds, rest = divmod(n, 100)
    return f"{ONES[hundreds]} hundred" + (f" {words(rest)}" if rest else "")


def number_words(seed: int = 0, n_train: int = 240, n_test: int = 120) -> tuple[list[dict], list[dict]]:
    numbers = random.Random(seed).sample(range(1, 1000), n_train + n_test)
    rows = [{"prompt": f"Write in digits: {words(n)}", "response": str(n)} for n in numbers]
    return rows[:n_train], rows[n_train:]


def arithmetic_1digit(seed: int = 0, n_train: int = 140) -> tuple[list[dict], list[dict]]:
    rows = [
        {"prompt": f"What is {a} {word} {b}?", "response": str(a + b if word == "plus" else a - b)}
        for word in ("plus", "minus")
        for a in range(10)
        for b in range(10)
    ]
    random.Random(seed).shuffle(rows)
    return rows[:n_train], rows[n_train:]


CATEGORIES = {
    "an animal": "dog cat horse cow sheep lion tiger rabbit mouse elephant monkey bear wolf fox deer",
    "a fruit": "apple banana orange grape lemon cherry peach pear plum mango melon kiwi lime apricot strawberry",
    "a vehicle": "car bus truck bicycle train airplane boat ship motorcycle taxi tractor van helicopter scooter subway",
    "a piece of furniture": "chair table sofa bed desk shelf stool cabinet dresser bench couch wardrobe armchair "
    "bookcase nightstand",
    "a colour": "red blue green yellow purple pink brown black white gray orange violet silver gold turquoise",
    "a musical instrument": "piano guitar violin drum flute trumpet cello harp saxophone clarinet banjo organ "
    "trombone ukulele accordion",
    "a body part": "hand foot head arm leg knee elbow shoulder nose ear eye finger toe neck mouth",
    "a tool": "hammer saw wrench screwdriver drill shovel rake axe pliers chisel ladder broom scissors file crowbar",
}


def categories(seed: int = 0, n_train: int = 240, n_test: int = 120) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    words = {cat: text.split() for cat, text in CATEGORIES.items()}
    # a word listed in two categories (orange: fruit and colour) is never a wrong choice for either
    owners = {w: {c for c, ws in words.items() if w in ws} for ws in words.values() for w in ws}
    rows = []
    for _ in range(n_train + n_test):
        cat = rng.choice(list(words))
        right = rng.choice(words[cat])
        others = [c for c in words if c != cat]
        wrong = [rng.choice([w for w in words[c] if cat not in owners[w]]) for c in rng.sample(others, 2)]
        choices = [right, *wrong]
        rng.shuffle(choices)
        rows.append({"prompt": f"Which of these is {cat}?", "choices": choices, "answer": choices.index(right)})
    return rows[:n_train], rows[n_train:]


def compare(seed: int = 0, n_train: int = 240, n_test: int = 120) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    pairs = [(a, b) for a in range(10, 100) for b in range(10, 100) if a != b]
    rows = [
        {"prompt": f"Is {a} greater than {b}?", "label": "yes" if a > b else "no"}
        for a, b in rng.sample(pairs, n_train + n_test)
    ]
    return rows[:n_train], rows[n_train:]


TASKS = {
    "number_words": number_words,
    "arithmetic_1digit": arithmetic_1digit,
    "categories": categories,
    "compare": compare,
}


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def main(out: Path = HERE) -> list[Path]:
    paths = []
    for name, make in TASKS.items():
        for path, rows in zip((out / f"{name}.jsonl", out / f"{name}_test.jsonl"), make()):
            write(path, rows)
            paths.append(path)
    return paths


if __name__ == "__main__":
    for path in main():
        print(f"wrote {path}")
