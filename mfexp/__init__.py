"""mfexp: search a training policy for an image classifier and prove the gain."""

__version__ = "0.1.0"
