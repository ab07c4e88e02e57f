"""Partial focal cross-entropy: hand-computed values, masking, gradients, stability."""

import math

import pytest
import torch
import torch.nn.functional as F

from forest_seg.losses import partial_focal_ce
from forest_seg.points import IGNORE_INDEX

LN3 = math.log(3.0)
# two pixels, both with logits (0, ln 3): softmax p(forest) = 3 / (1 + 3) = 0.75
LOGITS = torch.tensor([[[[0.0, 0.0]], [[LN3, LN3]]]])  # [B=1, C=2, H=1, W=2]
LABELS = torch.tensor([[[1, 0]]])  # pixel 0 forest (p_t = 0.75), pixel 1 non-forest (p_t = 0.25)
NLL_075 = 0.2876820724517809  # -ln 0.75
NLL_025 = 1.3862943611198906  # -ln 0.25


def test_cross_entropy_by_hand():
    loss = partial_focal_ce(LOGITS, LABELS, gamma=0.0)
    assert loss.dtype == torch.float32 and loss.shape == ()
    assert loss.item() == pytest.approx((NLL_075 + NLL_025) / 2, rel=1e-6)  # 0.8369882


def test_focal_by_hand():
    # -(1 - p_t)^2 ln p_t: 0.25^2 * 0.2876821 = 0.0179801, 0.75^2 * 1.3862944 = 0.7797906
    loss = partial_focal_ce(LOGITS, LABELS, gamma=2.0)
    assert loss.item() == pytest.approx((0.0625 * NLL_075 + 0.5625 * NLL_025) / 2, rel=1e-6)
    assert loss.item() == pytest.approx(0.3988854, rel=1e-6)


def test_focal_ignores_unlabelled_pixel_by_hand():
    labels = torch.tensor([[[1, IGNORE_INDEX]]])
    # mean over the single labelled pixel: 0.0625 * 0.2876821 = 0.0179801
    assert partial_focal_ce(LOGITS, labels).item() == pytest.approx(0.0625 * NLL_075, rel=1e-6)


def test_alpha_weighting_by_hand():
    # forest weighted 0.25, non-forest 0.75; the sum is divided by the pixel count (2)
    loss = partial_focal_ce(LOGITS, LABELS, gamma=0.0, alpha=0.25)
    assert loss.item() == pytest.approx((0.25 * NLL_075 + 0.75 * NLL_025) / 2, rel=1e-6)
    assert loss.item() == pytest.approx(0.5558206, rel=1e-6)
    focal = partial_focal_ce(LOGITS, LABELS, gamma=2.0, alpha=0.25)
    expected = (0.25 * 0.0625 * NLL_075 + 0.75 * 0.5625 * NLL_025) / 2
    assert focal.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_gamma_zero_equals_cross_entropy_with_ignore(num_classes):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, num_classes, 8, 8, generator=g) * 3
    labels = torch.randint(num_classes, (3, 8, 8), generator=g)
    labels[torch.rand(3, 8, 8, generator=g) < 0.6] = IGNORE_INDEX
    expected = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
    assert partial_focal_ce(logits, labels, gamma=0.0).item() == pytest.approx(
        expected.item(), rel=1e-5
    )


def test_focal_is_below_cross_entropy_and_matches_formula_on_random_data():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 2, 6, 6, generator=g)
    labels = torch.randint(2, (2, 6, 6), generator=g)
    p_t = logits.softmax(1).gather(1, labels[:, None]).squeeze(1)
    expected = (-((1 - p_t) ** 1.5) * p_t.log()).mean()
    loss = partial_focal_ce(logits, labels, gamma=1.5)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss < partial_focal_ce(logits, labels, gamma=0.0)


