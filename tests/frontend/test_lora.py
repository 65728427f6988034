"""LoRA on the front-end (frontend/lora.py): peft's adapters on the nn.Linear projections of torchaudio's HuBERT and
of transformers' w2v-BERT 2.0, our weight-space adapter on WavLM's merged q/k/v projection. On tiny random-weight
models: only the adapters train (the front-end's own weights, input modules included, stay frozen), each block's
adapters in that block's optimizer group, merged equals unmerged, ``frontend_kernels`` auto equals reference with
adapters, a model file's adapters merge at the state level (a full fine-tuning stage after a LoRA stage) and a file
without adapters loads under fresh ones; the option errors."""
import pytest
import torch

from core.errors import CheckpointError, ConfigError
from frontend.lora import adapter_deltas, is_adapter_key, merge_lora, merge_state, reconcile_state
from synthetic.checkpoints import write_fairseq_checkpoint
from tests.fakes import make_net

TINY_HUBERT = dict(extractor_mode="group_norm", extractor_conv_layer_config=[(16, 10, 5), (16, 3, 2), (16, 3, 2)],
                   extractor_conv_bias=False, encoder_embed_dim=32, encoder_projection_dropout=0.0,
                   encoder_pos_conv_kernel=8, encoder_pos_conv_groups=4, encoder_num_layers=2, encoder_num_heads=4,
                   encoder_attention_dropout=0.0, encoder_ff_interm_features=64, encoder_ff_interm_dropout=0.0,
                   encoder_dropout=0.0, encoder_layer_norm_first=False, encoder_layer_drop=0.0)


@pytest.fixture(scope="module")
def tiny_hubert(tmp_path_factory):
    from torchaudio.models import wav2vec2_model
    torch.manual_seed(3)
    path = str(tmp_path_factory.mktemp("ckpt") / "hubert.pt")
    write_fairseq_checkpoint(path, "hubert", TINY_HUBERT, wav2vec2_model(**TINY_HUBERT, aux_num_out=None).state_dict())
    return path


@pytest.fixture(params=["wavlm", "hubert", "w2vbert"])
def checkpoint(request, tiny_checkpoint, tiny_hubert, tiny_w2vbert):
    return {"wavlm": tiny_checkpoint, "hubert": tiny_hubert, "w2vbert": tiny_w2vbert}[request.param]


def lora_net(checkpoint, **over):
    """A tiny SpeakerNet with rank-4 LoRA whose adapters are moved off their zero start (B = 0 changes nothing)."""
    net = make_net(checkpoint, **{"lora_rank": 4, "weight_finetuning_reg": 0.0, **over})
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return net


def test_only_the_adapters_train_in_their_blocks_groups(checkpoint):
    net = lora_net(checkpoint, lora_targets="query,value,output")
    frontend = net.encoder.frontend
    trainable = [n for n, p in frontend.named_parameters() if p.requires_grad]
    assert trainable and all(is_adapter_key(n) for n in trainable)
    assert not any(p.requires_grad for m in frontend.input_modules() for p in m.parameters())
    groups = net.encoder.parameter_groups(1e-3, 1e-4, 0.5)
    assert [g["name"] for g in groups] == ["MHFA", "transformer.0", "transformer.1"]
    for i, layer in enumerate(frontend.transformer_layers()):
        adapters = {id(p) for n, p in layer.named_parameters() if is_adapter_key(n)}
        assert {id(p) for p in groups[i + 1]["params"]} == adapters and groups[i + 1]["lr"] == 1e-4 * 0.5 ** i
    # three projections per block, each with an A and a B: the count the training log reports
    assert len(trainable) == 2 * 3 * len(frontend.transformer_layers()) or frontend.family == "wavlm"
    wav = torch.randn(2, 4000)
    net.train()
    net(wav[:, None], torch.tensor([0, 1]))[0].backward()
    assert all(p.grad is not None for n, p in frontend.named_parameters() if p.requires_grad)


