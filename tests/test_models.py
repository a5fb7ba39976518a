"""Every registered model: forward + backward at its data set's input shape, seed figures, layer tables."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import unit_params
from pipeline import engine, inference, layers, models, params
from pipeline.config import TrainConfig
from pipeline.models import cifarnet

ROOT = Path(__file__).resolve().parents[1]
PARAMS = unit_params()
# (channels, image size, classes) of each data set the studies use, before any input_size resize.
SHAPES = {"digits": (1, 8, 10), "cifar10": (3, 32, 10), "cifar100": (3, 32, 100), "cifar100_full": (3, 32, 100), "cifar100_8020": (3, 32, 100),
          "tiny_imagenet": (3, 64, 200), "cub200": (3, 256, 200), "cifar10_jpeg": (3, 32, 10)}


def experiments() -> dict[str, dict]:
    """Every experiment of every study in studies/, resolved with params.yaml's defaults (seed first)."""
    out = {}
    for path in sorted((ROOT / "studies").glob("*.yaml"), key=lambda p: p.stem != "seed"):
        scope = {**PARAMS, **params.read_yaml(path)}
        out.update({name: params.experiment_config(scope, name) for name in scope["experiments"]})
    return out


EXPERIMENTS = experiments()


def shape_of(config: dict) -> tuple[int, int, int]:
    c, size, k = SHAPES[config["dataset"]]
    return c, config["input_size"] or size, k


def build(config: dict) -> nn.Module:
    c, size, k = shape_of(config)
    return models.build(config["model"], c, (size, size), k)


def first_experiment(model_name: str) -> str:
    return next(n for n, c in EXPERIMENTS.items() if c["model"]["name"] == model_name)


@pytest.mark.parametrize("model_name", sorted(models.MODELS))
def test_forward_backward_at_dataset_shape(model_name):
    config = EXPERIMENTS[first_experiment(model_name)]
    c, size, k = shape_of(config)
    torch.manual_seed(0)
    net = build(config)
    x = torch.randn(2, c, size, size)
    out = net(x)
    assert out.shape == (2, k)
    assert torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def linears(net: nn.Module) -> list[tuple[int, int, bool]]:
    return [(m.in_features, m.out_features, m.bias is not None) for m in net.modules() if isinstance(m, nn.Linear)]


def convs(net: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) for m in net.modules())


# What the seed reports print: fc shapes (in, out, bias) and the number of conv layers.
SEED_FIGURES = {
    "basenet": ([(400, 50, True), (50, 100, True)], 2),
    "vgg16bn_small_head": ([(512, 256, True), (256, 256, True), (256, 100, True)], 13),
    "vgg_custom_128_aug": ([(512, 4096, True), (4096, 100, True)], 10),  # seed 001's five blocks of two
    "vgg19": ([(512, 4096, True), (4096, 4096, True), (4096, 100, True)], 16),  # "nn.Linear(512 * 1 * 1, 4096)"
    "vgg19_fc1": ([(512, 4096, True), (4096, 100, True)], 16),
    "vgg10_fc1": ([(512, 4096, True), (4096, 100, True)], 10),
    "ablation_base": ([(2048, 1024, True), (1024, 512, True), (512, 100, True)], 3),
    "ablation_newbase": ([(4096, 1024, True), (1024, 256, True), (256, 100, True)], 4),
    "ablation_deep_fc_dropout": ([(4096, 1024, True), (1024, 256, True), (256, 512, True), (512, 128, True),
                                  (128, 100, True)], 4),
    "cifarnet_best": ([(256, 10, False)], 8),
    "cifarnet_worst": ([(512, 512, True), (512, 500, True), (500, 500, True), (500, 100, True),
                        (100, 100, True), (100, 100, True), (100, 10, True)], 28),
    "tinynet": ([(4096, 200, False)], 8),
    "tinynet_deeper": ([(512, 200, False)], 12),
}


@pytest.mark.parametrize("experiment", sorted(SEED_FIGURES))
def test_seed_layer_figures(experiment):
    net = build(EXPERIMENTS[experiment])
    fc, n_conv = SEED_FIGURES[experiment]
    assert linears(net) == fc
    assert convs(net) == n_conv


