"""Intakes: the doors mail comes in by. Each turns its input into a :class:`Delivery`, gets one
:class:`Verdict` from the pipeline, and maps it to its own answer in one place."""
