"""Machine learning: the only modules that import TensorFlow/Keras (each lazily, where it can)."""
