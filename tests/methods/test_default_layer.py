"""Which layer a feature method hooks when none is named, and how the choice is reported.

The models below are built by hand in the shapes of common architectures
(torchvision is not a dependency): the default must be the last feature module
before pooling / the classifier, never the logits.
"""

import pytest
import torch
from torch import nn

from kdistill.distiller import Distiller, build_method
from kdistill.errors import ConfigError
from kdistill.methods import default_feature_layer
from kdistill.models import create_model


def conv_stack(channels: int = 8) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU())


class BodyHead(nn.Module):
    """``body`` then a head that pools, flattens and classifies inside one Sequential."""

    def __init__(self) -> None:
        super().__init__()
        self.body = conv_stack()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, x):
        return self.head(self.body(x))


class MobileNetLike(nn.Module):
    """torchvision MobileNetV2 / EfficientNet layout, with other names: blocks -> avgpool -> classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_stack()
        self.blocks = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(16, 10))

    def forward(self, x):
        return self.classifier(self.avgpool(self.blocks(self.stem(x))).flatten(1))


class ResNetLike(nn.Module):
    """torchvision ResNet layout: conv1, bn1, relu, maxpool, layer1..layer4, avgpool, fc."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()
        self.maxpool = nn.MaxPool2d(2)
        self.layer1 = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU())
        self.layer3 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.layer4 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class VGGLike(nn.Module):
    """torchvision VGG layout: features, avgpool, classifier = Linear-ReLU-Dropout-Linear-ReLU-Dropout-Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.avgpool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Dropout(), nn.Linear(16, 16),
                                        nn.ReLU(), nn.Dropout(), nn.Linear(16, 10))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class Declared(BodyHead):
    """A model that names its own feature layer."""

    default_feature_layer = "body.1"


def one_sequential() -> nn.Sequential:
    """The whole net as one Sequential: the last activation before pooling is the feature map."""
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 10))


class Wrapped(nn.Module):
    """A single child that holds the whole net, classifier included."""

    def __init__(self) -> None:
        super().__init__()
        self.net = one_sequential()

    def forward(self, x):
        return self.net(x)


class Bottleneck(nn.Module):
    """An encoder that ends in a Linear (an embedding) before the classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.encoder(x))


class ClassificationHead(nn.Module):
    """A head class of its own (dense -> tanh -> dropout -> projection), as Hugging Face models have."""

    def __init__(self) -> None:
        super().__init__()
        self.dense, self.act, self.dropout, self.out_proj = nn.Linear(8, 8), nn.Tanh(), nn.Dropout(), nn.Linear(8, 10)

    def forward(self, x):
        return self.out_proj(self.dropout(self.act(self.dense(x))))


class CustomHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = ClassificationHead()

    def forward(self, x):
        return self.classifier(self.encoder(x))


class WrappedResNet(nn.Module):
    """A wrapper around a whole model, as training frameworks add."""

    def __init__(self) -> None:
        super().__init__()
        self.model = ResNetLike()

    def forward(self, x):
        return self.model(x)


class NormalisedLogits(nn.Module):
    """A head that normalises its logits: Linear -> BatchNorm1d."""

    def __init__(self) -> None:
        super().__init__()
        self.body = conv_stack()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8, 10), nn.BatchNorm1d(10))

    def forward(self, x):
        return self.head(self.pool(self.body(x)))


class LogitsThenBatchNorm(nn.Module):
    """The same, with the classifier and its BatchNorm1d as two top-level children."""

    def __init__(self) -> None:
        super().__init__()
        self.body = conv_stack()
        self.fc = nn.Linear(8, 10)
        self.bn = nn.BatchNorm1d(10)

    def forward(self, x):
        return self.bn(self.fc(self.body(x).mean(dim=(2, 3))))


def softmax_outputs() -> nn.Sequential:
    """A net that returns probabilities: ... Linear -> Softmax."""
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 10), nn.Softmax(dim=1))


class LogSoftmaxHead(BodyHead):
    """A head class ending in LogSoftmax."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10), nn.LogSoftmax(dim=1))


class SqueezeNetLike(nn.Module):
    """torchvision SqueezeNet layout: features, classifier = Dropout -> 1x1 conv -> ReLU -> global pool."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(8, 10, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


