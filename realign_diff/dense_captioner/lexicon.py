"""The offline scorer's knowledge: word forms, synonyms, "is a" links and scene relations.

Small on purpose, and hand-written: it covers the objects of everyday prompts (the COCO classes and
what surrounds them), not the world. What it knows:

- ``SYNONYMS``: groups of names for one thing ("sofa" = "couch"). A tag and a prompt word in one group
  are the same object (score 2).
- ``IS_A``: a few hypernyms with their kinds ("dog" <- "puppy", "person" <- "girl"). A tag that names the
  kind or the category of a prompt object is that object (score 2): the tagger saw a "puppy" where the
  prompt asked for "a dog".
- ``CONTEXTS``: scenes. A context is *evoked* when one of its cues is in the prompt; its ``related``
  tags are things that may be in such a scene (score 0.5): "a red book and a yellow pen" evokes the
  desk scene, where a desk, a table, a lamp or a shelf may appear; a banana may not.
- word lists for the phrase rules: determiners, words that end a noun phrase (prepositions,
  conjunctions, common verbs), words that describe the picture rather than its content.

Extend the tables freely: entries are plain lower-case words or short phrases, singular.
"""

from __future__ import annotations

from functools import lru_cache

# ---------------------------------------------------------------- word forms
# fmt: off
IRREGULAR_PLURALS = {  # plural -> singular
    "men": "man", "women": "woman", "children": "child", "people": "person", "persons": "person",
    "mice": "mouse", "geese": "goose", "feet": "foot", "teeth": "tooth", "oxen": "ox",
    "knives": "knife", "wives": "wife", "lives": "life", "leaves": "leaf", "loaves": "loaf",
    "wolves": "wolf", "shelves": "shelf", "calves": "calf", "halves": "half", "scarves": "scarf",
    "cacti": "cactus", "fungi": "fungus", "dice": "die", "kids": "kid",
}
SAME_PLURAL = {"sheep", "fish", "deer", "moose", "aircraft", "series", "species", "pants", "jeans", "shorts",
               "scissors", "trousers", "news"}
INVARIANT = SAME_PLURAL | {"grass", "bus", "glass", "dress", "canvas"}  # never stripped of their final "s"
# fmt: on
_IRREGULAR_OF: dict[str, set[str]] = {}
for _plural, _singular in IRREGULAR_PLURALS.items():
    _IRREGULAR_OF.setdefault(_singular, set()).add(_plural)


def noun_forms(phrase: str) -> frozenset[str]:
    """The phrase with its last word in every singular and plural form it may take ("knife" -> knife, knives;
    "men" -> men, man; "box" -> box, boxes). The one place English noun forms are made: the patch's token map
    looks for each of them in the prompt, the offline scorer and the caption check compare through them."""
    words = phrase.lower().split(" ")
    head = " ".join(words[:-1])
    forms = set(lemma_candidates(words[-1]))
    if forms == {words[-1]}:  # not a plural already
        forms |= _plurals(words[-1])
    return frozenset(f"{head} {f}" if head else f for f in forms)


def _plurals(word: str) -> set[str]:
    if word in SAME_PLURAL:
        return {word}
    if word in _IRREGULAR_OF:
        return set(_IRREGULAR_OF[word])
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return {word + "es"}
    if len(word) > 1 and word.endswith("y") and word[-2] not in "aeiou":
        return {word[:-1] + "ies"}
    return {word + "s"}


def lemma_candidates(word: str) -> frozenset[str]:
    """The word and the singulars it may be the plural of ("buses" -> buses, buse, bus). Two words
    name the same thing when their candidate sets meet; a wrong candidate ("buse") matches nothing."""
    return _lemma_candidates(word.lower())


@lru_cache(maxsize=4096)
def _lemma_candidates(word: str) -> frozenset[str]:
    words = word.split(" ")
    last, head = words[-1], " ".join(words[:-1])
    forms = {last}
    if last in IRREGULAR_PLURALS:
        forms.add(IRREGULAR_PLURALS[last])
    if last == "people":
        forms.add("person")
    if len(last) > 3 and last.endswith("s") and not last.endswith("ss") and last not in INVARIANT:
        forms.add(last[:-1])
        if last.endswith("es"):
            forms.add(last[:-2])
        if last.endswith("ies"):
            forms.add(last[:-3] + "y")
        if last.endswith("ves"):
            forms.update((last[:-3] + "f", last[:-3] + "fe"))
    return frozenset(f"{head} {f}" if head else f for f in forms)


