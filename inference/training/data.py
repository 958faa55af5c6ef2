"""Turn the hand-written intents into many varied, deterministic training conversations.

Variety comes from four places: which phrasing and reply an intent uses; rewrites of the
phrasing that keep its meaning (question frames, contractions, synonyms, filler words);
light "surface" noise (openers, casing, punctuation, the odd typo), so the model keys on
meaning rather than exact strings; and conversation shapes (single turns, chains of turns,
follow-ups that need the earlier context, an optional system prompt). Every assistant turn is
a complete reply; the chat template appends ``<|im_end|>`` after it, which is what teaches the
model to stop by itself.

``HELDOUT`` holds prompts written separately from the training phrasings; ``unseen_check``
proves none of them occurs in the generated data, so the evaluation measures generalisation.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from inference.training import intents as it
from inference.training.intents import Intent, Slots

Turn = dict[str, str]
Dialogue = list[Turn]

OPENERS = (
    "hey, ",
    "hi, ",
    "hello, ",
    "ok, ",
    "okay so ",
    "so ",
    "quick question: ",
    "hey there, ",
    "um, ",
    "hmm, ",
    "excuse me, ",
    "sorry, ",
    "hi there! ",
    "alright, ",
    "question: ",
    "hi StellarByte, ",
    "hey, quick one: ",
    "I was wondering, ",
    "can I ask something? ",
    "one more thing: ",
    "also, ",
    "btw ",
    "Hello! ",
)
CLOSERS = (" please", " thanks", " thank you", " :)", " 🙂", "??", "!", " 🤔", " thx")
_SLOT = re.compile(r"{(\w+)}")


def _slot_names(text: str) -> set[str]:
    return set(_SLOT.findall(text))


def _typo(rng: random.Random, text: str) -> str:
    """Swap two neighbouring letters in one longer word: users make typos, so should the data."""
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha()]
    if not candidates:
        return text
    i = rng.choice(candidates)
    w = words[i]
    j = rng.randrange(1, len(w) - 2)
    words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    return " ".join(words)


# "how do I X?" can be asked in many ways; the verb phrase X carries the meaning.
HOW_FRAMES = (
    "how do I {x}?",
    "how can I {x}?",
    "how would I {x}?",
    "how should I {x}?",
    "is there a way to {x}?",
    "what's the way to {x}?",
    "what do I do to {x}?",
    "can you tell me how to {x}?",
    "I'd like to know how to {x}",
    "tell me how to {x}",
    "explain how to {x}",
    "show me how to {x}",
    "I want to know how to {x}",
    "how to {x}?",
    "any idea how to {x}?",
    "what's the easiest way to {x}?",
)
CAN_FRAMES = (
    "can I {x}?",
    "could I {x}?",
    "is it possible to {x}?",
    "am I able to {x}?",
    "is there a way to {x}?",
    "is there any way to {x}?",
    "may I {x}?",
    "would it be possible to {x}?",
)
WHAT_FRAMES = (
    "what is {x}?",
    "what's {x}?",
    "do you know what {x} is?",
    "tell me what {x} is",
    "I'd like to know what {x} is",
    "any idea what {x} is?",
)
_FRAME_PATTERNS = (
    (re.compile(r"^how (?:do|can) I (.+?)\??$"), HOW_FRAMES),
    (re.compile(r"^can I (.+?)\??$"), CAN_FRAMES),
    (re.compile(r"^what(?:'s| is) ((?:the |a |an )?[\w{}'-]+(?: [\w{}'-]+)?)\??$"), WHAT_FRAMES),
)
CONTRACTIONS = (
    ("I'm", "I am"),
    ("what's", "what is"),
    ("What's", "What is"),
    ("don't", "do not"),
    ("you're", "you are"),
    ("it's", "it is"),
    ("It's", "It is"),
    ("can't", "cannot"),
    ("I've", "I have"),
    ("isn't", "is not"),
    ("doesn't", "does not"),
    ("where's", "where is"),
    ("how's", "how is"),
    ("that's", "that is"),
    ("I'd", "I would"),
    ("there's", "there is"),
)
SYNONYMS: dict[str, tuple[str, ...]] = {
    "chat": ("conversation",),
    "chats": ("conversations",),
    "conversation": ("chat", "thread"),
    "conversations": ("chats",),
    "reply": ("answer", "response"),
    "replies": ("answers", "responses"),
    "answer": ("reply", "response"),
    "response": ("reply", "answer"),
    "delete": ("remove", "erase"),
    "remove": ("delete",),
    "bigger": ("larger", "better", "stronger", "more capable", "smarter", "more powerful"),
    "larger": ("bigger", "more powerful"),
    "old": ("previous", "earlier", "past", "older"),
    "previous": ("old", "earlier", "past"),
    "start": ("begin", "open"),
    "begin": ("start",),
    "create": ("make", "start"),
    "see": ("find", "view"),
    "find": ("see", "get to"),
    "switch": ("change",),
    "change": ("switch", "modify"),
    "model": ("LLM", "AI model", "language model"),
    "message": ("prompt", "question", "text"),
    "favourite": ("favorite",),
    "favorite": ("favourite",),
    "funny": ("hilarious", "silly"),
    "tell": ("give",),
    "really": ("very", "so"),
    "can you": ("could you", "would you", "will you"),
    "do you know": ("do you happen to know", "any idea"),
    "I want": ("I'd like", "I wanna"),
    "please": ("pls", "plz"),
}
FILLERS = ("actually", "exactly", "really", "just", "even", "maybe", "now", "again", "still")


def _swap_words(text: str, mapping: dict[str, str]) -> str:
    """Replace whole words/phrases in one pass (so "chat"->"conversation" is not undone by a
    later "conversation"->"chat"), never inside a ``{slot}``."""
    if not mapping:
        return text
    alternation = "|".join(re.escape(w) for w in sorted(mapping, key=len, reverse=True))
    return re.sub(rf"(?<![\w{{])(?:{alternation})(?![\w}}])", lambda m: mapping[m.group(0)], text)


def rewrite(rng: random.Random, template: str) -> str:
    """Rephrase a prompt template without changing its meaning (slots are left alone)."""
    for pattern, frames in _FRAME_PATTERNS:
        match = pattern.match(template)
        # "what's new?" and "what's up?" are greetings, not questions about a thing.
        if match and match.group(1) not in ("new", "up", "this") and rng.random() < 0.4:
            template = rng.choice(frames).replace("{x}", match.group(1))
            break
    if rng.random() < 0.3:
        template = _swap_words(
            template, dict((a, b) if rng.random() < 0.5 else (b, a) for a, b in CONTRACTIONS)
        )
    if rng.random() < 0.3:
        template = _swap_words(
            template, {w: rng.choice(alts) for w, alts in SYNONYMS.items() if rng.random() < 0.6}
        )
    if rng.random() < 0.08:
        words = template.split(" ")
        if len(words) > 2:
            words.insert(rng.choice((1, len(words) - 1)), rng.choice(FILLERS))
            template = " ".join(words)
    if rng.random() < 0.12:
        # Word dropout: a prompt missing a word still means the same, so no single word
        # (or word order) may decide the intent on its own.
        words = template.split(" ")
        droppable = [i for i, w in enumerate(words) if "{" not in w]
        if len(words) > 3 and droppable:
            del words[rng.choice(droppable)]
            template = " ".join(words)
    return template


def vary_prompt(rng: random.Random, text: str, intent: Intent) -> str:
    """Add the surface noise real users produce, without changing what is asked."""
    if intent.decorate and rng.random() < 0.22:
        text = rng.choice(OPENERS) + text
    if rng.random() < 0.12 and not text.endswith(("please", "thanks")):
        text = text.rstrip("?.!") + rng.choice(CLOSERS)
    if rng.random() < 0.2:
        text = text.rstrip("?.!")
    if intent.recase:
        roll = rng.random()
        if roll < 0.3:
            text = text.lower()
        elif roll < 0.65:
            text = text[:1].upper() + text[1:]
        elif roll < 0.67:
            text = text.upper()
    if rng.random() < 0.04:
        text = _typo(rng, text)
    return text


def pick_reply(rng: random.Random, intent: Intent, prompt: str) -> str:
    """A reply may use a slot only when the prompt mentions it, or no prompt of the intent
    does (e.g. the capital): otherwise "Rust is beyond me" could answer "can you code?"."""
    prompt_slots = _slot_names(prompt)
    used_by_prompts = set().union(*(_slot_names(p) for p in intent.prompts))
    eligible = [
        r
        for r in intent.replies
        if _slot_names(r) <= prompt_slots | (_slot_names(r) - used_by_prompts)
    ]
    return rng.choice(eligible or list(intent.replies))


def exchange(
    rng: random.Random, intent: Intent, slots: Slots | None = None
) -> tuple[str, str, Slots]:
    """One user message and the assistant's reply for ``intent``."""
    slots = dict(slots) if slots is not None else dict(intent.sample_slots(rng))
    prompt = rng.choice(intent.prompts)
    reply = pick_reply(rng, intent, prompt)
    template = rewrite(rng, prompt) if intent.rewrite else prompt
    user = vary_prompt(rng, template.format(**slots), intent)
    return user, reply.format(**slots), slots


