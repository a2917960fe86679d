"""The module operations (Permute ... SphereProjection, Forward) against ProtoMotions' behaviour.

ProtoMotions applies a module's operations in order to the concatenated input of one batch
([batch, ...]): dims count from the batch dim, a Reshape's leading "batch_size" (or an integer
expression of it) is the input's batch size read before any operation, and only a Forward
normalises (flattening to [samples, last dim] first). Each expected tensor below is worked out
by hand from those rules, not computed with the ops under test. Every case runs as a single
agent's [B] batch, and for a population of two as [P, B] and as the member-major [P * B] env
batch: each member must get exactly what one ProtoMotions agent would.
"""
from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict

from workbench.agents.common import modules

torch.set_num_threads(1)

PM = "protomotions.agents.common.config"


def op(name: str, **args) -> dict:
    """An operation as a ProtoMotions YAML names it: its config class's path and its fields."""
    return {"_target_": f"{PM}.ModuleOperation{name}Config", **args}


def processor(ops: list[dict], num_members: int = 1, in_keys=("a",), **fields):
    return modules.build_module({"_target_": "protomotions.agents.common.common.ObsProcessor",
                                 "in_keys": list(in_keys), "out_keys": ["y"], "module_operations": ops, **fields},
                                num_members)


def run(module, inputs: dict[str, torch.Tensor], form: str) -> torch.Tensor:
    """``inputs``: [P, B, ...] tensors. ``form``: single ([B], P = 1), members ([P, B]) or
    member_major ([P * B], the rollout's env batch)."""
    P, B = next(iter(inputs.values())).shape[:2]
    if form == "single":
        assert P == 1
        return module(TensorDict({k: v[0] for k, v in inputs.items()}, batch_size=[B])).get("y").unsqueeze(0)
    if form == "members":
        return module(TensorDict(inputs, batch_size=[P, B])).get("y")
    flat = {k: v.reshape(P * B, *v.shape[2:]) for k, v in inputs.items()}
    y = module(TensorDict(flat, batch_size=[P * B])).get("y")
    return y.reshape(P, B, *y.shape[1:])


FORMS = [(1, "single"), (1, "members"), (2, "members"), (2, "member_major")]

SHAPE_CHAIN = [
    op("Reshape", new_shape=["batch_size", 2, 3]),
    op("Permute", new_order=[0, 2, 1]),
    op("Reshape", new_shape=["batch_size * 3", 2]),  # ProtoMotions' expression form
    op("Unsqueeze", unsqueeze_dim=1),
    op("Expand", expand_shape=[-1, 2, -1]),
    op("Reshape", new_shape=["batch_size", -1]),  # still the input's batch size (2), not the 6 rows now
]
# sample 0 = [0 .. 5], sample 1 = [6 .. 11]:
#   [[0,1,2],[3,4,5]] -> permuted [[0,3],[1,4],[2,5]] -> six rows [0,3],[1,4],[2,5],[6,9],[7,10],[8,11]
#   -> each row twice -> back to two samples of 12
SHAPE_CHAIN_OUT = [[0, 3, 0, 3, 1, 4, 1, 4, 2, 5, 2, 5],
                   [6, 9, 6, 9, 7, 10, 7, 10, 8, 11, 8, 11]]


@pytest.mark.parametrize("P, form", FORMS)
def test_shape_operations_as_protomotions_applies_them(P, form):
    x = torch.arange(12.0).reshape(1, 2, 6)
    x = torch.cat([x + 100 * p for p in range(P)])  # member p's data: the same plus 100 p
    y = run(processor(SHAPE_CHAIN, P), {"a": x}, form)
    expected = torch.tensor([[[v + 100 * p for v in row] for row in SHAPE_CHAIN_OUT] for p in range(P)])
    assert y.shape == (P, 2, 12)
    assert torch.equal(y, expected)


@pytest.mark.parametrize("P, form", FORMS)
def test_an_operation_on_the_batch_dim_never_mixes_two_members(P, form):
    """Moving the batch dim (ProtoMotions lets a Permute do it) mixes the samples of a batch, as it
    would in ProtoMotions; a population's members must still not mix."""
    ops = [op("Reshape", new_shape=["batch_size", 2, 3]), op("Permute", new_order=[1, 0, 2]),  # [frames, B, 3]
           op("Reshape", new_shape=["batch_size * 2", 3]), op("Reshape", new_shape=["batch_size", -1])]
    x = torch.cat([torch.arange(12.0).reshape(1, 2, 6) + 100 * p for p in range(P)])
    # frames: s0 [0,1,2] [3,4,5], s1 [6,7,8] [9,10,11]; rows become frame 0 of both samples, then frame 1
    expected = torch.tensor([[[0, 1, 2, 6, 7, 8], [3, 4, 5, 9, 10, 11]]], dtype=torch.float)
    expected = torch.cat([expected + 100 * p for p in range(P)])
    assert torch.equal(run(processor(ops, P), {"a": x}, form), expected)


