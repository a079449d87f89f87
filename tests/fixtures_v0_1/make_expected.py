"""Run with cwd=/work/runs/code (old code). Writes /work/runs/fixture/expected.json
(without resume_final, which is added by the resume step)."""
import json, os, sys
sys.path.insert(0, os.getcwd())
import jax, numpy as np
import jaxae
import jaxae.checkpoints, jaxae.sampling, jaxae.priors, jaxae.evaluation, jaxae.data

FIX = "/work/runs/fixture"
out = {}
builder = jaxae.data.prepared_builder(jaxae.Config(data_dir="/tmp/fixture_tfds"))
test = jaxae.data.load_split(builder, "test")
images = np.asarray(test.images if hasattr(test, "images") else test["image"])[:64]
out["eval_images"] = {"dataset": "mnist_5k", "split": "test", "count": 64, "shape": list(images.shape),
                      "dtype": str(images.dtype), "sum": int(images.astype(np.int64).sum())}
for name in ("vae_mlp", "ae_mlp"):
    wd = os.path.join(FIX, name)
    model, params, step = jaxae.checkpoints.load_model(wd)
    prior = jaxae.priors.load(wd) if name.startswith("ae") else None
    kw = {"prior": prior} if prior is not None else {}
    samples = jaxae.sampling.sample_prior(model, params, jax.random.key(0), 4, **kw)
    metrics = jaxae.evaluation.evaluate(model, params, images, jaxae.data.eval_key())
    leaves = {jax.tree_util.keystr(p): [float(x) for x in np.asarray(v).reshape(-1)[:3]]
              for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    out[name] = {"step": int(step), "used_fitted_prior": prior is not None,
                 "samples_shape": list(samples.shape),
                 "samples": np.asarray(samples, dtype=np.float32).astype(float).tolist(),
                 "evaluate": {k: float(v) for k, v in metrics.items()},
                 "param_leaves_first3": leaves}
with open(os.path.join(FIX, "expected.json"), "w") as f:
    json.dump(out, f, indent=1)
print(json.dumps({k: (v["evaluate"], v["step"]) if "evaluate" in v else v for k, v in out.items()}))
