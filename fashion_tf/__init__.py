"""fashion_tf: JSON of image URLs -> trained multi-label Keras classifier with F1-optimal thresholds."""

# TensorFlow exports the symbols of its own, older libcurl to the whole process, and pycurl (the
# downloader's HTTP, fashion_tf.fetcher) refuses to load after it. Loaded first, pycurl is bound to the
# libcurl of its wheel for good (Python loads extensions with RTLD_NOW), so a process that imports
# fashion_tf before tensorflow can use both (tests, notebooks, the demo). It costs ~10 ms.
try:
    import pycurl  # noqa: F401
except ImportError:  # fashion_tf.fetcher says what to do if it is needed
    pass

__version__ = "0.1.0"
