"""The XLA flags of the suite's processes (this one, set in conftest.py, and the runs it starts).

The suite's time is mostly XLA compiling many small programs on 2 cores, not running them. Backend
optimisation off halves a U-Net's compile; the fusion emitters off (XLA's older elemental emitters
for CPU fusions) take a further 20 to 40 %: a 2-D smoke run through the entry point 16.2 s -> 12.3 s,
a tiny U-Net's jvp-and-gradient step 16.1 s -> 9.9 s to compile (a DiT's about the same), run times
unchanged. Neither changes what a test checks; tests that must run as a user would (the notebooks,
the latent run's Inception) set their own.
"""
FAST = '--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false'
