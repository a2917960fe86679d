"""Stand-ins for tests and benchmarks, not product code: ``fake_sweep`` is a Hydra app shaped
like ``workbench train`` whose training is a synthetic curve (the sweep machinery, alone)."""
