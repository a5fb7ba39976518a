"""Each optimizer, schedule, loss and augmentation against numbers worked out by hand."""
from __future__ import annotations

import dataclasses
import math
import os
import pickle
import re
import urllib.error

import numpy as np
import pytest
import torch
from torch import nn

from conftest import train_config
from pipeline import augment, engine, inference, models, recipes
from pipeline.stage import PipelineError

BASE = {"lr": 0.1, "weight_decay": 0.0, "momentum": 0.9, "nesterov": False}   # what each case starts from


def one_step(config: dict, p0: float = 1.0, grad: float = 2.0) -> float:
    """The parameter after one optimizer step from p0 with loss grad * p."""
    p = nn.Parameter(torch.tensor([p0]))
    opt = recipes.make_optimizer(train_config(**{**BASE, **config}), [p])
    (grad * p).sum().backward()
    opt.step()
    return p.item()


@pytest.mark.parametrize("config, expected", [
    ({"optimizer": "sgd", "momentum": 0.0}, 1 - 0.1 * 2),
    ({"optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.5}, 1 - 0.1 * (2 + 0.5 * 1)),
    ({"optimizer": "sgd", "nesterov": True}, 1 - 0.1 * 2 * (1 + 0.9)),       # g + m * buf, buf = g
    ({"optimizer": "adam"}, 1 - 0.1),                                          # first step: lr * sign(g)
    ({"optimizer": "rmsprop", "momentum": 0.0}, 1 - 0.1 * 2 / math.sqrt(0.01 * 4)),  # alpha 0.99
])
def test_optimizer_first_step(config, expected):
    assert one_step(config) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_sgd_momentum_accumulates():
    p = nn.Parameter(torch.tensor([0.0]))
    opt = recipes.make_optimizer(train_config(**BASE, optimizer="sgd"), [p])
    for _ in range(2):
        opt.zero_grad()
        p.sum().backward()              # gradient 1
        opt.step()
    assert p.item() == pytest.approx(-(0.1 + 0.1 * 1.9))


def lrs(spec: dict, epochs: int, lr: float = 0.1, val_accs=None) -> list[float]:
    """The learning rate each epoch trains with."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    sched = recipes.Schedule(spec, opt, epochs)
    out = []
    for e in range(epochs):
        out.append(round(sched.lr, 10))
        opt.step()                      # (no gradients: changes nothing, keeps torch's order check quiet)
        sched.step(val_accs[e] if val_accs else 0.0)
    return out


def test_piecewise_is_seed_000s_birds_schedule():
    got = lrs({"name": "piecewise", "epochs": [1, 6, 8, 12], "lrs": [0.005, 0.003, 0.001, 0.0002]}, 20, lr=0.005)
    assert got == [0.005] * 5 + [0.003] * 2 + [0.001] * 4 + [0.0002] * 9


def test_step_multistep_exponential_none():
    assert lrs({"name": "step", "step_size": 2, "gamma": 0.5}, 5) == [0.1, 0.1, 0.05, 0.05, 0.025]
    assert lrs({"name": "multistep", "milestones": [1, 3], "gamma": 0.1}, 4) == [0.1, 0.01, 0.01, 0.001]
    assert lrs({"name": "exponential", "gamma": 0.5}, 3) == [0.1, 0.05, 0.025]
    assert lrs({"name": "none"}, 3) == [0.1] * 3


def test_plateau_on_val_accuracy():
    # seed 001: ReduceLROnPlateau(mode max, factor 0.1, patience 3): 4 epochs without a better val acc
    accs = [0.1, 0.2, 0.2, 0.2, 0.2, 0.2, 0.3]
    got = lrs({"name": "plateau", "factor": 0.1, "patience": 3}, 7, val_accs=accs)
    assert got == [0.1] * 6 + [0.01]


def test_cosine_with_warmup():
    got = lrs({"name": "cosine", "warmup_epochs": 2}, 6)
    expected = [0.1 / 3, 0.2 / 3] + [0.1 * 0.5 * (1 + math.cos(math.pi * i / 4)) for i in range(4)]
    assert got == pytest.approx(expected)


def test_label_smoothing_changes_the_loss_by_the_expected_amount():
    logits, y = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]]), torch.tensor([0, 2])
    ce = recipes.make_loss(train_config(loss="cross_entropy", label_smoothing=0.0))(logits, y)
    ls = recipes.make_loss(train_config(loss="cross_entropy", label_smoothing=0.1))(logits, y)
    uniform = -torch.log_softmax(logits, 1).mean(1).mean()    # cross-entropy against the uniform target
    assert ls.item() == pytest.approx((0.9 * ce + 0.1 * uniform).item(), rel=1e-6)
    assert ls.item() != pytest.approx(ce.item())


def test_multi_margin_loss():
    logits, y = torch.tensor([[2.0, 1.5, -1.0]]), torch.tensor([0])
    loss = recipes.make_loss(train_config(loss="multi_margin"))(logits, y)
    assert loss.item() == pytest.approx((max(0, 1 - 2 + 1.5) + max(0, 1 - 2 - 1)) / 3)


def test_early_stopping_counts_epochs_without_a_better_val_accuracy():
    stop = recipes.EarlyStopping(2)
    assert [stop.update(a) for a in [0.5, 0.6, 0.6, 0.55]] == [False, False, False, True]
    never = recipes.EarlyStopping(0)
    assert not any(never.update(0.1) for _ in range(10))


# ---- augmentation -------------------------------------------------------------------------------
def batch(n=16, c=3, h=8, w=8) -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    return torch.randint(1, 256, (1, c, h, w), generator=g, dtype=torch.uint8).expand(n, -1, -1, -1).clone()


def gen(seed=0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def distinct(x: torch.Tensor) -> int:
    return len({bytes(s.flatten().tolist()) for s in x})


def test_flips_are_per_sample_and_exact():
    x = batch(64)
    out = augment.hflip(x, gen(), p=0.5)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert (flipped | kept).all() and 10 < flipped.sum() < 54    # about half, decided per sample
    assert torch.equal(augment.vflip(x, gen(), p=1.0), x.flip(-2))
    assert torch.equal(augment.hflip(x, gen(), p=0.0), x)


def test_crop_shifts_each_sample_and_fills_zeros():
    x = batch(32, h=6, w=6)
    out = augment.crop(x, gen(), padding=2)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert distinct(out) > 5                                        # per-sample offsets
    padded = torch.nn.functional.pad(x[0], (2,) * 4)
    for s in out:   # every output is a window of the zero-padded image
        assert any(torch.equal(s, padded[:, i:i + 6, j:j + 6]) for i in range(5) for j in range(5))
    assert torch.equal(augment.crop(x, gen(), padding=0), x)


def test_grayscale_makes_equal_channels_from_luminance():
    x = batch(8)
    out = augment.grayscale(x, gen(), p=1.0)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    expected = (0.299 * x[:, 0].float() + 0.587 * x[:, 1].float() + 0.114 * x[:, 2].float()).round()
    assert (out[:, 0].float() - expected).abs().max() <= 1


def test_color_jitter_brightness_scales_pixels_per_sample():
    x = torch.full((32, 3, 4, 4), 100, dtype=torch.uint8)
    out = augment.color_jitter(x, gen(), brightness=0.5)
    factors = out[:, 0, 0, 0].float() / 100
    assert (factors >= 0.5 - 0.01).all() and (factors <= 1.5 + 0.01).all()
    assert (out == out[:, :1, :1, :1]).all()                        # uniform images stay uniform
    assert len(set(factors.tolist())) > 10
    assert torch.equal(augment.color_jitter(x, gen()), x)           # ColorJitter() changes nothing


def test_rotation_keeps_the_centre_and_zero_fills_corners():
    x = torch.full((16, 1, 9, 9), 200, dtype=torch.uint8)
    out = augment.rotation(x, gen(), degrees=45)
    assert (out[:, :, 4, 4] == 200).all()
    assert (out[:, 0, 0, 0] == 0).sum() > 8                         # most angles move the corner out
    assert torch.equal(augment.rotation(batch(4), gen(), degrees=0), batch(4))


def test_random_resized_crop_full_box_is_identity_and_resamples_to_the_input_size():
    x = batch(4)
    assert torch.equal(augment.random_resized_crop(x, gen(), scale=(1, 1), ratio=(1, 1)), x)
    out = augment.random_resized_crop(batch(32, h=16, w=16), gen(), scale=(0.1, 0.3), size=48)
    assert out.shape == (32, 3, 48, 48) and distinct(out) == 32     # straight to the input size
    ramp = torch.arange(16, dtype=torch.uint8).mul(16).expand(1, 1, 16, 16).clone()   # value = 16 * column
    out = augment.random_resized_crop(ramp, gen(), scale=(0.25, 0.25), ratio=(1, 1), size=64)
    top, left, h, w = augment.crop_boxes(1, 16, 16, (0.25, 0.25), (1, 1), gen())[0].tolist()
    assert (h, w) == (8, 8)
    # the box's 8 columns stretched to 64: output column 8k + 4 samples the image 1/16 px right of
    # the centre of the box's column k, i.e. 16 * (left + k) + 1 (bilinear, one resampling)
    assert out[0, 0, 0, 4:60:8].tolist() == [16 * (left + k) + 1 for k in range(7)]   # (the 8th may pass the edge)


def test_random_resized_crop_boxes_follow_torchvisions_distribution():
    """100k boxes against 100k of torchvision's RandomResizedCrop.get_params (10 tries, then the
    centre-crop fallback): the area share and the aspect agree to within 0.01, in mean and quantiles."""
    from torchvision.transforms import RandomResizedCrop
    n, h, w, scale, ratio = 100_000, 32, 32, (0.08, 1.0), (3 / 4, 4 / 3)
    top, left, bh, bw = augment.crop_boxes(n, h, w, scale, ratio, gen()).T.numpy()
    assert (top >= 0).all() and (left >= 0).all() and (top + bh <= h).all() and (left + bw <= w).all()
    torch.manual_seed(0)
    image = torch.zeros(1, h, w)
    theirs = np.array([RandomResizedCrop.get_params(image, scale, ratio)[2:] for _ in range(n)], dtype=float)
    for ours_x, theirs_x in ((bh * bw / (h * w), theirs[:, 0] * theirs[:, 1] / (h * w)),
                             (bw / bh, theirs[:, 1] / theirs[:, 0])):
        assert abs(ours_x.mean() - theirs_x.mean()) < 0.01
        assert np.abs(np.quantile(ours_x, [0.1, 0.5, 0.9]) - np.quantile(theirs_x, [0.1, 0.5, 0.9])).max() < 0.01
    # the fallback: no try fits a 4:1 image at aspect 1 and scale 1 -> the centred largest square
    assert augment.crop_boxes(3, 8, 32, (1, 1), (1, 1), gen()).tolist() == [[0, 12, 8, 8]] * 3


def test_color_jitter_is_torchvisions_adjustments_in_the_drawn_order():
    """Per sample, torchvision's adjust_brightness / adjust_contrast / adjust_saturation in the
    order and with the factors drawn (the same draws), within 1/255."""
    from torchvision.transforms.v2 import functional as TF
    x = torch.randint(0, 256, (12, 3, 6, 6), generator=gen(7), dtype=torch.uint8)
    s = (0.4, 0.5, 0.6)
    out = augment.color_jitter(x, gen(3), *s)
    g = gen(3)
    order = torch.rand(12, 3, generator=g).argsort(1)
    factors = [(1 - v) + 2 * v * torch.rand(12, generator=g) for v in s]
    adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    for i in range(12):
        img = x[i].float() / 255
        for op in order[i].tolist():
            img = adjust[op](img, factors[op][i].item())
        assert (out[i].float() - img * 255).abs().max() <= 1, i


def test_color_jitter_order_is_drawn_per_sample():
    """Brightness then contrast differs from contrast then brightness; torchvision draws the order
    per call, so over a batch both orders (of all six) must occur, each giving one of the two results."""
    x = torch.tensor([[[[40, 200]], [[90, 120]], [[10, 250]]]], dtype=torch.uint8).expand(400, -1, -1, -1)
    out = augment.color_jitter(x, gen(), brightness=0.5, contrast=0.5)
    g = gen()   # the same draws, by hand: order, then one factor per op
    order = torch.rand(400, 3, generator=g).argsort(1)
    fb, fc = augment._uniform(400, 0.5, 1.5, g), augment._uniform(400, 0.5, 1.5, g)
    brightness_first = (order == 0).float().argmax(1) < (order == 1).float().argmax(1)
    y = x.float()
    for i in range(0, 400, 37):
        b_ = lambda v: (fb[i] * v).clamp(0, 255)                                      # noqa: E731
        c_ = lambda v: (fc[i] * v + (1 - fc[i]) * augment.grey(v[None]).mean()).clamp(0, 255)   # noqa: E731
        want = c_(b_(y[i])) if brightness_first[i] else b_(c_(y[i]))
        assert (out[i].float() - want.round()).abs().max() <= 1
    assert 100 < brightness_first.sum() < 300


def test_a_ranks_slice_gets_the_draws_its_images_get_on_one_process():
    """Under DDP each rank augments only its slice of the global batch: the slices, put together,
    are the whole batch augmented at once, for every op (same draws, same generator state after)."""
    from pipeline.distributed import Ranks, part
    ops = [{"name": "crop", "padding": 2}, {"name": "hflip"}, {"name": "rotation", "degrees": 20},
           {"name": "color_jitter", "brightness": 0.3, "contrast": 0.3, "saturation": 0.3},
           {"name": "grayscale", "p": 0.3}, {"name": "random_resized_crop"}, {"name": "vflip"},
           {"name": "resize_crop", "resize": 12}]
    x = torch.randint(0, 256, (7, 3, 8, 8), generator=gen(4), dtype=torch.uint8)
    whole, g_whole = augment.apply(ops, x, g := gen(1), size=8), g
    for world in (2, 3):
        parts, states = [], set()
        for rank in range(world):
            rows = part(len(x), Ranks(rank=rank, world=world))
            parts.append(augment.apply(ops, x[rows], g := gen(1), size=8, n=len(x), part=rows))
            states.add(g.get_state().sum().item())
        assert torch.equal(torch.cat(parts), whole) and states == {g_whole.get_state().sum().item()}


def test_apply_is_seeded():
    ops = [{"name": "crop", "padding": 2}, {"name": "hflip"}, {"name": "rotation", "degrees": 20},
           {"name": "color_jitter", "brightness": 0.3, "contrast": 0.3, "saturation": 0.3},
           {"name": "grayscale", "p": 0.3}, {"name": "random_resized_crop"}, {"name": "vflip"}]
    a, b = augment.apply(ops, batch(), gen(1)), augment.apply(ops, batch(), gen(1))
    assert torch.equal(a, b) and not torch.equal(a, augment.apply(ops, batch(), gen(2)))


@pytest.mark.parametrize("shape, size", [((2, 3, 32, 32), 224), ((2, 3, 256, 300), 224), ((2, 1, 40, 30), 16)])
def test_resize_equals_torchvision_resize_then_centre_crop(shape, size):
    from torchvision.transforms.v2 import functional as TF
    x = torch.rand(shape, generator=gen())
    expected = TF.center_crop(TF.resize(x, size, antialias=True), [size, size])
    assert torch.allclose(augment.Resize(size)(x), expected, atol=1e-3)     # no antialias when enlarging
    same = torch.rand(2, 3, size, size, generator=gen())
    assert torch.equal(augment.Resize(size)(same), same)               # already the input size


def test_resize_crop_is_torchvisions_resize_then_random_crop_on_the_same_draws():
    """seed 001's Resize(160) + RandomCrop(128) of 32-px images: 33 integer offsets per axis of the
    enlarged image, each sample its own; pixel for pixel torchvision's on the offsets drawn."""
    from torchvision.transforms.v2 import functional as TF
    x = torch.randint(0, 256, (6, 3, 32, 32), generator=gen(5), dtype=torch.uint8)
    out = augment.apply([{"name": "resize_crop", "resize": 160}], x, gen(1), size=128)
    g = gen(1)
    oy, ox = (torch.randint(0, 160 - 128 + 1, (6,), generator=g) for _ in range(2))
    big = TF.resize(x.float(), [160, 160], antialias=False)
    expected = torch.stack([big[i, :, oy[i]:oy[i] + 128, ox[i]:ox[i] + 128] for i in range(6)]).round()
    assert out.shape == (6, 3, 128, 128) and (out.float() - expected).abs().max() <= 1
    assert len({(int(a), int(b)) for a, b in zip(oy, ox)}) > 1               # samples got their own windows
    with pytest.raises(ValueError, match="resize 100 is smaller than the crop, 128 px"):
        augment.apply([{"name": "resize_crop", "resize": 100}], x, gen(1), size=128)


def test_he_init_draws_every_weight_with_the_relu_gain_on_fan_in():
    from pipeline import engine
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(16, 64, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(512, 256))
    engine.he_init(net)
    for layer, fan_in in ((net[0], 16 * 9), (net[3], 512)):
        assert abs(layer.weight.std().item() / (2 / fan_in) ** 0.5 - 1) < 0.05
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))