def test_merged_equals_unmerged_and_auto_equals_reference(checkpoint):
    """With adapters, evaluation's fast paths (streaming layer sums, the CNN kernels) give the reference path's
    embeddings; merging the adapters into the weights changes them by float rounding only (<= 1e-5)."""
    net = lora_net(checkpoint).eval()
    encoder, frontend = net.encoder, net.encoder.frontend
    wav, lengths = torch.randn(3, 9000), torch.tensor([9000, 7000, 5000])
    with torch.no_grad():
        auto = encoder(wav, lengths)
        frontend.kernels = "reference"
        reference = encoder(wav, lengths)
        frontend.kernels = "auto"
        plain = make_net(checkpoint).encoder.eval()
        plain.backend.load_state_dict(encoder.backend.state_dict())
        assert (plain(wav, lengths) - auto).abs().max() > 1e-3  # the adapters matter
        merge_lora(frontend)
        merged = encoder(wav, lengths)
    assert torch.allclose(auto, reference, atol=1e-5, rtol=1e-5)
    assert torch.allclose(merged, auto, atol=1e-5, rtol=1e-5)
    assert frontend.lora is None and not any(is_adapter_key(k) for k in frontend.state_dict())


def test_a_lora_state_merges_into_a_model_without_adapters_and_back(checkpoint):
    """A full fine-tuning stage after a LoRA stage: the LoRA model's state loads into a model without adapters
    merged, with the LoRA model's embeddings; a plain state loads into a LoRA model under fresh adapters."""
    net = lora_net(checkpoint, lora_alpha=12.0).eval()
    plain = make_net(checkpoint).eval()
    state = reconcile_state(plain.state_dict(), net.state_dict(), {"lora_rank": 4, "lora_alpha": 12.0}, "f")
    plain.load_state_dict(state)
    wav = torch.randn(2, 6000)
    with torch.no_grad():
        assert torch.allclose(plain.encoder(wav), net.encoder(wav), atol=1e-5, rtol=1e-5)
    fresh = make_net(checkpoint, lora_rank=4).eval()
    fresh.load_state_dict(reconcile_state(fresh.state_dict(), plain.state_dict(), {}, "f"))
    with torch.no_grad():
        assert torch.allclose(fresh.encoder(wav), plain.encoder(wav), atol=1e-5, rtol=1e-5)  # B = 0: no change
    with pytest.raises(CheckpointError, match="no lora_rank"):
        reconcile_state(plain.state_dict(), net.state_dict(), {}, "Model file 'm'")


def test_the_regulariser_measures_the_adapters_change_of_the_weights(tiny_checkpoint):
    """With LoRA, θ − θ₀ of an adapted weight is scaling·B·A: r is the sum of those norms (WavLM's query and value
    blocks apart), 0 at the start (B = 0)."""
    net = make_net(tiny_checkpoint, lora_rank=4, weight_finetuning_reg=0.01)
    assert float(net.regulariser().detach()) == 0.0
    net = lora_net(tiny_checkpoint, weight_finetuning_reg=0.01)
    deltas = adapter_deltas(net.encoder.frontend)
    assert len(deltas) == 2 * 2  # 2 blocks x (query, value)
    merged = merge_state(net.state_dict(), 2.0)
    key = "encoder.frontend.model.encoder.transformer.layers.0.attention.attention.in_proj_weight"
    base = make_net(tiny_checkpoint).state_dict()[key]
    assert torch.allclose((merged[key] - base)[:base.shape[0] // 3], deltas[0], atol=1e-6)  # the query block
    assert float(net.regulariser().detach()) == pytest.approx(sum(float(d.detach().norm()) for d in deltas),
                                                            rel=1e-5)


def test_option_errors_name_the_option_and_the_fix(tiny_checkpoint, tiny_hubert):
    with pytest.raises(ConfigError, match="lora_dropout: 0"):
        make_net(tiny_checkpoint, lora_rank=4, lora_dropout=0.1)
    make_net(tiny_checkpoint, lora_rank=4, lora_dropout=0.1, lora_targets=["output"])  # peft's Linear drops inputs
    make_net(tiny_hubert, lora_rank=4, lora_dropout=0.1)
    with pytest.raises(ConfigError, match="freeze_ssl: false"):
        make_net(tiny_checkpoint, lora_rank=4, freeze_ssl=True)
    with pytest.raises(ConfigError, match="freeze_cnn"):
        make_net(tiny_checkpoint, lora_rank=4, freeze_cnn=False)
    with pytest.raises(ConfigError, match="lora_targets.*choose from query, key, value, output"):
        make_net(tiny_checkpoint, lora_rank=4, lora_targets="qurey")
