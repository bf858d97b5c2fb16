"""KFP v2 components, one folder per stage; each ``component.py`` imports only ``kfp`` at the
top and the ``llarapp`` library inside the function. Every component runs in the one image
built from ``Dockerfile.component`` (:data:`IMAGE` in each file)."""
