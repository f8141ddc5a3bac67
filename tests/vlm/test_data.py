"""LLaVA data: reading records, skip accounting, label masks, truncation and a real forward pass."""

from __future__ import annotations

import json
import tempfile

import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from eupe.vlm.data import (
    BAD_IMAGE,
    BAD_ROLES,
    COUNT_MISMATCH,
    CUT_TAIL,
    DROPPED_ROUNDS,
    IMAGE_IN_REPLY,
    IMAGE_WITHOUT_TOKEN,
    MALFORMED,
    MISSING_IMAGE,
    NO_LABELS,
    NO_ROOM,
    NOT_A_PAIR,
    SKIPPED,
    TOKEN_WITHOUT_IMAGE,
    TRUNCATED,
    VICUNA_V1_CHAT_TEMPLATE,
    DataFormatError,
    DataReport,
    LlavaCollator,
    LlavaDataset,
    Sample,
    read_llava_json,
)

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
WORDS = ["<pad>", "<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "<image>", "user", "assistant", "what", "is",
         "this", "?", "a", "cat", ".", "and", "dog", "it", "red", "blue", "color", "the"]
ID = {w: i for i, w in enumerate(WORDS)}
S, E, IMG, X = ID["<|im_start|>"], ID["<|im_end|>"], ID["<image>"], -100
N = 3  # image tokens per image in these tests


