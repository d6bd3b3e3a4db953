"""The example trainer: a small intent classifier (embedding bag + fully connected layers) trained with Horovod."""