@pytest.mark.parametrize("shape, short_side, size", [((2, 3, 256, 256), 256, 224), ((2, 3, 300, 400), 256, 224),
                                                     ((2, 3, 70, 70), 73, 64)])
def test_resize_before_crop_equals_torchvision_resize_then_centre_crop(shape, short_side, size):
    """resize_before_crop: the course's Resize(256) + CenterCrop(224), not the square squeezed to 224."""
    from torchvision.transforms.v2 import functional as TF
    x = torch.rand(shape, generator=gen())
    expected = TF.center_crop(TF.resize(x, short_side, antialias=True), [size, size])
    assert torch.allclose(augment.Resize(size, short_side)(x), expected, atol=1e-3)
    assert not torch.allclose(augment.Resize(size)(x), expected, atol=1e-3)     # the default differs


# ---- transfer learning --------------------------------------------------------------------------
def test_imagenet_weights_offline_error_names_the_file_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*a, **k):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(PipelineError) as e:
        models.build({"name": "tv_resnet", "arch": "resnet18"}, 3, (32, 32), 10, weights="imagenet")
    msg = str(e.value)
    assert "resnet18-f37072fd.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in msg


def test_imagenet_weights_from_the_cache_and_a_new_head(tmp_path, monkeypatch):
    from pipeline.models import tv_resnet
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url, path = tv_resnet.weights_file("resnet18")
    torch.manual_seed(1)
    fake = models.MODELS["tv_resnet"](3, (32, 32), 1000).state_dict()     # stands in for the real file
    path.parent.mkdir(parents=True)
    torch.save(fake, path)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", None)      # a cached file: no download
    net = models.build({"name": "tv_resnet", "arch": "resnet18"}, 1, (32, 32), 7, weights="imagenet")
    assert torch.equal(net.layer4[1].conv2.weight, fake["layer4.1.conv2.weight"])
    assert torch.equal(net.conv1.weight, fake["conv1.weight"].sum(1, keepdim=True))   # grey input
    assert net.fc.out_features == 7


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo ran",))