@pytest.mark.parametrize("P, form", FORMS)
def test_squeeze_and_negative_dims_count_from_the_end_of_one_sample(P, form):
    ops = [op("Reshape", new_shape=["batch_size", 1, 2, 2]), op("Squeeze", squeeze_dim=1),
           op("Permute", new_order=[0, -1, -2]), op("Unsqueeze", unsqueeze_dim=-1), op("Squeeze", squeeze_dim=-1),
           op("Reshape", new_shape=["batch_size", -1])]
    x = torch.cat([torch.arange(8.0).reshape(1, 2, 4) + 10 * p for p in range(P)])
    # [0,1,2,3] -> [[0,1],[2,3]] -> transposed [[0,2],[1,3]] -> [0,2,1,3]; [4..7] -> [4,6,5,7]
    expected = torch.tensor([[[0 + 10 * p, 2 + 10 * p, 1 + 10 * p, 3 + 10 * p],
                              [4 + 10 * p, 6 + 10 * p, 5 + 10 * p, 7 + 10 * p]] for p in range(P)], dtype=torch.float)
    assert torch.equal(run(processor(ops, P), {"a": x}, form), expected)


@pytest.mark.parametrize("P, form", FORMS)
def test_sphere_projection_of_the_concatenated_inputs(P, form):
    a = torch.tensor([[[3.0], [0.0]]] * P)
    b = torch.tensor([[[4.0], [-5.0]]] * P)
    y = run(processor([op("SphereProjection")], P, in_keys=("a", "b")), {"a": a, "b": b}, form)
    expected = torch.tensor([[[0.6, 0.8], [0.0, -1.0]]] * P)  # (3, 4) / 5 and (0, -5) / 5
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-7)


def test_without_operations_an_obs_processor_only_concatenates_even_with_normalize_obs():
    module = processor([], in_keys=("a", "b"), normalize_obs=True)  # ProtoMotions' default: no operations
    module.train()
    y = run(module, {"a": torch.tensor([[[1.0], [2.0]]]), "b": torch.tensor([[[7.0], [9.0]]])}, "members")
    assert torch.equal(y, torch.tensor([[[1.0, 7.0], [2.0, 9.0]]]))
    assert module.obs_norm is None  # only Forward normalises; no statistics were recorded


@pytest.mark.parametrize("P, form", FORMS)
def test_forward_normalises_per_frame_after_a_reshape(P, form):
    """ProtoMotions' Forward flattens to [samples, last dim]: after a reshape to 2 frames of 3, the
    normaliser has 3 features and sees 2 samples per batch row."""
    module = processor([op("Reshape", new_shape=["batch_size", 2, -1]), op("Forward")], P,
                       normalize_obs=True, norm_ema_decay=None)
    module.train()
    x = torch.cat([torch.arange(12.0).reshape(1, 2, 6) + p for p in range(P)])
    y = run(module, {"a": x}, form)
    # the first batch is normalised with the initial moments (mean 0, var 1), clamped at 5
    expected = [[[[min((6 * b + 3 * f + i + p) / math.sqrt(1 + 1e-5), 5.0) for i in range(3)] for f in range(2)]
                 for b in range(2)] for p in range(P)]
    torch.testing.assert_close(y, torch.tensor(expected), rtol=1e-6, atol=1e-6)
    # then each member's moments record its own 4 frames: Welford from (mean 0, count 1)
    assert module.obs_norm.mean.shape == (P, 3)
    for p in range(P):
        frame_means = [(0 + 3 + 6 + 9) / 4 + i + p for i in range(3)]
        assert module.obs_norm.mean[p].tolist() == pytest.approx([m * 4 / 5 for m in frame_means])
        assert float(module.obs_norm.count[p]) == 5.0


@pytest.mark.parametrize("P, form", FORMS)
def test_an_mlp_runs_per_frame_between_reshapes_like_the_plain_mlp(P, form):
    """ProtoMotions' tokenisers reshape to [batch, frames, features] before Forward: the MLP runs on
    each frame. With one frame and a reshape back, the output equals the plain MLP's."""
    spec = {"_target_": "protomotions.agents.common.mlp.MLPWithConcat", "in_keys": ["a"], "out_keys": ["y"],
            "num_out": 2, "layers": [{"units": 5, "activation": "tanh"}]}
    x = torch.randn(P, 3, 4, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    plain = modules.build_module(spec, P)
    expected = run(plain, {"a": x}, form)
    torch.manual_seed(1)
    framed = modules.build_module({**spec, "module_operations": [
        op("Reshape", new_shape=["batch_size", 1, -1]), op("Forward"), op("Reshape", new_shape=["batch_size", -1])]}, P)
    assert torch.equal(run(framed, {"a": x}, form), expected)


def test_batch_size_expressions():
    assert [modules.batch_size_expression(text)(6) for text in
            ("batch_size", "batch_size * 4", "2 * batch_size + 1", "(batch_size - 2) // 2", "-batch_size")] == \
        [6, 24, 13, 2, -6]
    for text in ("batch_size / 2", "size", "batch_size ** 2", "__import__('os').getcwd()", "4"):
        with pytest.raises(ValueError, match="integer expression"):
            modules.batch_size_expression(text)
