"""One backend per way of training: in-cluster trainer Jobs, OpenAI, Gradient."""
