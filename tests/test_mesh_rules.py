"""How mesh models derive: per-element lets are intermediates, differences stay whole,
locality sees an element's own corners, and a model without an input asks for
observations instead of training on digits."""

import shutil

import numpy as np
import pytest

import physlearn
from conftest import ROOT
from physlearn import cli
from physlearn.symbolic.printing import text_rule

CELLS = """model cells
dim n_v, n_c, n_e, m = 6 periodic, a = 2
index cell[n_c, m] in n_v, src[n_e] in n_v, dst[n_e] in n_v
const A0 = 2.6, k_c = 0.01
const r0[n_v, a] init = data
target y[n_v, a]
state r[n_v, a] init = data
param KA[n_c] init = 1
param T[n_e] init = 0.1
let area[c] = sum(j: r[cell[c, j], 0] * r[cell[c, j+1], 1] - r[cell[c, j+1], 0] * r[cell[c, j], 1]) / 2
let length[e] = sqrt(sum(b: (r[dst[e], b] - r[src[e], b])^2))
energy E = sum(c: KA[c] * (area[c] - A0)^2) / 2 + sum(e: T[e] * length[e])
         + k_c / 2 * sum(b: sum(v: r[v, b] - r0[v, b])^2)
cost C = sum(v, b: (r[v, b] - y[v, b])^2) / 2
relax minimize
"""


def test_per_element_lets_are_intermediates_and_differences_stay_whole():
    d = physlearn.loads(CELLS, "cells.phl").derivation
    assert d.spec.relax.method == "minimize"  # `relax minimize` needs no parentheses
    assert {"area", "length", "dE/darea", "dE/dlength"} <= set(d.intermediates)
    flow = text_rule(d.state_gradients["r"]).replace(" ", "")
    # the edge vector is one factor, divided by the intermediate, never multiplied out
    assert "(r[dst[k],j]-r[src[k],j])*[dst[k]=i]*dE/dlength[k]/length[k]" in flow
    assert "sum(k:-r0[k,j]+r[k,j])" in flow  # one sum of the difference, not two totals


def test_locality_sees_an_elements_own_corners_and_ends():
    d = physlearn.loads(CELLS, "cells.phl").derivation
    per_cell, per_edge = d.param_gradients["KA"].locality, d.param_gradients["T"].locality
    assert per_cell.local and "r[cell[i, j], 0]" in per_cell.uses
    assert per_edge.local and set(per_edge.uses) == {"r[dst[i], j]", "r[src[i], j]"}
    dense = physlearn.loads(CELLS.replace("param KA[n_c] init = 1", "param KA[n_c] init = 1\n"
                                          "param U[n_c] init = 1").replace(
        "+ sum(e: T[e] * length[e])", "+ sum(e: T[e] * length[e]) + sum(c, v: U[c] * r[v, 0])"),
        "dense.phl").derivation
    assert not dense.param_gradients["U"].locality.local  # reads every vertex


def test_a_model_without_input_and_observations_asks_for_them(tmp_path, capsys):
    shutil.copy(ROOT / "models" / "vertex_tissue.phl", tmp_path / "vertex_tissue.phl")
    arrays = dict(np.load(ROOT / "models" / "vertex_tissue.npz"))
    for k in ("y_train", "y_test", "true_T"):
        arrays.pop(k)
    np.savez(tmp_path / "vertex_tissue.npz", **arrays)
    code = cli.main(["train", str(tmp_path / "vertex_tissue.phl"), "--epochs", "1",
                     "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "has no `input`: it trains on observations" in err
    assert "physlearn.observations" in err and "digits" not in err


def test_observations_relax_below_a_loose_training_tolerance(tmp_path):
    """A relax line's tol is for training; observations are relaxed to 1e-9 regardless
    (before, tol = 1e-5 made them fail their own 1e-6 check, blaming the relaxation)."""
    from physlearn.observations import observe
    text = (ROOT / "models" / "vertex_tissue.phl").read_text().replace(
        "relax minimize(max_steps = 5000)", "relax minimize(tol = 1e-5, max_steps = 5000)")
    (tmp_path / "loose.phl").write_text(text)
    shutil.copy(ROOT / "models" / "vertex_tissue.npz", tmp_path / "vertex_tissue.npz")
    obs = observe(tmp_path / "loose.phl", "T", spread=0.3, seed=4)
    assert obs["y_train"].shape == (1, 40, 2) and np.all(np.isfinite(obs["y_train"]))


def test_mesh_and_observation_commands_refuse_bad_paths_in_one_line(tmp_path, capsys):
    from physlearn import meshes, observations
    with_both = ["x.npz", "--springs", "--periodic"]
    with pytest.raises(SystemExit) as stop:
        meshes.main([str(tmp_path / with_both[0]), *with_both[1:]])
    assert stop.value.code == 2 and "different meshes" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # a folder that does not exist
        meshes.main(["/proc/no/such.npz", "--rows", "2", "--cols", "2"])
    assert stop.value.code == 2 and "cannot write" in capsys.readouterr().err
    (tmp_path / "zero.npz").write_bytes(b"")
    spring = str(ROOT / "models" / "spring_network.phl")
    for args, needle in ((["--out", str(tmp_path / "zero.npz")], "not a readable .npz"),
                         (["--param", "k"], "names a parameter twice")):
        code = observations.main([spring, "--param", "k", *args])
        err = capsys.readouterr().err
        assert code == 2 and needle in err and "Traceback" not in err


def test_a_self_loop_edge_is_refused_and_a_nan_relaxation_is_a_failure(tmp_path, capsys):
    arrays = dict(np.load(ROOT / "models" / "spring_network.npz"))
    shutil.copy(ROOT / "models" / "spring_network.phl", tmp_path / "spring_network.phl")
    loop = {**arrays, "dst": arrays["dst"].copy()}
    loop["dst"][3] = loop["src"][3]
    np.savez(tmp_path / "loop.npz", **loop)
    run = ["train", str(tmp_path / "spring_network.phl"), "--epochs", "1", "--batch-size",
           "1", "--no-progress"]
    assert cli.main(run + ["--given", str(tmp_path / "loop.npz"), "--out",
                           str(tmp_path / "a")]) == 2
    assert "edge 3 joins n_v entry" in capsys.readouterr().err
    same = {**arrays, "r": arrays["r"].copy()}  # two ends of spring 0 at one position
    same["r"][same["dst"][0]] = same["r"][same["src"][0]]
    np.savez(tmp_path / "same.npz", **same)
    code = cli.main(run + ["--given", str(tmp_path / "same.npz"), "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 1 and "the free phase ended with a residual of nan" in err
    assert not (tmp_path / "b" / "params.npz").exists()  # nothing of the failed epoch saved
