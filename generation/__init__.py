"""The generation service: plans a job (``plan``), rolls chunks of dreams (``worker``) on Ray actors or in
this process and commits them to the dream store (``service``). It sits above ``dreamgen`` (the world model,
the store, the dream env) and ``policies`` (the samplers it runs), and below ``jobs``."""
