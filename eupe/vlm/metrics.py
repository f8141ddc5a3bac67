"""The six VLM benchmark metrics of the EUPE paper, computed exactly as lmms-eval computes them.

Each function reproduces the behaviour of lmms-eval's task code (``lmms_eval/tasks/<task>/utils.py``, its
``exact_match`` metric and ``_task_utils``), quirks included, so that numbers compare with published lmms-eval
results. lmms-eval strips every generated reply before scoring; the functions here do the same, so they take the
raw reply. Scales are lmms-eval's: accuracies and F1 in [0, 1], MME scores in points (a subtask at most 200).

:func:`bootstrap_ci` (from :mod:`eupe.eval.stats`) gives a percentile-bootstrap confidence interval over questions
for any of them.
"""

from __future__ import annotations

import re
import statistics
import string
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

from ..eval.stats import ConfidenceInterval, bootstrap_ci, mean  # noqa: F401  (re-exported: the VLM metrics' intervals)

# ------------------------------------------------------------------------------------------- VQA accuracy

# EvalAI's answer normalisation (lmms_eval/tasks/_task_utils/vqa_eval_metric.py, after MMF), used by TextVQA.
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas",
    "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                 "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = frozenset({"a", "an", "the"})
_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
                "?", "!")
# The reference's lookbehind is mistyped as a lookahead ``(?!<=\d)``, which matches everywhere: every period not
# followed by a digit goes, "1.5" keeps its point but "5." loses it.
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
# The reference passes re.UNICODE (= 32) as the positional ``count`` of ``sub``: at most 32 periods are removed.
_PERIOD_MAX_REMOVALS = 32
_DIGIT_COMMA_DIGIT = re.compile(r"(?<=\d)(\,)+(?=\d)")


def normalize_vqa_answer(text: str) -> str:
    """EvalAI's VQA answer normalisation: lower case; punctuation, articles and periods removed; number words to
    digits; contractions given their apostrophe ("dont" -> "don't")."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    # Punctuation next to a space (or any text with a digit,digit comma) is deleted; elsewhere it becomes a space.
    # Both tests look at the text as it was before this loop, as in the reference.
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    original = text
    for mark in _PUNCTUATION:
        deleted = delete_all or mark + " " in original or " " + mark in original
        text = text.replace(mark, "" if deleted else " ")
    text = _PERIOD.sub("", text, count=_PERIOD_MAX_REMOVALS)
    words = [_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES)


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQA accuracy of one reply (TextVQA): over the leave-one-out subsets of the human answers (10 in TextVQA),
    the mean of ``min(1, matches / 3)``, after :func:`normalize_vqa_answer` on the reply and every answer."""
    if not answers:
        raise ValueError("vqa_accuracy needs the human answers of the question; this question has none "
                         "(TextVQA's test split ships without answers: score the validation split)")
    reply = normalize_vqa_answer(prediction.strip())
    normalized = [normalize_vqa_answer(answer) for answer in answers]
    matches = sum(answer == reply for answer in normalized)
    # Leaving out answer i removes one match exactly when answer i itself matches.
    per_subset = [min(1.0, (matches - (answer == reply)) / 3) for answer in normalized]
    return statistics.mean(per_subset)  # exact-fraction mean, as the reference (bit-identical results)


# ------------------------------------------------------------------------------------------- multiple choice


def scienceqa_score(prediction: str, answer: str) -> float:
    """ScienceQA(-IMG): 1.0 when the reply is the answer letter (any case) or starts with an upper-case letter and
    a period ("B. plants") whose letter is the answer, else 0.0. ``answer`` is the letter ("A", "B", ...)."""
    target = answer.strip().lower()
    reply = prediction.strip()
    if reply.lower() == target:
        return 1.0
    if len(reply) >= 2 and reply[0].isupper() and reply[1] == ".":
        return float(reply[0].lower() == target)
    return 0.0


_MCQ_PHRASES = (
    "the answer is", "answer is", "the correct answer is", "correct answer is", "the best answer is",
    "best answer is", "the correct option is", "correct option is", "the best option is", "best option is",
    "the choice is", "choice is", "the correct choice is", "correct choice is", "i choose", "i select", "i pick",
    "my answer is", "my choice is", "옵션", "정답은", "답은", "답:", "答案是", "答案为", "选", "答えは",
)
# Letter formats with their priority (higher wins; among equals the later position wins).
_MCQ_MARKERS = (("({})", 6), ("{}.", 5), ("{}:", 4), ("{})", 3), ("{} ", 2))
_MCQ_PRIORITY_START, _MCQ_PRIORITY_END, _MCQ_PRIORITY_PHRASE, _MCQ_PRIORITY_ANY = 10, 9, 7, 0


