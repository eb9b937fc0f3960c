"""minidiff: "Fun with Diffusion Models" from scratch, in readable PyTorch.

Part A drives DeepFloyd IF through our own UNet (unet_if.py) and T5 (t5.py); Part B trains the report's
MNIST UNets (mnist_unet.py, train.py). The samplers (schedule.py, sampling.py, guidance.py, editing.py)
are model-agnostic: see DESIGN §2, the noise-estimator contract.
"""
__version__ = "0.1.0"