def make_tokenizer(chat_template: str | None = CHATML) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel(ID, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", additional_special_tokens=["<|im_start|>", "<|im_end|>", "<image>"])
    fast.chat_template = chat_template
    return fast


def fake_processor(images: list[Image.Image]) -> torch.Tensor:
    return torch.stack([torch.full((3, 8, 8), float(im.getpixel((0, 0))[0]) / 255) for im in images])


def ids(text: str) -> list[int]:
    return [ID[w] for w in text.split()]


@pytest.fixture(autouse=True)
def _reports_in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # default DataReport files land here, not in /tmp


@pytest.fixture
def root(tmp_path):
    for name, colour in (("a.png", (255, 0, 0)), ("b.png", (0, 0, 255))):
        Image.new("RGB", (8, 8), colour).save(tmp_path / name)
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return tmp_path


def two_turn(image: str | None = "a.png", sample_id: str = "c1", first_reply: str = "a cat.") -> dict:
    record = {"id": sample_id, "conversations": [
        {"from": "human", "value": "what is this?\n<image>" if image else "what is this?"},
        {"from": "gpt", "value": first_reply},
        {"from": "human", "value": "what color is it?"},
        {"from": "gpt", "value": "red."}]}
    if image:
        record["image"] = image
    return record


def caption(sample_id: str = "p1", image: str = "a.png") -> dict:
    return {"id": sample_id, "image": image, "conversations": [
        {"from": "human", "value": "what is this?\n<image>"}, {"from": "gpt", "value": "a red cat."}]}


def collator(mode="conversation", max_length=64, report=None, tokenizer=None):
    return LlavaCollator(tokenizer or make_tokenizer(), fake_processor, num_image_tokens=N, max_length=max_length,
                         mode=mode, report=report or DataReport())


# ---------------------------------------------------------------------------------------------- reading


def test_reads_the_json_and_moves_the_image_token_to_the_start_of_its_turn(root):
    path = root / "data.json"
    path.write_text(json.dumps([caption()]))
    sample = LlavaDataset(path, root)[0]
    assert sample.id == "p1"
    assert sample.messages == ({"role": "user", "content": "<image>\nwhat is this?"},
                               {"role": "assistant", "content": "a red cat."})
    assert len(sample.images) == 1 and sample.images[0].getpixel((0, 0)) == (255, 0, 0)


def test_not_a_list_is_one_clear_error(tmp_path):
    (tmp_path / "d.json").write_text('{"id": 1}')
    with pytest.raises(DataFormatError, match="JSON list"):
        read_llava_json(tmp_path / "d.json")


def test_bad_records_and_image_token_counts_are_counted_skips(root):
    records = [
        caption("good"),
        {"id": "no-image", "conversations": [{"from": "human", "value": "<image>\nhi"}, {"from": "gpt", "value": "a"}]},
        {"id": "no-token", "image": "a.png", "conversations": [{"from": "human", "value": "hi"},
                                                               {"from": "gpt", "value": "a"}]},
        {"id": "two-tokens", "image": "a.png", "conversations": [{"from": "human", "value": "<image> <image>"},
                                                                 {"from": "gpt", "value": "a"}]},
        {"id": "token-in-reply", "image": "a.png", "conversations": [{"from": "human", "value": "hi"},
                                                                     {"from": "gpt", "value": "<image>"}]},
        {"id": "roles", "conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]},
        {"id": "no-conversations"},
        "not a record",
    ]
    report = DataReport()
    dataset = LlavaDataset(records, root, report=report)
    assert len(dataset) == 1 and dataset[0].id == "good"
    assert report.counts() == {SKIPPED: {TOKEN_WITHOUT_IMAGE: 1, IMAGE_WITHOUT_TOKEN: 1, COUNT_MISMATCH: 1,
                                         IMAGE_IN_REPLY: 1, BAD_ROLES: 1, MALFORMED: 2}}
    summary = report.summary()
    assert "7 samples skipped" in summary and "no-token" in summary and "2 x <image> for 1 images" in summary


def test_a_leading_gpt_turn_is_dropped_as_llava_does(root):
    record = caption()
    record["conversations"].insert(0, {"from": "gpt", "value": "stray"})
    assert len(LlavaDataset([record], root)[0].messages) == 2


def test_missing_and_corrupt_images_are_skipped_counted_and_replaced_by_the_next_record(root):
    report = DataReport()
    dataset = LlavaDataset([caption("ok-1"), caption("gone", "nope.png"), caption("broken", "corrupt.png"),
                            caption("ok-2", "b.png")], root, report=report)
    assert [dataset[i].id for i in range(4)] == ["ok-1", "ok-2", "ok-2", "ok-2"]
    assert report.counts() == {SKIPPED: {MISSING_IMAGE: 1, BAD_IMAGE: 1}}  # twice met, counted once
    events = {e.sample_id: e for e in report.events()}
    assert events["gone"].detail.endswith("nope.png") and "corrupt image" in events["broken"].detail


def test_worker_processes_report_into_the_same_report(root):
    report = DataReport()
    dataset = LlavaDataset([caption("ok"), caption("gone", "nope.png")], root, report=report)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=1, collate_fn=collator("plain", report=report))
    batch = next(iter(loader))
    assert batch["input_ids"].shape[0] == 2
    assert report.counts() == {SKIPPED: {MISSING_IMAGE: 1}}


def test_a_wrong_image_root_fails_clearly_instead_of_spinning(root, tmp_path_factory):
    dataset = LlavaDataset([caption()], tmp_path_factory.mktemp("empty"))
    with pytest.raises(FileNotFoundError, match="image_root"):
        dataset[0]


# ---------------------------------------------------------------------------------------------- label masks


def test_plain_mode_masks_everything_but_the_caption_and_its_end(root):
    batch = collator("plain")([LlavaDataset([caption()], root)[0]])
    # text "<image>a red cat.</s>": the human prompt is dropped (LLaVA's preprocess_plain), <image> -> N copies
    assert batch["input_ids"].tolist() == [[IMG] * N + ids("a red cat . </s>")]
    assert batch["labels"].tolist() == [[X] * N + ids("a red cat . </s>")]
    assert batch["attention_mask"].tolist() == [[1] * (N + 5)]
    assert batch["pixel_values"].shape == (1, 3, 8, 8)


def test_conversation_mode_labels_only_the_replies_and_their_end_tokens(root):
    batch = collator()([LlavaDataset([two_turn()], root)[0]])
    user1 = [S, ID["user"]] + [IMG] * N + ids("what is this ?") + [E]
    reply1 = [S, ID["assistant"]] + ids("a cat .") + [E]
    user2 = [S, ID["user"]] + ids("what color is it ?") + [E]
    reply2 = [S, ID["assistant"]] + ids("red .") + [E]
    assert batch["input_ids"].tolist() == [user1 + reply1 + user2 + reply2]
    expected = ([X] * len(user1) + [X, X] + ids("a cat .") + [E]
                + [X] * len(user2) + [X, X] + ids("red .") + [E])
    assert batch["labels"].tolist() == [expected]


def test_vicuna_v1_template_renders_llava_conv_vicuna_v1_and_masks_its_replies(root):
    tokenizer = make_tokenizer(VICUNA_V1_CHAT_TEMPLATE)
    sample = LlavaDataset([two_turn()], root)[0]
    system = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
              "detailed, and polite answers to the user's questions.")
    # LLaVA's Conversation.get_prompt with sep " " and sep2 "</s>", after the tokenizer's BOS
    expected = f"<s>{system} USER: <image>\nwhat is this? ASSISTANT: a cat.</s>USER: what color is it? ASSISTANT: red.</s>"
    assert tokenizer.apply_chat_template(list(sample.messages), tokenize=False) == expected
    labels = collator(tokenizer=tokenizer, max_length=128)([sample])["labels"][0].tolist()
    assert [t for t in labels if t != X] == ids("a cat . </s> red . </s>")


