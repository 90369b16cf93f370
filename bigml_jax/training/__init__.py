"""Training: state, jitted steps, cost reporting and the loop (the optimizer
factory is `bigml_jax.optim`, below tasks, which build optimizers too)."""
