"""One module per CLI verb. Each defines HELP (one line), DESCRIPTION, add_arguments(parser) and run(args) -> int.

Modules import heavy dependencies inside run() so `sas3d --help` stays fast.
"""
