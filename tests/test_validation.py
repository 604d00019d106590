"""Bad input gets a clear ValueError at the public boundary."""

import numpy as np
import pytest

import vaefp_jax as vf

GRID = vf.LatentGrid.uniform(4)
X = vf.datasets.three_clusters(12)
PSI = GRID.z.copy()
LP = GRID.log_prior


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(x=X[:, 0]), "shape"),
        (dict(x=X[None]), "shape"),
        (dict(x=np.zeros((0, 2))), "empty"),
        (dict(x=np.where(np.arange(24).reshape(12, 2) == 3, np.nan, X)), "NaN"),
        (dict(x=np.where(np.arange(24).reshape(12, 2) == 3, np.inf, X)), "NaN or inf"),
        (dict(x=X.astype(np.complex64)), "real"),
        (dict(x=X.astype(str)), "real"),
        (dict(psi=PSI[:, :1]), "dimensions"),
        (dict(psi=PSI[0]), "shape"),
        (dict(beta=0.0), "> 0"),
        (dict(beta=-1.0), "> 0"),
        (dict(beta=np.nan), "NaN"),
        (dict(beta=np.array([1.0, 2.0])), "scalar"),
        (dict(log_prior=LP[:-1]), "tiles"),
        (dict(log_prior=LP + 1.0), "sum to 1"),
        (dict(log_prior=np.where(np.arange(16) == 0, np.nan, LP)), "NaN"),
        (dict(log_prior=LP[None]), "shape"),
    ],
)
@pytest.mark.parametrize("fn", [vf.step, vf.order_parameter, vf.tile_posterior, vf.free_energy, vf.equations.evaluate])
def test_map_functions_reject(fn, kwargs, match):
    args = dict(psi=PSI, x=X, beta=0.1, log_prior=LP)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        fn(args["psi"], args["x"], args["beta"], args["log_prior"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(betas=np.array([0.1, 0.0])), "> 0"),
        (dict(betas=np.array([0.1, np.inf])), "NaN or inf"),
        (dict(betas=np.array([])), "empty"),
        (dict(betas=0.1), r"shape \(B,\)"),
        (dict(x=np.zeros((0, 2))), "empty"),
        (lambda: dict(iteration=vf.Damped(tol=0.0)), "tol"),
        (lambda: dict(iteration=vf.Damped(tol=-1e-3)), "tol"),
        (lambda: dict(iteration=vf.Damped(max_steps=0)), "max_steps"),
        (lambda: dict(iteration=vf.Damped(max_steps=2.5)), "max_steps"),
        (lambda: dict(iteration=vf.Damped(damping=1.0)), "damping"),
        (lambda: dict(iteration=vf.Damped(damping=-0.1)), "damping"),
        (dict(record_every=-1), "record_every"),
        (lambda: dict(schedule=vf.Pool(width=0)), "width"),
        (lambda: dict(schedule=vf.Vmapped(batch_size=0)), "batch_size"),
        (dict(psi0=np.full((16, 2), np.nan)), "NaN"),
        (dict(psi0=np.zeros((16, 3))), "dimensions"),
    ],
)
def test_solve_rejects(kwargs, match):
    # a callable gives arguments whose construction itself must raise (strategy objects validate their fields)
    with pytest.raises(ValueError, match=match):
        args = dict(x=X, betas=np.array([0.1, 0.2]))
        args.update(kwargs() if callable(kwargs) else kwargs)
        x, betas = args.pop("x"), args.pop("betas")
        vf.solve(x, betas, GRID, **args)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: vf.LatentGrid.uniform(0), "positive integer"),
        (lambda: vf.LatentGrid.uniform(2.5), "positive integer"),
        (lambda: vf.LatentGrid.uniform(4, low=1.0, high=0.0), "low < high"),
        (lambda: vf.LatentGrid.uniform(4, dim=0), "positive integer"),
        (lambda: vf.LatentGrid.gaussian(4, limit=-1.0), "limit"),
        (lambda: vf.Damped(init_noise=-0.1), "init_noise"),
    ],
)
def test_constructors_reject(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("value, minimum, ok", [
    (3, 1, True), (3.0, 1, True), (np.int64(2), 2, True), (0, 0, True),
    (0, 1, False), (2.5, 1, False), (True, 1, False), ("3", 1, False), (None, 1, False), (float("nan"), 1, False),
    (float("inf"), 1, False), (1, 2, False),
])
def test_one_integer_check(value, minimum, ok):
    """The one integer check of the package's boundary: integral numbers ≥ minimum as int; the rest
    refused in one line naming the argument."""
    from vaefp_jax import _validate

    if ok:
        out = _validate.check_int("steps", value, minimum)
        assert out == int(value) and type(out) is int
    else:
        want = "a positive integer" if minimum == 1 else f"an integer ≥ {minimum}"
        with pytest.raises(ValueError, match=f"^steps must be {want}, got "):
            _validate.check_int("steps", value, minimum)
