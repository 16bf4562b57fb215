"""Local mode: an emulated Kubernetes API server, its controllers and the trainer-pod executor."""