def extract_choice_letter(response: str, choices: Sequence[str] = tuple("ABCDEFGH")) -> str:
    """The option letter a free-form reply picks, or "" when it names none (lmms-eval's ``extract_mcq_answer``).

    Candidates, best first: the reply starting or ending with a standalone letter, a letter after an answer
    phrase ("the answer is B"), then "(B)", "B.", "B:", "B)" and "B " anywhere; among candidates of one kind the
    last in the reply wins; a bare letter anywhere counts only when nothing else matched.
    """
    if not response or not response.strip():
        return ""
    text = response.strip()
    for char in ",.!?;:'\"":
        text = text.strip(char)
    text = f" {text} "
    candidates: list[tuple[int, int, str]] = []  # (priority, position, letter)
    for template, priority in _MCQ_MARKERS:
        for letter in choices:
            marker = template.format(letter)
            if marker in text:
                candidates.append((priority, text.rfind(marker), letter))
    lowered = text.lower()
    for phrase in _MCQ_PHRASES:
        start = lowered.find(phrase)
        if start == -1:
            continue
        for letter in choices:
            position = text.find(letter, start + len(phrase))
            if position != -1:
                candidates.append((_MCQ_PRIORITY_PHRASE, position, letter))
    core = text.strip()
    for letter in choices:
        if core.startswith(letter) and (len(core) == 1 or not core[1].isalpha()):
            candidates.append((_MCQ_PRIORITY_START, 0, letter))
    for letter in choices:
        if core.endswith(letter) and (len(core) == 1 or not core[-2].isalpha()):
            candidates.append((_MCQ_PRIORITY_END, len(text) - 1, letter))
    if not candidates:
        candidates = [(_MCQ_PRIORITY_ANY, text.rfind(letter), letter) for letter in choices if letter in text]
    if not candidates:
        return ""
    # A stable sort on (priority, position), best first: among exact ties the first found wins, as in lmms-eval.
    candidates.sort(key=lambda c: (c[0], c[1]), reverse=True)
    return candidates[0][2]


def realworldqa_score(prediction: str, answer: str) -> float:
    """RealWorldQA: for a letter answer (A-D), 1.0 when :func:`extract_choice_letter` over A-D finds it; for any
    other answer ("0", "Downhill"), 1.0 when the lower-cased reply without trailing periods equals it (lower-cased)."""
    target = answer.strip()
    if target.upper() in ("A", "B", "C", "D"):
        return float(extract_choice_letter(prediction.strip(), choices=("A", "B", "C", "D")) == target.upper())
    return float(prediction.strip().lower().rstrip(".") == target.lower())


# ------------------------------------------------------------------------------------------- exact match

_PUNCTUATION_TABLE = str.maketrans("", "", string.punctuation)


def gqa_score(prediction: str, answer: str) -> float:
    """GQA: exact match after lower-casing both and deleting ASCII punctuation (lmms-eval's ``exact_match`` with
    ``ignore_case`` and ``ignore_punctuation``); inner spaces count ("on the left" is not "left")."""
    reply = prediction.strip().lower().translate(_PUNCTUATION_TABLE)
    return float(reply == answer.lower().translate(_PUNCTUATION_TABLE))


# ------------------------------------------------------------------------------------------- POPE


@dataclass(frozen=True)
class PopeScores:
    """POPE metrics of one set of questions ("yes" is the positive class); ``yes_ratio`` is the share of "yes" in
    the ground truth, which is what lmms-eval's ``pope_yes_ratio`` reports."""

    accuracy: float
    precision: float
    recall: float
    f1: float
    yes_ratio: float
    count: int


