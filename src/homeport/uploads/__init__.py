"""Resumable uploads: the REST chunk protocol and tus 1.0, on one storage layer."""
