"""The intent dataset: generated deterministically, stored as two CSV files.

``labels.csv`` has ``label_id,intent``; ``examples.csv`` has ``text,label_id``. Utterances come from templates
with slot fillers plus shared filler words, so the classes overlap in vocabulary and the model has something
to learn over several epochs rather than one.
"""

from __future__ import annotations

import csv
import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

INTENTS: dict[str, list[str]] = {
    "book_flight": [
        "book a flight to {city}",
        "i need a plane ticket to {city} {when}",
        "fly me to {city}",
        "get me on a flight from {city} to {city2}",
        "find flights to {city} {when}",
        "reserve a seat to {city}",
    ],
    "weather": [
        "what is the weather in {city}",
        "will it rain {when}",
        "is it going to be cold in {city} {when}",
        "weather forecast for {city}",
        "do i need an umbrella {when}",
        "how hot is it in {city}",
    ],
    "play_music": [
        "play some {genre}",
        "put on {genre} music",
        "i want to hear {artist}",
        "play the latest {artist} album",
        "start my {genre} playlist",
        "shuffle songs by {artist}",
    ],
    "set_alarm": [
        "set an alarm for {time}",
        "wake me up at {time} {when}",
        "alarm at {time} please",
        "remind me at {time}",
        "set a timer for {minutes} minutes",
        "cancel my {time} alarm",
    ],
    "order_food": [
        "order a {food}",
        "i want {food} delivered",
        "get me some {food} from the nearest place",
        "can i order {food} for dinner",
        "deliver a large {food} {when}",
        "i am hungry order {food}",
    ],
    "check_balance": [
        "what is my account balance",
        "how much money do i have in {account}",
        "show my {account} balance",
        "check my {account} account",
        "did my salary arrive in {account}",
        "how much is left on my card",
    ],
    "call_contact": [
        "call {person}",
        "phone {person} {when}",
        "dial {person} on speaker",
        "ring {person} please",
        "make a call to {person}",
        "video call {person}",
    ],
    "navigate": [
        "take me to {place}",
        "directions to {place}",
        "how do i get to {place} from here",
        "navigate to the nearest {place}",
        "how long to drive to {place}",
        "route to {place} avoiding traffic",
    ],
    "translate": [
        "translate {phrase} into {language}",
        "how do you say {phrase} in {language}",
        "what does {phrase} mean in {language}",
        "say {phrase} in {language}",
        "{language} for {phrase}",
        "help me translate {phrase}",
    ],
    "smart_home": [
        "turn on the {device}",
        "switch off the {device} in the {room}",
        "dim the {device}",
        "set the {room} {device} to low",
        "is the {device} on",
        "turn the {device} off {when}",
    ],
}

SLOTS: dict[str, list[str]] = {
    "city": ["paris", "berlin", "tokyo", "lisbon", "boston", "oslo", "rome", "madrid", "denver", "seoul"],
    "city2": ["london", "chicago", "vienna", "dublin", "austin"],
    "when": ["today", "tomorrow", "tonight", "this weekend", "next week", "on monday", "later", "now"],
    "genre": ["jazz", "rock", "classical", "hip hop", "folk", "techno", "blues"],
    "artist": ["the beatles", "miles davis", "adele", "queen", "bach", "radiohead"],
    "time": ["six am", "seven thirty", "noon", "ten pm", "eight", "five fifteen"],
    "minutes": ["five", "ten", "twenty", "thirty", "forty five"],
    "food": ["pizza", "sushi", "burger", "salad", "pad thai", "burrito", "curry"],
    "account": ["checking", "savings", "business", "joint"],
    "person": ["mom", "alex", "the office", "dr smith", "grandma", "sam"],
    "place": ["the airport", "the station", "work", "home", "the hospital", "the mall", "gas station"],
    "phrase": ["good morning", "thank you", "where is the station", "how much is this", "i am lost"],
    "language": ["french", "german", "japanese", "spanish", "italian"],
    "device": ["lights", "heater", "fan", "tv", "air conditioner", "lamp"],
    "room": ["kitchen", "bedroom", "living room", "office", "garage"],
}
FILLERS = [
    "please",
    "hey",
    "could you",
    "can you",
    "now",
    "thanks",
    "quickly",
    "i think",
    "ok",
    "um",
    "for me",
    "the",
    "and",
    "today",
    "home",
    "music",
    "call",
    "set",
    "order",
    "turn",
]


@dataclass(frozen=True)
class Dataset:
    labels: list[str]
    texts: list[str]
    label_ids: list[int]


def generate(directory: Path, examples_per_intent: int = 300, seed: int = 1234) -> str:
    """Write labels.csv and examples.csv into ``directory``; returns the data's version hash (sha256)."""
    rng = random.Random(seed)  # noqa: S311  (data generation, not cryptography)
    directory.mkdir(parents=True, exist_ok=True)
    labels = sorted(INTENTS)
    rows: list[tuple[str, int]] = []
    for label_id, intent in enumerate(labels):
        templates = INTENTS[intent]
        for _ in range(examples_per_intent):
            text = rng.choice(templates)
            for slot, values in SLOTS.items():
                while "{" + slot + "}" in text:
                    text = text.replace("{" + slot + "}", rng.choice(values), 1)
            words = text.split()
            for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
                words.insert(rng.randrange(len(words) + 1), rng.choice(FILLERS))
            if rng.random() < 0.1:  # a word dropped, as speech recognition does
                del words[rng.randrange(len(words))]
            rows.append((" ".join(words), label_id))
    rng.shuffle(rows)
    with open(directory / "labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["label_id", "intent"])
        writer.writerows(enumerate(labels))
    with open(directory / "examples.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label_id"])
        writer.writerows(rows)
    return version_hash(directory)


def version_hash(directory: Path) -> str:
    digest = hashlib.sha256()
    for name in ("labels.csv", "examples.csv"):
        digest.update((directory / name).read_bytes())
    return digest.hexdigest()


def load(directory: Path) -> Dataset:
    with open(directory / "labels.csv", newline="") as fh:
        labels = [row["intent"] for row in sorted(csv.DictReader(fh), key=lambda r: int(r["label_id"]))]
    texts, label_ids = [], []
    with open(directory / "examples.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            texts.append(row["text"])
            label_ids.append(int(row["label_id"]))
    if not texts:
        raise ValueError(f"{directory}/examples.csv has no examples")
    return Dataset(labels, texts, label_ids)


def split(dataset: Dataset, every: int = 5) -> tuple[list[int], list[int]]:
    """Indices of the training and held-out examples: every ``every``-th example is held out."""
    indices = range(len(dataset.texts))
    return [i for i in indices if i % every], [i for i in indices if i % every == 0]


if __name__ == "__main__":
    import sys

    print(generate(Path(sys.argv[1])))