@pytest.mark.parametrize("write, why", [
    (lambda p: p.write_bytes(bytes(range(256)) * 4), r"UnpicklingError: not a file of tensors"),
    (lambda p: p.write_bytes(pickle.dumps(_RunsCode(), protocol=2)), r"UnpicklingError: not a file of tensors"),
    (lambda p: (torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, p),
                p.write_bytes(p.read_bytes()[:1000])), r"RuntimeError: PytorchStreamReader failed"),
    (lambda p: torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, p), r"RuntimeError: Error\(s\) in loading"),
])
def test_a_damaged_cached_imagenet_weights_file_is_named_with_the_fix(tmp_path, monkeypatch, capfd, write, why):
    from pipeline.models import tv_resnet
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url, path = tv_resnet.weights_file("resnet18")
    path.parent.mkdir(parents=True)
    write(path)
    with pytest.raises(PipelineError) as e:
        models.build({"name": "tv_resnet", "arch": "resnet18"}, 3, (32, 32), 10, weights="imagenet")
    msg = str(e.value)
    assert re.search(f"{re.escape(str(path))} is damaged or not the resnet18 ImageNet weights \\({why}", msg), msg
    assert msg.endswith(f"delete it and fetch it again: download {url} (offline, elsewhere) and copy it to {path}")
    assert "weights_only" not in msg and "\n" not in msg
    assert "ran" not in capfd.readouterr().out                              # the pickle's call never ran