def _turns(user: str, reply: str) -> Dialogue:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]


@dataclass(frozen=True)
class Mix:
    """How often each conversation shape appears."""

    system_prompt: float = 0.2
    single: float = 0.55
    chain: float = 0.3  # the rest: follow-ups that depend on earlier turns


class DialogueMaker:
    """Deterministic given the ``random.Random`` it is handed."""

    def __init__(self, mix: Mix | None = None) -> None:
        self.mix = mix or Mix()
        self.intents = it.INTENTS
        self.weights = [i.weight for i in self.intents]
        by_name = {i.name: i for i in self.intents}
        self.openers = [by_name["greeting"], by_name["how_are_you"]]
        self.closers = [by_name["thanks"], by_name["goodbye"], by_name["acknowledge"]]
        self.feelings = [by_name["feeling_good"], by_name["feeling_bad"]]

    def random_intent(self, rng: random.Random) -> Intent:
        return rng.choices(self.intents, weights=self.weights)[0]

    def _chain(self, rng: random.Random) -> Dialogue:
        turns: Dialogue = []
        if rng.random() < 0.45:
            turns += _turns(*exchange(rng, rng.choice(self.openers))[:2])
        for _ in range(rng.choice((1, 1, 2, 3))):
            turns += _turns(*exchange(rng, self.random_intent(rng))[:2])
        if rng.random() < 0.45:
            turns += _turns(*exchange(rng, rng.choice(self.closers))[:2])
        return turns

    def _followup(self, rng: random.Random) -> Dialogue:
        kind = rng.choice(("joke", "capital", "name", "name", "feeling"))
        if kind == "joke":
            jokes = rng.sample(it.JOKES, rng.randint(2, 3))
            user, _, _ = exchange(rng, it.JOKE)
            intro = rng.choice(it.JOKE_INTROS)
            turns = _turns(user, intro + jokes[0])
            for joke in jokes[1:]:
                turns += _turns(*exchange(rng, it.ANOTHER, {"joke": joke})[:2])
            return turns
        if kind == "capital":
            first, *rest = rng.sample(it.CAPITALS, rng.randint(2, 3))
            turns = _turns(*exchange(rng, it.CAPITAL, first)[:2])
            for slots in rest:
                turns += _turns(*exchange(rng, it.CAPITAL_FOLLOWUP, slots)[:2])
            return turns
        if kind == "name":
            user, reply, slots = exchange(rng, it.NAME_INTRO)
            turns = _turns(user, reply)
            for _ in range(rng.choice((0, 1, 1, 2))):
                turns += _turns(*exchange(rng, self.random_intent(rng))[:2])
            turns += _turns(*exchange(rng, it.NAME_RECALL, slots)[:2])
            return turns
        # "How are you?" replies ask back, so teach the natural answer to that question.
        turns = _turns(*exchange(rng, self.openers[1])[:2])
        turns += _turns(*exchange(rng, rng.choice(self.feelings))[:2])
        return turns

    def dialogue(self, rng: random.Random) -> Dialogue:
        roll = rng.random()
        if roll < self.mix.single:
            turns = _turns(*exchange(rng, self.random_intent(rng))[:2])
        elif roll < self.mix.single + self.mix.chain:
            turns = self._chain(rng)
        else:
            turns = self._followup(rng)
        if rng.random() < self.mix.system_prompt:
            turns = [{"role": "system", "content": rng.choice(it.SYSTEM_PROMPTS)}, *turns]
        return turns


