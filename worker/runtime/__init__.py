"""The running worker: built from its settings, one lane per portal, until SIGTERM."""
