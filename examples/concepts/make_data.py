"""Write the example concept set (``train.csv``, ``eval.csv``) in AxBench's column layout.

Four concepts, hand-written sentences, templated into answers to generic instructions:

- ``train.csv``: per concept 24 positives (``category="positive"``, ``concept_id`` 0..3) and 48
  shared negatives (``output_concept="EEEEE"``, ``concept_id=-1``), as AxBench's training files;
- ``eval.csv``: per concept 12 positives, 12 negatives and 8 hard negatives (sentences that use a
  concept's words in another sense: "a sea of paperwork", "the star of the show").

Train and eval draw from disjoint sentence and instruction pools, so held-out texts are new.
Run from anywhere: ``python examples/concepts/make_data.py`` rewrites both files (the output is
deterministic; ``tests/concepts/test_data.py`` checks the committed files match it).
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
COLUMNS = ["input", "output", "output_concept", "category", "concept_id"]
EMPTY = "EEEEE"

CONCEPTS = {
    "food and cooking": [
        "Simmer the tomato sauce with garlic and basil for twenty minutes.",
        "Fresh bread from the oven smells of butter and yeast.",
        "She chopped onions and carrots for the soup.",
        "Roast the chicken with lemon, thyme and a little olive oil.",
        "A bowl of noodles with spicy broth warms you up.",
        "Whisk the eggs with sugar until the batter is smooth.",
        "The chef seasoned the steak with salt and pepper.",
        "We baked a chocolate cake with vanilla frosting.",
        "Rice tastes better when it is cooked with a pinch of salt.",
        "Grilled vegetables go well with a yogurt dip.",
        "Knead the dough, then let it rise for an hour.",
        "The pancakes were served with honey and berries.",
        "Fry the potatoes until they are golden and crispy.",
        "A good curry needs cumin, turmeric and fresh ginger.",
        "He sliced the cheese and the ham for sandwiches.",
        "Stir the risotto slowly while adding warm stock.",
        "The salad had spinach, walnuts and a lemon dressing.",
        "Bake the apple pie until the crust turns brown.",
        "Marinate the tofu in soy sauce before frying it.",
        "The soup needs more salt and a splash of cream.",
        "She made pasta from flour, eggs and water.",
        "Dinner was roasted salmon with buttered peas.",
        "Melt the butter in a pan and add the mushrooms.",
        "Breakfast was porridge with cinnamon and banana.",
    ],
    "the ocean and sea life": [
        "Whales migrate thousands of miles across the ocean.",
        "The coral reef was full of bright fish and sea turtles.",
        "Waves crashed against the rocky shore at high tide.",
        "Dolphins swam beside the boat in the open sea.",
        "Octopuses hide in cracks on the ocean floor.",
        "The tide pools held crabs, starfish and sea urchins.",
        "Sharks patrol the deep blue water near the reef.",
        "Most of the salt water on Earth lies in the deep seas.",
        "A jellyfish drifted slowly with the ocean current.",
        "Sailors watched the swell grow as the storm reached the sea.",
        "Seals rested on the beach after hunting in the cold ocean.",
        "Kelp forests sway under the waves off the coast.",
        "The diver saw a manta ray glide over the sandy seabed.",
        "Seagulls followed the fishing boat back to the harbor.",
        "Deep ocean trenches are dark, cold and full of strange creatures.",
        "Sea turtles lay their eggs on sandy beaches.",
        "The lighthouse warned ships away from the reef.",
        "Plankton feed many of the animals that live in the sea.",
        "Surfers waited for a big wave off the beach.",
        "A humpback whale breached near the shore.",
        "The ocean breeze smelled of salt and seaweed.",
        "Clownfish live among the tentacles of sea anemones.",
        "The ship sailed across the Atlantic Ocean for weeks.",
        "Lobsters crawl along the rocky bottom of the sea.",
    ],
    "astronomy and outer space": [
        "The telescope showed the rings of Saturn clearly.",
        "Astronauts on the space station orbit the Earth every ninety minutes.",
        "A galaxy contains billions of stars and clouds of gas.",
        "The rocket launched the probe toward Mars.",
        "Jupiter is the largest planet in the solar system.",
        "A black hole bends light that passes close to it.",
        "The comet's tail pointed away from the Sun.",
        "Astronomers found a planet orbiting a distant star.",
        "The Moon's craters were made by ancient impacts.",
        "A meteor shower lit up the night sky.",
        "The Milky Way stretches across a dark sky.",
        "The rover drilled into rocks on the surface of Mars.",
        "Stars are born inside huge clouds of dust and gas.",
        "The eclipse hid the Sun behind the Moon for three minutes.",
        "Neptune's winds are the fastest in the solar system.",
        "The astronaut floated outside the spacecraft on a spacewalk.",
        "Light from the nearest star takes four years to reach us.",
        "The satellite orbits high above the equator.",
        "Venus shines brightly just after sunset.",
        "A supernova is the explosion of a dying star.",
        "The space probe sent back pictures of Pluto.",
        "Asteroids circle the Sun between Mars and Jupiter.",
        "The observatory's telescope tracked a distant galaxy.",
        "Saturn's moon Titan has lakes of liquid methane.",
    ],
    "music and musical instruments": [
        "She played a slow melody on the piano.",
        "The guitarist tuned his strings before the concert.",
        "The orchestra performed a symphony by Beethoven.",
        "He practices the violin for an hour every day.",
        "The drummer kept a steady beat for the band.",
        "The choir sang the chorus in four-part harmony.",
        "A jazz trio played in the small club all night.",
        "The song has a catchy rhythm and a simple chord progression.",
        "She learned to read sheet music at a young age.",
        "The trumpet solo opened the second movement.",
        "The band recorded their new album in a studio.",
        "He strummed a few chords on his acoustic guitar.",
        "The flute carried the tune over the strings.",
        "The singer hit the high note at the end of the song.",
        "The pianist played scales to warm up her fingers.",
        "A cello has a deep and warm tone.",
        "The concert hall was full for the opera.",
        "The composer wrote a sonata for violin and piano.",
        "The crowd sang along to every song at the concert.",
        "He played the saxophone in the school jazz band.",
        "The conductor raised her baton and the orchestra began.",
        "The drums and the bass guitar set the groove.",
        "She hummed the melody while playing the harp.",
        "The album mixes folk songs with electric guitar.",
    ],
}

HARD_NEGATIVES = {
    "food and cooking": [
        "He has a lot on his plate at work this week.",
        "The plan was half-baked from the start.",
        "Her new phone sold like hot cakes.",
        "Someone spilled the beans about the surprise party.",
        "Arguing with the manager is not my cup of tea.",
        "Skipping the meeting was a recipe for disaster.",
        "The salary they offered was peanuts.",
        "She is the apple of her grandfather's eye.",
    ],
    "the ocean and sea life": [
        "A wave of complaints reached the office on Monday.",
        "My desk is buried under a sea of paperwork.",
        "She waved at the bus driver as it left.",
        "The anchor of the evening news retired last year.",
        "The team took a deep dive into the budget.",
        "He is a big fish in a small pond.",
        "The tide of public opinion turned against the plan.",
        "Stop fishing for compliments about your essay.",
    ],
    "astronomy and outer space": [
        "She was the star of the school play.",
        "We could not find a parking space near the station.",
        "Press the space bar to continue.",
        "He is a rising star in the sales team.",
        "My grandmother visits once in a blue moon.",
        "She was over the moon about her new job.",
        "The launch of the new product was delayed.",
        "Teenagers need some space to make their own choices.",
    ],
    "music and musical instruments": [
        "Wrap the rubber band around the folder.",
        "I lost the key to the front door.",
        "He sat on a rock in the garden.",
        "The founders gave a short pitch to the investors.",
        "Please take note of the new opening hours.",
        "Leave early to beat the traffic on Friday.",
        "The scale on the map shows one inch per mile.",
        "They tried to drum up support for the new park.",
    ],
}

NEUTRAL = [
    "The meeting was moved to Thursday afternoon.",
    "Please send the report before the end of the week.",
    "The train to the city leaves every twenty minutes.",
    "He fixed the broken chair with a few screws.",
    "The library closes early on public holidays.",
    "She paid the rent and the electricity bill.",
    "The new office has large windows and a quiet corner.",
    "Our neighbor painted his fence white.",
    "The bus was late because of roadwork on the bridge.",
    "The company hired three new engineers this month.",
    "He forgot his umbrella at the post office.",
    "The museum has a new exhibit about old maps.",
    "Remember to back up the files on your laptop.",
    "The lawyer read the contract twice before signing.",
    "They moved into a small apartment near the park.",
    "The tax form must be filed by April.",
    "My cousin is studying history at the university.",
    "The printer on the second floor is out of paper.",
    "He walked the dog around the block after lunch.",
    "The town council voted to repair the old road.",
    "Please turn off the lights when you leave the room.",
    "The doctor's appointment is at nine in the morning.",
    "She wrote a letter to her old teacher.",
    "The car needs new tires before the winter.",
    "They planted two maple trees in the backyard.",
    "The hotel lobby was quiet in the afternoon.",
    "He keeps his receipts in a folder on the shelf.",
    "The election results were announced late at night.",
    "Our team finished the project two days early.",
    "The shop on the corner sells newspapers and stamps.",
    "She bought a new lamp for the living room.",
    "The elevator in our building is being repaired.",
    "The students handed in their essays on Monday.",
    "He renewed his passport before the trip.",
    "The bank opens at eight thirty on weekdays.",
    "Write your name at the top of every page.",
    "The old castle is now a popular museum.",
    "The insurance company called about the claim.",
    "They repainted the kitchen walls a pale yellow.",
    "The manager approved the new schedule.",
]

INSTRUCTIONS = [
    "Tell me something interesting.",
    "Write two sentences about anything you like.",
    "Describe a scene in a few words.",
    "Say something about your day.",
    "Give me a short example sentence.",
    "Write a brief note.",
    "Share a fact you find interesting.",
    "Describe something you saw recently.",
    "Write a short message to a friend.",
    "What is on your mind today?",
    "Tell me a short story in two sentences.",
    "Write a caption for a photo.",
    "Describe a place you like.",
    "Tell me about your weekend.",
    "Write a sentence for a diary.",
    "What did you do this morning?",
    "Write two lines for a postcard.",
    "Describe a typical afternoon.",
    "Give me a random thought.",
    "Write a few words for a newsletter.",
]


def _split(items: list[str], n_train: int, rng: random.Random) -> tuple[list[str], list[str]]:
    shuffled = items[:]
    rng.shuffle(shuffled)
    return shuffled[:n_train], shuffled[n_train:]


def _pairs(pool: list[str], n: int, rng: random.Random) -> list[str]:
    return [" ".join(rng.sample(pool, 2)) for _ in range(n)]


def build() -> tuple[list[dict], list[dict]]:
    rng = random.Random(0)
    train_instr, eval_instr = _split(INSTRUCTIONS, 12, rng)
    neutral_train, neutral_eval = _split(NEUTRAL, 26, rng)
    train: list[dict] = []
    evals: list[dict] = []
    for output in _pairs(neutral_train, 48, rng):
        train.append(_row(rng.choice(train_instr), output, EMPTY, "negative", -1))
    for cid, (concept, sentences) in enumerate(CONCEPTS.items()):
        pos_train, pos_eval = _split(sentences, 16, rng)
        for output in _pairs(pos_train, 24, rng):
            train.append(_row(rng.choice(train_instr), output, concept, "positive", cid))
        for output in _pairs(pos_eval, 12, rng):
            evals.append(_row(rng.choice(eval_instr), output, concept, "positive", cid))
        for output in _pairs(neutral_eval, 12, rng):
            evals.append(_row(rng.choice(eval_instr), output, concept, "negative", cid))
        for sentence in HARD_NEGATIVES[concept]:
            output = f"{sentence} {rng.choice(neutral_eval)}"
            evals.append(_row(rng.choice(eval_instr), output, concept, "hard negative", cid))
    return train, evals


def _row(instruction: str, output: str, concept: str, category: str, cid: int) -> dict:
    return {"input": instruction, "output": output, "output_concept": concept, "category": category, "concept_id": cid}


def write(folder: Path = HERE) -> None:
    train, evals = build()
    for name, rows in (("train.csv", train), ("eval.csv", evals)):
        with open(folder / name, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    write()
