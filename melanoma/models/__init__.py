"""Models: backbones, factory, training, storage, loading, TensorBoard logs."""
