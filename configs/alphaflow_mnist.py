"""α-Flow on MNIST from scratch: configs/lsd_mnist.py (network, optimiser, 3000 steps) with α-Flow's
B/2 recipe (snap-research/alphaflow, as configs/alphaflow_checkerboard.py): the sigmoid curriculum
(γ = 25) from α = 1 to α = 0 over the whole run, α clamped at 0.005, half of each batch diagonal, both
times sigmoid(N(+0.4, 1)), the adaptive weight 1 / sg(m + 0.001), the finite-step target clipped at
±4 (theirs, for data and noise of std about 1; MNIST in [−1, 1] with noise of std 0.5 is inside it).
No guidance (ω = 1, κ = 0), as for the other self-distillation rows.

Budget (lsd_mnist's): not shown converged. At 1000 of the 3000 steps (MNIST study, seed 0, the
curriculum then spanning those 1000): 26.5 / 24.5 / 28.1 % digit accuracy at 1/2/4 steps."""
from configs import alphaflow_checkerboard
from configs import lsd_mnist


def get_config(arg=None):
  return alphaflow_checkerboard.alphaflow(lsd_mnist.get_config(arg), clamp_target=4.0)