# ---------------------------------------------------------------- synonyms and kinds
# fmt: off
SYNONYMS: list[set[str]] = [
    {"sofa", "couch"},
    {"tv", "television", "tv set"},
    {"phone", "cell phone", "cellphone", "mobile phone", "smartphone"},
    {"bicycle", "bike"},
    {"motorcycle", "motorbike"},
    {"car", "automobile"},
    {"airplane", "aeroplane", "plane", "airliner"},
    {"laptop", "laptop computer", "notebook computer"},
    {"monitor", "computer monitor", "screen"},
    {"fridge", "refrigerator"},
    {"doughnut", "donut"},
    {"hot dog", "hotdog"},
    {"rug", "carpet"},
    {"sea", "ocean"},
    {"rock", "stone"},
    {"trousers", "pants"},
    {"taxi", "cab"},
    {"rabbit", "bunny"},
    {"kid", "child"},
    {"man", "guy", "gentleman"},
    {"woman", "lady"},
    {"person", "human"},
    {"mug", "coffee mug"},
    {"dining table", "kitchen table"},
    {"backpack", "rucksack"},
    {"pen", "ballpoint pen", "ballpoint"},
    {"hat", "cap"},
    {"bag", "handbag", "purse"},
    {"kitten", "kitty"},
    {"puppy", "pup"},
]

IS_A: dict[str, set[str]] = {  # category -> its kinds
    "person": {"man", "woman", "boy", "girl", "child", "baby", "player", "rider", "surfer", "skier",
               "skateboarder", "chef", "student", "soldier", "worker", "farmer", "teenager", "toddler",
               "doctor", "nurse", "dancer", "singer", "musician", "tourist", "couple", "family", "astronaut",
               "pilot", "knight", "cowboy", "police officer", "firefighter"},
    "dog": {"puppy", "poodle", "bulldog", "terrier", "husky", "corgi", "labrador", "retriever", "beagle"},
    "cat": {"kitten", "tabby"},
    "bird": {"parrot", "eagle", "owl", "pigeon", "sparrow", "seagull", "duck", "swan", "penguin", "crow",
             "hawk", "flamingo", "chicken", "robin"},
    "animal": {"dog", "cat", "horse", "cow", "sheep", "bird", "bear", "elephant", "zebra", "giraffe",
               "lion", "tiger", "monkey", "rabbit", "deer", "fox", "wolf", "pig", "goat", "mouse", "fish"},
    "flower": {"rose", "tulip", "daisy", "sunflower", "lily", "orchid", "lotus", "lavender"},
    "fruit": {"apple", "banana", "orange", "grape", "strawberry", "lemon", "pear", "peach", "cherry",
              "watermelon", "pineapple", "mango", "kiwi"},
    "vegetable": {"carrot", "broccoli", "tomato", "potato", "onion", "lettuce", "cucumber", "pumpkin"},
    "vehicle": {"car", "bus", "truck", "van", "motorcycle", "bicycle", "taxi", "train", "tractor"},
    "boat": {"ship", "sailboat", "canoe", "kayak", "yacht"},
    "tree": {"pine", "oak", "palm tree", "maple", "birch"},
    "furniture": {"chair", "table", "sofa", "bed", "desk", "shelf", "cabinet", "bench", "stool"},
    "chair": {"armchair", "office chair", "stool"},
    "shoe": {"sneaker", "boot", "sandal", "heel"},
    "bag": {"backpack", "suitcase", "briefcase"},
    "toy": {"teddy bear", "doll", "toy car"},
    "instrument": {"guitar", "piano", "violin", "drum", "trumpet", "flute"},
    "food": {"pizza", "cake", "sandwich", "burger", "hamburger", "bread", "donut", "hot dog", "soup",
             "salad", "pasta", "cookie", "pie"},
    "drink": {"coffee", "tea", "juice", "wine", "beer", "milk", "water bottle"},
    "building": {"house", "castle", "church", "tower", "skyscraper", "cottage", "barn"},
}

