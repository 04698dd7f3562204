"""The published checkpoints' full-size configurations (``unet/config.json`` of the inverse and forward
repositories, SVD's ``vae/config.json``, the EnvEncoder arguments of the forward model) and their
parameter counts: random-weight models of the published sizes (same FLOPs and memory as the real
weights, nothing downloaded) for the benchmark and the cost model. ``tests/test_perf.py`` checks them
against the golden manifests."""
from __future__ import annotations

_FULL_UNET = {
    "_class_name": "UNetCustomSpatioTemporalConditionModel", "sample_size": 96, "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlockSpatioTemporal"] * 3 + ["DownBlockSpatioTemporal"],
    "up_block_types": ["UpBlockSpatioTemporal"] + ["CrossAttnUpBlockSpatioTemporal"] * 3,
    "block_out_channels": [320, 640, 1280, 1280], "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 768, "layers_per_block": 2, "transformer_layers_per_block": 1,
    "num_attention_heads": [5, 10, 20, 20], "num_frames": 14, "context_vocab_size": 16,
}
FULL = {
    "inverse_unet": {**_FULL_UNET, "in_channels": 8, "cross_attention_dim": 1024, "temporal_cross_attention_dim": 1024,
                     "multi_res_encoder_hidden_states": False, "context_embedding_type": "clip"},
    "forward_unet": {**_FULL_UNET, "in_channels": 24, "cross_attention_dim": [320, 640, 1280, 1280],
                     "temporal_cross_attention_dim": None, "multi_res_encoder_hidden_states": True,
                     "context_embedding_type": None},
    "vae": {"_class_name": "AutoencoderKLTemporalDecoder", "in_channels": 3, "out_channels": 3,
            "down_block_types": ["DownEncoderBlock2D"] * 4, "block_out_channels": [128, 256, 512, 512],
            "layers_per_block": 2, "latent_channels": 4, "sample_size": 768, "scaling_factor": 0.18215,
            "force_upcast": True},
    "env_encoder": {"_class_name": "EnvEncoder", "in_channels": 12, "channels": [320, 640, 1280, 1280],
                    "num_res_blocks": 2, "latent_encoder": True},
}
FULL_PARAMETERS = {"inverse_unet": 1524639466, "forward_unet": 1473513642, "vae": 97742847, "env_encoder": 161462720}
