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


def save_tiny_clipseg(folder, vision_layers: int, image_size: int, dim: int):
    """A tiny CLIPSeg (seeded) with MiniLM's (BERT) tokenizer, saved in ``folder`` as a
    pretrained one would be; ``dim``: projection and decoder width. Returns ``folder``."""
    import torch
    from transformers import AutoTokenizer, CLIPSegConfig, CLIPSegForImageSegmentation

    from benchmark.text_encoder import encoder_path

    tokenizer = AutoTokenizer.from_pretrained(encoder_path("minilm"))
    config = CLIPSegConfig(
        **tiny_towers(tokenizer, vision_layers=vision_layers, image_size=image_size),
        projection_dim=dim,
        reduce_dim=dim,
        extract_layers=list(range(vision_layers)),
        decoder_num_attention_heads=2,
        decoder_intermediate_size=2 * dim,
    )
    torch.manual_seed(0)
    CLIPSegForImageSegmentation(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_clip(folder, text_only: bool = False):
    """A tiny CLIP (seeded) with MiniLM's (BERT) tokenizer, saved in ``folder`` as a
    pretrained one would be: the whole ``CLIPModel``, or its ``CLIPTextModel`` alone.
    Returns ``folder``."""
    import torch
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel

    from benchmark.text_encoder import encoder_path

    tokenizer = AutoTokenizer.from_pretrained(encoder_path("minilm"))
    towers = tiny_towers(tokenizer, vision_layers=1, image_size=32)
    torch.manual_seed(0)
    if text_only:
        CLIPTextModel(CLIPTextConfig(**towers["text_config"])).save_pretrained(folder)
    else:
        CLIPModel(CLIPConfig(**towers, projection_dim=8)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
