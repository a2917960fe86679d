"""A stand-in for the training side, for tests and benchmarks of the sweep machinery.

``run_training`` has the real signature and callback protocol but trains nothing: it emits
a synthetic return curve whose height depends on the PPO knobs, optionally burning CPU or
sleeping per iteration, and can raise, produce NaN or hang on request (``fake.*`` keys).
``python -m workbench.testing.fake_sweep`` is a Hydra app shaped like ``workbench train``.
"""
from workbench.testing.fake_sweep.training import FakeTrainResult, run_population, run_training

__all__ = ["FakeTrainResult", "run_population", "run_training"]
