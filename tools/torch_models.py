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


def _shortcut(i, o, s):
    return nn.Sequential(nn.Conv2d(i, o, 1, s, bias=False), nn.BatchNorm2d(o)) if s != 1 or i != o else None


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, i, planes, s, shortcut="shortcut"):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(i, planes, 3, s, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False), nn.BatchNorm2d(planes)
        self.sc_name = shortcut
        setattr(self, shortcut, _shortcut(i, planes, s))

    def forward(self, x):
        sc = getattr(self, self.sc_name)
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if sc is None else sc(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, i, planes, s, shortcut="shortcut"):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(i, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, s, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, planes * 4, 1, bias=False), nn.BatchNorm2d(planes * 4)
        self.sc_name = shortcut
        setattr(self, shortcut, _shortcut(i, planes * 4, s))

    def forward(self, x):
        sc = getattr(self, self.sc_name)
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if sc is None else sc(x)))


class ResNet(nn.Module):
    """ResNet with the names of the code teachers come from. cifar=True: the data-free repositories'
    CIFAR ResNet (DAFL resnet.py, Fast-Datafree classifiers/resnet.py): 3x3 stem, no max-pool,
    `shortcut`, `linear`. cifar=False: torchvision.models.resnet (7x7 stride-2 stem, max-pool,
    `downsample`, `fc`). Features = the pooled vector."""

    def __init__(self, block, blocks, widths, channels, classes=10, cifar=True):
        super().__init__()
        self.cifar = cifar
        if cifar:
            self.conv1 = nn.Conv2d(channels, widths[0], 3, 1, 1, bias=False)
        else:
            self.conv1 = nn.Conv2d(channels, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        i = widths[0]
        self.stages = len(widths)
        for s, (n, w) in enumerate(zip(blocks, widths)):
            layer = []
            for b in range(n):
                layer.append(block(i, w, 2 if s > 0 and b == 0 else 1, "shortcut" if cifar else "downsample"))
                i = w * block.expansion
            setattr(self, "layer%d" % (s + 1), nn.Sequential(*layer))
        setattr(self, "linear" if cifar else "fc", nn.Linear(i, classes))

    def forward(self, x, features=False):
        x = F.relu(self.bn1(self.conv1(x)))
        if not self.cifar:
            x = F.max_pool2d(x, 3, 2, 1)
        for s in range(self.stages):
            x = getattr(self, "layer%d" % (s + 1))(x)
        f = F.adaptive_avg_pool2d(x, 1).flatten(1)
        out = (self.linear if self.cifar else self.fc)(f)
        return (out, f) if features else out


class WideBlock(nn.Module):
    def __init__(self, i, o, s):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(i), nn.Conv2d(i, o, 3, s, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(o), nn.Conv2d(o, o, 3, 1, 1, bias=False)
        self.convShortcut = nn.Conv2d(i, o, 1, s, 0, bias=False) if i != o else None

    def forward(self, x):
        a = F.relu(self.bn1(x))
        y = self.conv2(F.relu(self.bn2(self.conv1(a))))
        return y + (x if self.convShortcut is None else self.convShortcut(a))


class WideGroup(nn.Module):
    def __init__(self, n, i, o, s):
        super().__init__()
        self.layer = nn.Sequential(*[WideBlock(i if k == 0 else o, o, s if k == 0 else 1) for k in range(n)])

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-k as Fast-Datafree's classifiers/wresnet.py names it (pre-activation blocks)."""

    def __init__(self, depth, widen, channels, classes=10):
        super().__init__()
        n, w = (depth - 4) // 6, [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(channels, w[0], 3, 1, 1, bias=False)
        self.block1, self.block2, self.block3 = WideGroup(n, w[0], w[1], 1), WideGroup(n, w[1], w[2], 2), WideGroup(n, w[2], w[3], 2)
        self.bn1, self.fc = nn.BatchNorm2d(w[3]), nn.Linear(w[3], classes)

    def forward(self, x, features=False):
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        f = F.adaptive_avg_pool2d(F.relu(self.bn1(x)), 1).flatten(1)
        out = self.fc(f)
        return (out, f) if features else out


VGG_CONFIGS = {8: [[64], [128], [256], [512], [512]], 11: [[64], [128], [256, 256], [512, 512], [512, 512]]}


class Vgg(nn.Module):
    """VGG-BN for CIFAR as RepDistiller / Fast-Datafree name it: block0..4 of conv-BN(-ReLU), classifier."""

    def __init__(self, depth, channels, classes=10):
        super().__init__()
        i = channels
        for b, widths in enumerate(VGG_CONFIGS[depth]):
            layers = []
            for w in widths:
                layers += [nn.Conv2d(i, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                i = w
            setattr(self, "block%d" % b, nn.Sequential(*layers[:-1]))
        self.classifier = nn.Linear(512, classes)

    def forward(self, x, features=False):
        h = x.shape[2]
        x = F.max_pool2d(F.relu(self.block0(x)), 2, 2)
        x = F.max_pool2d(F.relu(self.block1(x)), 2, 2)
        x = F.max_pool2d(F.relu(self.block2(x)), 2, 2)
        x = F.relu(self.block3(x))
        if h == 64:
            x = F.max_pool2d(x, 2, 2)
        f = F.adaptive_avg_pool2d(F.relu(self.block4(x)), 1).flatten(1)
        out = self.classifier(f)
        return (out, f) if features else out


RESNETS = {"resnet8": (BasicBlock, [1, 1, 1], [16, 32, 64]), "resnet20": (BasicBlock, [3, 3, 3], [16, 32, 64]),
           "resnet18": (BasicBlock, [2, 2, 2, 2], [64, 128, 256, 512]), "resnet34": (BasicBlock, [3, 4, 6, 3], [64, 128, 256, 512]),
           "resnet50": (Bottleneck, [3, 4, 6, 3], [64, 128, 256, 512])}

ARCHITECTURES = ["lenet5", "lenet5-half", "hinton-1200", "hinton-800", "hinton-800-plain", "hinton-600", "hinton-400", *RESNETS,
                 "wrn-16-1", "wrn-16-2", "wrn-40-1", "wrn-40-2", "vgg8-bn", "vgg11-bn",
                 "torchvision-resnet18", "torchvision-resnet34", "torchvision-resnet50"]


def create(arch, channels=1, size=32, classes=10):
    """The engine's ModelFactory vocabulary."""
    if arch in ("lenet5", "lenet5-half"):
        return LeNet5(arch == "lenet5-half", channels, classes)
    if arch.startswith("hinton-"):
        return HintonMlp(channels * size * size, int(arch.split("-")[1]), classes, dropout=0.0 if arch.endswith("-plain") else 0.5)
    if arch.startswith("wrn-"):
        _, depth, widen = arch.split("-")
        return WideResNet(int(depth), int(widen), channels, classes)
    if arch.startswith("vgg"):
        return Vgg(int(arch[3:].split("-")[0]), channels, classes)
    if arch.startswith("torchvision-"):
        block, blocks, widths = RESNETS[arch[len("torchvision-"):]]
        return ResNet(block, blocks, widths, channels, classes, cifar=False)
    block, blocks, widths = RESNETS[arch]
    return ResNet(block, blocks, widths, channels, classes)


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
