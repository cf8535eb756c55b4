"""The mirror's building blocks: unpooling and tied transposed convolution as exact adjoints."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deconvnet
from deconvnet.core.mirror import ForwardRecord, Mirror, TiedTransposedConv, Unpool, unpool
from deconvnet.core.windows import Region


def _pool(x: torch.Tensor, pool: nn.MaxPool2d):
    return F.max_pool2d(
        x, pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode, return_indices=True
    )


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a * b).sum().detach())


# real pooling layers: (model fixture, features index, input map shape)
POOLS = [
    ("vgg_float64", 4, (1, 64, 224, 224)),
    ("vgg_float64", 30, (2, 512, 14, 14)),
    ("alexnet_float64", 2, (1, 64, 55, 55)),
    ("alexnet_float64", 5, (2, 192, 27, 27)),
    ("alexnet_float64", 12, (1, 256, 13, 13)),
]


def test_unpool_puts_each_value_at_its_switch_and_zero_elsewhere():
    x = torch.tensor(
        [[[[1.0, 5.0, 2.0, 0.0], [3.0, 4.0, 9.0, 1.0], [0.0, 0.0, 1.0, 1.0], [7.0, 0.0, 2.0, 3.0]]]]
    )
    pooled, switches = F.max_pool2d(x, 2, 2, return_indices=True)
    assert pooled.flatten().tolist() == [5.0, 9.0, 7.0, 3.0]
    up = unpool(pooled, switches, (4, 4))
    want = torch.tensor(
        [[[[0.0, 5.0, 0.0, 0.0], [0.0, 0.0, 9.0, 0.0], [0.0, 0.0, 0.0, 0.0], [7.0, 0.0, 0.0, 3.0]]]]
    )
    assert torch.equal(up, want)


def test_overlapping_windows_that_share_a_switch_sum_their_values():
    # 3x3 stride 2 on a 1x5 row: windows [0..2] and [2..4] both pick position 2
    x = torch.tensor([[[[0.0, 1.0, 9.0, 1.0, 0.0]] * 3]])
    pooled, switches = F.max_pool2d(x, 3, 2, return_indices=True)
    assert switches.flatten().tolist() == [2, 2]
    up = unpool(torch.tensor([[[[2.0, 5.0]]]]), switches, (3, 5))
    assert up[0, 0, 0, 2] == 7.0 and up.sum() == 7.0
    # torch's MaxUnpool2d keeps one write there: it is not the adjoint
    assert nn.MaxUnpool2d(3, 2)(torch.tensor([[[[2.0, 5.0]]]]), switches, (3, 5)).sum() != 7.0


@pytest.mark.parametrize("fixture,index,shape", POOLS)
def test_unpool_is_the_adjoint_of_pool_selection(request, fixture, index, shape):
    model = request.getfixturevalue(fixture)
    pool = model.features[index]
    gen = torch.Generator().manual_seed(index)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    pooled, switches = _pool(x, pool)
    y = torch.randn(pooled.shape, generator=gen, dtype=torch.float64)
    selected = x.flatten(2).gather(2, switches.flatten(2)).view_as(pooled)  # A x
    back = unpool(y, switches, tuple(shape[2:]))  # A^T y
    assert _dot(selected, y) == pytest.approx(_dot(x, back), rel=1e-12)
    # the module's window path gives the same A^T y
    region = Region(
        y,
        torch.arange(shape[0]),
        torch.zeros(shape[0], dtype=torch.long),
        torch.zeros(shape[0], dtype=torch.long),
    )
    record = ForwardRecord(sizes={index: tuple(shape[2:])}, output=pooled, switches={index: switches})
    got = Unpool(pool, index)(region, record)
    assert torch.equal(got.origin_y, torch.zeros(shape[0], dtype=torch.long))
    torch.testing.assert_close(got.signal, back, rtol=0, atol=1e-12)


def test_alexnet_pool1_shares_switches_and_vgg_pooling_does_not(alexnet_float64, vgg_float64):
    gen = torch.Generator().manual_seed(1)
    x = torch.relu(torch.randn(1, 64, 55, 55, generator=gen, dtype=torch.float64))
    _, switches = _pool(x, alexnet_float64.features[2])
    flat = switches[0].flatten(1)  # one row of switches per channel
    shared = sum(int((torch.bincount(row)[row] > 1).sum()) for row in flat) / flat.numel()
    assert 0.1 < shared < 0.9, shared  # a large fraction of pooled units share their switch
    _, switches = _pool(torch.randn(1, 64, 224, 224, generator=gen), vgg_float64.features[4])
    flat = switches[0].flatten(1)  # one row of switches per channel
    assert all(int(torch.bincount(row).max()) == 1 for row in flat)


@pytest.mark.parametrize("index,shape", [(4, (2, 64, 32, 32)), (9, (1, 128, 17, 17)), (30, (1, 512, 15, 14))])
def test_pool_of_unpool_gives_back_the_pooled_values_when_windows_tile(vgg_float64, index, shape):
    pool = vgg_float64.features[index]
    gen = torch.Generator().manual_seed(index)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    pooled, switches = _pool(x, pool)
    y = torch.rand(pooled.shape, generator=gen, dtype=torch.float64) + 0.1  # positive values
    up = unpool(y, switches, tuple(shape[2:]))
    assert torch.equal(up.flatten(2).gather(2, switches.flatten(2)).view_as(y), y)
    # max-pooling the unpooled map (all other entries zero) recovers y exactly
    assert torch.equal(F.max_pool2d(up, pool.kernel_size, pool.stride), y)


@pytest.mark.parametrize("channels_last", [False, True])
def test_tiling_and_scatter_unpool_routes_agree_on_windows(vgg_float64, channels_last):
    """VGG's 2x2/2 pooling tiles: the mirror repeats each value over its window and keeps it at
    the switch. That must equal the general route (scatter to the switch, used for AlexNet) and
    the whole-map unpool cut to the window, for windows inside and across the map border."""
    gen = torch.Generator().manual_seed(5)
    mirror = Mirror(vgg_float64, 5)
    record = mirror.record(torch.randn(2, 3, 64, 48, dtype=torch.float64, generator=gen))
    pools = [s for s in mirror.stages if isinstance(s, Unpool)]
    assert len(pools) == 5 and all(p.tiling for p in pools)
    assert set(record.switch_masks) == {p.index for p in pools}  # the tiling route is taken
    scatter_only = ForwardRecord(record.sizes, record.output, record.switches, {}, record.masks)
    image, oy, ox = torch.tensor([0, 1, 1]), torch.tensor([-1, 2, 3]), torch.tensor([0, -2, 5])
    for stage in pools:
        height, width = record.sizes[stage.index + 1]  # the pooled map
        signal = torch.randn(
            3, record.switches[stage.index].shape[1], 4, 3, dtype=torch.float64, generator=gen
        )
        for k in range(3):  # a window's positions outside the map are padding: zero (windows.py)
            rows = oy[k] + torch.arange(4)
            cols = ox[k] + torch.arange(3)
            outside = ((rows < 0) | (rows >= height))[:, None] | ((cols < 0) | (cols >= width))
            signal[k][:, outside] = 0
        # the CPU keeps masks channels-last; the plain layout is the CUDA route's
        layout = torch.channels_last if channels_last else torch.contiguous_format
        record.switch_masks[stage.index] = record.switch_masks[stage.index].contiguous(memory_format=layout)
        region = Region(signal, image, oy, ox)
        tiled = stage(region, record)
        scattered = stage(region, scatter_only)
        assert (tiled.origin_y.tolist(), tiled.origin_x.tolist(), tiled.size) == (
            scattered.origin_y.tolist(),
            scattered.origin_x.tolist(),
            scattered.size,
        )
        assert torch.equal(tiled.signal, scattered.signal)
        # brute force: put each window into a zero map, unpool the whole map, cut the window
        for k in range(3):
            full = torch.zeros(1, signal.shape[1], height + 20, width + 20, dtype=torch.float64)
            full[0, :, 10 + oy[k] : 10 + oy[k] + 4, 10 + ox[k] : 10 + ox[k] + 3] = signal[k]
            full = full[:, :, 10 : 10 + height, 10 : 10 + width]
            whole = unpool(
                full, record.switches[stage.index][image[k] : image[k] + 1], record.sizes[stage.index]
            )
            y0, x0 = int(tiled.origin_y[k]), int(tiled.origin_x[k])
            ly, lx = tiled.size
            padded = F.pad(whole, (10, 10 + lx, 10, 10 + ly))
            want = padded[0, :, 10 + y0 : 10 + y0 + ly, 10 + x0 : 10 + x0 + lx]
            assert torch.equal(tiled.signal[k], want)
        assert tiled.signal.abs().max() > 0


# real convolution layers: (model fixture, features index, input shape)
CONVS = [
    ("alexnet_float64", 0, (1, 3, 224, 224)),
    ("alexnet_float64", 0, (2, 3, 67, 90)),
    ("alexnet_float64", 3, (1, 64, 27, 27)),
    ("vgg_float64", 0, (1, 3, 45, 61)),
    ("vgg_float64", 28, (1, 512, 14, 14)),
    ("vgg_float64", 10, (1, 128, 56, 56)),
]


@pytest.mark.parametrize("fixture,index,shape", CONVS)
def test_tied_transposed_conv_is_the_adjoint_of_the_convolution(request, fixture, index, shape):
    model = request.getfixturevalue(fixture)
    conv = model.features[index]
    gen = torch.Generator().manual_seed(index)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    ax = F.conv2d(x, conv.weight, None, conv.stride, conv.padding)  # A x, no bias
    y = torch.randn(ax.shape, generator=gen, dtype=torch.float64)
    b = shape[0]
    zero = torch.zeros(b, dtype=torch.long)
    record = ForwardRecord(sizes={index: tuple(shape[2:])}, output=ax)
    back = TiedTransposedConv(conv, index)(Region(y, torch.arange(b), zero, zero), record)
    assert back.signal.shape == x.shape  # exactly the forward input size (AlexNet conv1: +1 row)
    assert _dot(ax, y) == pytest.approx(_dot(x, back.signal), rel=1e-12)


def test_transposed_conv_reads_the_forward_weight_tensor_itself(alexnet_float32):
    mirror = Mirror(alexnet_float32, 2)
    tied = [s for s in mirror.stages if isinstance(s, TiedTransposedConv)]
    assert [t.weight is alexnet_float32.features[t.index].weight for t in tied] == [True, True]
    assert list(mirror.parameters()) == []  # nothing copied into the mirror


def test_mirror_prints_as_fig1(vgg_float32, alexnet_float32):
    text = repr(Mirror(alexnet_float32, 1))
    assert "Unpool" in text and "BackwardReLU" in text and "TiedTransposedConv" in text
    assert "collisions summed" in text and "weight tied to features[0]" in text
    assert len(Mirror(vgg_float32, 5).stages) == 31


def test_unsupported_module_is_named(alexnet_float32):
    import copy

    model = copy.deepcopy(alexnet_float32)
    model.features[4] = nn.Tanh()
    with pytest.raises(ValueError, match=r"features\[4\]: Tanh has no deconvnet mirror"):
        deconvnet.reconstruct(model, torch.zeros(1, 3, 63, 63), 2)


def test_seed_batches_group_seeds_by_how_their_windows_cross_the_border(vgg_float64):
    """Interior seeds go down together; a border seed computes only inside the image; the
    result is the same as projecting every seed alone."""
    from deconvnet.core.mirror import Seeds

    mirror = Mirror(vgg_float64, 3)
    x = torch.randn(2, 3, 96, 96, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    record = mirror.record(x)  # stage 3 output 12x12, receptive field 44 px, jump 8
    ys, xs = torch.tensor([5, 6, 0, 5, 11, 0, 6]), torch.tensor([5, 6, 0, 5, 11, 0, 5])
    image = torch.tensor([0, 1, 0, 1, 1, 1, 0])
    channel = torch.tensor([3, 8, 3, 9, 1, 2, 30])
    value = record.output[image, channel, ys, xs] + 1.0
    seeds = Seeds(image, channel, ys, xs, value)
    batches = [b.tolist() for b in mirror.seed_batches(seeds, record.sizes, chunk_size=16)]
    assert sorted(sum(batches, [])) == list(range(7))
    assert sorted(batches) == [[0, 1, 3, 6], [2, 5], [4]]  # interior | top-left | bottom-right
    assert sorted(len(b) for b in mirror.seed_batches(seeds, record.sizes, chunk_size=2)) == [1, 2, 2, 2]
    together = mirror.project(record, seeds)
    for k in range(7):
        alone = mirror.project(record, seeds[k : k + 1])
        assert alone.abs().max() > 0
        torch.testing.assert_close(together[k : k + 1], alone, rtol=1e-12, atol=1e-14)
    crops = mirror.project(record, seeds, frame="receptive_field", chunk_size=3)
    for k in range(7):
        torch.testing.assert_close(
            crops[k : k + 1],
            mirror.project(record, seeds[k : k + 1], frame="receptive_field"),
            rtol=1e-12,
            atol=1e-14,
        )
