"""lmms-eval's metrics, against cases computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import pytest

from eupe.vlm.metrics import (
    MME_COGNITION,
    MME_PERCEPTION,
    bootstrap_ci,
    extract_choice_letter,
    gqa_score,
    mean,
    mme_parse,
    mme_scores,
    normalize_vqa_answer,
    pope_scores,
    pope_scores_by_split,
    realworldqa_score,
    scienceqa_score,
    vqa_accuracy,
)
from tests.vlm.conftest import import_lmms_eval

# ---------------------------------------------------------------------------------------------- VQA


@pytest.mark.parametrize("raw, normalized", [
    ("The Dog.", "dog"),                  # case, article, final period
    ("Two cats", "2 cats"),               # number words
    ("dont", "don't"),                    # contractions get their apostrophe
    ("It's", "it 's"),                    # "'s" split off
    ("1,000", "1000"),                    # commas go first
    ("hello-world", "hello world"),       # punctuation inside a word becomes a space...
    ("a - b", "b"),                       # ...and is deleted when it touches a space ("a" is an article)
    ("3.5", "3.5"),                       # a period before a digit stays
    ("5.", "5"),
    ("x." * 33, "x" * 33 + "."),          # the reference removes at most 32 periods (re.UNICODE passed as count)
])
def test_vqa_answer_normalisation(raw, normalized):
    assert normalize_vqa_answer(raw) == normalized


def test_vqa_accuracy_averages_the_ten_leave_one_out_subsets():
    # all ten say "nokia": every 9-answer subset has 9 matches -> min(1, 9/3) = 1
    assert vqa_accuracy("Nokia", ["nokia"] * 10) == 1.0
    # 2 of 10 match ("two" -> "2"): leaving out a match leaves 1 -> 1/3 (2 subsets), else 2 -> 2/3 (8 subsets)
    # (2 * 1/3 + 8 * 2/3) / 10 = 0.6
    assert vqa_accuracy("2", ["two"] * 2 + ["three"] * 8) == pytest.approx(0.6)
    # 3 of 10 match: leaving out a match -> 2/3 (3 subsets), else 3/3 = 1 (7 subsets): (3 * 2/3 + 7) / 10 = 0.9
    assert vqa_accuracy(" the Dog ", ["dog"] * 3 + ["cat"] * 7) == pytest.approx(0.9)
    assert vqa_accuracy("bird", ["dog"] * 10) == 0.0
    with pytest.raises(ValueError, match="validation"):
        vqa_accuracy("x", [])


# ---------------------------------------------------------------------------------------------- multiple choice


@pytest.mark.parametrize("reply, expected", [
    ("B", 1.0), (" b ", 1.0),         # the letter, any case, once stripped
    ("B. dog", 1.0),                  # "X." at the start, upper case
    ("b. dog", 0.0),                  # ... lower case does not count
    ("C.", 0.0), ("The answer is B", 0.0),
])
def test_scienceqa_letter_answers(reply, expected):
    assert scienceqa_score(reply, "B") == expected


@pytest.mark.parametrize("reply, letter", [
    ("B", "B"),
    ("The answer is (C).", "C"),                          # answer phrase (priority 7) over "(C)" (6)
    ("I think A is wrong, the answer is B", "B"),         # ends with a standalone letter (9)
    ("(D) because", "D"),
    ("Apple", "A"),                                       # nothing else matched: any upper-case A-D counts
    ("", ""), ("none of them", ""),
])
def test_choice_letter_extraction(reply, letter):
    assert extract_choice_letter(reply, ("A", "B", "C", "D")) == letter


def test_realworldqa_letter_or_lower_case_exact_match():
    assert realworldqa_score("The answer is B.", "B") == 1.0
    assert realworldqa_score("C", "B") == 0.0
    assert realworldqa_score("Downhill.", "Downhill") == 1.0   # lower-cased, trailing "." removed
    assert realworldqa_score("downhill..", "Downhill") == 1.0  # rstrip removes every trailing period
    assert realworldqa_score("It goes downhill", "Downhill") == 0.0
    assert realworldqa_score("3", "3") == 1.0


@pytest.mark.parametrize("reply, answer, expected", [
    ("Yes.", "yes", 1.0), (" left ", "left", 1.0), ("t-shirt", "tshirt", 1.0),
    ("on the left", "left", 0.0), ("yes it is", "yes", 0.0),
])
def test_gqa_exact_match_ignores_case_and_punctuation(reply, answer, expected):
    assert gqa_score(reply, answer) == expected


# ---------------------------------------------------------------------------------------------- POPE


def test_pope_counts_only_exact_yes_and_no():
    labels = ["yes", "yes", "yes", "no", "no", "no"]
    replies = ["Yes", "yes.", "no", "yes", "No", "maybe"]
    # TP: "Yes"/yes; FN: "no"/yes; FP: "yes"/no; TN: "No"/no; "yes." and "maybe" are wrong but neither FP nor FN
    # precision = 1 / (1 + 1) = 0.5; recall = 1 / (1 + 1) = 0.5; f1 = 2 * 0.25 / 1 = 0.5; accuracy = 2 / 6
    s = pope_scores(replies, labels)
    assert (s.precision, s.recall, s.f1) == (0.5, 0.5, 0.5)
    assert s.accuracy == pytest.approx(1 / 3) and s.yes_ratio == 0.5 and s.count == 6


def test_pope_empty_denominators_are_zero_and_labels_are_checked():
    s = pope_scores(["no", "no"], ["yes", "no"])  # no "yes" reply: precision 0/0 -> 0, recall 0/1, f1 0
    assert (s.precision, s.recall, s.f1, s.accuracy) == (0.0, 0.0, 0.0, 0.5)
    with pytest.raises(ValueError, match="yes' or 'no"):
        pope_scores(["yes"], ["maybe"])


def test_pope_per_split_and_pooled():
    replies = ["yes", "no", "yes", "yes"]
    labels = ["yes", "no", "no", "yes"]
    splits = ["random", "random", "adversarial", "adversarial"]
    result = pope_scores_by_split(replies, labels, splits)
    assert list(result) == ["adversarial", "random", "all"]
    assert result["random"].f1 == 1.0                           # TP 1, TN 1
    assert result["adversarial"].f1 == pytest.approx(2 / 3)     # TP 1, FP 1: p 1/2, r 1 -> 2 * 1/2 / (3/2)
    assert result["all"].f1 == pytest.approx(0.8)               # TP 2, FP 1: p 2/3, r 1 -> (4/3) / (5/3)


def test_pope_equals_lmms_evals_own_pope_functions():
    """Where lmms-eval is installed: its POPE task's process_results and aggregations give our numbers."""
    utils = import_lmms_eval("lmms_eval.tasks.pope.utils")
    labels = ["yes", "yes", "yes", "no", "no", "no", "yes", "no"]
    replies = ["Yes", "yes.", "no", "yes", "No", "maybe", " YES ", "no\n"]
    docs = [{"question_id": str(i), "answer": label} for i, label in enumerate(labels)]
    results = [utils.pope_process_results(doc, [reply]) for doc, reply in zip(docs, replies)]
    ours = pope_scores(replies, labels)
    for metric, aggregate in [("accuracy", utils.pope_aggregate_accuracy), ("precision", utils.pope_aggregate_precision),
                              ("recall", utils.pope_aggregate_recall), ("f1_score", utils.pope_aggregate_f1_score),
                              ("yes_ratio", utils.pope_aggregate_yes_ratio)]:
        theirs = aggregate([r[f"pope_{metric}"] for r in results])
        assert theirs == pytest.approx(getattr(ours, "f1" if metric == "f1_score" else metric)), metric


