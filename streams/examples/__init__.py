"""Example handlers, jobs and events used by `signalbox dev` and the README."""
