"""An example ccsm format plugin: weights in a NumPy ``.npz`` archive."""
