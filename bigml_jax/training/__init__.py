"""Training: state, optimizer, jitted steps and the loop."""