# ---------------------------------------------------------------------------------------------- MME


@pytest.mark.parametrize("reply, parsed", [
    ("Yes", "yes"), ("No.", "no"), ("y", "yes"), ("N", "no"), ("x", "other"),
    ("Yes, there is a dog", "yes"),   # "yes" within the first four characters
    ("Not really", "no"),             # "no" within "not "
    ("There is no dog", "other"),     # "ther": neither
])
def test_mme_reply_parsing(reply, parsed):
    assert mme_parse(reply) == parsed


def test_mme_subtask_scores_and_perception_sum():
    rows = [  # (image, subtask, reply, answer)
        ("e1", "existence", "Yes", "Yes"), ("e1", "existence", "No", "No"),     # both right
        ("e2", "existence", "Yes", "Yes"), ("e2", "existence", "Yes", "No"),    # one right
        ("c1", "count", "No", "Yes"), ("c1", "count", "Yes", "No"),             # none right
        ("o1", "OCR", "yes", "Yes"), ("o1", "OCR", "no.", "No"),                # both right
        ("r1", "code_reasoning", "Yes", "Yes"), ("r1", "code_reasoning", "maybe", "No"),
    ]
    images, categories, replies, answers = zip(*rows)
    s = mme_scores(replies, answers, images, categories)
    # existence: acc = (100 + 50) / 2 = 75, acc+ = (100 + 0) / 2 = 50 -> 125; count: 0; OCR: 100 + 100 = 200
    assert (s.subtasks["existence"].acc, s.subtasks["existence"].acc_plus, s.subtasks["existence"].score) == (75, 50, 125)
    assert s.subtasks["count"].score == 0 and s.subtasks["OCR"].score == 200
    assert s.perception == 325                      # 125 + 0 + 200
    assert s.cognition == 50                        # code_reasoning: acc 50, acc+ 0
    assert set(s.missing) == (set(MME_PERCEPTION) | set(MME_COGNITION)) - {"existence", "count", "OCR", "code_reasoning"}


