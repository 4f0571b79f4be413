"""The paper's 16 question types (section 3.2, Figure 3): definitions, shares in LLaVA-Video-178K, and our own
pool of 3 demonstrations per type (the paper's pool was not released; these are written here).

The teacher prompt gives every definition and the demonstrations, then the video's detailed caption, and asks
for at most one question per type, as a JSON list.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QuestionType:
    name: str
    share: float
    """Share of open-ended QA in LLaVA-Video-178K (paper Figure 3), percent."""
    definition: str
    demos: tuple[tuple[str, str], tuple[str, str], tuple[str, str]]
    """(question, answer) examples, written for real videos."""
    procedural: bool = True
    """Whether the procedural world can express it (it has no people, so no human or action questions)."""


QUESTION_TYPES: tuple[QuestionType, ...] = (
    QuestionType(
        "Temporal",
        7.2,
        "When something happens, or what happens at a given time.",
        (
            ("When does the dog start running?", "At about 12 seconds, after the ball is thrown."),
            ("What happens right after the door opens?", "A woman walks in carrying a box."),
            ("At what time does the title card appear?", "At about 3 seconds."),
        ),
    ),
    QuestionType(
        "Spatial",
        7.2,
        "Where things are in the frame or relative to each other.",
        (
            ("Where is the lamp relative to the sofa?", "It stands to the left of the sofa."),
            ("In which part of the frame is the clock?", "In the top right corner."),
            ("What is in front of the car?", "A red bicycle leaning on a post."),
        ),
    ),
    QuestionType(
        "Causal",
        7.2,
        "Why something happens or is the case, from what the video shows.",
        (
            ("Why does the man stop walking?", "Because the traffic light turns red."),
            ("Why is the glass empty at the end?", "The girl drinks the juice."),
            ("Why can the cat no longer be seen?", "It has gone behind the curtain."),
        ),
    ),
    QuestionType(
        "Description-Scene",
        7.2,
        "The setting: place, background, lighting, weather.",
        (
            ("Where does the video take place?", "In a small kitchen with white cabinets."),
            ("What is the weather like?", "It is sunny with a few clouds."),
            ("What colour are the walls of the room?", "They are pale blue."),
        ),
    ),
    QuestionType(
        "Description-Human",
        6.7,
        "People's appearance, clothing, expressions.",
        (
            ("What is the man wearing?", "A grey suit and a red tie."),
            ("How does the girl look when she opens the gift?", "She smiles widely."),
            ("What colour is the chef's hat?", "White."),
        ),
        procedural=False,
    ),
    QuestionType(
        "Description-Object",
        7.0,
        "Objects' appearance: colour, shape, size, material.",
        (
            ("What colour is the car that drives past?", "It is red."),
            ("What shape is the table?", "It is round."),
            ("What is the cup made of?", "Glass."),
        ),
    ),
    QuestionType(
        "Count",
        7.1,
        "How many of something appear or happen.",
        (
            ("How many people are in the room?", "Three."),
            ("How many times does the ball bounce?", "Four times."),
            ("How many cars pass by?", "Two."),
        ),
    ),
    QuestionType(
        "Binary",
        7.2,
        "A yes/no question about the video's content.",
        (
            ("Is there a dog in the video?", "Yes, a brown dog lies by the door."),
            ("Does it rain at any point?", "No."),
            ("Is the light on at the start?", "Yes."),
        ),
    ),
    QuestionType(
        "Fine-Grained Action",
        6.5,
        "Exactly what an agent does, in detail.",
        (
            ("How does the woman open the jar?", "She twists the lid with her right hand while holding the jar."),
            ("What does the player do before shooting?", "He dribbles twice and steps back."),
            ("How is the dough shaped?", "It is rolled flat and folded in half."),
        ),
        procedural=False,
    ),
    QuestionType(
        "Plot Understanding",
        7.1,
        "The course of the whole video: how it develops from start to end.",
        (
            ("How does the video progress?", "It starts in a street, moves into a shop, and ends at the till."),
            ("What is the overall story?", "A boy loses his kite and finds it in a tree."),
            ("How does the scene change over the video?", "Day turns into night."),
        ),
    ),
    QuestionType(
        "Non-Existent Actions with Existent Scene",
        6.6,
        "Asks about an action that does not happen to something that is there; the answer says so.",
        (
            ("Does the man throw the ball?", "No, he only holds it."),
            ("Does the cat jump onto the table?", "No, it stays on the floor."),
            ("Does the car turn left?", "No, it drives straight on."),
        ),
    ),
    QuestionType(
        "Time Order",
        6.9,
        "Which of several things happens first or last.",
        (
            ("What happens first, the door opening or the phone ringing?", "The phone rings first."),
            ("Which appears last, the bus or the taxi?", "The taxi."),
            ("Does the singer bow before or after the song?", "After the song."),
        ),
    ),
    QuestionType(
        "Object Direction",
        3.8,
        "Which way an object moves.",
        (
            ("In which direction does the boat move?", "From left to right."),
            ("Which way does the ball roll?", "Towards the camera."),
            ("Where does the bird fly?", "Upwards, out of the frame."),
        ),
    ),
    QuestionType(
        "Camera Direction",
        4.1,
        "How the camera moves (pan, tilt, zoom).",
        (
            ("How does the camera move?", "It pans slowly to the right."),
            ("Does the camera zoom in or out?", "It zooms in on the face."),
            ("Which way does the camera tilt?", "Upwards, to the sky."),
        ),
    ),
    QuestionType(
        "Speed",
        3.6,
        "How fast things move, or which moves faster.",
        (
            ("Which runner is faster?", "The one in the blue shirt."),
            ("How fast does the car drive?", "Slowly, at walking pace."),
            ("Does the video play in slow motion?", "Yes, the water drops fall slowly."),
        ),
    ),
    QuestionType(
        "Attribute Change",
        4.5,
        "How something's appearance or state changes during the video.",
        (
            ("What colour does the traffic light turn?", "From red to green."),
            ("How does the ice cube change?", "It melts into a puddle."),
            ("What happens to the balloon?", "It grows bigger and then pops."),
        ),
    ),
)
BY_NAME = {t.name: t for t in QUESTION_TYPES}
NOT_PROCEDURAL = tuple(t.name for t in QUESTION_TYPES if not t.procedural)
"""Types the procedural world cannot express: it has no people, so no human descriptions or actions."""
