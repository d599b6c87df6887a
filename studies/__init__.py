"""Studies: the measurements behind the figures in the docs, kept out of the package (they use it as a user does).

Run from the repository root as `python -m studies.<name> ...`; each prints its figures, and with `--output
docs/results/<name>.md` also writes them as Markdown (studies/results.py), so that a figure is remade by one command.
"""