def make_dialogues(count: int, seed: int) -> list[Dialogue]:
    """``count`` conversations, the same ones for the same seed.

    The rewrites can, by chance, produce a held-out prompt word for word; such conversations
    are dropped, so the held-out set stays unseen.
    """
    rng = random.Random(seed)
    maker = DialogueMaker()
    banned = {normalize(h.prompt) for h in HELDOUT}
    dialogues: list[Dialogue] = []
    while len(dialogues) < count:
        turns = maker.dialogue(rng)
        if not any(t["role"] == "user" and normalize(t["content"]) in banned for t in turns):
            dialogues.append(turns)
    return dialogues


# --- held-out evaluation ---------------------------------------------------------------------


@dataclass(frozen=True)
class HeldOut:
    """A prompt written apart from the training phrasings, and words a relevant reply uses."""

    prompt: str
    intent: str
    keywords: tuple[str, ...]
    # 1 and 2 were looked at while the data was developed; 3 only after the final run.
    round: int = 1

    def relevant(self, reply: str) -> bool:
        text = reply.lower()
        return any(k.lower() in text for k in self.keywords)


_JOKE_WORDS = (
    "atoms",
    "scarecrow",
    "impasta",
    "virus",
    "eclipse",
    "bugs",
    "gummy",
    "problems",
    "waved",
    "crack",
    "sleep",
    "two-tired",
    "dino-snore",
    "let it go",
)
_FACT_WORDS = (
    "octopus",
    "honey",
    "banana",
    "venus",
    "shark",
    "stars",
    "flamingo",
    "otters",
    "sun",
    "nose",
    "butterflies",
    "eiffel",
)
_SMALL = ("small", "tiny", "demo", "bigger", "larger", "beyond")