def pope_scores(predictions: Sequence[str], labels: Sequence[str]) -> PopeScores:
    """POPE metrics as lmms-eval computes them, for replies ``predictions`` and ground truth ``labels`` (yes/no).

    A reply counts as "yes" or "no" only when it is exactly that word once stripped and lower-cased ("Yes." is
    neither): such replies are wrong, are no false positives, and are not in the recall's denominator (lmms-eval
    counts a false negative only for the reply "no"). Ratios with an empty denominator are 0.
    """
    if len(predictions) != len(labels):
        raise ValueError(f"pope_scores got {len(predictions)} predictions for {len(labels)} labels")
    if not labels:
        raise ValueError("pope_scores needs at least one question")
    truth = [label.lower().strip() for label in labels]
    bad = sorted({t for t in truth if t not in ("yes", "no")})
    if bad:
        raise ValueError(f"POPE labels must be 'yes' or 'no', got {bad[:5]}")
    replies = [prediction.strip().lower().strip() for prediction in predictions]
    pairs = list(zip(replies, truth))
    tp = sum(r == "yes" and t == "yes" for r, t in pairs)
    fp = sum(r == "yes" and t == "no" for r, t in pairs)
    fn = sum(r == "no" and t == "yes" for r, t in pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return PopeScores(
        accuracy=sum(r == t for r, t in pairs) / len(pairs),
        precision=precision,
        recall=recall,
        f1=2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        yes_ratio=truth.count("yes") / len(truth),
        count=len(pairs),
    )


def pope_scores_by_split(predictions: Sequence[str], labels: Sequence[str],
                         splits: Sequence[str]) -> dict[str, PopeScores]:
    """:func:`pope_scores` per split (``random``/``popular``/``adversarial``, lmms-eval's ``pope_full`` group),
    plus ``"all"``: every question pooled, which is lmms-eval's ``pope`` task."""
    if not len(predictions) == len(labels) == len(splits):
        raise ValueError(f"pope_scores_by_split got {len(predictions)} predictions, {len(labels)} labels and "
                         f"{len(splits)} splits; they must match one to one")
    groups: dict[str, list[int]] = defaultdict(list)
    for index, split in enumerate(splits):
        groups[split].append(index)
    if "all" in groups:
        raise ValueError("'all' is reserved for the pooled scores: rename that split")
    result = {split: pope_scores([predictions[i] for i in idx], [labels[i] for i in idx])
              for split, idx in sorted(groups.items())}
    result["all"] = pope_scores(predictions, labels)
    return result


# ------------------------------------------------------------------------------------------- MME

MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork",
                  "OCR")
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def mme_parse(prediction: str) -> str:
    """An MME reply reduced to "yes", "no" or "other" (lmms-eval's ``parse_pred_ans``, from Otter): periods are
    dropped; "y"/"n" count; otherwise the first four characters are searched for "yes", then "no"."""
    reply = prediction.strip().lower().strip().replace(".", "")
    if reply in ("yes", "no"):
        return reply
    if len(reply) == 1:
        return {"y": "yes", "n": "no"}.get(reply, "other")
    head = reply[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"


@dataclass(frozen=True)
class MmeSubtask:
    """One MME subtask: ``acc`` (share of questions right) and ``acc_plus`` (share of images with both questions
    right), both x100; ``score = acc + acc_plus`` (at most 200)."""

    acc: float
    acc_plus: float
    score: float
    images: int


@dataclass(frozen=True)
class MmeScores:
    """MME results: per subtask, and the perception / cognition scores (sums of their subtasks' scores: perception
    at most 2000 over its 10 subtasks, cognition 800 over 4). ``missing`` lists the subtasks of either group
    absent from the input (lmms-eval sums whatever is present, so a partial run scores lower without notice)."""

    subtasks: dict[str, MmeSubtask]
    perception: float
    cognition: float
    missing: tuple[str, ...]


def mme_scores(predictions: Sequence[str], answers: Sequence[str], question_ids: Sequence[str],
               categories: Sequence[str]) -> MmeScores:
    """MME scores as lmms-eval computes them. ``question_ids`` name the image (MME's ``question_id``, e.g.
    "code_reasoning/0020.png"): each image must have exactly its two questions. ``answers`` are "Yes"/"No"."""
    if not len(predictions) == len(answers) == len(question_ids) == len(categories):
        raise ValueError("mme_scores needs one prediction, answer, question id and category per question; got "
                         f"{len(predictions)}, {len(answers)}, {len(question_ids)} and {len(categories)}")
    known = set(MME_PERCEPTION) | set(MME_COGNITION)
    per_image: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for prediction, answer, qid, category in zip(predictions, answers, question_ids, categories):
        if category not in known:
            raise ValueError(f"unknown MME subtask {category!r}: expected one of {sorted(known)}")
        truth = answer.strip().lower().strip().replace(".", "")
        if truth not in ("yes", "no"):
            raise ValueError(f"MME answers must be yes/no, got {answer!r} for {qid!r}")
        per_image[category][qid].append(float(mme_parse(prediction) == truth))
    subtasks = {}
    for category, images in per_image.items():
        odd = [qid for qid, scores in images.items() if len(scores) != 2]
        if odd:
            raise ValueError(f"MME scores images by their pair of questions, but {len(odd)} image(s) of {category!r} "
                             f"have another count (first: {odd[0]!r} with {len(images[odd[0]])})")
        accs = [sum(s) / len(s) * 100.0 for s in images.values()]
        acc_pluses = [(sum(s) == 2) * 100.0 for s in images.values()]
        # Summed per image and in order of first appearance, as the reference does, so results are bit-identical.
        score = sum(p + a for p, a in zip(acc_pluses, accs)) / len(images)
        subtasks[category] = MmeSubtask(acc=sum(accs) / len(accs), acc_plus=sum(acc_pluses) / len(acc_pluses),
                                        score=score, images=len(images))
    return MmeScores(
        subtasks=subtasks,
        perception=sum(s.score for c, s in subtasks.items() if c in MME_PERCEPTION),
        cognition=sum(s.score for c, s in subtasks.items() if c in MME_COGNITION),
        missing=tuple(c for c in MME_PERCEPTION + MME_COGNITION if c not in subtasks),
    )
