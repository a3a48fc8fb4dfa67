"""Tiny models built from config for the tests (never a hub download)."""


def tiny_towers(tokenizer, vision_layers: int, image_size: int = 64) -> dict:
    """Text and vision tower configs of a ~1 M-parameter CLIP with a BERT tokenizer."""
    text = dict(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=vision_layers,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=16,
    )
    return {"text_config": text, "vision_config": vision}