HELDOUT: tuple[HeldOut, ...] = (
    HeldOut("well hello there", "greeting", ("hello", "hi", "hey", "welcome", "good to see")),
    HeldOut(
        "hiya, how has your day been?",
        "how_are_you",
        ("about you", "how are", "how is your", "with you", "doing well", "fine", "great"),
    ),
    HeldOut(
        "what sort of stuff can you help with?", "capabilities", ("stellarchat", "chat", "simple")
    ),
    HeldOut("what can't you do well?", "capabilities", ("math", "code", "bigger", "simple")),
    HeldOut("who exactly am I chatting with?", "who_are_you", ("stellarbyte",)),
    HeldOut("what's the name of this model?", "who_are_you", ("stellarbyte",)),
    HeldOut("what company made you?", "who_made_you", ("stellarchat",)),
    HeldOut(
        "are you a real human being?",
        "are_you_human",
        ("not a person", "not a human", "program", "ai model", "language model"),
    ),
    HeldOut(
        "what exactly is stellarchat?",
        "what_is_stellarchat",
        ("self-hosted", "chat app", "web app", "host"),
    ),
    HeldOut("how do I open a brand new conversation?", "new_chat", ("new chat",)),
    HeldOut("is there any way to interrupt a long answer?", "stop_button", ("stop",)),
    HeldOut("how do I make it stop writing?", "stop_button", ("stop",)),
    HeldOut("I want a different reply to my last message", "regenerate", ("regenerate",)),
    HeldOut("how can I fix a typo in something I already sent?", "edit_message", ("edit",)),
    HeldOut("can I switch StellarChat to a dark theme?", "themes", ("dark", "theme")),
    HeldOut("where can I see the chats I had before?", "sidebar", ("sidebar",)),
    HeldOut(
        "how can I keep my favourite conversation at the top of the list?", "pin_archive", ("pin",)
    ),
    HeldOut("can I remove an old conversation?", "delete_chat", ("delete",)),
    HeldOut(
        "how would I go about running a more capable model?", "bigger_model", ("stellarchat_model",)
    ),
    HeldOut("can I plug in Qwen instead of you?", "bigger_model", ("stellarchat_model",)),
    HeldOut(
        "does this app need an internet connection?",
        "privacy",
        ("offline", "locally", "your own", "server"),
    ),
    HeldOut("can you look things up online for me?", "internet", ("internet", "web", "search")),
    HeldOut("what time is it right now?", "time", ("clock", "time", "date")),
    HeldOut("could you multiply 48 by 17 for me?", "math", ("math", "arithmetic", "calculat")),
    HeldOut("help me out with my calculus homework", "math", ("math", "arithmetic", "calculat")),
    HeldOut("write a javascript function to shuffle an array", "code", ("code", "programming")),
    HeldOut(
        "who won the match yesterday?", "news", ("news", "internet", "current", "today", "world")
    ),
    HeldOut(
        "what's going on in the news this week?",
        "news",
        ("news", "internet", "current", "today", "world"),
    ),
    HeldOut("please explain how black holes form", "complex_question", _SMALL),
    HeldOut("write me an essay on the history of jazz", "writing_task", _SMALL),
    HeldOut("tell me something that will make me laugh", "joke", _JOKE_WORDS),
    HeldOut("tell me an interesting fact", "fun_fact", _FACT_WORDS),
    HeldOut("what's the capital city of Japan", "capital", ("tokyo",)),
    HeldOut("do you happen to know the capital of Italy?", "capital", ("rome",)),
    HeldOut("a spider has how many legs?", "fact", ("eight",)),
    HeldOut("which planet is the largest?", "fact", ("jupiter",)),
    HeldOut(
        "thanks so much for your help!",
        "thanks",
        ("welcome", "happy to help", "anytime", "pleasure", "glad"),
    ),
    HeldOut(
        "alright, I'm heading off, bye", "goodbye", ("bye", "see you", "take care", "good night")
    ),
    HeldOut("it's really rainy where I live", "weather_chat", ("rain",)),
    HeldOut("I really like painting", "hobby_share", ("painting",)),
    HeldOut(
        "what do you like doing for fun?", "your_hobbies", ("hobby", "chat", "conversation", "talk")
    ),
    HeldOut(
        "which colour is your favourite?",
        "favourite",
        ("blue", "yellow", "orange", "pink", "color", "colour"),
    ),
    HeldOut("I'm feeling kind of down today", "feeling_bad", ("sorry",)),
    HeldOut("你好啊", "zh_greeting", ("你好", "您好")),
    # Added after the first full run, before the data was changed, to keep the check honest.
    HeldOut(
        "good evening to you", "greeting", ("hello", "hi", "hey", "welcome", "good to see"), round=2
    ),
    HeldOut(
        "could you tell me what this chat app is?",
        "what_is_stellarchat",
        ("self-hosted", "chat app", "web app", "host"),
        round=2,
    ),
    HeldOut("I'd like another version of your answer", "regenerate", ("regenerate",), round=2),
    HeldOut(
        "is it possible to change a message after sending it?", "edit_message", ("edit",), round=2
    ),
    HeldOut("I can't find yesterday's conversation", "sidebar", ("sidebar",), round=2),
    HeldOut("can I run SmolLM in this app?", "bigger_model", ("stellarchat_model",), round=2),
    HeldOut("tell me about the model you're running on", "who_are_you", ("stellarbyte",), round=2),
    HeldOut("can you do my maths homework?", "math", ("math", "arithmetic", "calculat"), round=2),
    HeldOut("how tall is Mount Everest?", "fact", ("8,849",), round=2),
    HeldOut("what's the capital of Canada again?", "capital", ("ottawa",), round=2),
    HeldOut("I love going hiking on weekends", "hobby_share", ("hiking",), round=2),
    HeldOut("will I need a coat today?", "weather_live", ("weather", "forecast"), round=2),
    HeldOut(
        "you are so helpful, thank you",
        "thanks",
        ("welcome", "glad", "thank", "pleasure", "happy"),
        round=2,
    ),
    # Round 3: written after the second full run, before the data was changed again, and not
    # looked at until the final run. This is the clean generalisation check.
    HeldOut(
        "hey, how's your evening going?",
        "how_are_you",
        ("about you", "how are", "how is your", "with you", "doing well", "fine", "great"),
        round=3,
    ),
    HeldOut(
        "what should I know about you?", "who_are_you", ("stellarbyte", "small", "chat"), round=3
    ),
    HeldOut(
        "is this thing running on my own computer?",
        "privacy",
        ("your own", "locally", "server", "machine", "offline"),
        round=3,
    ),
    HeldOut("the answer is still being typed, can I cancel it?", "stop_button", ("stop",), round=3),
    HeldOut("how do I go back to a conversation from last week?", "sidebar", ("sidebar",), round=3),
    HeldOut(
        "do you know the square root of 144?", "math", ("math", "arithmetic", "calculat"), round=3
    ),
    HeldOut("give me a python script that renames files", "code", ("code", "programming"), round=3),
    HeldOut(
        "any big news stories today?",
        "news",
        ("news", "internet", "current", "today", "world"),
        round=3,
    ),
    HeldOut("Germany's capital is which city?", "capital", ("berlin",), round=3),
    HeldOut("baking is my thing", "hobby_share", ("baking",), round=3),
    HeldOut(
        "cheers, that was useful",
        "thanks",
        ("welcome", "happy to help", "anytime", "pleasure", "glad"),
        round=3,
    ),
    HeldOut("can you tell me a short story?", "writing_task", _SMALL, round=3),
    HeldOut("how do I get a dark background?", "themes", ("dark", "theme"), round=3),
)


