"""The experiment behind each lecture, as a function returning plain numbers and arrays.

Each module is named after its lecture's topic and exposes functions that take
``quick: bool`` (``None`` reads ``GD_QUICK``; quick mode runs in seconds on a
2-core CPU, full mode is meant for a GPU) and return plain Python numbers,
numpy arrays and dicts of them. The lecture notebook calls the function and
plots; a test calls the same function and asserts the lecture's claim.
Nothing here plots or prints.
"""