def test_seed_001_resolution_rungs_share_step_11s_model_and_step_15_drops_the_4th_pool():
    """58/62/67% are step 11's model at 32/64/128 px; the final table (step 15, 77%) pools after blocks
    1-3 only: 128 -> 64 -> 32 -> 16 px into the AdaptiveAvgPool2d, as its row 28 says ("16 1")."""
    rungs = [EXPERIMENTS[f"vgg_custom_{s}"] for s in (32, 64, 128)]
    assert [c["input_size"] for c in rungs] == [None, 64, 128]
    assert all(c["model"] == rungs[0]["model"] for c in rungs)
    pools = lambda net: sum(isinstance(m, nn.MaxPool2d) for m in net.modules())   # noqa: E731
    assert pools(build(rungs[2])) == 4 and pools(build(EXPERIMENTS["vgg_custom_128_aug"])) == 3
    final = build(EXPERIMENTS["vgg_custom_128_aug"])
    features = final[0](torch.zeros(1, 3, 128, 128))
    assert features.shape == (1, 512, 16, 16)


def test_seed_001_steps_6_to_9_keep_the_listed_dropout_before_the_last_fc():
    """Step 6's listing: `mn.Dropout(0.2)` (live, OCR of nn.) then nn.Linear(4096, TOTAL_CLASSES);
    step 5's head is not listed, and from step 10 on the final table's head has none."""
    def head(name):
        return [type(m).__name__ + (f"({m.p})" if isinstance(m, nn.Dropout) else "")
                for m in build(EXPERIMENTS[name])[2]]
    for name in ("vgg19_fc1", "vgg19_fc1_he", "vgg10_fc1"):
        assert head(name) == ["Flatten", "Linear", "ReLU", "Dropout(0.2)", "Linear"], name
    for name in ("vgg19", "vgg10_fc1_plateau", "vgg_custom_32", "vgg_custom_128_aug"):
        assert "Dropout" not in " ".join(head(name)), name


# seed 002's printouts: each conv (in, out) 3x3 with bias and a BatchNorm2d, then Linear(bias=False)
_BEST_CONVS = [(3, 64), (64, 128), (128, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 256)]
SEED_002_PRINTOUTS = {
    "cifarnet_best": (_BEST_CONVS, (256, 10)),
    "tinynet": (_BEST_CONVS, (4096, 200)),
    "tinynet_deeper": (_BEST_CONVS + [(256, 512), (512, 512), (512, 512), (512, 512)], (512, 200)),
}


@pytest.mark.parametrize("experiment", sorted(SEED_002_PRINTOUTS))
def test_seed_002_nets_are_residual_pairs_with_the_printed_parameter_count(experiment):
    """Our reading (ResNet-9's pairs add their input) and the plain one: the parameters the printout
    lists, counted by hand, either way; the pairs are 128/256 (and 512 in the deeper net)."""
    convs_, (fc_in, fc_out) = SEED_002_PRINTOUTS[experiment]
    printed = sum(i * o * 9 + o + 2 * o for i, o in convs_) + fc_in * fc_out
    config = EXPERIMENTS[experiment]
    assert config["model"]["residual"] is True
    plain = build({**config, "model": {**config["model"], "residual": False}})
    for net in (build(config), plain):
        assert sum(p.numel() for p in net.parameters()) == printed
    pairs = [m for m in build(config).modules() if isinstance(m, cifarnet.Residual)]
    assert [[c.out_channels for c in p.modules() if isinstance(c, nn.Conv2d)] for p in pairs] == \
        [[128, 128], [256, 256]] + ([[512, 512]] if experiment == "tinynet_deeper" else [])
    assert not any(isinstance(m, cifarnet.Residual) for m in plain.modules())
    body = pairs[0].body                                        # the add: a zeroed body is the identity
    nn.init.zeros_(body[-2].weight), nn.init.zeros_(body[-2].bias)
    x = torch.randn(2, 128, 8, 8)
    assert torch.equal(pairs[0].eval()(x), x)


