"""Benchmark folders in each benchmark's official layout, written at test time (no real sample ships).

One module per benchmark (``mvbench``, ``videomme``, ``mlvu``, ``videovista``, ``openqa``); each has a
``write_<name>(root, ...)`` that writes the annotation files and synthetic media whose frames are
painted with their index (:func:`videoccam.testing.media.write_test_video`), and returns what a test
needs to check the answers against.
"""
