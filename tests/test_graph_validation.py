"""Graph validation and compilation as pure data, no processes."""

from __future__ import annotations

import pytest

from interop_runtime import (
    DTypeMismatchError,
    Graph,
    GraphError,
    LayoutMismatchError,
    ShapeMismatchError,
    UnknownFunctionError,
    UnknownTargetError,
)
from interop_runtime.graph.compile import compile_graph
from interop_runtime.graph.validate import validate
from interop_runtime.wire.messages import FunctionSpec, TensorSpec


def fn(name: str, ins: list[tuple], outs: list[tuple]) -> FunctionSpec:
    def ts(t: tuple) -> TensorSpec:
        n, dtype, shape, *layout = t
        return TensorSpec(name=n, dtype=dtype, shape=shape, layout=layout[0] if layout else None)
    return FunctionSpec(name=name, inputs=[ts(i) for i in ins], outputs=[ts(o) for o in outs])


FUNCTIONS = {
    "tf": {"features": fn("features", [("image", "float32", [None, 224, 224, 3], "NHWC")],
                          [("feat", "float32", [None, 2048])]),
           "image_nhwc": fn("image_nhwc", [("x", "float32", [None, 8, 8, 3])],
                            [("y", "float32", [None, 8, 8, 3], "NHWC")]),
           "half": fn("half", [("x", "float32", None)], [("y", "float16", [None, 2048])])},
    "torch": {"classify": fn("classify", [("x", "float32", [None, 2048])],
                             [("logits", "float32", [None, 1000])]),
              "conv": fn("conv", [("x", "float32", [None, 3, 8, 8], "NCHW")],
                         [("y", "float32", None)]),
              "small": fn("small", [("x", "float32", [None, 512])], [("y", "float32", None)]),
              "add": fn("add", [("a", "float32", None), ("b", "float32", None)],
                        [("y", "float32", None)])},
}


def pipeline() -> Graph:
    g = Graph("p").node("f", "tf", "features").node("c", "torch", "classify")
    return g.edge("f.feat", "c.x").input("image", "f.image").output("logits", "c.logits")


def test_valid_graph_compiles_to_one_plan_per_worker() -> None:
    compiled = compile_graph(pipeline().spec(), FUNCTIONS, {"tf": "tcp://a:1", "torch": "tcp://b:2"}, 1)
    assert compiled.order == ["f", "c"]
    assert set(compiled.plans) == {"tf", "torch"}
    route = compiled.plans["tf"].nodes[0].routes["feat"][0]
    assert (route.worker, route.endpoint, route.node, route.input) == ("torch", "tcp://b:2", "c", "x")
    assert compiled.plans["torch"].nodes[0].graph_outputs == {"logits": ["logits"]}
    assert compiled.input_routes == {"image": [("tf", "f", "image")]}


def test_dtype_mismatch_names_the_edge() -> None:
    g = Graph("p").node("h", "tf", "half").node("c", "torch", "classify")
    g.edge("h.y", "c.x").input("x", "h.x").output("o", "c.logits")
    with pytest.raises(DTypeMismatchError) as err:
        validate(g.spec(), FUNCTIONS)
    assert err.value.edge == "h.y -> c.x" and "float16" in str(err.value)


def test_shape_mismatch_names_the_edge() -> None:
    g = Graph("p").node("f", "tf", "features").node("s", "torch", "small")
    g.edge("f.feat", "s.x").input("i", "f.image").output("o", "s.y")
    with pytest.raises(ShapeMismatchError) as err:
        validate(g.spec(), FUNCTIONS)
    assert err.value.edge == "f.feat -> s.x" and "(?, 2048)" in str(err.value)


def test_layout_mismatch_names_the_edge() -> None:
    g = Graph("p").node("i", "tf", "image_nhwc").node("c", "torch", "conv")
    g.edge("i.y", "c.x").input("x", "i.x").output("o", "c.y")
    with pytest.raises((ShapeMismatchError, LayoutMismatchError)) as err:
        validate(g.spec(), FUNCTIONS)
    assert err.value.edge == "i.y -> c.x"


def test_unknown_worker_and_function() -> None:
    g = Graph("p").node("a", "jax", "f").input("x", "a.x").output("o", "a.y")
    with pytest.raises(UnknownTargetError) as err:
        validate(g.spec(), FUNCTIONS)
    assert err.value.node == "a" and err.value.worker == "jax"
    g = Graph("p").node("a", "torch", "nope").input("x", "a.x").output("o", "a.y")
    with pytest.raises(UnknownFunctionError, match="classify"):
        validate(g.spec(), FUNCTIONS)


def test_cycle_is_found() -> None:
    g = Graph("p").node("a", "torch", "add").node("b", "torch", "add")
    g.edge("a.y", "b.a").edge("b.y", "a.a").input("x", "a.b", "b.b").output("o", "b.y")
    with pytest.raises(GraphError, match="cycle through nodes a, b"):
        validate(g.spec(), FUNCTIONS)


def test_dangling_and_doubly_fed_inputs() -> None:
    g = Graph("p").node("a", "torch", "add").input("x", "a.a").output("o", "a.y")
    with pytest.raises(GraphError, match="a.b is dangling") as err:
        validate(g.spec(), FUNCTIONS)
    assert err.value.node == "a"
    g = Graph("p").node("s", "torch", "small").node("a", "torch", "add")
    g.edge("s.y", "a.a").input("x", "s.x", "a.a", "a.b").output("o", "a.y")
    with pytest.raises(GraphError, match="a.a is fed twice"):
        validate(g.spec(), FUNCTIONS)


def test_bad_port_names() -> None:
    g = Graph("p").node("f", "tf", "features").node("c", "torch", "classify")
    g.edge("f.nothing", "c.x").input("image", "f.image").output("o", "c.logits")
    with pytest.raises(GraphError, match="no output 'nothing'") as err:
        validate(g.spec(), FUNCTIONS)
    assert err.value.edge == "f.nothing"


def test_all_problems_are_reported() -> None:
    g = Graph("p").node("a", "torch", "add").node("b", "ghost", "x")
    g.output("o", "a.y")
    with pytest.raises(UnknownTargetError) as err:
        validate(g.spec(), FUNCTIONS)
    assert len(err.value.others) >= 2  # type: ignore[attr-defined]
    assert "more" in str(err.value)
