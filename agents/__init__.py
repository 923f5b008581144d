"""The agents: Faust workers that take the commands off Kafka and do the work, each feature beside its job code.

    app.py       create_app(settings): the Faust app, its agents, the runtime and the scheduler, wired
    runtime.py   the collaborators of one worker: database, object store, publisher, job queue
    intake.py    commands in: decoding, dead letters, waiting out servers that are down
    control.py   CancelRequested
    jobs/        the machinery of jobs that run in child processes: queue, scheduler, runs, the child
    train/       TrainRequested: the intake (agent.py) and the training run (job.py)
    evaluate/    EvaluateRequested: the intake and the evaluation run
    export/      ExportRequested: a checkpoint written as a transformers folder or a GGUF file
    imports/     ImportRequested: a transformers folder turned into a new model's checkpoint
    generate/    GenerateRequested: generation in the worker, with a cache of loaded models
    record/      the projection of the job-events log into the database, and its replay
"""
