"""fashion_tf: JSON of image URLs -> trained multi-label Keras classifier with F1-optimal thresholds."""

__version__ = "0.1.0"