# ---------------------------------------------------------------- scenes
# name -> (cues: prompt words that evoke the scene, related: tags that may appear in it)
CONTEXTS: dict[str, tuple[set[str], set[str]]] = {
    "desk": (
        {"book", "pen", "pencil", "notebook", "paper", "laptop", "computer", "keyboard", "monitor", "lamp",
         "mug", "stapler", "eraser", "ruler", "calculator", "envelope", "letter", "document", "marker",
         "desk", "office", "notepad", "diary", "journal", "crayon"},
        {"desk", "table", "paper", "notebook", "book", "pencil", "pen", "lamp", "desk lamp", "shelf",
         "bookshelf", "bookcase", "chair", "office", "room", "wall", "floor", "document", "mug", "cup",
         "stationery", "background", "keyboard", "drawer"},
    ),
    "dining": (
        {"plate", "bowl", "fork", "knife", "spoon", "food", "fruit", "vegetable", "meal", "breakfast",
         "lunch", "dinner", "cup", "glass", "wine glass", "bottle", "dining table", "kitchen", "restaurant",
         "cake", "pizza", "sandwich", "bread", "soup", "salad", "coffee", "tea", "wine", "juice", "apple",
         "banana", "orange"},
        {"table", "dining table", "plate", "bowl", "fork", "knife", "spoon", "napkin", "tablecloth", "cup",
         "glass", "bottle", "tray", "kitchen", "counter", "cutting board", "food", "fruit", "chair", "vase",
         "placemat", "restaurant", "background", "wooden table"},
    ),
    "kitchen": (
        {"kitchen", "stove", "oven", "sink", "fridge", "microwave", "pot", "pan", "kettle", "toaster",
         "cutting board", "chef"},
        {"counter", "countertop", "cabinet", "sink", "stove", "oven", "fridge", "microwave", "pot", "pan",
         "kettle", "cutting board", "kitchen", "shelf", "window", "wall", "floor", "tile", "bowl", "plate"},
    ),
    "living room": (
        {"sofa", "tv", "armchair", "living room", "fireplace", "coffee table", "cushion", "pillow", "rug"},
        {"room", "living room", "floor", "wall", "rug", "pillow", "cushion", "curtain", "window", "lamp",
         "table", "coffee table", "shelf", "plant", "houseplant", "picture frame", "painting", "sofa",
         "chair", "tv", "blanket", "fireplace"},
    ),
    "bedroom": (
        {"bed", "bedroom", "blanket", "pillow", "nightstand"},
        {"bedroom", "room", "pillow", "blanket", "sheet", "bedspread", "lamp", "nightstand", "wall", "floor",
         "window", "curtain", "headboard", "mattress"},
    ),
    "pet": (
        {"dog", "cat"},
        {"floor", "sofa", "bed", "grass", "collar", "toy", "leash", "rug", "pillow", "blanket", "ball",
         "room", "yard", "ground", "pet bed"},
    ),
    "street": (
        {"car", "bus", "truck", "van", "motorcycle", "bicycle", "taxi", "traffic light", "stop sign",
         "street", "road", "city", "town", "building", "skyscraper", "sidewalk", "parking lot", "vehicle"},
        {"road", "street", "sidewalk", "building", "city", "sky", "tree", "traffic light", "sign",
         "street sign", "pole", "person", "car", "crosswalk", "lamp post", "street light", "wheel",
         "parking lot", "curb", "window"},
    ),
    "field": (
        {"animal", "horse", "cow", "sheep", "goat", "deer", "farm", "field", "meadow", "grass", "tree", "flower",
         "mountain", "hill", "park", "garden", "forest", "countryside", "landscape", "tractor", "barn"},
        {"grass", "field", "meadow", "sky", "cloud", "tree", "ground", "fence", "hill", "mountain", "dirt",
         "path", "bush", "plant", "flower", "forest", "sun", "landscape", "farm"},
    ),
    "water": (
        {"boat", "ship", "sailboat", "canoe", "kayak", "yacht", "surfboard", "surfer", "swimmer", "fish",
         "duck", "swan", "beach", "sea", "lake", "river", "wave", "pier", "harbor", "island"},
        {"water", "sea", "lake", "river", "beach", "sand", "wave", "sky", "cloud", "shore", "dock", "pier",
         "rock", "harbor", "horizon", "sun", "reflection"},
    ),
    "snow": (
        {"ski", "skier", "snowboard", "snowman", "snow", "winter", "sled", "penguin"},
        {"snow", "mountain", "sky", "tree", "slope", "jacket", "hat", "glove", "ice", "hill"},
    ),
    "person": (
        {"person", "man", "woman", "child", "boy", "girl", "baby", "people", "player", "portrait"},
        {"shirt", "hair", "face", "hand", "clothing", "jacket", "hat", "glasses", "dress", "pants", "shoe",
         "bag", "room", "street", "background", "wall", "smile", "arm", "coat"},
    ),
    "sports": (
        {"ball", "bat", "racket", "baseball", "soccer", "football", "basketball", "tennis", "frisbee", "kite",
         "skateboard", "player", "stadium", "court"},
        {"field", "court", "grass", "net", "player", "person", "sky", "stadium", "crowd", "ball", "goal",
         "uniform", "ground"},
    ),
    "sky": (
        {"airplane", "kite", "bird", "balloon", "sky", "cloud", "moon", "sun", "star", "sunset"},
        {"sky", "cloud", "sun", "horizon", "tree", "mountain", "building", "moon", "star"},
    ),
}