def _vgg_count(convs: list[int], fcs: list[tuple[int, int]]) -> int:
    """3x3 conv with bias + BatchNorm2d per listed width (from 3 channels), then Linear layers."""
    ins = [3] + convs[:-1]
    return sum(i * o * 9 + o + 2 * o for i, o in zip(ins, convs)) + sum(i * o + o for i, o in fcs)


@pytest.mark.parametrize("experiment, convs_", [
    ("vgg19_fc1", [64, 64, 128, 128] + [256] * 4 + [512] * 8),      # VGG-19-BN's 16 convs
    ("vgg19_fc1_he", [64, 64, 128, 128] + [256] * 4 + [512] * 8),
    ("vgg10_fc1", [64, 64, 128, 128, 256, 256, 512, 512, 512, 512]),  # step 9: 6 convs deleted
])
def test_seed_001_steps_6_to_9_have_the_listed_parameter_count(experiment, convs_):
    """Step 6's listing: nn.Linear(512 * 1 * 1, 4096), ReLU, Dropout(0.2), nn.Linear(4096, TOTAL_CLASSES):
    the dropout adds no parameter."""
    assert sum(p.numel() for p in build(EXPERIMENTS[experiment]).parameters()) == \
        _vgg_count(convs_, [(512, 4096), (4096, 100)])


def test_the_seed_study_header_counts_its_experiments():
    first = (ROOT / "studies/seed.yaml").read_text().splitlines()[0]
    n = len(params.read_yaml(ROOT / "studies/seed.yaml")["experiments"])
    assert first.startswith(f"# The {n} experiments"), first


def test_seed_004_variants_change_only_what_they_name():
    bn = build(EXPERIMENTS["ablation_bn"])
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == 3
    assert not any(isinstance(m, nn.BatchNorm2d) for m in build(EXPERIMENTS["ablation_base"]).modules())
    assert sum(isinstance(m, nn.ELU) for m in build(EXPERIMENTS["ablation_elu"]).modules()) == 6
    assert sum(isinstance(m, nn.LeakyReLU) for m in build(EXPERIMENTS["ablation_leakyrelu"]).modules()) == 6
    assert sum(isinstance(m, nn.AvgPool2d) for m in build(EXPERIMENTS["ablation_avgpool"]).modules()) == 3
    assert sum(isinstance(m, nn.Dropout) for m in build(EXPERIMENTS["ablation_elu"]).modules()) == 2


@pytest.mark.parametrize("experiment, params_count", [
    ("resnet18_birds_full", 11_689_512 - 513 * 800),   # torchvision's published count, 200-class fc
    ("resnet50_birds_full", 25_557_032 - 2049 * 800),
])
def test_torchvision_resnets_match_published_counts(experiment, params_count):
    assert sum(p.numel() for p in build(EXPERIMENTS[experiment]).parameters()) == params_count


def test_resnet_downsample_is_strided_3x3_conv_with_bn():
    net = build(EXPERIMENTS["resnet_hw4"])
    block = net.stages[1][0]
    conv, bn = block.downsample
    assert (conv.kernel_size, conv.stride) == ((3, 3), (2, 2)) and isinstance(bn, nn.BatchNorm2d)
    assert [len(s) for s in net.stages] == [2, 4, 4, 2]
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_resnet_hw4_is_the_authors_network():
    """share020/dl's part-1 resnet.py: the block's output is the plain sum (no ReLU after the add, so
    it can be negative), Dropout2d after the stem, convs kaiming-normal with fan_out, fc bias zero."""
    torch.manual_seed(0)
    net = build(EXPERIMENTS["resnet_hw4"]).eval()
    block = net.stages[1][0]
    out = block(torch.randn(4, 32, 16, 16))
    assert (out < 0).any()
    he = models.build({"name": "resnet", "relu_after_add": True}, 3, (32, 32), 100).eval()
    assert (he.stages[1][0](torch.randn(4, 32, 16, 16)) >= 0).all()
    assert isinstance(net.stem[3], nn.Dropout2d) and net.stem[3].p == 0.02
    conv = net.stages[2][1].conv2                                   # 128 -> 128, 3x3
    fan_out = conv.out_channels * 9
    assert abs(conv.weight.std().item() / (2 / fan_out) ** 0.5 - 1) < 0.05
    assert torch.equal(net.fc.bias, torch.zeros_like(net.fc.bias))


