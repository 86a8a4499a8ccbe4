"""Model folders: the built-in models that ship inside the package, and tiny random-weight
models built offline for tests and demos. Below the engine and the verifiers, which both load
the folders named here."""