def test_text_only_samples_mix_with_image_samples_and_alone_need_no_pixel_values(root):
    dataset = LlavaDataset([two_turn(None, "t"), two_turn("b.png", "i")], root)
    mixed = collator()([dataset[0], dataset[1]])
    assert mixed["pixel_values"].shape == (1, 3, 8, 8)  # only the image sample's image
    assert (mixed["input_ids"] == IMG).sum(1).tolist() == [0, N]
    # right padding: the text-only row, N tokens shorter, ends in pad tokens that are masked and carry no loss
    pad = (mixed["attention_mask"][0] == 0)
    assert pad.sum() == N and pad[-N:].all() and (mixed["input_ids"][0][pad] == ID["<pad>"]).all()
    assert (mixed["labels"][0][pad] == X).all()
    alone = collator()([dataset[0]])
    assert "pixel_values" not in alone


def test_plain_mode_skips_what_is_not_an_image_caption_pair(root):
    report = DataReport()
    dataset = LlavaDataset([two_turn(), caption()], root)
    batch = collator("plain", report=report)([dataset[0], dataset[1]])
    assert batch["input_ids"].shape[0] == 1
    assert report.counts() == {SKIPPED: {NOT_A_PAIR: 1}}


# ---------------------------------------------------------------------------------------------- truncation


def test_truncation_drops_later_rounds_and_keeps_every_image_token(root):
    report = DataReport()
    sample = LlavaDataset([two_turn()], root)[0]
    # full: 27 text tokens, 29 with the image expanded; round 1 alone: 14 -> 16
    batch = collator(max_length=20, report=report)([sample])
    assert batch["input_ids"].shape == (1, 16)
    assert (batch["input_ids"] == IMG).sum() == N
    assert batch["labels"][0].tolist()[-4:] == ids("a cat .") + [E]
    assert report.counts() == {TRUNCATED: {DROPPED_ROUNDS: 1}}
    assert "kept 1 of 2 rounds" in report.summary()


