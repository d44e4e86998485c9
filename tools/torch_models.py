"""The engine's networks in PyTorch, module for module (src/Distill.Engine/Models), and the
DeepInversion terms both scripts need, for the benchmark peer (bench_pytorch.py) and for the
reference values the tests check against (torch_reference.py). Parameter names follow PyTorch's;
shapes and forward passes follow the engine.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class LeNet5(nn.Module):
    """DAFL's LeNet-5 / LeNet-5-half on 32x32 input; features = the flattened third convolution."""

    def __init__(self, half=False, channels=1, classes=10):
        super().__init__()
        c1, c2, c3, f1 = (3, 8, 60, 42) if half else (6, 16, 120, 84)
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(channels, c1, 5), nn.Conv2d(c1, c2, 5), nn.Conv2d(c2, c3, 5)
        self.fc1, self.fc2 = nn.Linear(c3, f1), nn.Linear(f1, classes)

    def forward(self, x, features=False):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2, 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2, 2)
        f = F.relu(self.conv3(x)).flatten(1)
        out = self.fc2(F.relu(self.fc1(f)))
        return (out, f) if features else out


class HintonMlp(nn.Module):
    """Two ReLU hidden layers with dropout; features = the second hidden layer."""

    def __init__(self, inputs, hidden, classes=10, dropout=0.5):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(inputs, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, classes)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, features=False):
        x = self.drop(F.relu(self.fc1(x.flatten(1))))
        f = F.relu(self.fc2(x))
        out = self.fc3(self.drop(f))
        return (out, f) if features else out


class Generator(nn.Module):
    """DAFL's generator as the official code builds it (BatchNorm2d(c, 0.8) sets eps)."""

    def __init__(self, latent=100, size=32, channels=1, width=128):
        super().__init__()
        self.init, self.width = size // 4, width
        self.l1 = nn.Linear(latent, width * self.init ** 2)
        self.bn0 = nn.BatchNorm2d(width)
        self.b1 = nn.Sequential(nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width, 0.8), nn.LeakyReLU(0.2))
        self.b2 = nn.Sequential(nn.Conv2d(width, width // 2, 3, 1, 1), nn.BatchNorm2d(width // 2, 0.8), nn.LeakyReLU(0.2),
                                nn.Conv2d(width // 2, channels, 3, 1, 1), nn.Tanh(), nn.BatchNorm2d(channels, affine=False))

    def forward(self, z):
        x = self.bn0(self.l1(z).view(z.shape[0], self.width, self.init, self.init))
        x = self.b1(F.interpolate(x, scale_factor=2))
        return self.b2(F.interpolate(x, scale_factor=2))


class Block(nn.Module):
    def __init__(self, i, o, s):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o)
        self.c2, self.b2 = nn.Conv2d(o, o, 3, 1, 1, bias=False), nn.BatchNorm2d(o)
        self.sc = nn.Sequential(nn.Conv2d(i, o, 1, s, bias=False), nn.BatchNorm2d(o)) if s != 1 or i != o else None

    def forward(self, x):
        y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
        return F.relu(y + (x if self.sc is None else self.sc(x)))


class ResNet(nn.Module):
    """CIFAR-style ResNet with BatchNorm after every convolution; features = the pooled vector."""

    def __init__(self, blocks, widths, channels, classes=10):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0])
        layers, i = [], widths[0]
        for s, (n, w) in enumerate(zip(blocks, widths)):
            for b in range(n):
                layers.append(Block(i, w, 2 if s > 0 and b == 0 else 1)); i = w
        self.layers, self.fc = nn.Sequential(*layers), nn.Linear(i, classes)

    def forward(self, x, features=False):
        f = F.adaptive_avg_pool2d(self.layers(F.relu(self.bn(self.stem(x)))), 1).flatten(1)
        out = self.fc(f)
        return (out, f) if features else out


RESNETS = {"resnet8": ([1, 1, 1], [16, 32, 64]), "resnet20": ([3, 3, 3], [16, 32, 64]),
           "resnet18": ([2, 2, 2, 2], [64, 128, 256, 512]), "resnet34": ([3, 4, 6, 3], [64, 128, 256, 512])}


def create(arch, channels=1, size=32, classes=10):
    """The engine's ModelFactory vocabulary."""
    if arch in ("lenet5", "lenet5-half"):
        return LeNet5(arch == "lenet5-half", channels, classes)
    if arch.startswith("hinton-"):
        return HintonMlp(channels * size * size, int(arch.split("-")[1]), classes)
    blocks, widths = RESNETS[arch]
    return ResNet(blocks, widths, channels, classes)


def watch_batchnorm(model, stats):
    """DeepInversion's R_feature terms: for every BatchNorm2d, on each forward, appends
    ||batch mean - running mean|| + ||batch var - running var|| (biased variance) to stats."""
    def hook(m, i, o):
        x = i[0]
        mean, var = x.mean([0, 2, 3]), x.permute(1, 0, 2, 3).flatten(1).var(1, unbiased=False)
        stats.append(torch.norm(mean - m.running_mean, 2) + torch.norm(var - m.running_var, 2))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.register_forward_hook(hook)


def total_variation(x):
    """The paper's R_TV: sqrt of squared left and lower differences per interior pixel, summed, / n."""
    c, l, b = x[:, :, :-1, 1:], x[:, :, :-1, :-1], x[:, :, 1:, 1:]
    return torch.sqrt((l - c) ** 2 + (b - c) ** 2 + 1e-8).sum() / x.shape[0]


def kl_batchmean(target_probs, log_probs):
    return F.kl_div(log_probs, target_probs, reduction="batchmean")


def competition(teacher_logits, student_logits):
    """ADI's paper form: 1 - JS(p_T, p_S), KL summed over classes and averaged over samples."""
    pt, ps = F.softmax(teacher_logits, 1), F.softmax(student_logits, 1)
    m = (pt + ps) / 2
    return 1 - 0.5 * (kl_batchmean(pt, m.log()) + kl_batchmean(ps, m.log()))
