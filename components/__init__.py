"""KFP components, one folder per stage; each ``component.py`` imports only ``kfp`` (and
:data:`components.image.IMAGE`, the one image every component runs in) at the top and the
``llarapp`` library inside the function."""
