"""tools.speed.train counts a step's FLOPs the way its rate against the machine limit assumes."""
import torch

from tools.speed.train import step_gflop


def test_step_flops_are_forward_plus_the_gradients_the_step_needs():
    conv = torch.nn.Conv2d(1, 4, 3, padding=1, bias=False)
    x, y = torch.randn(2, 1, 8, 8), torch.randint(0, 4, (2, 8, 8))
    forward = 2 * 9 * 1 * 4 * 8 * 8 * 2  # multiply-adds x 2, per output pixel, channel and sample
    # the input needs no gradient, so backward = the weight gradient only (as many FLOPs as the forward)
    assert round(step_gflop(conv, x, y) * 1e9) == 2 * forward
    assert conv.weight.grad is None  # counted on a copy: the timed module is untouched
    deep = torch.nn.Sequential(conv, torch.nn.Conv2d(4, 4, 3, padding=1, bias=False))
    second = 2 * 9 * 4 * 4 * 8 * 8 * 2
    assert round(step_gflop(deep, x, y) * 1e9) == 2 * forward + 3 * second  # + its input's gradient
