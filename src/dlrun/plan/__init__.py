"""A command becomes a plan once: parsed, composed and validated (schemas), resume rules applied.

``command.plan_command`` turns a command line into a ``Plan`` that the job receives as a
value; ``config`` and ``schema`` state what a valid run config is; ``resume`` says what a
resumed run may change; ``compose`` is Hydra as dlrun uses it.
"""
