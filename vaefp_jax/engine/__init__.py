"""The engine: one ``solve`` over strategy objects, its schedules and its result type."""