def test_gradient_only_reaches_labelled_pixels():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 2, 4, 4, generator=g, requires_grad=True)
    labels = torch.full((2, 4, 4), IGNORE_INDEX)
    labels[0, 1, 2] = 1
    labels[1, 3, 0] = 0
    partial_focal_ce(logits, labels, alpha=0.3).backward()
    grad_norm = logits.grad.abs().sum(dim=1)  # [B, H, W]
    sel = labels != IGNORE_INDEX
    assert (grad_norm[~sel] == 0).all()
    assert (grad_norm[sel] > 0).all()


def test_all_ignored_gives_zero_with_gradient():
    logits = torch.randn(2, 2, 4, 4, requires_grad=True)
    labels = torch.full((2, 4, 4), IGNORE_INDEX, dtype=torch.uint8)
    loss = partial_focal_ce(logits, labels)
    assert loss.item() == 0.0 and torch.isfinite(loss)
    assert loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_extreme_logits_stay_finite(gamma):
    # pixel 0 confidently right (p_t rounds to 1), pixel 1 confidently wrong (log p_t = -2e4),
    # pixel 2 ignored with extreme logits
    logits = torch.tensor([[[[-1e4, 1e4, 1e4]], [[1e4, -1e4, -1e4]]]], requires_grad=True)
    labels = torch.tensor([[[1, 1, IGNORE_INDEX]]])
    loss = partial_focal_ce(logits, labels, gamma=gamma)
    # right pixel: ~0; wrong pixel: (1 - 0)^gamma * 2e4; mean over 2 labelled pixels
    assert loss.item() == pytest.approx(1e4, rel=1e-6)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad[..., 2] == 0).all()


def test_uint8_labels_match_int64():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 2, 5, 5, generator=g)
    labels = torch.randint(2, (2, 5, 5), generator=g)
    labels[:, 0] = IGNORE_INDEX
    assert torch.equal(
        partial_focal_ce(logits, labels.to(torch.uint8)), partial_focal_ce(logits, labels)
    )


def test_bfloat16_logits_are_computed_in_float32():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 2, 4, 4, generator=g).to(torch.bfloat16)
    labels = torch.randint(2, (2, 4, 4), generator=g)
    loss = partial_focal_ce(logits, labels)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(partial_focal_ce(logits.float(), labels).item(), rel=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_autocast_backward():
    conv = torch.nn.Conv2d(3, 2, 1).cuda()
    x = torch.randn(2, 3, 8, 8, device="cuda")
    labels = torch.full((2, 8, 8), IGNORE_INDEX, dtype=torch.uint8, device="cuda")
    labels[:, ::3, ::3] = 1
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = conv(x)
        loss = partial_focal_ce(logits, labels, alpha=0.25)
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(conv.weight.grad).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gamma": -1.0}, r"gamma.*-1\.0"),
        ({"alpha": 1.5}, r"alpha.*1\.5"),
        ({"alpha": -0.1}, r"alpha.*-0\.1"),
    ],
)
def test_bad_hyperparameters_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        partial_focal_ce(LOGITS, LABELS, **kwargs)


def test_alpha_needs_two_classes():
    logits = torch.zeros(1, 3, 2, 2)
    labels = torch.zeros(1, 2, 2, dtype=torch.int64)
    assert partial_focal_ce(logits, labels).item() == pytest.approx(
        (1 - 1 / 3) ** 2 * math.log(3), rel=1e-6
    )
    with pytest.raises(ValueError, match=r"alpha.*2 classes.*3"):
        partial_focal_ce(logits, labels, alpha=0.5)


def test_bad_shapes_and_label_dtype_raise():
    with pytest.raises(ValueError, match=r"logits.*\[B, C, H, W\]"):
        partial_focal_ce(torch.zeros(2, 4, 4), LABELS)
    with pytest.raises(ValueError, match=r"labels.*\(1, 1, 2\).*\(1, 2, 1\)"):
        partial_focal_ce(LOGITS, LABELS.reshape(1, 2, 1))
    with pytest.raises(ValueError, match=r"labels.*integer.*float32"):
        partial_focal_ce(LOGITS, LABELS.float())