def normalize(text: str) -> str:
    """Compare prompts the way a person would: case, punctuation and spacing don't count."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation + "？！，。"))
    return " ".join(text.split())


def template_expansions(intents: Iterable[Intent]) -> set[str]:
    """Every prompt template of finite-slot intents, filled in (normalised)."""
    out: set[str] = set()
    for intent in intents:
        for prompt in intent.prompts:
            if not _slot_names(prompt):
                out.add(normalize(prompt))
            elif intent.slots is not None and not callable(intent.slots):
                for slots in intent.slots:
                    out.add(normalize(prompt.format(**slots)))
    return out


def all_intents() -> tuple[Intent, ...]:
    return (*it.INTENTS, it.ANOTHER, it.CAPITAL_FOLLOWUP, it.NAME_INTRO, it.NAME_RECALL)


def unseen_check(dialogues: Sequence[Dialogue], heldout: Sequence[HeldOut] = HELDOUT) -> None:
    """Raise if a held-out prompt appears among the templates or the generated user turns."""
    known = template_expansions(all_intents())
    known |= {normalize(t["content"]) for d in dialogues for t in d if t["role"] == "user"}
    leaked = [h.prompt for h in heldout if normalize(h.prompt) in known]
    if leaked:
        raise ValueError(f"held-out prompts found in the training data: {leaked}")
