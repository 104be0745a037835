"""The tiny random T5 with `local_text_attention` ties a word to its neighbours (attribute binding needs it);
without it a random T5 mixes the whole sentence."""
import pytest
import torch

from pixart import tiny


def _word_states(tokenizer, encoder, caption: str, word: str) -> torch.Tensor:
    batch = tokenizer([caption], return_tensors="pt")
    with torch.no_grad():
        states = encoder(**batch).last_hidden_state[0]
    start = caption.index(word)  # ByT5: one token per byte, no prefix token
    return states[start:start + len(word)]


def _sensitivity(tokenizer, encoder) -> tuple[float, float]:
    """Relative change of "circle"'s states when the colours swap (same words, other binding) / when a far
    object is added."""
    circle = _word_states(tokenizer, encoder, "a red circle and a blue square", "circle")
    recoloured = _word_states(tokenizer, encoder, "a blue circle and a red square", "circle")
    extended = _word_states(tokenizer, encoder, "a red circle and a blue square and a green cross", "circle")
    return (float((circle - recoloured).norm() / circle.norm()),
            float((circle - extended).norm() / circle.norm()))


def test_with_local_attention_a_words_states_depend_on_its_neighbours_not_on_far_words():
    own, far = _sensitivity(*tiny.build_text_encoder(0, local_attention=True))
    assert own > 0.2 and far < 0.01, (own, far)


def test_without_it_a_random_t5_mixes_the_whole_sentence():
    # a bag of bytes: swapping the colours barely changes "circle", a far object changes it more
    own, far = _sensitivity(*tiny.build_text_encoder(0))
    assert own < 0.1 and far > own, (own, far)


def test_the_saved_pipeline_keeps_the_local_bias(tmp_path):
    from transformers import AutoTokenizer, T5EncoderModel

    tiny.save_tiny(tmp_path, seed=0, local_text_attention=True)
    encoder = T5EncoderModel.from_pretrained(tmp_path / "pipeline" / "text_encoder").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "pipeline" / "tokenizer")
    own, far = _sensitivity(tokenizer, encoder)
    assert own > 0.2 and far < 0.01, (own, far)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_local_bias_is_the_same_for_every_seed(seed):
    _, encoder = tiny.build_text_encoder(seed, local_attention=True)
    table = encoder.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight
    _, reference = tiny.build_text_encoder(seed + 1, local_attention=True)
    half = tiny.LOCAL_T5["relative_attention_num_buckets"] // 2
    used = [b for b in range(2 * half) if b != half]  # bucket half ("+0") is never looked up and stays random
    assert torch.isfinite(table).all()
    assert torch.equal(table[used], reference.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight[used])