def test_truncation_cuts_the_tail_when_the_image_round_alone_is_too_long(root):
    report = DataReport()
    sample = LlavaDataset([two_turn(first_reply="a red cat and a blue dog .")], root)[0]
    # round 1 has 19 text tokens (21 expanded) > 13; tail cut: keep 13 - (N-1) = 11 text tokens:
    # <|im_start|> user IMG what is this ? <|im_end|> <|im_start|> assistant a
    batch = collator(max_length=13, report=report)([sample])
    assert batch["input_ids"].tolist() == [[S, ID["user"]] + [IMG] * N + ids("what is this ?") + [E, S, ID["assistant"],
                                                                                                  ID["a"]]]
    assert batch["labels"][0].tolist() == [X] * 12 + [ID["a"]]
    assert report.counts() == {TRUNCATED: {CUT_TAIL: 1}}


def test_samples_that_cannot_keep_their_images_or_any_reply_are_reported_and_dropped(root):
    report = DataReport()
    short = {"id": "short", "conversations": [{"from": "human", "value": "what?"}, {"from": "gpt", "value": "a."}]}
    dataset = LlavaDataset([two_turn(sample_id="long"), short], root)
    # max_length 10: "short" has 10 tokens and fits; "long" keeps 10 - (N-1) = 8 text tokens, its first user turn
    # only -> no reply token left
    batch = collator(max_length=10, report=report)([dataset[0], dataset[1]])
    assert batch["input_ids"].shape[0] == 1
    assert report.counts() == {TRUNCATED: {CUT_TAIL: 1}, SKIPPED: {NO_LABELS: 1}}
    # max_length 4 cannot hold <s-u> user + 3 image tokens: dropped, and a batch with nothing left is an error
    with pytest.raises(DataFormatError, match="every sample of this batch was dropped"):
        collator(max_length=4, report=report)([dataset[0]])
    assert report.counts()[SKIPPED][NO_ROOM] == 1


# ---------------------------------------------------------------------------------------------- configuration


def test_conversation_mode_without_a_chat_template_names_the_option():
    with pytest.raises(DataFormatError, match="chat_template="):
        LlavaCollator(make_tokenizer(chat_template=None), fake_processor, num_image_tokens=N)
    LlavaCollator(make_tokenizer(chat_template=None), fake_processor, num_image_tokens=N, chat_template=CHATML)


def test_an_image_token_the_tokenizer_does_not_know_is_one_clear_error():
    with pytest.raises(DataFormatError, match="add_tokens"):
        LlavaCollator(make_tokenizer(), fake_processor, num_image_tokens=N, image_token="<img>")


def test_a_template_that_rewrites_earlier_turns_is_rejected(root):
    # renders the generation prompt differently from the reply header, so replies cannot be located
    odd = CHATML.replace("'<|im_start|>assistant\n'", "'<|im_start|>user\n'")
    with pytest.raises(DataFormatError, match="prefix"):
        collator(tokenizer=make_tokenizer(odd))([LlavaDataset([two_turn()], root)[0]])


def test_the_batch_runs_through_llava_forward_with_mixed_text_only_and_image_samples(root):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=8, patch_size=4)  # 2x2 patches + CLS; "default" drops CLS -> 4 tokens
    text = LlamaConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, pad_token_id=ID["<pad>"])
    model = LlavaForConditionalGeneration(LlavaConfig(vision_config=vision, text_config=text, image_token_index=IMG,
                                                      vision_feature_layer=-1, image_seq_length=4)).eval()
    dataset = LlavaDataset([two_turn(None, "t"), two_turn("b.png", "i"), caption("p")], root)
    collate = LlavaCollator(make_tokenizer(), fake_processor, num_image_tokens=4, max_length=64)
    for samples in ([dataset[0], dataset[1], dataset[2]], [dataset[0]]):
        out = model(**collate(samples))
        assert torch.isfinite(out.loss)


def test_samples_pickle_for_worker_processes(root):
    import pickle

    sample = LlavaDataset([caption()], root)[0]
    again = pickle.loads(pickle.dumps(sample))
    assert isinstance(again, Sample) and again.images[0].getpixel((0, 0)) == (255, 0, 0)