def test_finetune_last_layer_loads_the_parent_body_and_freezes_it(tmp_path):
    meta = {"channels": 1, "image_size": [8, 8], "classes": list("0123456789")}
    stats = {"mean": [0.5], "std": [0.25]}
    spec = {"name": "lenet", "channels": [4], "fc": [8]}
    parent = inference.build_model(train_config(name="p", model=spec), meta, stats)
    (tmp_path / "p").mkdir()
    torch.save({"state_dict": parent.state_dict()}, tmp_path / "p" / "model.pt")
    child_config = train_config(name="c", model=spec, pretrained="p", finetune="last_layer")
    child = inference.build_model(child_config, {**meta, "classes": list("abc")}, stats)
    engine.init_pretrained(child, child_config, engine.parent_checkpoint(child_config, tmp_path))
    assert torch.equal(child.net[0].weight, parent.net[0].weight)           # body copied
    assert child.net[-1].out_features == 3                                   # new head
    assert [n for n, p in child.named_parameters() if p.requires_grad] == ["net.6.weight", "net.6.bias"]
    other = train_config(name="c", model={"name": "lenet", "channels": [6], "fc": [8]}, pretrained="p")
    with pytest.raises(PipelineError, match="does not match"):
        engine.init_pretrained(inference.build_model(other, meta, stats), other, tmp_path / "p" / "model.pt")
    with pytest.raises(PipelineError, match="no checkpoint"):
        engine.parent_checkpoint(dataclasses.replace(child_config, pretrained="missing"), tmp_path)


def test_every_scheduler_of_the_schema_is_in_the_table_and_nothing_else():
    from pipeline import params
    assert set(params.load_schema()["$defs"]["scheduler"]["properties"]["name"]["enum"]) == set(recipes.SCHEDULES)
