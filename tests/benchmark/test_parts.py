"""Counting profiled operators to parts: a backward operator goes to the part whose forward
operator made its autograd node, whatever that node's sequence number (0 included)."""

from types import SimpleNamespace

import pytest

from twins.benchmark.parts import split_by_part


def event(name, start, self_us, sequence_nr=-1, parent=None):
    return SimpleNamespace(
        name=name,
        time_range=SimpleNamespace(start=start),
        self_cpu_time_total=self_us,
        sequence_nr=sequence_nr,
        cpu_parent=parent,
    )


def test_backward_operators_follow_their_forward_node_from_sequence_zero():
    mlp = event("nn.Module: Mlp", 0, 1.0)
    norm = event("nn.Module: LayerNorm", 10, 1.0)
    forward = [
        mlp,
        event("aten::addmm", 1, 100.0, sequence_nr=0, parent=mlp),
        norm,
        event("aten::native_layer_norm", 11, 10.0, sequence_nr=1, parent=norm),
    ]
    node_1 = event("autograd::engine::evaluate_function: NativeLayerNormBackward0", 20, 2.0, 1)
    node_0 = event("autograd::engine::evaluate_function: AddmmBackward0", 30, 3.0, 0)
    backward = [
        node_1,
        event("aten::native_layer_norm_backward", 21, 20.0, parent=node_1),
        node_0,
        event("aten::mm", 31, 200.0, parent=node_0),
    ]
    parts = {row["part"]: row for row in split_by_part(forward + backward, iters=1)}
    assert set(parts) == {"MLP", "LayerNorm"}
    assert (parts["MLP"]["forward_ms"], parts["MLP"]["backward_ms"]) == pytest.approx(
        (0.101, 0.203)
    )
    norm_ms = (parts["LayerNorm"]["forward_ms"], parts["LayerNorm"]["backward_ms"])
    assert norm_ms == pytest.approx((0.011, 0.022))
    largest = parts["MLP"]["operators"][0]
    assert (largest["name"], largest["phase"]) == ("aten::mm", "backward")
