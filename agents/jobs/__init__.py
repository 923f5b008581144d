"""The job machinery: the queue in the database, the scheduler of one worker, a run (the parent side) and the
child process it starts, and the kinds of job (train, evaluate) with their typed specs."""
