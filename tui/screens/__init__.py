"""The app's screens, one a module, each with its styles in a ``.tcss`` file beside it."""