# scene words: scored like any tag, but never added as objects to ground from the prompt alone
PLACES = {"room", "kitchen", "bedroom", "living room", "bathroom", "office", "city", "town", "park",
          "forest", "countryside", "landscape", "scene", "background", "indoors", "outdoors", "restaurant",
          "farm", "garden", "winter", "summer", "night", "day", "sunset", "morning", "evening"}

# nouns captioned bare ("grass", "glasses") instead of with "a"
MASS_NOUNS = {"sky", "grass", "water", "sand", "snow", "sea", "ocean", "ground", "floor", "wall", "background",
              "field", "road", "street", "sun", "moon", "horizon", "hair", "clothing", "food", "fruit", "ice",
              "dirt", "beach", "forest", "city", "room", "kitchen", "office", "stationery", "tile", "crowd",
              "glasses", "pants", "jeans", "shorts", "scissors", "trousers", "people", "clothes"}

# ---------------------------------------------------------------- phrase rules
DETERMINERS = {"a", "an", "the", "this", "that", "these", "those", "my", "your", "his", "her", "its", "our",
               "their", "some", "many", "several", "few", "each", "every", "one", "two", "three", "four",
               "five", "six", "seven", "eight", "nine", "ten", "dozen", "couple", "pair", "no", "any", "all"}

BOUNDARIES = {  # words that end a noun phrase: conjunctions, prepositions, relative words, common verbs
    "and", "or", "but", "nor", "with", "without", "on", "in", "at", "of", "under", "over", "above", "below",
    "beside", "besides", "behind", "near", "next", "to", "from", "by", "into", "onto", "inside", "outside",
    "between", "among", "against", "along", "across", "through", "around", "while", "that", "which", "who",
    "whose", "where", "when", "as", "for", "than", "like", "atop", "beneath", "underneath", "toward",
    "towards", "upon", "within", "during", "after", "before", "is", "are", "was", "were", "be", "been",
    "being", "has", "have", "had", "sits", "sit", "sat", "stands", "stand", "lies", "lie", "lay", "holds",
    "hold", "eats", "eat", "plays", "play", "runs", "run", "walks", "walk", "rides", "ride", "flies", "fly",
    "wears", "wear", "looks", "look", "jumps", "jump", "swims", "swim", "reads", "read", "sleeps", "sleep",
    "carries", "carry", "made", "covered", "filled", "surrounded", "parked", "placed", "shown", "seen",
    "floats", "hangs", "leans", "rests", "waits", "drinks", "chases", "grazes", "stares", "watches",
    "not", "it", "they", "he", "she", "there", "here", "also", "then",
}

# "-ing" words that are nouns, not verbs (other "-ing" words end a noun phrase: "a dog running")
ING_NOUNS = {"building", "painting", "ceiling", "clothing", "ring", "king", "string", "wing", "swing", "thing",
             "evening", "morning", "pudding", "wedding", "railing", "drawing", "icing", "sibling", "earring",
             "stuffing", "dumpling", "lightning", "spring", "sling", "viking", "darling", "awning", "ping",
             "bedding", "frosting", "seasoning", "landing", "parking", "ending", "mooring", "netting"}

# words that describe the picture, not what it shows: "a photo of a cat" names a cat, not a photo
META_WORDS = {"photo", "photograph", "picture", "image", "painting", "illustration", "drawing", "render",
              "rendering", "shot", "close-up", "closeup", "portrait", "view", "style", "art", "artwork",
              "sketch", "scene", "wallpaper", "poster", "cartoon", "anime", "quality", "detail", "details",
              "masterpiece", "lighting", "resolution", "4k", "8k", "hd", "background", "kind", "type", "lot",
              "bunch", "group", "pair", "couple", "side", "top", "front", "middle", "left", "right", "bottom",
              "center", "corner", "edge", "distance", "foreground"}

COLORS = {"red", "orange", "yellow", "green", "blue", "purple", "violet", "pink", "brown", "black", "white",
          "gray", "grey", "gold", "golden", "silver", "beige", "cyan", "magenta", "turquoise", "teal",
          "maroon", "navy", "crimson", "scarlet", "dark", "bright", "pale"}
# fmt: on


def all_nouns() -> frozenset[str]:
    """Every noun the tables know (for telling a modifier, "coffee" in "a coffee table", from a head)."""
    return _ALL_NOUNS


def _collect_nouns() -> frozenset[str]:
    nouns: set[str] = set()
    for group in SYNONYMS:
        nouns |= group
    for category, kinds in IS_A.items():
        nouns.add(category)
        nouns |= kinds
    for cues, related in CONTEXTS.values():
        nouns |= cues | related
    nouns |= PLACES | MASS_NOUNS
    return frozenset(nouns)


_ALL_NOUNS = _collect_nouns()
