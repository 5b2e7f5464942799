# How these runs were made: with the code of commit b2913e6 (before the one run-directory format), e.g.
#   git worktree add /tmp/oldsciml b2913e6 && PYTHONPATH=/tmp/oldsciml python make_old_runs.py
# (paths below point to /tmp/oldruns; the second half records the old code's outputs in expected.npz)
import sys, shutil
sys.path.insert(0, "/tmp/oldsciml")
import sciml
assert sciml.__file__.startswith("/tmp/oldsciml"), sciml.__file__
from pathlib import Path
from sciml import datasets, training
out = Path("/tmp/oldruns")
d = datasets.generate("darcy", n=6, resolution=16, seed=0, out=out / "darcy16.h5", progress=False)
training.train("fno", data=d, out=out / "operator", epochs=1, batch_size=3, progress=False, figures=False,
               model_config={"modes": [4, 4], "width": 4})
from sciml.training.coral import train_coral
train_coral(d, out / "coral", progress=False, inr_epochs=1, processor_epochs=1, batch_size=3, points=0.5,
            model_config={"latent_dim": 4, "width": 8, "depth": 2, "processor_width": 8, "processor_depth": 1})
from sciml.solvers.neural_precond import train_preconditioner
train_preconditioner("fno", d, out / "precond", model_config={"modes": [4, 4], "width": 4}, progress=False,
                     epochs=1, batch_size=4, rhs_per_system=2)
from sciml.solvers.dcdm import train_dcdm
train_dcdm(out / "dcdm", config={"width": 4}, progress=False, pde="poisson", resolution=8, steps=2, log_every=1, val_vectors=2)
from sciml.solvers.cgs import train_cgs
train_cgs("porenet", out / "cgs", updates=2, batch_graphs=2, progress=False, log_every=1, n_pores=(6, 10))
import sys
sys.path.insert(0, "/tmp/oldsciml")
import numpy as np, torch
from pathlib import Path
out = Path("/tmp/oldruns")
from sciml import training, datasets, solvers
data = training.load_grid_data(out / "darcy16.h5")
model, info = training.load_run(out / "operator")
pred_op = training.predict(model, info.normaliser, data.x[:2]).numpy()
model, info = training.load_run(out / "coral")
pred_coral = training.predict(model, info.normaliser, data.x[:2]).numpy()
A, b, _ = datasets.system("poisson", resolution=8, seed=0)
x_dcdm = solvers.solve(A, b, method=f"dcdm:{out/'dcdm'}", tol=1e-6).x
A2, b2, _ = datasets.system_from_file(out / "darcy16.h5", 0)
x_fcg = solvers.solve(A2, b2, method=f"fcg:{out/'precond'}", tol=1e-8).x
from sciml.solvers import cgs
net, meta = cgs.load_cgs(out / "cgs")
graphs = cgs.draw_graphs("porenet", 5, 0, 2, n_pores=(6, 10))
preds, _ = cgs.predict(net, graphs)
np.savez(out / "expected.npz", operator=pred_op, coral=pred_coral, dcdm=x_dcdm, precond=x_fcg, cgs=np.concatenate(preds))
print({k: v.shape for k, v in np.load(out / "expected.npz").items()})
