"""Mesh-free solvers of PDE test problems (no sparse system): GP-HM and the DeepXDE PINN."""
