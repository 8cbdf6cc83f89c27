"""The profile benchmark's MAC count from the shapes onnxruntime's profiler records."""

from bench.model_profile import node_macs


def test_products_take_k_from_the_activation() -> None:
    # [1, 500, 768] x [768, 3072]: the weight is an initializer, absent from the profile.
    assert node_macs("DynamicQuantizeMatMul", [[1, 500, 768], [3072]], [1, 500, 3072], []) == (
        500 * 3072 * 768
    )
    assert node_macs("MatMul", [[16, 500, 48], [16, 48, 500]], [16, 500, 500], []) == (
        16 * 500 * 500 * 48
    )


def test_convolutions_take_k_from_their_weight() -> None:
    # A depthwise conv (groups = channels): one input channel per output, kernel 33.
    depthwise = node_macs("Conv", [[1, 256, 1000]], [1, 256, 1000], [256, 1, 33])
    assert depthwise == 256 * 1000 * 33
    pointwise = node_macs("ConvInteger", [[1, 256, 1000]], [1, 512, 1000], [512, 256, 1])
    assert pointwise == 512 * 1000 * 256


def test_other_operators_and_missing_shapes_count_nothing() -> None:
    assert node_macs("Softmax", [[1, 16, 500, 500]], [1, 16, 500, 500], []) == 0
    assert node_macs("Conv", [[1, 256, 1000]], [1, 256, 1000], []) == 0
    assert node_macs("MatMul", [], [1, 500, 768], []) == 0
