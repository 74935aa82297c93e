"""Image data: scan, check and split folders, tf.data pipelines (TensorFlow loaded lazily), demo data, import and trash, the crawler."""
