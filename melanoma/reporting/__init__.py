"""Reports as pure functions of saved predictions: tables, figures, HTML, galleries (no TensorFlow)."""
