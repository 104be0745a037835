"""BLIP-VQA backend of T2I-CompBench (Color / Shape / Texture, attribute term of Complex).

Mirrors BLIPvqa_eval (models/blip_vqa.py `vqa_prob`, data/__init__.py test transform) on the transformers
port of the same checkpoint: `Salesforce/blip-vqa-capfilt-large` = the original
`model_base_vqa_capfilt_large.pth`.

- Image: PIL bicubic resize to 480 x 480 (no crop), then the processor's rescale + CLIP mean/std.
  The HF port stores ViT position embeddings for 384 px; at 480 they are interpolated
  (`interpolate_pos_encoding`), as BLIP itself does when a checkpoint's grid differs.
- Question: `compbench.normalize_question`, BERT tokens (longest padding, at most 35), first token replaced
  by [ENC] as BLIP's VQA encoder expects (the HF model does not do this itself).
- P(yes) = softmax of the text decoder's first position given [DEC] (bos), read at the tokens "yes" and
  "no": p = P(yes) / (P(yes) + P(no)). BLIP's `forward` returns only a loss, so the three towers are run
  here: vision encoder -> text encoder (question, cross-attending the image) -> text decoder on [DEC].
"""
from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image

from evals.metrics.compbench import NP_NUM_CURRENT, blip_vqa_image_score, load_pretrained, normalize_question

DEFAULT_BLIP_VQA = "Salesforce/blip-vqa-capfilt-large"
IMAGE_SIZE = 480  # configs/vqa.yaml image_size
MAX_QUESTION_TOKENS = 35


class BlipVqa:
    """`image_scores(images, questions)` -> per-image product of P(yes) over the noun-phrase questions."""

    name = "blip_vqa_capfilt_large"

    def __init__(self, model, tokenizer, image_processor, image_size: int = IMAGE_SIZE, batch_size: int = 8,
                 device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.image_size = image_size
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.dec_id = model.config.text_config.bos_token_id
        self.enc_id = self._token_id("[ENC]", fallback=self.dec_id + 1)  # BLIP adds [ENC] right after [DEC]
        self.yes_id, self.no_id = self._token_id("yes"), self._token_id("no")
        self.interpolate = image_size != model.config.vision_config.image_size

    @classmethod
    def from_pretrained(cls, name_or_path: str = DEFAULT_BLIP_VQA, **kwargs) -> BlipVqa:
        from transformers import BlipForQuestionAnswering, BlipProcessor

        what = "BLIP-VQA (T2I-CompBench attribute binding)"
        model = load_pretrained(BlipForQuestionAnswering.from_pretrained, name_or_path, what)
        processor = load_pretrained(BlipProcessor.from_pretrained, name_or_path, what)
        return cls(model, processor.tokenizer, processor.image_processor, **kwargs)

    def _token_id(self, token: str, fallback: int | None = None) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is not None and token_id != self.tokenizer.unk_token_id:
            return token_id
        if fallback is not None and fallback < self.model.config.text_config.vocab_size:
            return fallback
        raise ValueError(f"BLIP tokenizer has no token {token!r}; it must be BLIP's bert-base-uncased vocabulary")

    def pixel_values(self, images: Sequence[Image.Image]) -> torch.Tensor:
        size = (self.image_size, self.image_size)
        resized = [im.convert("RGB").resize(size, Image.BICUBIC) for im in images]
        batch = self.image_processor(resized, do_resize=False, return_tensors="pt")
        return batch["pixel_values"].to(self.device)

    @torch.no_grad()
    def yes_probabilities(self, image_embeds: torch.Tensor, questions: Sequence[str]) -> torch.Tensor:
        """P(yes)/(P(yes)+P(no)) for question i asked about image_embeds[i]."""
        tokens = self.tokenizer([normalize_question(q) for q in questions], padding="longest", truncation=True,
                                max_length=MAX_QUESTION_TOKENS, return_tensors="pt").to(self.device)
        input_ids = tokens["input_ids"].clone()
        input_ids[:, 0] = self.enc_id
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
        question_states = self.model.text_encoder(
            input_ids=input_ids, attention_mask=tokens["attention_mask"],
            encoder_hidden_states=image_embeds, encoder_attention_mask=image_atts,
        ).last_hidden_state
        bos = torch.full((len(questions), 1), self.dec_id, dtype=torch.long, device=self.device)
        logits = self.model.text_decoder(
            input_ids=bos, encoder_hidden_states=question_states, encoder_attention_mask=tokens["attention_mask"],
        ).logits[:, 0, :]
        probs = torch.softmax(logits.float(), dim=-1)
        return probs[:, self.yes_id] / (probs[:, self.yes_id] + probs[:, self.no_id])

    @torch.no_grad()
    def question_probabilities(self, images: Sequence[Image.Image], questions: Sequence[Sequence[str]],
                               np_num: int = NP_NUM_CURRENT) -> list[list[float]]:
        """Per image, the probabilities of its first `np_num` questions (only those enter the score)."""
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images but {len(questions)} question lists")
        out: list[list[float]] = []
        for start in range(0, len(images), self.batch_size):
            chunk_qs = [list(qs[:np_num]) for qs in questions[start:start + self.batch_size]]
            embeds = self.model.vision_model(
                pixel_values=self.pixel_values(images[start:start + self.batch_size]),
                interpolate_pos_encoding=self.interpolate,
            ).last_hidden_state
            owners = [i for i, qs in enumerate(chunk_qs) for _ in qs]
            flat = [q for qs in chunk_qs for q in qs]
            probs = self.yes_probabilities(embeds[owners], flat).tolist() if flat else []
            for qs in chunk_qs:
                out.append(probs[:len(qs)])
                probs = probs[len(qs):]
        return out

    def image_scores(self, images: Sequence[Image.Image], questions: Sequence[Sequence[str]],
                     np_num: int = NP_NUM_CURRENT) -> list[float]:
        """T2I-CompBench BLIP-VQA score per image (see compbench.blip_vqa_image_score)."""
        return [blip_vqa_image_score(p, np_num) for p in self.question_probabilities(images, questions, np_num)]