def test_mme_needs_both_questions_of_every_image_and_known_subtasks():
    with pytest.raises(ValueError, match="pair of questions"):
        mme_scores(["Yes"], ["Yes"], ["e1"], ["existence"])
    with pytest.raises(ValueError, match="unknown MME subtask"):
        mme_scores(["Yes", "No"], ["Yes", "No"], ["e1", "e1"], ["Existence", "Existence"])


# ---------------------------------------------------------------------------------------------- bootstrap


def test_bootstrap_of_identical_scores_is_a_point():
    ci = bootstrap_ci([1.0] * 5)
    assert (ci.estimate, ci.low, ci.high, ci.confidence, ci.resamples) == (1.0, 1.0, 1.0, 0.95, 1000)


def test_bootstrap_percentiles_and_seed():
    # two questions scored 0 and 1: a resample's mean is 0 (p 1/4), 1/2 (p 1/2) or 1 (p 1/4), so with 2000
    # resamples about 500 land on each end, far more than the 50 below the 2.5th / above the 97.5th percentile
    ci = bootstrap_ci([0.0, 1.0], resamples=2000)
    assert (ci.estimate, ci.low, ci.high) == (0.5, 0.0, 1.0)
    scores = [vqa_accuracy("2", ["two"] * 2 + ["three"] * 8), 1.0, 0.9, 0.0]  # 0.6, 1, 0.9, 0 -> mean 0.625
    first, again = bootstrap_ci(scores, seed=3), bootstrap_ci(scores, seed=3)
    assert first == again and first.estimate == pytest.approx(0.625) and 0 <= first.low < 0.625 < first.high <= 1


def test_bootstrap_recomputes_a_non_mean_metric_such_as_pope_f1():
    labels = ["yes", "yes", "yes", "no", "no", "no"]
    replies = ["Yes", "yes.", "no", "yes", "No", "maybe"]
    ci = bootstrap_ci(list(zip(replies, labels)), lambda pairs: pope_scores(*zip(*pairs)).f1, resamples=200)
    assert ci.estimate == 0.5 and 0.0 <= ci.low < 0.5 < ci.high <= 1.0  # f1 of the full set, as computed above


def test_mean_and_bootstrap_arguments():
    assert mean([1, 2, 3, 4]) == 2.5
    with pytest.raises(ValueError):
        bootstrap_ci([])
    with pytest.raises(ValueError):
        bootstrap_ci([1.0], confidence=1.5)
