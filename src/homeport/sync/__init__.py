"""Offline sync: collections, the change feed (pull), batched mutations (push), conflicts."""
