"""Code generation for :class:`rnnlab.engine.CompiledCell`: trace (:mod:`.trace`), C++ per step
(:mod:`.cpp`), the time loop (:mod:`.loop`), the on-disk cache (:mod:`.cache`) and the run-time
operator (:mod:`.runtime`)."""