def test_registry_and_schema_agree():
    schema = params.load_schema()["$defs"]["model"]
    assert set(schema["properties"]["name"]["enum"]) == set(models.MODELS)
    for rule in schema["allOf"]:
        cond = rule["if"]["properties"]["name"]
        names = cond.get("enum", [cond.get("const")])
        for name in names:
            kwargs = set(inspect.signature(models.MODELS[name]).parameters) - {
                "in_channels", "image_size", "num_classes", "weights"}
            assert kwargs == set(rule["then"]["properties"]) - {"name"}, name


def test_every_model_is_used_by_a_seed_or_demo_experiment_and_the_demo_has_every_family():
    used = {c["model"]["name"] for c in EXPERIMENTS.values()}
    assert used == set(models.MODELS)
    family = lambda name: models.MODELS[name].__module__  # noqa: E731
    demo = {family(e["model"]["name"]) for e in PARAMS["experiments"].values()}
    assert demo == {family(n) for n in models.MODELS}
    assert any(e.get("pretrained") in PARAMS["experiments"] for e in PARAMS["experiments"].values())


@pytest.mark.parametrize("experiment", sorted(n for n, c in EXPERIMENTS.items() if c["dataset"] == "digits"))
def test_demo_models_build_at_digits_size(experiment):
    config = EXPERIMENTS[experiment]
    c, size, k = shape_of(config)
    assert build(config)(torch.zeros(2, c, size, size)).shape == (2, k)


def test_too_small_input_is_a_pipeline_error_pointing_at_input_size():
    config = dict(EXPERIMENTS["digits_cifarnet"], input_size=None)
    meta = {"channels": 1, "image_size": [8, 8], "classes": list("0123456789")}
    with pytest.raises(engine.PipelineError, match="input_size"):
        inference.build_model(TrainConfig.from_dict(config), meta, {"mean": [0.5], "std": [0.5]})


def test_layer_table_from_a_real_forward_pass():
    config = EXPERIMENTS["cifarnet_best"]
    net = build(config)
    table = layers.layer_table(net, 3, (32, 32))
    assert list(table.columns) == layers.COLUMNS
    assert table["params"].sum() == sum(p.numel() for p in net.parameters())
    first = table.iloc[0]
    assert (first["type"], first["kernel"], first["stride"], first["output_shape"]) == ("Conv2d", "3x3", "1x1", "64x32x32")
    pools = table[table["type"] == "MaxPool2d"]
    assert list(pools["kernel"]) == ["2x2", "2x2", "2x2", "4x4"]
    assert list(pools["output_shape"]) == ["128x16x16", "256x8x8", "256x4x4", "256x1x1"]
    assert table.iloc[-1]["output_shape"] == "10" and table.iloc[-1]["params"] == 2560


def test_layer_table_marks_frozen_layers():
    net = models.build({"name": "lenet", "channels": [4], "fc": []}, 1, (8, 8), 10)
    for p in net[0].parameters():
        p.requires_grad_(False)
    table = layers.layer_table(net, 1, (8, 8))
    conv, fc = table[table["type"] == "Conv2d"].iloc[0], table[table["type"] == "Linear"].iloc[0]
    assert (conv["params"], conv["trainable"]) == (4 * 25 + 4, 0)
    assert fc["trainable"] == fc["params"] == 4 * 4 * 4 * 10 + 10


def test_the_source_scan_finds_each_models_family_file():
    """What Snakemake's train/evaluate jobs depend on: the file that registers their model."""
    from pipeline import imports
    found = imports.model_families()
    assert found.keys() == models.MODELS.keys()
    for name, builder in models.MODELS.items():
        assert found[name] == builder.__module__.replace(".", "/") + ".py", name