class NetworkInNetworkLike(nn.Module):
    """An all-convolutional net whose top-level classifier is a 1x1 conv, then pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.ReLU())
        self.score = nn.Conv2d(8, 10, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()

    def forward(self, x):
        return self.flatten(self.pool(self.score(self.body(x))))


CASES = [(BodyHead, "body"), (MobileNetLike, "blocks"), (ResNetLike, "layer4"), (VGGLike, "features"),
         (Declared, "body.1"), (one_sequential, "1"), (Wrapped, "net.1"), (Bottleneck, "encoder"),
         (CustomHead, "encoder"), (WrappedResNet, "model.layer4"), (NormalisedLogits, "body"),
         (LogitsThenBatchNorm, "body"), (softmax_outputs, "1"), (LogSoftmaxHead, "body"),
         (SqueezeNetLike, "features"), (NetworkInNetworkLike, "body")]


@pytest.mark.parametrize("build, expected", CASES, ids=[c[0].__name__ for c in CASES])
def test_default_layer_is_the_last_feature_module(build, expected):
    model = build()
    assert default_feature_layer(model) == expected
    # and it is a feature map, not the logits
    found = {}
    layer = dict(model.named_modules())[expected]
    layer.register_forward_hook(lambda _m, _i, out: found.setdefault("out", out))
    logits = model(torch.randn(2, 1, 8, 8))
    assert found["out"].shape != logits.shape


@pytest.mark.parametrize("name, expected", [("resnet-simple", "layer3"), ("cnn-simple", "features"),
                                            ("mlp-simple", "features"), ("hinton-student", "features")])
def test_zoo_defaults_are_unchanged(name, expected):
    shape = (1, 8, 8) if not name.startswith(("mlp", "hinton")) else (64,)
    assert default_feature_layer(create_model(name, shape, 10)) == expected


@pytest.mark.parametrize("name, expected", [("text-cnn", "dropout"), ("bilstm", "fc")])
def test_text_zoo_defaults_are_unchanged(name, expected):
    assert default_feature_layer(create_model(name, (16,), 2, vocab_size=50, pad_id=0)) == expected


def test_a_declared_layer_that_does_not_exist_is_a_config_error():
    model = BodyHead()
    model.default_feature_layer = "trunk"
    with pytest.raises(ConfigError, match="default_feature_layer.*'trunk'.*body"):
        default_feature_layer(model)


def test_a_model_without_feature_modules_is_a_config_error():
    with pytest.raises(ConfigError, match="student_layer"):
        default_feature_layer(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))


@pytest.mark.parametrize("method", ["fitnets", "pkt", "rkd", "sp", "crd"])
def test_feature_methods_hook_features_not_logits(method):
    teacher, student = ResNetLike(), BodyHead()
    options = {"num_negatives": 4} if method == "crd" else {}
    distiller = Distiller(teacher=teacher, student=student,
                          methods=[(build_method(method, options, 4.0), 1.0)])
    m = distiller.methods[0]
    assert (m.student_layer, m.teacher_layer) == ("body", "layer4")
    x = torch.randn(8, 1, 8, 8)
    distiller.setup_methods(x[:2], 8)
    out = distiller(x, torch.randint(0, 10, (8,)), torch.arange(8))
    terms = [v for k, v in out.items() if k.startswith(method)]
    assert terms and all(torch.isfinite(v) for v in terms)


def test_feature_layer_summary_names_each_feature_method():
    methods = [(build_method("fitnets", {}, 4.0), 1.0), (build_method("pkt", {"teacher_layer": "layer3"}, 4.0), 1.0),
               (build_method("kd", {}, 4.0), 1.0)]
    distiller = Distiller(teacher=ResNetLike(), student=BodyHead(), methods=methods)
    assert distiller.feature_layer_summary() == [
        "fitnets: student 'body' (default) <- teacher 'layer4' (default)",
        "pkt: student 'body' (default) <- teacher 'layer3'",
    ]
    assert Distiller(teacher=ResNetLike(), student=BodyHead()).feature_layer_summary() == []


def test_a_layer_that_never_runs_is_named_at_setup():
    class Unused(BodyHead):
        def __init__(self):
            super().__init__()
            self.spare = nn.ModuleList([nn.Linear(2, 2)])

    method = build_method("pkt", {"student_layer": "spare"}, 4.0)
    distiller = Distiller(teacher=ResNetLike(), student=Unused(), methods=[(method, 1.0)])
    with pytest.raises(ConfigError, match="student layer 'spare'.*never ran"):
        distiller.setup_methods(torch.randn(2, 1, 8, 8), 8)
