"""The networks and the training-time pieces of the LightningModule (SpecAugment, mixup, EMA)."""

import pytest
import torch
import torch.nn.functional as F

from music_genre_classification.models.lightning_module import GenreModule, shift_mels, spec_augment

NET = {"_target_": "music_genre_classification.models.networks.GenreCNN", "channels": [4, 8, 8, 8]}


def module(net: dict = NET, **kwargs) -> GenreModule:
    torch.manual_seed(0)
    return GenreModule(net, genres=["a", "b", "c"], spectrogram={}, crop_columns=16, **kwargs)


def test_spec_augment_zeroes_whole_bands_no_wider_than_configured():
    crops = torch.rand(64, 1, 32, 40) + 0.1
    masked = spec_augment(crops, masks=1, freq_width=5, time_width=7)
    zero = masked == 0
    rows = zero.all(dim=3).squeeze(1)  # frequency bands masked over the whole crop
    columns = zero.all(dim=2).squeeze(1)
    assert (zero == (rows[:, None, :, None] | columns[:, None, None, :])).all()  # nothing but bands is zeroed
    assert rows.sum(1).max() <= 5 and columns.sum(1).max() <= 7 and rows.any() and columns.any()
    assert torch.equal(masked[~zero], crops[~zero])


def test_mel_shift_moves_whole_crops_by_at_most_the_limit_and_fills_with_zeros():
    crops = (torch.arange(1, 33.0).view(1, 1, 32, 1) * torch.ones(200, 1, 1, 8)).contiguous()
    shifted = shift_mels(crops, max_shift=3)
    offsets = set()
    for crop in shifted[:, 0]:
        first = int(crop[:, 0].nonzero()[0])  # where band 1 (or the band moved down to 0) now starts
        offset = int(crop[first, 0]) - 1 - first  # source band minus destination band, negated
        offsets.add(-offset)
        assert torch.equal(crop, crop[:, :1].expand_as(crop))  # every column moved alike
    assert offsets == {-3, -2, -1, 0, 1, 2, 3}


def test_mixup_loss_is_the_blend_of_both_labels_losses():
    crops, labels = torch.rand(8, 1, 32, 16), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    plain, mixed = module(), module(mixup=0.4)
    mixed.load_state_dict(plain.state_dict())
    torch.manual_seed(1)
    loss = mixed.training_step((crops, labels), 0)
    torch.manual_seed(1)  # the same draws: the blend weight, then the partners
    mix = torch.distributions.Beta(0.4, 0.4).sample()
    partner = torch.randperm(8)
    logits = plain.net(mix * crops + (1 - mix) * crops[partner])
    expected = mix * F.cross_entropy(logits, labels) + (1 - mix) * F.cross_entropy(logits, labels[partner])
    assert torch.allclose(loss, expected, atol=1e-5) and 0 < mix < 1
    assert not torch.allclose(loss, F.cross_entropy(plain.net(crops), labels))


def test_input_norm_puts_every_mel_band_on_one_scale():
    net = module({**NET, "input_norm": True, "n_mels": 32}).net.train()
    bands = torch.linspace(0.1, 0.9, 32).view(1, 1, 32, 1)  # bands of very different level and spread
    crops = bands + bands * torch.rand(64, 1, 32, 16)
    normed = net.input_norm(crops.squeeze(1))
    assert torch.allclose(normed.mean(dim=(0, 2)), torch.zeros(32), atol=1e-5)
    assert torch.allclose(normed.std(dim=(0, 2)), torch.ones(32), atol=1e-2)


@pytest.mark.parametrize("input_norm", [False, True])
def test_inference_network_folds_batchnorm_and_keeps_the_outputs(input_norm):
    from music_genre_classification.models.networks import for_inference

    net = module({**NET, "input_norm": input_norm, "n_mels": 32}).net
    crops = torch.rand(12, 1, 32, 16)
    for _ in range(3):  # training steps give BatchNorm running statistics that are not the identity
        net(torch.rand(8, 1, 32, 16) * 3)
    expected = net.eval()(crops)
    fused = for_inference(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())  # BatchNorm1d: the input's
    assert torch.allclose(fused(crops), expected, atol=1e-5)


def test_cnn_crop_logits_run_the_convolutions_once_per_clip():
    from music_genre_classification.models.networks import clip_probabilities, for_inference

    net = for_inference(module({**NET, "n_mels": 32}).net)  # stride 16: crops of 16 columns are 1 map column
    specs = torch.rand(3, 32, 64)
    with torch.no_grad():
        per_crop = net.crop_logits(specs, crop=32, hop=16)  # windows of 2 map columns at every map column
        # a crop's window of the clip's feature map is what the crop alone gives, but for the context at its edges
        assert per_crop.shape == (3, 3, 3)
        assert torch.allclose(net.crop_logits(specs[..., :32], 32, 16)[:, 0], net(specs[:, None, :, :32]), atol=1e-5)
        # clips of different widths, short ones padded, keep their order and are each a distribution
        mixed = [specs[0], torch.rand(32, 20), specs[1], torch.rand(32, 100)]
        probs = clip_probabilities(net, mixed, crop=32, hop=16, clips_at_once=1)
    assert torch.allclose(probs.sum(dim=1), torch.ones(4))
    assert torch.allclose(probs[0], per_crop[0].softmax(-1).mean(0), atol=1e-6)
    assert torch.allclose(probs[2], per_crop[1].softmax(-1).mean(0), atol=1e-6)


def test_baseline_crop_logits_equal_the_crops_one_by_one():
    from music_genre_classification.data.spectrogram import crop_starts
    from music_genre_classification.models.networks import MelBaseline

    net = MelBaseline(n_genres=3, n_mels=32, hidden=8).eval()
    specs = torch.rand(2, 32, 100)
    crops = torch.stack([specs[:, None, :, s : s + 40] for s in crop_starts(100, 40, 20)], dim=1)
    expected = net(crops.flatten(0, 1)).view(2, -1, 3)
    assert torch.allclose(net.crop_logits(specs, 40, 20), expected, atol=1e-6)


def test_ema_weights_are_what_validation_uses_and_the_checkpoint_holds():
    trained = module(ema=0.5)
    start = {k: v.clone() for k, v in trained.net.state_dict().items()}
    with torch.no_grad():
        for p in trained.net.parameters():
            p.add_(1.0)
    trained.on_train_batch_end(None, None, 0)  # first update copies, the next one averages
    with torch.no_grad():
        for p in trained.net.parameters():
            p.add_(1.0)
    trained.on_train_batch_end(None, None, 0)
    weight = "features.0.weight"
    averaged = trained.ema_net.module.state_dict()[weight]
    assert torch.allclose(averaged, start[weight] + 1.5)  # 0.5 * (w + 1) + 0.5 * (w + 2)

    checkpoint = {"state_dict": trained.state_dict()}
    trained.on_save_checkpoint(checkpoint)
    assert not any(k.startswith("ema_net") for k in checkpoint["state_dict"])
    assert torch.equal(checkpoint["state_dict"]["net." + weight], averaged)  # inference reads net.*

    restored = module(ema=0.5)
    restored.on_load_checkpoint(checkpoint)
    restored.load_state_dict(checkpoint["state_dict"])  # strict: the EMA copy is rebuilt from net.*
    assert torch.equal(restored.ema_net.module.state_dict()[weight], averaged)
