"""The light core: config, settings, the run store and the job runtime; importing it never loads TensorFlow or Streamlit."""
