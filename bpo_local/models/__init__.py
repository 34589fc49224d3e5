"""The model family: the store of builds, converting and quantizing checkpoints, verifying builds,
and resolving the model a command names."""
