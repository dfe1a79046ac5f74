"""The ``umadrive`` sub-commands, one module each: ``configure(parser)`` adds
its options (importing nothing heavy) and ``run(args)`` returns the exit status."""
